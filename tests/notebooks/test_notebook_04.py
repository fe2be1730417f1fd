"""Notebook 04 (what makes the job fast), offline on CPU, its exercises included.

Its job is notebook 01's, copied cell for cell: a test keeps the copies equal. The run is
asserted on the values the notebook records in ``findings.json`` (its fake accelerator, the
read stage alone, the starved pool, the fused plan), not on its sentences.
About four minutes on 2 busy cores: ``make test-long``.
"""

from __future__ import annotations

import json

import pytest

from benchmarks import feed, pipelines
from tests.conftest import ROOT, execute_notebook

NAME = "04_what_makes_it_fast"
NOTEBOOK = ROOT / "notebooks" / f"{NAME}.ipynb"
ONE = ROOT / "notebooks" / "01_resnet_classification.ipynb"


def test_the_job_cells_are_notebook_01s_cells_verbatim():
    """Every pipeline cell but the imports is 01's, in 01's order; the imports cover 01's."""
    ours, theirs = pipelines.pipeline_cells(NOTEBOOK), pipelines.pipeline_cells(ONE)
    assert ours[1:] == theirs[1:], "notebook 04's job cells drifted from notebook 01's: copy them"
    imports = {
        line for line in theirs[0].splitlines() if "import" in line and "nbhelpers" not in line
    }
    assert imports <= set(ours[0].splitlines())


def test_the_fake_device_rate_is_the_benchmarks_stated_rate():
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    source = "\n".join("".join(cell["source"]) for cell in cells)
    assert f"RATE = {feed.RESNET152_IMAGES_PER_SECOND}" in source


@pytest.mark.notebook
@pytest.mark.long
def test_notebook_04_offline_with_its_exercises(tmp_path):
    run = execute_notebook(NAME, tmp_path, exercises=True, pretrained=False, data_uri="sample")
    findings = json.loads((tmp_path / "findings.json").read_text())
    assert findings["fake_device_images_per_second"] == feed.RESNET152_IMAGES_PER_SECOND
    assert findings["pipeline_images_per_second"] > 0
    assert findings["read_alone_images_per_second"] > 0
    assert findings["classify_cpu_part_images_per_second"] > 0
    # Ray was told this machine's CPUs and one GPU; the CPU run's model held the run.
    assert findings["ray_gpus"] == 1 and findings["ray_cpus"] >= 1
    assert findings["model_stage_share_at_work"] >= 0.9
    assert findings["starved_timeout"] is True
    assert findings["fused"] == {"without max_restarts": True, "with max_restarts=0": False}
    assert findings["object_store_fraction"] == 0.5
    # The contract every notebook keeps: 01's job wrote every row and its summary.
    assert run.summary["notebook"] == NAME and run.summary["num_images_in"] == 48
    assert run.summary["num_predicted"] + run.summary["num_failed"] == 48
    assert len(run.predictions) == 48
    text = run.executed.read_text()
    assert '"output_type": "error"' not in text
    printed = [
        "".join(output.get("text", ""))
        for cell in json.loads(text)["cells"]
        for output in cell.get("outputs", [])
    ]
    assert sum(chunk.count("Answer:") for chunk in printed) == 2  # both exercises answered
