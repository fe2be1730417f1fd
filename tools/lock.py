"""Write ``constraints.txt``, the exact versions ``make setup`` installs: ``make lock``.

``python -m tools.lock`` asks pip to resolve the project with its extras afresh,
as a new environment on this Python would get it today (a dry run: nothing is
installed or changed), and writes one ``name==version`` line per package. Then
``make setup`` installs exactly those and ``make test`` tells whether they work;
commit ``constraints.txt`` once it passes.

A release that does not support every Python the project supports (numpy 2.3
and later need 3.11, for instance) is pinned for the Pythons it supports only;
elsewhere pip picks the newest release that fits. Packages that only another
operating system needs are not pinned.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name

from nbhelpers.lessons import PROJECT_ROOT
from tools.doctor import PYTHON_VERSIONS

CONSTRAINTS = PROJECT_ROOT / "constraints.txt"
EXTRAS = "test,bench,browser"
PROJECT = "nbhelpers"
SUPPORTED_PYTHONS = tuple(
    f"3.{minor}" for minor in range(PYTHON_VERSIONS[0][1], PYTHON_VERSIONS[1][1] + 1)
)
"""Every Python version the project supports: ``("3.10", "3.11", "3.12", "3.13")``."""


def resolve(extras: str = EXTRAS) -> list[dict]:
    """The packages pip would install for ``-e .[extras]`` in a new environment.

    Each item is pip's installation report entry (``metadata`` holds ``name``,
    ``version`` and ``requires_python``). The project itself is left out.
    """
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed"]
    command += ["--quiet", "--report", "-", "-e", f".[{extras}]"]
    result = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"pip could not resolve the project:\n{result.stderr[-4000:]}")
    report = json.loads(result.stdout)
    return [
        item for item in report["install"] if canonicalize_name(item["metadata"]["name"]) != PROJECT
    ]


def python_marker(requires_python: str | None) -> str | None:
    """The environment marker for a release that supports only some of our Pythons.

    ``""`` when it supports all of them, ``None`` when it supports none, else for
    example ``'python_version >= "3.11"'``.
    """
    try:
        specifier = SpecifierSet(requires_python or "")
    except InvalidSpecifier:
        return ""  # an unreadable declaration: pin it everywhere, as pip would try to
    fits = [
        version
        for version in SUPPORTED_PYTHONS
        if specifier.contains(f"{version}.0") or specifier.contains(f"{version}.99")
    ]
    if not fits:
        return None
    conditions = []
    if fits[0] != SUPPORTED_PYTHONS[0]:
        conditions.append(f'python_version >= "{fits[0]}"')
    if fits[-1] != SUPPORTED_PYTHONS[-1]:
        conditions.append(f'python_version <= "{fits[-1]}"')
    return " and ".join(conditions)


def constraint_lines(packages: list[dict]) -> list[str]:
    """``name==version`` lines, with a Python marker where the release needs one, sorted."""
    lines = []
    for item in packages:
        metadata = item["metadata"]
        marker = python_marker(metadata.get("requires_python"))
        if marker is None:
            continue
        line = f"{canonicalize_name(metadata['name'])}=={metadata['version']}"
        lines.append(f"{line}; {marker}" if marker else line)
    return sorted(lines)


def header() -> str:
    """The comment at the top of the constraints file: what it is and how it was made."""
    version = ".".join(platform.python_version_tuple()[:2])
    return (
        "# The exact versions `make setup` installs (pip install -c constraints.txt ...).\n"
        f"# Written by `make lock` (python -m tools.lock) with Python {version} on "
        f"{platform.system()} {platform.machine()}; do not edit by hand.\n"
        "# A marker limits a pin to the Pythons that release supports.\n"
    )


def main(argv: list[str] | None = None) -> int:
    """Resolve the project afresh and write ``constraints.txt``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=CONSTRAINTS)
    parser.add_argument("--extras", default=EXTRAS, help=f"default: {EXTRAS}")
    args = parser.parse_args(argv)
    lines = constraint_lines(resolve(args.extras))
    args.output.write_text(header() + "\n".join(lines) + "\n")
    print(f"Wrote {len(lines)} pins to {args.output}. Next: `make setup`, then `make test`.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
