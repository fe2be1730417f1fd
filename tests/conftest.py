"""Shared fixtures: executing notebooks with papermill, and generated image folders."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
NOTEBOOK_TIMEOUT_S = int(os.environ.get("NOTEBOOK_TIMEOUT_S", "420"))


class NotebookRun:
    """What one papermill execution left behind."""

    def __init__(self, output_dir: Path, executed: Path):
        self.output_dir = output_dir
        self.executed = executed
        self.summary = json.loads((output_dir / "summary.json").read_text())
        self.predictions = pd.read_parquet(output_dir / "predictions.parquet")


def execute_notebook(
    name: str, output_dir: Path, env: dict | None = None, **parameters
) -> NotebookRun:
    """Run ``notebooks/<name>.ipynb`` through papermill in a subprocess with an outer timeout.

    The outer timeout matters: papermill waits forever when the kernel dies.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    executed = output_dir / f"{name}.executed.ipynb"
    command = [sys.executable, "-m", "papermill", str(NOTEBOOKS / f"{name}.ipynb"), str(executed)]
    command += ["-k", "python3", "--cwd", str(NOTEBOOKS), "--no-progress-bar"]
    parameters.setdefault("output_dir", str(output_dir))
    for key, value in parameters.items():
        command += ["-p", key, str(value)] if not isinstance(value, str) else ["-r", key, value]
    full_env = os.environ | {"RAY_ADDRESS": "", "PYTHONUNBUFFERED": "1"} | (env or {})
    full_env = {key: value for key, value in full_env.items() if value != ""}
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=NOTEBOOK_TIMEOUT_S, env=full_env
        )
    except subprocess.TimeoutExpired as error:
        subprocess.run(["ray", "stop", "--force"], capture_output=True)
        raise AssertionError(f"{name} did not finish in {NOTEBOOK_TIMEOUT_S}s") from error
    if result.returncode != 0:
        raise AssertionError(
            f"{name} failed (exit {result.returncode}):\n{result.stderr[-6000:]}\n{result.stdout[-2000:]}"
        )
    return NotebookRun(output_dir, executed)


@pytest.fixture(scope="session")
def run_notebook():
    """The :func:`execute_notebook` function, for tests that run notebooks."""
    return execute_notebook


@pytest.fixture(scope="session")
def sample_photos() -> list[Path]:
    """The real photos bundled with scikit-image and matplotlib."""
    from nbhelpers.sources import sample_photo_paths

    return [Path(p) for p in sample_photo_paths()]


@pytest.fixture(scope="session")
def imagenette_folder(tmp_path_factory, sample_photos) -> Path:
    """A small labelled folder in Imagenette's layout: ``<synset>/<name>.JPEG``."""
    from PIL import Image

    from nbhelpers.labels import IMAGENETTE_SYNSETS

    root = tmp_path_factory.mktemp("imagenette") / "val"
    synsets = list(IMAGENETTE_SYNSETS)
    for i, photo in enumerate(sample_photos[:8]):
        folder = root / synsets[i % 3]
        folder.mkdir(parents=True, exist_ok=True)
        Image.open(photo).convert("RGB").save(folder / f"{synsets[i % 3]}_{i:05d}.JPEG", quality=90)
    return root


def copy_tree(source: Path, target: Path) -> Path:
    """Copy a generated folder (tests that change it keep the shared fixture intact)."""
    shutil.copytree(source, target)
    return target
