"""``make doctor``: what a participant's machine needs, checked without network."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from nbhelpers import lessons
from nbhelpers.lessons import CACHE_ENV, local_copy_path, marker_path
from tools import doctor

ROOT = Path(__file__).resolve().parents[2]


def run_doctor(env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m tools.doctor`` from the project's root, its output captured."""
    command = [sys.executable, "-m", "tools.doctor"]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=ROOT, env=env)


def test_doctor_passes_in_the_projects_environment():
    result = run_doctor()
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {line.split("  ")[0].strip(): line for line in result.stdout.splitlines()}
    for check in ("Python", "package torch", "package ray", "Jupyter kernel", "Ray", "free disk"):
        assert check in rows and "  ok  " in rows[check], f"{check}: {rows.get(check)}"
    assert "CPUs" in rows["Ray"] and "GPUs" in rows["Ray"]


def test_missing_or_wrong_packages_fail_with_the_fix():
    missing = doctor.check_package("no-such-package-for-the-doctor>=1")
    assert (missing.status, missing.detail) == (doctor.FAIL, "not installed")
    assert "make setup" in missing.fix
    wrong = doctor.check_package("torch==0.0.1")
    assert wrong.status == doctor.FAIL and "==0.0.1 needed" in wrong.detail
    extras = doctor.check_package("ray[data]==" + doctor.importlib.metadata.version("ray"))
    assert extras.status == doctor.OK


def test_python_versions_outside_3_10_to_3_13_fail():
    for version in ((3, 10, 4), (3, 11, 7), (3, 12, 1), (3, 13, 0)):
        assert doctor.check_python(version).status == doctor.OK, version
    for version in ((3, 9, 18), (3, 14, 0), (2, 7, 18)):
        check = doctor.check_python(version)
        assert check.status == doctor.FAIL and "3.10 to 3.13" in check.detail, version
        assert "make setup PYTHON=" in check.fix


def test_unregistered_kernel_fails():
    kernel = doctor.check_kernel("no-such-kernel")
    assert kernel.status == doctor.FAIL and "ipykernel install" in kernel.fix


def test_a_kernel_that_starts_another_python_is_reported(monkeypatch, tmp_path):
    """A kernel of the project's name found first (here through JUPYTER_PATH) runs elsewhere."""
    folder = tmp_path / "kernels" / doctor.KERNEL_NAME
    folder.mkdir(parents=True)
    argv = ["/opt/elsewhere/bin/python", "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    spec = {"argv": argv, "display_name": "Python (batch inference)", "language": "python"}
    (folder / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    kernel = doctor.check_kernel()
    assert kernel.status == doctor.WARN, kernel
    assert "/opt/elsewhere/bin/python" in kernel.detail and "make setup" in kernel.fix


def test_exit_status_is_non_zero_when_something_required_is_missing(monkeypatch, capsys):
    requirements = doctor.required_packages() + ["no-such-package-for-the-doctor"]
    monkeypatch.setattr(doctor, "required_packages", lambda: requirements)
    assert doctor.main(["--skip-ray"]) == 1
    out = capsys.readouterr().out
    assert re.search(r"package no-such-package-for-the-doctor\s+FAIL\s+not installed", out)
    assert len(re.findall(r"\sFAIL\s", out)) == 1  # that one row, and no other


def test_cached_weights_and_datasets_are_found(monkeypatch, tmp_path):
    from torchvision.models import get_weight

    from nbhelpers.models import cached_weights_path

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    before = {c.name: c.status for c in doctor.check_cached_models()}
    assert before["weights ResNet152"] == doctor.WARN
    path = cached_weights_path(get_weight(lessons.torchvision_weights()[0]))
    path.parent.mkdir(parents=True)
    path.write_bytes(b"weights")
    after = {c.name: c.status for c in doctor.check_cached_models()}
    assert after["weights ResNet152"] == doctor.OK
    assert after["weights FasterRCNN_ResNet50_FPN_V2"] == doctor.WARN

    uri = lessons.datasets()[0]
    copy = local_copy_path(uri)
    copy.mkdir(parents=True)
    marker_path(copy).write_text('{"num_images": 3}')
    datasets = doctor.check_cached_datasets()
    assert datasets[0].status == doctor.OK and "3 images" in datasets[0].detail
    assert datasets[1].status == doctor.WARN and "make prefetch" in datasets[1].fix


def test_a_gpu_cluster_at_ray_address_is_reported_with_where_each_part_runs(monkeypatch):
    """A notebook process without a GPU, joined to a cluster with GPUs (a CPU-only head)."""
    monkeypatch.setenv("RAY_ADDRESS", "head-node:6379")
    check = doctor.check_torch_gpus(cluster_gpus=4)
    assert check.status == doctor.OK
    assert "RAY_ADDRESS" in check.detail and "4" in check.detail  # where the GPUs are, how many
    monkeypatch.delenv("RAY_ADDRESS")
    alone = doctor.check_torch_gpus(cluster_gpus=4)
    assert alone.status == doctor.OK and "RAY_ADDRESS" not in alone.detail


def test_gpus_that_ray_counts_but_torch_cannot_use_fail_with_what_to_install():
    """A Ray told of one GPU (as NVML would count a GPU that this CPU build of torch cannot
    use): the doctor joins it, asks torch in a one-GPU task, and says what to install."""
    import ray
    import torch

    if torch.cuda.is_available():
        pytest.skip("this check needs a torch that cannot use CUDA")
    ray.init(num_cpus=1, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        address = ray.get_runtime_context().gcs_address
        result = run_doctor(env={**doctor.os.environ, "RAY_ADDRESS": address})
    finally:
        ray.shutdown()
    print(result.stdout)
    assert result.returncode == 1, result.stdout + result.stderr
    rows = {line.split("  ")[0].strip(): line for line in result.stdout.splitlines()}
    assert re.search(r"\s1 GPUs", rows["Ray"]), rows["Ray"]
    gpus = rows["GPUs (torch)"]
    assert (
        "  FAIL  " in gpus and f"torch {torch.__version__} (CUDA {torch.version.cuda})" in gpus
    ), gpus
    assert "pytorch.org" in rows["GPUs (torch)"] + result.stdout  # where to get a CUDA build
    assert len(re.findall(r"\sFAIL\s", result.stdout)) == 1  # that row alone
