"""The report of a ``make run`` / ``make smoke``: one row per notebook, failures included."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from nbhelpers import lessons
from tools import papermill_runner, run_notebooks
from tools.report import NotebookReport, describe_device, quality, write_index

SUMMARY = {
    "num_images_in": 40,
    "num_predicted": 39,
    "num_failed": 1,
    "images_per_second": 12.345,
    "accuracy": None,
    "mean_average_precision": {"map": 0.4123, "map_50": 0.7},
    "resources": {"device": "cuda", "actors": 4, "cpus": 32.0, "gpus": 4.0, "nodes": 2},
}


def test_index_lists_every_notebook_and_says_which_failed(tmp_path):
    good = NotebookReport(
        "03_fasterrcnn_detection",
        tmp_path / "03_fasterrcnn_detection",
        tmp_path / "03_fasterrcnn_detection" / "03_fasterrcnn_detection.ipynb",
        seconds=95.2,
        summary=SUMMARY,
        html=tmp_path / "03_fasterrcnn_detection" / "03_fasterrcnn_detection.html",
    )
    failed = NotebookReport(
        "01_resnet_classification",
        tmp_path / "01_resnet_classification",
        tmp_path / "01_resnet_classification" / "01_resnet_classification.ipynb",
        seconds=12.0,
        error="ran past 60s and was stopped",
    )
    markdown = write_index([good, failed], tmp_path, "Notebook run").read_text()
    rows = [line for line in markdown.splitlines() if line.startswith("| [") or "| 01_" in line]
    assert len(rows) == 2
    assert "| ok | 40 | 39 | 1 | 12.35 | mAP 0.412 (mAP@0.5 0.700) | 95 s |" in rows[0]
    assert "cuda: 4 actors, 32 CPUs, 4 GPUs on 2 nodes" in rows[0]
    assert "| failed |" in rows[1] and "ran past 60s" in markdown
    page = (tmp_path / "index.html").read_text()
    assert (
        'class="failed"' in page and "03_fasterrcnn_detection/03_fasterrcnn_detection.html" in page
    )


def test_quality_and_device_texts():
    assert quality({"accuracy": 0.875}) == "accuracy 87.5%"
    assert quality({"accuracy": None, "mean_average_precision": None}) == "no labels"
    assert quality({}) == ""
    assert describe_device({"device": "cpu", "actors": 1, "cpus": 2.0, "gpus": 0.0}) == (
        "cpu: 1 actor, 2 CPUs"
    )


def test_a_failing_notebook_makes_the_job_fail_but_the_others_still_run(tmp_path, monkeypatch):
    ran = []

    def fake_execute(notebook: Path, output_root: Path, parameters, timeout_s, *limits):
        ran.append(notebook.stem)
        error = "stopped with an error" if notebook.stem.startswith("01") else None
        folder = output_root / notebook.stem
        summary = None if error else SUMMARY
        return NotebookReport(notebook.stem, folder, folder / "x.ipynb", 1.0, error, summary)

    monkeypatch.setattr(run_notebooks, "execute", fake_execute)
    assert run_notebooks.main(["--smoke", "--output-root", str(tmp_path)]) == 1
    assert ran == [entry.notebook for entry in lessons.NOTEBOOKS]
    rows = [line for line in (tmp_path / "index.md").read_text().splitlines() if "_" in line]
    statuses = [line.split("|")[2].strip() for line in rows if line.startswith("|")]
    assert statuses == ["failed"] + ["ok"] * (len(lessons.NOTEBOOKS) - 1)


@pytest.mark.notebook
def test_make_smoke_runs_a_notebook_and_leaves_a_report(tmp_path):
    """What ``make smoke NB=01`` runs, for real: papermill, Ray, the report pages."""
    from tests.conftest import run_smoke_job

    root = run_smoke_job("01", tmp_path / "smoke", num_images=1)  # one image: the sweep's smallest
    folder = root / "01_resnet_classification"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["num_images_in"] == summary["num_predicted"] == 1
    assert len(pd.read_parquet(folder / "predictions")) == summary["num_images_in"]
    assert (folder / "01_resnet_classification.html").stat().st_size > 10_000  # plots embedded
    index = (root / "index.md").read_text()
    assert "01_resnet_classification" in index and "| ok |" in index.replace("  ", " ")
    assert (root / "index.html").is_file()


@pytest.mark.notebook
@pytest.mark.long
def test_a_failed_job_says_why_in_one_place(tmp_path):
    """What ``make run NB=01`` prints when the data is missing: the notebook's error, in a line.

    The notebook has started Ray when its source cell fails, so its kernel is stopped
    with a local Ray running: no stack trace of Ray's on the terminal, no papermill
    traceback either (it is in the executed copy).
    """
    command = [sys.executable, "-m", "tools.run_notebooks", "--only", "01"]
    command += ["--output-root", str(tmp_path), "-p", "data_uri", "/nonexistent"]
    process = subprocess.Popen(
        command,
        cwd=papermill_runner.PROJECT_ROOT,
        env=papermill_runner.environment({"RAY_ADDRESS": ""}),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        terminal, _ = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        papermill_runner.stop_process_tree(process.pid)
        process.communicate()
        raise AssertionError("the job for 01 did not finish") from None
    assert process.returncode == 1, terminal[-6000:]
    finished = [line for line in terminal.splitlines() if line.startswith("<== ")]
    assert len(finished) == 1 and ": failed in " in finished[0], terminal[-6000:]
    assert "DataSourceError: " in finished[0] and "/nonexistent" in finished[0]
    assert "(cell In [" in finished[0] and "of 01_resnet_classification.ipynb)" in finished[0]
    assert "SIGTERM received" not in terminal and "Traceback" not in terminal, terminal[-6000:]
    failure = [
        line for line in (tmp_path / "index.md").read_text().splitlines() if "failed:**" in line
    ]
    assert failure == [f"**01_resnet_classification failed:** {finished[0].split('; ', 1)[1]}"]
