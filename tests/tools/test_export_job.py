"""Each lesson's job, taken home: its pipeline cells written as a script by ``make job`` and run
outside Jupyter, offline, on sample photos beside broken files (one row per file; the runs are
long, the script's shape is checked in make test)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pandas as pd
import pytest

from nbhelpers import lessons
from tests.support import quirky_images as quirks
from tools import export_job, papermill_runner

pytestmark = pytest.mark.notebook


def photos_and_broken_files(folder, sample_photos) -> tuple[list[str], dict[str, str]]:
    """Five sample photos and three broken files (by the kind their error must name)."""
    (folder / "trip").mkdir(parents=True)
    good = [str(shutil.copy(photo, folder / "trip" / photo.name)) for photo in sample_photos[:5]]
    bad = {
        str(quirks.write_empty(folder / "empty.jpg")): "empty file",
        str(quirks.write_truncated_jpeg(folder / "trip" / "cut off.jpg")): "truncated",
        str(quirks.write_text_as_image(folder / "notes.png")): "not an image",
    }
    (folder / "README.txt").write_text("not an image by name: no row")
    return good, bad


def run_job(notebook: str, tmp_path, data_uri: str) -> pd.DataFrame:
    """Write ``notebook``'s job with :mod:`tools.export_job`, run it in a Python of its own (a
    local Ray), and read back the Parquet files it wrote."""
    script = tmp_path / "job.py"
    parameters = {"pretrained": False, "data_uri": data_uri, "output_dir": str(tmp_path / "out")}
    parameters |= {"batch_size": 4}  # several model calls
    script.write_text(export_job.job_script(lessons.entry(notebook).path, parameters))
    environment = papermill_runner.environment({"RAY_ADDRESS": ""})
    done = subprocess.run(
        [sys.executable, str(script)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return pd.read_parquet(tmp_path / "out" / "predictions").set_index("path")


def test_the_job_is_plain_python_for_every_lesson():
    for entry in lessons.entries():
        script = export_job.job_script(entry.path, {"pretrained": False})
        assert "write_parquet(" in script and "map_batches(" in script, entry.notebook
        assert "\npretrained = False\n" in script


def test_parameters_are_read_as_papermill_reads_them():
    assert export_job.parameter_value("False") is False
    assert export_job.parameter_value("12") == 12
    assert export_job.parameter_value("sample") == "sample"
    assert export_job.parameter_value("None") is None


@pytest.mark.long  # a Ray and a model each, 20-40 s: make test keeps under 10 minutes
@pytest.mark.parametrize("notebook", ["01", "02", "03"])
def test_the_job_runs_outside_jupyter_with_a_row_per_file(notebook, tmp_path, sample_photos):
    good, bad = photos_and_broken_files(tmp_path / "my photos", sample_photos)
    table = run_job(notebook, tmp_path, str(tmp_path / "my photos"))
    assert sorted(table.index) == sorted([*good, *bad])  # one row per image file, no other
    for path, reason in bad.items():
        assert reason in table.loc[path, "error"], table.loc[path]
    assert table.loc[good, "error"].isna().all()
    assert table["model_call"].nunique() > 1  # batches of 4: several calls
