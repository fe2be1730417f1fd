"""notebooks/resnet_batch_job.py, the job to copy: run as a learner runs it, offline."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import quirky_images as quirks
from conftest import ROOT, S3Server, s3_photo_files

from tools import papermill_runner

pytestmark = pytest.mark.notebook

JOB = ROOT / "notebooks" / "resnet_batch_job.py"
TYPES = {
    "path": pa.string(),
    "error": pa.string(),
    "label_index": pa.int32(),
    "label": pa.string(),
    "score": pa.float32(),
}


def run_job(data_uri: str, output_dir: Path, env: dict | None = None) -> pa.Table:
    """Run the job offline in a Python of its own (a local Ray); its predictions, read back."""
    command = [sys.executable, str(JOB), data_uri, str(output_dir), "--offline"]
    command += ["--batch-size", "4"]  # several model calls
    environment = papermill_runner.environment({"RAY_ADDRESS": ""} | (env or {}))
    done = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    table = pq.read_table(output_dir / "predictions")
    assert {field.name: field.type for field in table.schema} == TYPES
    assert f"{len(table)} images:" in done.stdout
    return table


def test_the_job_imports_no_project_module():
    imported = set()
    for node in ast.walk(ast.parse(JOB.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert "nbhelpers" not in imported and "tools" not in imported, imported
    assert imported <= {"__future__", "argparse", "io", "os", "numpy", "pyarrow", "ray"} | {
        "torch",
        "torchvision",
        "PIL",
    }


def test_sample_photos_and_broken_files(tmp_path, sample_photos):
    folder = tmp_path / "my photos"
    (folder / "trip").mkdir(parents=True)
    good = [shutil.copy(photo, folder / "trip" / photo.name) for photo in sample_photos[:5]]
    bad = {
        quirks.write_empty(folder / "empty.jpg"): "empty file",
        quirks.write_truncated_jpeg(folder / "trip" / "cut off.jpg"): "truncated",
        quirks.write_text_as_image(folder / "notes.png"): "cannot identify image",
    }
    (folder / "README.txt").write_text("not an image by name: no row")
    table = run_job(str(folder), tmp_path / "out").to_pandas().set_index("path")
    assert sorted(table.index) == sorted(map(str, [*good, *bad]))  # one row per image file
    for path, reason in bad.items():
        assert reason in table.loc[str(path), "error"], table.loc[str(path)]
        assert table.loc[str(path), ["label", "score", "label_index"]].isna().all()
    predicted = table.loc[list(map(str, good))]
    assert predicted["error"].isna().all() and predicted["label"].notna().all()
    assert predicted["score"].between(0, 1).all()


def test_an_s3_folder_is_listed_and_read(sample_photos, monkeypatch):
    """The job's own listing and decode on a real S3 server, in this process: a second run of
    the whole job (Ray and ResNet152 started again) would add about 50 s."""
    monkeypatch.syspath_prepend(str(JOB.parent))
    import resnet_batch_job as job

    server = S3Server(require_credentials=False).start()
    try:
        server.upload("photos", s3_photo_files(sample_photos))
        for name, value in server.env().items():
            monkeypatch.setenv(name, value) if value else monkeypatch.delenv(name, raising=False)
        paths, filesystem = job.list_images("s3://photos/imagenette/val/")
        batch = job.decode({"path": np.array(paths, dtype=object)}, filesystem)
    finally:
        server.stop()
    errors = dict(zip(paths, batch["error"], strict=True))
    assert len(errors) == 5  # four photos and one empty file; README.txt is not an image
    assert errors.pop("photos/imagenette/val/n03888257/empty.jpg").endswith("empty file (0 bytes)")
    assert set(errors.values()) == {None}
    assert batch["image"].shape == (5, 224, 224, 3) and batch["image"].dtype == np.uint8
