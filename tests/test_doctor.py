"""``make doctor``: what a participant's machine needs, checked without network."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from nbhelpers import doctor

ROOT = Path(__file__).resolve().parent.parent


def test_doctor_passes_in_the_projects_environment():
    result = subprocess.run(
        [sys.executable, "-m", "nbhelpers.doctor"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {line.split("  ")[0].strip(): line for line in result.stdout.splitlines()}
    for check in ("Python", "package torch", "package ray", "Jupyter kernel", "Ray", "free disk"):
        assert check in rows and "  ok  " in rows[check], f"{check}: {rows.get(check)}"
    assert "CPUs" in rows["Ray"] and "GPUs" in rows["Ray"]
    assert "Ready" in result.stdout


def test_missing_or_wrong_packages_fail_with_the_fix():
    missing = doctor.check_package("no-such-package-for-the-doctor>=1")
    assert (missing.status, missing.detail) == (doctor.FAIL, "not installed")
    assert "make setup" in missing.fix
    wrong = doctor.check_package("torch==0.0.1")
    assert wrong.status == doctor.FAIL and "==0.0.1 needed" in wrong.detail
    extras = doctor.check_package("ray[data]==" + doctor.importlib.metadata.version("ray"))
    assert extras.status == doctor.OK


def test_wrong_python_and_unregistered_kernel_fail():
    assert doctor.check_python((3, 10, 4)).status == doctor.FAIL
    assert doctor.check_python((3, 11, 7)).status == doctor.OK
    kernel = doctor.check_kernel("no-such-kernel")
    assert kernel.status == doctor.FAIL and "ipykernel install" in kernel.fix


def test_exit_status_is_non_zero_when_something_required_is_missing(monkeypatch, capsys):
    requirements = doctor.required_packages() + ["no-such-package-for-the-doctor"]
    monkeypatch.setattr(doctor, "required_packages", lambda: requirements)
    assert doctor.main(["--skip-ray"]) == 1
    out = capsys.readouterr().out
    assert re.search(r"package no-such-package-for-the-doctor\s+FAIL\s+not installed", out)
    assert "1 required check(s) failed" in out


def test_cached_weights_and_datasets_are_found(monkeypatch, tmp_path):
    from nbhelpers import prefetch
    from nbhelpers.models import cached_weights_path

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv(prefetch.CACHE_ENV, str(tmp_path / "cache"))
    before = {c.name: c.status for c in doctor.check_cached_models()}
    assert before["weights ResNet152"] == doctor.WARN
    path = cached_weights_path(prefetch.torchvision_weights()[0])
    path.parent.mkdir(parents=True)
    path.write_bytes(b"weights")
    after = {c.name: c.status for c in doctor.check_cached_models()}
    assert after["weights ResNet152"] == doctor.OK
    assert after["weights FasterRCNN_ResNet50_FPN_V2"] == doctor.WARN

    uri = prefetch.default_datasets()[0]
    copy = prefetch.local_copy_path(uri)
    copy.mkdir(parents=True)
    prefetch.marker_path(copy).write_text('{"num_images": 3}')
    datasets = doctor.check_cached_datasets()
    assert datasets[0].status == doctor.OK and "3 images" in datasets[0].detail
    assert datasets[1].status == doctor.WARN and "make prefetch" in datasets[1].fix
