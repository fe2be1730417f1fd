"""Run the notebooks as papermill jobs: ``python -m nbhelpers.jobs [--smoke] [--only 01] [-p name value]``.

Each notebook is executed in a subprocess with an outer time limit (papermill
waits forever when a kernel dies), and its executed copy and results land in
``outputs/<notebook>/``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from nbhelpers.results import PROJECT_ROOT

NOTEBOOK_DIR = PROJECT_ROOT / "notebooks"
SMOKE_PARAMETERS = {"pretrained": "False", "data_uri": "sample", "num_images": "8"}
"""Offline parameters: seeded random weights, the bundled sample photos, a few images."""


def notebook_paths(only: str | None = None) -> list[Path]:
    """The project's notebooks, or those whose name contains ``only`` (``"01"``, ``"vit"``)."""
    paths = sorted(NOTEBOOK_DIR.glob("[0-9]*.ipynb"))
    if only:
        paths = [path for path in paths if only in path.stem]
        if not paths:
            raise SystemExit(f"No notebook matches {only!r} in {NOTEBOOK_DIR}.")
    return paths


def execute(notebook: Path, output_root: Path, parameters: dict[str, str], timeout_s: int) -> Path:
    """Execute one notebook with papermill; returns its output folder.

    Raises:
        RuntimeError: the notebook failed or ran past ``timeout_s``.
    """
    output_dir = output_root / notebook.stem
    output_dir.mkdir(parents=True, exist_ok=True)
    executed = output_dir / f"{notebook.stem}.ipynb"
    command = [sys.executable, "-m", "papermill", str(notebook), str(executed), "-k", "python3"]
    command += ["--cwd", str(NOTEBOOK_DIR), "-p", "output_dir", str(output_dir)]
    for name, value in parameters.items():
        command += ["-p", name, value]
    try:
        result = subprocess.run(
            command, timeout=timeout_s, env=os.environ | {"PYTHONUNBUFFERED": "1"}
        )
    except subprocess.TimeoutExpired as error:
        raise RuntimeError(f"{notebook.name} ran past {timeout_s}s and was stopped.") from error
    if result.returncode != 0:
        raise RuntimeError(f"{notebook.name} failed; see the executed copy {executed}.")
    return output_dir


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point used by ``make run`` and ``make smoke``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--smoke", action="store_true", help="offline: random weights, sample photos"
    )
    parser.add_argument("--only", help="run only the notebooks whose name contains this")
    parser.add_argument(
        "-p",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="papermill parameter, repeatable (None, True, False and numbers are typed)",
    )
    parser.add_argument("--output-root", type=Path, default=PROJECT_ROOT / "outputs")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per notebook")
    args = parser.parse_args(argv)
    parameters = dict(SMOKE_PARAMETERS) if args.smoke else {}
    parameters |= dict(args.p)
    failures = []
    for notebook in notebook_paths(args.only):
        start = time.perf_counter()
        print(f"==> {notebook.name} {parameters or '(default parameters)'}", flush=True)
        try:
            folder = execute(notebook, args.output_root, parameters, args.timeout)
            print(
                f"<== {notebook.name}: done in {time.perf_counter() - start:.0f}s, results in {folder}"
            )
        except RuntimeError as error:
            print(f"<== {error}", file=sys.stderr)
            failures.append(notebook.name)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
