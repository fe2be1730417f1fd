"""Project hygiene: clean notebooks, one dependency list, locked versions, one kernel name."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from nbhelpers import lessons
from tools import doctor, lock

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
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
    return canonicalize_name(Requirement(requirement).name)


def _pip_section(environment: dict) -> list[str]:
    return next(d["pip"] for d in environment["dependencies"] if isinstance(d, dict))


def test_environment_yml_matches_pyproject():
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = _pip_section(environment)
    listed = {r for r in pip_section if not r.startswith("-")}
    assert listed == set(PROJECT["dependencies"]), "environment.yml and pyproject.toml disagree"
    editable = [r for r in pip_section if r.startswith("-e .[")]
    assert len(editable) == 1, "environment.yml must install the project: -e .[...]"
    extras = set(editable[0].removeprefix("-e .[").rstrip("]").split(","))
    # Every extra but the browser test's, which `make test-browser` installs when it runs.
    wanted = set(PROJECT["optional-dependencies"]) - {"browser"}
    assert extras == wanted, "environment.yml: install every extra (but browser)"
    assert "-c constraints.txt" in pip_section, "environment.yml must use the locked versions"
    conda_python = next(d for d in environment["dependencies"] if str(d).startswith("python="))
    python = conda_python.split("=", 1)[1]
    assert python in lock.SUPPORTED_PYTHONS, f"environment.yml pins an unsupported {conda_python}"


def test_every_place_names_the_same_python_versions():
    """pyproject.toml, the doctor, the lock, the Makefile and the README: 3.10 to 3.13."""
    requires = SpecifierSet(PROJECT["requires-python"])
    accepted = tuple(f"3.{minor}" for minor in range(6, 20) if f"3.{minor}.0" in requires)
    assert accepted == lock.SUPPORTED_PYTHONS == ("3.10", "3.11", "3.12", "3.13")
    oldest, newest = (".".join(map(str, v)) for v in doctor.PYTHON_VERSIONS)
    assert (oldest, newest) == (accepted[0], accepted[-1])
    makefile = (ROOT / "Makefile").read_text()
    assert "(3, 10) <= v <= (3, 13)" in makefile and "SUPPORTED := 3.10 to 3.13" in makefile
    assert "Python 3.10 to 3.13" in (ROOT / "README.md").read_text()


def _constraints() -> dict[str, Requirement]:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    pins = [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]
    return {canonicalize_name(pin.name): pin for pin in pins}


def test_constraints_pin_every_declared_package_within_its_range():
    pins = _constraints()
    assert all(str(pin.specifier).startswith("==") for pin in pins.values())
    declared = list(PROJECT["dependencies"])
    declared += [r for extra in PROJECT["optional-dependencies"].values() for r in extra]
    for text in declared:
        requirement = Requirement(text)
        pin = pins.get(canonicalize_name(requirement.name))
        assert pin is not None, f"{requirement.name} is not in constraints.txt: run `make lock`"
        version = str(pin.specifier).removeprefix("==")
        assert requirement.specifier.contains(version, prereleases=True), (
            f"constraints.txt pins {pin}, outside pyproject.toml's {text}: run `make lock`"
        )
    assert "nbhelpers" not in pins, "the project itself is not a constraint"


def test_the_environment_has_exactly_the_locked_versions():
    """What `make setup` installed is what constraints.txt says (pins for this Python)."""
    wrong = []
    for name, pin in _constraints().items():
        if pin.marker is not None and not pin.marker.evaluate():
            continue
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # needed on another platform only (pip skips it here too)
        if not pin.specifier.contains(installed, prereleases=True):
            wrong.append(f"{name} {installed} (locked: {pin.specifier})")
    assert not wrong, "run `make setup`: " + ", ".join(wrong)


def test_pip_check_is_clean():
    result = subprocess.run(
        [sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_kernel_is_the_one_make_setup_registers(path):
    kernelspec = nbformat.read(path, as_version=4).metadata.get("kernelspec", {})
    assert kernelspec.get("name") == doctor.KERNEL_NAME
    assert kernelspec.get("display_name") == "Python (batch inference)"
    makefile = (ROOT / "Makefile").read_text()
    assert f"KERNEL := {doctor.KERNEL_NAME}" in makefile
    assert "KERNEL_DISPLAY_NAME := Python (batch inference)" in makefile


ENTRIES = {entry.notebook: entry for entry in lessons.NOTEBOOKS}


def test_no_warning_of_ray_is_hidden_by_the_package():
    """A warning that can be true (a pool that starves its read stage) must reach the learner:
    nbhelpers filters no log record, and no warning but PIL's about images it decodes reduced."""
    for module in sorted((ROOT / "nbhelpers").glob("*.py")):
        for line in module.read_text().splitlines():
            if any(hiding in line for hiding in ("filterwarnings(", "simplefilter(", "addFilter(")):
                assert "Image.DecompressionBombWarning" in line, f"{module.name}: {line.strip()}"


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
            modules |= set(re.findall(r"\w+", found))
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


def test_the_readme_is_short_and_every_page_it_links_exists():
    """The README is read in minutes; every relative link there and in docs/ points at a file."""
    readme = ROOT / "README.md"
    assert len(readme.read_text().splitlines()) < 120
    pages = [readme, *sorted((ROOT / "docs").glob("*.md"))]
    linked = set()
    for page in pages:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).is_file(), f"{page.name} links to missing {target}"
            linked.add((page.parent / target).resolve())
    assert {page.resolve() for page in pages[1:]} <= linked, "a page under docs/ nobody links"
