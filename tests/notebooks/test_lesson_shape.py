"""Every lesson's shape, read from its notebook without running it: committed clean, one
parameters cell with the contract's names, the project's kernel, its catalog entry, and the job
in the notebook's own cells with few helpers, objectives and exercises."""

from __future__ import annotations

import re

import nbformat
import pytest

from nbhelpers import lessons
from tests.conftest import ROOT
from tools import doctor

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


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_kernel_is_the_one_make_setup_registers(path):
    kernelspec = nbformat.read(path, as_version=4).metadata.get("kernelspec", {})
    assert kernelspec.get("name") == doctor.KERNEL_NAME
    assert kernelspec.get("display_name") == "Python (batch inference)"
    makefile = (ROOT / "Makefile").read_text()
    assert f"KERNEL := {doctor.KERNEL_NAME}" in makefile
    assert "KERNEL_DISPLAY_NAME := Python (batch inference)" in makefile


ENTRIES = {entry.notebook: entry for entry in lessons.NOTEBOOKS}


def test_every_notebook_has_its_entry_in_the_catalog():
    assert sorted(ENTRIES) == sorted(path.stem for path in NOTEBOOKS)
    for entry in lessons.NOTEBOOKS:
        assert (ROOT / "nbhelpers" / f"{entry.model_module}.py").is_file(), entry


def helper_names(cells) -> set[str]:
    """The distinct ``module.name`` of nbhelpers that ``cells``' code uses."""
    modules: set[str] = set()
    names: set[str] = set()
    for cell in cells:
        for found in re.findall(r"from nbhelpers import (\([^)]*\)|[^\n]*)", cell.source):
            modules |= set(re.findall(r"\w+", found.split("#")[0]))  # not its comment
    for cell in cells:
        for module, name in re.findall(r"\b(\w+)\.(\w+)", cell.source):
            if module in modules:
                names.add(f"{module}.{name}")
    return names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_a_lesson_with_the_job_in_plain_sight(path):
    """The job sits in the notebook's own cells (the read function, the actor's whole
    ``__call__``, the Ray Data calls), short, with few helpers, objectives and exercises."""
    notebook = nbformat.read(path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    source = "\n".join(cell.source for cell in code)
    for call in ["map_batches(", "ActorPoolStrategy(", "write_parquet(", "read_predictions("]:
        assert call in source, f"{path.name}: no {call} in its code cells"
    pipeline = [cell for cell in code if "pipeline" in cell.metadata.get("tags", [])]
    job = "\n".join(cell.source for cell in pipeline)
    assert re.search(r"^def read_\w+\(batch", job, re.M), f"{path.name}: no read function"
    assert re.search(r"^class \w+:\n(.*\n)*?    def __call__\(self", job, re.M), path.name
    entry = ENTRIES[path.stem]
    assert entry.model_call in source and f"{entry.model_module}." in source
    assert f'data_uri = "{entry.dataset}"' in notebook.cells[2].source + source
    # Sizes as a sign of shape, not a budget: most cells short, none a wall of code.
    lines = {cell.source.splitlines()[0]: len(cell.source.splitlines()) for cell in code}
    assert max(lines.values()) <= 25, {first: n for first, n in lines.items() if n > 25}
    assert sum(n <= 15 for n in lines.values()) >= 0.75 * len(lines), lines
    install = [cell for cell in code if "install" in cell.metadata.get("tags", [])]
    assert code[0] in install, f"{path.name}: the first code cell installs what is missing"
    imports = next(cell for cell in code if "import" in cell.source and cell not in install)
    assert re.search(r"from nbhelpers import (.+)", imports.source)
    # A wrong output_dir stops in the set-up, before the model work.
    checked = next(
        i for i, cell in enumerate(code) if "destination.output_location(" in cell.source
    )
    assert checked < next(i for i, cell in enumerate(code) if "def read_" in cell.source)
    exercises = [i for i, cell in enumerate(notebook.cells) if re.match(r"\*\*\d\.", cell.source)]
    begin = next(i for i, cell in enumerate(notebook.cells) if "## Exercises" in cell.source)
    lesson = [cell for cell in notebook.cells[:begin] if cell.cell_type == "code"]
    assert len(helper_names(lesson)) <= 15, sorted(helper_names(lesson))
    solutions = [cell for cell in code if "solution" in cell.metadata.get("tags", [])]
    assert len(solutions) >= 2
    assert all(cell.metadata.get("jupyter", {}).get("source_hidden") for cell in solutions)
    # Each exercise's solution (its last cell, before the next exercise) ends with an answer.
    for first, after in zip(exercises, [*exercises[1:], len(notebook.cells)], strict=True):
        cells = notebook.cells[first:after]
        last = [cell for cell in cells if "solution" in cell.metadata.get("tags", [])][-1]
        assert "Answer:" in last.source, last.source[:80]
    text = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "markdown")
    assert "What you will learn" in text and "docs.ray.io" in text
    assert notebook.metadata.kernelspec.name == "batch-inference"
