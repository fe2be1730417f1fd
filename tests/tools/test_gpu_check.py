"""The GPU check's model step, tried on CPU: it runs the notebooks' own functions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks import gpu_check

ROOT = Path(__file__).resolve().parents[2]


HIDE_UNTIL_INSTALLED = """
import importlib.abc, os, sys

class NotInstalledYet(importlib.abc.MetaPathFinder):
    # The modules in HIDE_MODULES cannot be found until importlib.invalidate_caches(), which
    # is what a process calls after pip installed something: as on a bare GPU machine.
    hidden = set(os.environ["HIDE_MODULES"].split(","))

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.hidden:
            raise ModuleNotFoundError(f"No module named {name!r} (not installed yet)", name=name)

    def invalidate_caches(self):
        if self in sys.meta_path:
            sys.meta_path.remove(self)

sys.meta_path.insert(0, NotInstalledYet())
"""


def test_on_a_bare_machine_the_check_installs_first_then_runs_the_notebooks_functions(tmp_path):
    # Every package the check brings as wheels is missing at the start (hidden from this
    # process until it installs): the check installs them before its first import of any.
    hider = tmp_path / "hider"
    hider.mkdir()
    (hider / "sitecustomize.py").write_text(HIDE_UNTIL_INSTALLED)
    modules = ",".join(gpu_check.GPU_PACKAGES.values())
    env = os.environ | {"PYTHONPATH": f"{hider}{os.pathsep}{ROOT}", "HIDE_MODULES": modules}
    wheels = tmp_path / "wheels"  # what is installed already is found; nothing is downloaded
    wheels.mkdir()
    command = [sys.executable, "-m", "benchmarks.gpu_check", "--steps", "models", "--allow-cpu"]
    command += ["--models", "resnet,detector", "--model-images", "4", "--batch-size", "2"]
    command += ["--wheels", str(wheels), "--out", str(out := tmp_path / "out")]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    first_line = result.stdout.splitlines()[0]
    assert first_line.startswith(f"Installing {', '.join(gpu_check.GPU_PACKAGES)} from {wheels}")
    found = json.loads((out / "models.json").read_text())
    resnet, detector = found["resnet"], found["detector"]
    assert "error" not in resnet and "error" not in detector, found
    assert resnet["dtype"] == detector["dtype"] == "float32"  # on CPU
    assert resnet["same_label_across_batch_sizes"] == 1.0
    assert resnet["max_score_difference_across_batch_sizes"] < 1e-3
    assert resnet["images_per_second_forward_only"] > 0 and resnet["images_per_second_classify"] > 0
    assert detector["parity_one_call_vs_one_photo_per_call"]["ok"]
    summary = (out / "summary.md").read_text()
    assert "| ResNet152 | images_per_second_classify |" in summary


def test_the_packages_brought_as_wheels_have_the_locked_versions():
    assert gpu_check.locked("ray[data]").startswith("ray[data]==2.")
    assert gpu_check.locked("papermill").startswith("papermill==")
