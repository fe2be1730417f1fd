"""Project hygiene: clean notebooks, one dependency list, parameters as DESIGN.md says."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CONTRACT_PARAMETERS = {
    "data_uri",
    "num_images",
    "batch_size",
    "num_actors",
    "pretrained",
    "output_dir",
}


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert not cell.outputs, f"{path.name}: a cell has outputs; clear them"
            assert cell.execution_count is None, f"{path.name}: execution counts must be reset"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_has_one_parameters_cell_with_the_contract_names(path):
    notebook = nbformat.read(path, as_version=4)
    tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: expected exactly one cell tagged 'parameters'"
    names = set(re.findall(r"^(\w+)\s*=", tagged[0].source, flags=re.M))
    assert CONTRACT_PARAMETERS <= names, f"{path.name}: missing {CONTRACT_PARAMETERS - names}"


def _requirement_name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ]", requirement, maxsplit=1)[0].lower()


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in environment["dependencies"] if isinstance(d, dict))
    conda_pins = [d for d in environment["dependencies"] if isinstance(d, str)]
    assert "python=3.11" in conda_pins
    listed = {r for r in pip_section if not r.startswith("-e")}
    assert listed == set(project["dependencies"]), "environment.yml and pyproject.toml disagree"
    assert any(r.startswith("-e .[test]") for r in pip_section)
