"""Print the structure of the ``nbhelpers`` package from its own imports: each module, its lines,
the floor it sits on (1: imports no other module of the package; n: imports one on floor n - 1)
and the modules it imports.

    python -m tools.structure                       # this checkout's package
    python -m tools.structure --package DIR         # another copy (an older commit's worktree)

It fails (exit 1) where a module imports one of the package's modules in a circle.
"""

from __future__ import annotations

import argparse
import ast
import sys
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "nbhelpers"


def package_imports(package: Path) -> dict[str, set[str]]:
    """For each module of ``package`` (``__init__`` left out), the package's modules it imports."""
    modules = {path.stem for path in package.glob("*.py")} - {"__init__"}
    imports: dict[str, set[str]] = {}
    for name in sorted(modules):
        tree = ast.parse((package / f"{name}.py").read_text())
        found: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                parts = node.module.split(".")
                if parts[0] == package.name and len(parts) > 1:
                    found.add(parts[1])
                elif node.module == package.name:
                    found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    parts = alias.name.split(".")
                    if parts[0] == package.name and len(parts) > 1:
                        found.add(parts[1])
        imports[name] = (found & modules) - {name}
    return imports


def floors(imports: dict[str, set[str]]) -> dict[str, int]:
    """The floor of each module: 1 + the highest floor among those it imports."""

    @cache
    def floor(name: str, seen: tuple[str, ...] = ()) -> int:
        if name in seen:
            raise ValueError(f"Import circle: {' -> '.join((*seen, name))}")
        below = [floor(other, (*seen, name)) for other in imports[name]]
        return 1 + max(below, default=0)

    return {name: floor(name) for name in imports}


def main(argv: list[str] | None = None) -> int:
    """Print the table; exit 1 on an import circle."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", type=Path, default=PACKAGE, help="the package's folder")
    args = parser.parse_args(argv)
    imports = package_imports(args.package)
    try:
        levels = floors(imports)
    except ValueError as error:
        print(error, file=sys.stderr)
        return 1
    lines = {name: len((args.package / f"{name}.py").read_text().splitlines()) for name in imports}
    print(f"{'module':<14}{'lines':>6}{'floor':>7}  imports")
    for name in sorted(imports, key=lambda n: (-levels[n], n)):
        print(f"{name:<14}{lines[name]:>6}{levels[name]:>7}  {', '.join(sorted(imports[name]))}")
    arrows = sum(len(found) for found in imports.values())
    print(
        f"{len(imports)} modules, {sum(lines.values())} lines, {max(levels.values())} floors, "
        f"{arrows} imports between them"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
