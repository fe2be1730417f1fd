"""A notebook alone, in a Jupyter kernel without this project: its first cell installs the project.

The new environment gets, as a Colab or JupyterHub image has them, torch and torchvision, the
libraries the notebooks use and papermill with ipykernel: the very files of this project's
environment, hard-linked (a copy in seconds, where installing them again would take minutes
and the network). Only ``nbhelpers`` is missing; the notebook's first cell installs it from the
wheel ``make wheel`` builds, without a package index, and leaves torch as it was.

About two minutes on 2 cores (the notebook's run most of it): ``make test-kernel`` runs it,
``make test`` does not (it would pass 10 minutes); CI runs both.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import nbformat
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "01_resnet_classification.ipynb"
SITE = Path(sysconfig.get_paths()["purelib"])
LOCK = (ROOT / "constraints.txt").read_text().splitlines()


def _closure(requirements: list[str]) -> set[str]:
    """Every distribution that ``requirements`` need here, by canonical name."""
    seen: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        extras = set(requirement.extras)
        key = f"{name}[{','.join(sorted(extras))}]"
        if key in seen:
            continue
        seen.add(key)
        try:
            texts = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:  # optional, left out here
            seen.discard(key)
            continue
        for text in texts:
            needed = Requirement(text)
            markers = [{"extra": extra} for extra in extras | {""}]
            if needed.marker is None or any(needed.marker.evaluate(m) for m in markers):
                todo.append(needed)
    return {key.split("[")[0] for key in seen}


def _link_distribution(name: str, target: Path) -> None:
    """Hard-link an installed distribution's files (as its RECORD lists them) into ``target``."""
    files = importlib.metadata.distribution(name).files or []
    for file in files:
        source = (SITE / file).resolve()
        if not source.is_relative_to(SITE) or not source.is_file():
            continue  # console scripts in bin/, and files not kept
        destination = target / source.relative_to(SITE)
        destination.parent.mkdir(parents=True, exist_ok=True)
        if not destination.exists():
            os.link(source, destination)


@pytest.mark.notebook
@pytest.mark.fresh_kernel
def test_notebook_01_installs_the_project_in_a_new_kernel_and_runs_offline(tmp_path):
    wheels = tmp_path / "dist"
    subprocess.run(
        ["make", "--no-print-directory", "wheel", f"BIN={Path(sys.executable).parent}"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    built = sorted((ROOT / "dist").glob("nbhelpers-*.whl"))[-1]
    wheels.mkdir()
    (wheels / built.name).write_bytes(built.read_bytes())
    # `make setup` uninstalls rfc3987-syntax (see the Makefile), which jupyter-events' extra
    # asks for: a kernel without it gets it from the wheels too (the only download here).
    pin = next(line for line in LOCK if line.startswith("rfc3987-syntax=="))
    download = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest"]
    subprocess.run([*download, str(wheels), pin], check=True, timeout=120)

    env_dir = tmp_path / "kernel-env"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    target = Path(
        subprocess.check_output(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )
    project = importlib.metadata.metadata("nbhelpers").get_all("Requires-Dist")
    runtime = [r for r in project if "extra ==" not in r]
    # lark: what rfc3987-syntax (in the wheels, see above) needs.
    names = _closure([*runtime, "papermill", "ipykernel", "pip", "lark"]) - {"nbhelpers"}
    for name in sorted(names):
        _link_distribution(name, target)
    torch_init = target / "torch" / "__init__.py"
    torch_before = (torch_init.stat().st_ino, importlib.metadata.version("torch"))

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    notebook.cells = [c for c in notebook.cells if "solution" not in c.metadata.get("tags", [])]
    copy = tmp_path / NOTEBOOK.name  # the notebook file alone, away from the project
    nbformat.write(notebook, copy)
    executed, output_dir = tmp_path / "executed.ipynb", tmp_path / "out"
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    command = [python, "-m", "papermill", str(copy), str(executed), "-k", "python3"]
    for name, value in dict(
        pretrained=False, data_uri="sample", num_images=6, output_dir=str(output_dir)
    ).items():
        command += ["-p" if not isinstance(value, str) else "-r", name, str(value)]
    result = subprocess.run(
        command,
        cwd=tmp_path,
        env=clean | {"NBHELPERS_SOURCE": str(wheels), "HF_HUB_OFFLINE": "1", "PIP_NO_INDEX": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    cells = nbformat.read(executed, as_version=4).cells
    first = next(c for c in cells if "install" in c.metadata.get("tags", []))
    shown = "".join(o.get("text", "") for o in first.outputs)
    print("The first cell printed:\n" + shown)
    installed = subprocess.check_output(
        [
            python,
            "-c",
            "import importlib.metadata as m, nbhelpers; print(nbhelpers.__file__, m.version('torch'))",
        ],
        text=True,
        cwd=tmp_path,  # not the project's folder, whose nbhelpers/ would be found first
        env=clean,
    ).split()
    assert installed[0].startswith(str(target)), installed  # from the wheel, not the project
    assert (torch_init.stat().st_ino, installed[1]) == torch_before, "torch was replaced"
    summary = json.loads((output_dir / "summary.json").read_text())
    assert summary["num_images_in"] == 6
    assert summary["num_predicted"] + summary["num_failed"] == 6 and summary["num_predicted"] > 0
