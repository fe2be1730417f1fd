"""The project's own files, as ``make setup`` and ``make lock`` read them: one dependency
list, locked versions, the same Python versions everywhere, a README whose links work."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from tools import doctor, lock

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


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
