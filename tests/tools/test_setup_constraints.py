"""``make setup`` keeps a torch the environment already has, within pyproject.toml's ranges."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tools import setup_constraints

ROOT = Path(__file__).resolve().parents[2]
LOCK = (ROOT / "constraints.txt").read_text().splitlines()
OTHER_TORCH = "2.13.0"
"""A torch within the range but not the lock's: a CPU build this machine installs from disk."""


def _pins(lines: list[str]) -> dict[str, str]:
    found = {}
    for line in lines:
        text = line.split("#", 1)[0].strip()
        if text:
            requirement = Requirement(text)
            found[requirement.name] = str(requirement.specifier)
    return found


@pytest.fixture(scope="module")
def env_with_its_own_torch(tmp_path_factory) -> Path:
    """A new virtual environment with only pip and torch 2.13.0 (about 25 s)."""
    folder = tmp_path_factory.mktemp("own-torch") / "env"
    venv.create(folder, with_pip=True)
    python = folder / "bin" / "python"
    command = [python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile"]
    subprocess.run([*command, f"torch=={OTHER_TORCH}"], check=True, timeout=300)
    return folder


def _setup_commands(env: Path) -> list[str]:
    """The commands ``make setup`` runs in the active environment ``env`` (``make -n``)."""
    result = subprocess.run(
        ["make", "-n", "setup", "USE_ACTIVE_ENV=1", f"VIRTUAL_ENV={env}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={k: v for k, v in os.environ.items() if k != "CONDA_DEFAULT_ENV"},
    )
    return result.stdout.splitlines()


def test_make_setup_keeps_the_environments_torch_and_locks_the_rest(env_with_its_own_torch):
    env = env_with_its_own_torch
    python = env / "bin" / "python"
    commands = _setup_commands(env)
    planner = next(c for c in commands if "-m tools.setup_constraints" in c)
    install = next(c for c in commands if "pip install" in c and ".constraints" in c)
    assert planner.startswith(f"{python} ") and install.startswith(f"{python} ")
    # The Makefile's own planning command, run as make runs it.
    result = subprocess.run(planner, shell=True, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    print(result.stderr)
    assert f"Keeping torch {OTHER_TORCH}+cpu, already installed in {env}" in result.stderr
    constraints = Path(planner.rsplit(">", 1)[1].strip()).read_text().splitlines()
    assert constraints[0].startswith(f"# torch {OTHER_TORCH}+cpu: kept")
    planned, locked = _pins(constraints), _pins(LOCK)
    assert planned.pop("torch") == f"=={OTHER_TORCH}+cpu" and locked.pop("torch") == "==2.14.1"
    assert "torchvision" not in planned, "pip picks the torchvision built for the kept torch"
    locked.pop("torchvision")
    assert planned == locked, "every other package keeps its locked version"

    # What pip then does with those constraints, for the packages that depend on torch
    # (a dry run against the package index: nothing is installed).
    def pip_plan(constraints_file: Path) -> dict[str, dict]:
        dependents = [r for r in setup_constraints.project_ranges().values()]
        dependents.append(Requirement("torchmetrics>=1.4"))
        report = subprocess.run(
            [python, "-m", "pip", "install", "--dry-run", "--quiet", "--report", "-"]
            + ["-c", str(constraints_file), *map(str, dependents)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert report.returncode == 0, report.stderr
        return {i["metadata"]["name"]: i["metadata"] for i in json.loads(report.stdout)["install"]}

    kept = pip_plan(Path(planner.rsplit(">", 1)[1].strip()))
    assert "torch" not in kept, f"pip would replace the environment's torch: {kept.get('torch')}"
    wanted = [Requirement(r) for r in kept["torchvision"]["requires_dist"]]
    torch_range = next(r.specifier for r in wanted if r.name == "torch")
    assert torch_range.contains(OTHER_TORCH) and not torch_range.contains("2.14.1"), torch_range
    version = [python, "-c", "import importlib.metadata as m; print(m.version('torch'))"]
    assert subprocess.check_output(version, text=True).strip() == f"{OTHER_TORCH}+cpu"


def test_the_lock_applies_without_torch_outside_the_range_or_when_the_lock_installed_it(
    monkeypatch,
):
    versions = {"torch": None, "torchvision": None}
    monkeypatch.setattr(setup_constraints, "installed", versions.get)
    lines, message = setup_constraints.plan(LOCK)
    assert lines[1:] == LOCK and "2.14.1" in message  # the locked torch, installed
    versions["torch"] = "2.9.1"
    lines, message = setup_constraints.plan(LOCK)
    assert lines[1:] == LOCK and "2.9.1" in message and "torch>=2.11" in message  # why not
    versions.update(torch="2.11.0+cu126", torchvision="0.26.0+cu126")
    lines, message = setup_constraints.plan(LOCK)
    assert _pins(lines)["torch"] == "==2.11.0+cu126"
    assert _pins(lines)["torchvision"] == "==0.26.0+cu126"
    assert "2.11.0+cu126" in message and "0.26.0+cu126" in message  # the ones kept
    assert setup_constraints.plan(LOCK, keep=False)[0][1:] == LOCK  # KEEP_TORCH=0
    # A torch that an earlier make setup installed from an older lock is not the machine's.
    previous = "# torch 2.11.0+cu126: from constraints.txt\n..."
    assert setup_constraints.plan(LOCK, previous=previous)[0][1:] == LOCK
    assert sys.prefix in message
