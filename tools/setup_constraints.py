"""The constraints ``make setup`` installs with: ``constraints.txt``, or it minus torch.

An environment that already has a torch within ``pyproject.toml``'s range (a GPU image's
CUDA build, a JupyterHub's, a conda environment's) keeps it, and its torchvision when that
fits too: replacing them with the locked CUDA build could need a newer GPU driver. Every
other package gets its locked version. Run with the environment's own Python, before the
project is installed (only the standard library and pip are needed)::

    python -m tools.setup_constraints --previous .venv/.ready > .venv/.ready.constraints

The lines written start with a comment that says which torch was chosen; ``make setup``
copies them into its ready marker (``--previous``), so that a torch that an earlier
``make setup`` installed from the lock is not taken for the machine's own next time.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
from pathlib import Path

try:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import Version
except ImportError:  # a new environment: pip carries packaging
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.utils import canonicalize_name
    from pip._vendor.packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    from pip._vendor import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
KEPT = ("torch", "torchvision")
FROM_LOCK = "# torch {version}: from constraints.txt"
"""The first line when the lock's torch is installed (read back through ``--previous``)."""


def project_ranges() -> dict[str, Requirement]:
    """pyproject.toml's requirements for torch and torchvision, by name."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(text) for text in project["dependencies"]]
    return {r.name: r for r in requirements if r.name in KEPT}


def installed(name: str) -> str | None:
    """The version of ``name`` installed in this environment, or ``None``."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _pin_name(line: str) -> str | None:
    text = line.split("#", 1)[0].strip()
    return canonicalize_name(Requirement(text).name) if text else None


def _requirements_of(names: list[str]) -> list[Requirement]:
    """What the installed ``names`` need, and what that needs, as installed (markers applied)."""
    seen, found, todo = set(), [], list(names)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            texts = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for text in texts:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                found.append(requirement)
                todo.append(requirement.name)
    return found


def plan(lock_lines: list[str], previous: str = "", keep: bool = True) -> tuple[list[str], str]:
    """The constraint lines to install with, and a sentence that says what was chosen."""
    pins = {_pin_name(line): line for line in lock_lines if _pin_name(line)}
    locked = str(Requirement(pins["torch"]).specifier).removeprefix("==")
    torch = installed("torch")
    ranges = project_ranges()
    lock = (
        [FROM_LOCK.format(version=locked), *lock_lines],
        f"torch {locked} and torchvision from constraints.txt.",
    )
    if torch is None or torch == locked or previous.startswith(FROM_LOCK.format(version=torch)):
        return lock  # none yet, the lock's own, or what an earlier make setup installed
    if not keep:
        return lock[0], f"KEEP_TORCH=0: torch {torch} is replaced by the locked {locked}."
    if not ranges["torch"].specifier.contains(Version(torch), prereleases=True):
        return lock[0], (
            f"torch {torch} is installed, outside pyproject.toml's {ranges['torch']}: it is "
            f"replaced by constraints.txt's torch {locked}."
        )
    kept = {"torch": torch}
    vision = installed("torchvision")
    if vision and ranges["torchvision"].specifier.contains(Version(vision), prereleases=True):
        kept["torchvision"] = vision
    # The lock's pins that the kept packages' own requirements rule out (a CUDA 12 build's
    # nvidia-* libraries) are left to pip, which then keeps what is installed.
    conflicts = {
        canonicalize_name(r.name)
        for r in _requirements_of(list(kept))
        if canonicalize_name(r.name) in pins
        and not r.specifier.contains(
            str(Requirement(pins[canonicalize_name(r.name)]).specifier).removeprefix("=="),
            prereleases=True,
        )
    }
    dropped = set(KEPT) | conflicts
    lines = [line for line in lock_lines if _pin_name(line) not in dropped]
    lines += [f"{name}=={version}" for name, version in kept.items()]
    shown = " and ".join(f"{name} {version}" for name, version in kept.items())
    message = (
        f"Keeping {shown}, already installed in {sys.prefix} (within pyproject.toml's "
        f"{', '.join(str(ranges[n]) for n in kept)})"
    )
    if "torchvision" not in kept:
        message += ", with the torchvision built for it"
    message += "; constraints.txt sets every other version. KEEP_TORCH=0 installs the locked"
    message += f" torch {locked} instead."
    if conflicts:
        message += f" Left to pip for that torch: {', '.join(sorted(conflicts))}."
    return [f"# torch {torch}: kept, {message}", *lines], message


def main(argv: list[str] | None = None) -> int:
    """Print the constraints to install with; tell on stderr which torch was chosen."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--constraints", type=Path, default=ROOT / "constraints.txt")
    parser.add_argument("--previous", type=Path, help="the ready marker of an earlier setup")
    parser.add_argument("--no-keep", action="store_true", help="the lock's torch, always")
    args = parser.parse_args(argv)
    previous = args.previous.read_text() if args.previous and args.previous.exists() else ""
    lines, message = plan(args.constraints.read_text().splitlines(), previous, not args.no_keep)
    print(message, file=sys.stderr)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
