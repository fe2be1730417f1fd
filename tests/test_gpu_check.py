"""The GPU check's model step, tried on CPU: it runs the notebooks' own functions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks import gpu_check

ROOT = Path(__file__).resolve().parent.parent


def test_the_model_checks_run_the_notebooks_functions_and_record_figures(tmp_path):
    command = [sys.executable, "-m", "benchmarks.gpu_check", "--steps", "models", "--allow-cpu"]
    command += ["--models", "resnet,detector", "--model-images", "4", "--batch-size", "2"]
    result = subprocess.run(
        command + ["--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads((tmp_path / "models.json").read_text())
    resnet, detector = found["resnet"], found["detector"]
    assert "error" not in resnet and "error" not in detector, found
    assert resnet["dtype"] == detector["dtype"] == "float32"  # on CPU
    assert resnet["same_label_across_batch_sizes"] == 1.0
    assert resnet["max_score_difference_across_batch_sizes"] < 1e-3
    assert resnet["images_per_second_forward_only"] > 0 and resnet["images_per_second_classify"] > 0
    assert detector["parity_one_call_vs_one_photo_per_call"]["ok"]
    summary = (tmp_path / "summary.md").read_text()
    assert "| ResNet152 | images_per_second_classify |" in summary


def test_the_packages_brought_as_wheels_have_the_locked_versions():
    assert gpu_check.locked("ray[data]").startswith("ray[data]==2.")
    assert gpu_check.locked("papermill").startswith("papermill==")
