"""Run the notebooks with papermill: ``python -m tools.run_notebooks [--smoke] [--only 01] [-p name value]``.

Each notebook is executed by :func:`tools.papermill_runner.execute_notebook`, with
an outer time limit. A run leaves everything in one folder, ``outputs/run/``
(``make run``) or ``outputs/smoke/`` (``make smoke``), replaced by the next run of
the same kind: per notebook its executed copy, an HTML rendering,
``predictions/`` and ``summary.json``; and ``index.md`` and ``index.html``
with one row per notebook (see :mod:`tools.report`).
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

from nbhelpers import lessons
from nbhelpers.lessons import OUTPUT_ROOT
from tools.papermill_runner import CELL_TIMEOUT_S, execute_notebook
from tools.report import NotebookReport, read_summary, render_html, write_index

SMOKE_PARAMETERS = {"pretrained": False, "data_uri": "sample", "num_images": 8}
"""Offline parameters: seeded random weights, the bundled sample photos, a few images."""


def notebook_paths(only: str | None = None) -> list[Path]:
    """The catalog's notebooks, or those whose name contains ``only`` (``"01"``, ``"vit"``)."""
    paths = [entry.path for entry in lessons.entries(only)]
    if not paths:
        names = ", ".join(entry.notebook for entry in lessons.NOTEBOOKS)
        raise SystemExit(f"No notebook of the catalog matches {only!r}: {names}.")
    return paths


def parameter_value(text: str) -> object:
    """A command-line value as the notebook should see it: ``8``, ``None``, ``True``, or text."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def execute(
    notebook: Path,
    output_root: Path,
    parameters: dict[str, object],
    timeout_s: int,
    skip_solutions: bool = False,
    cell_timeout_s: int | None = CELL_TIMEOUT_S,
) -> NotebookReport:
    """Execute one notebook into ``<output_root>/<name>/``, render it as HTML, read its summary.

    A failure (an error in a cell, more than ``cell_timeout_s`` seconds in one cell, or
    more than ``timeout_s`` in all) is recorded in the report rather than raised, so that
    the other notebooks still run.
    """
    output_dir = output_root / notebook.stem
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "summary.json").unlink(missing_ok=True)  # never report a previous run's
    run = execute_notebook(
        notebook,
        output_dir,
        parameters,
        timeout_s=timeout_s,
        capture_output=False,
        skip_solutions=skip_solutions,
        cell_timeout_s=cell_timeout_s,
    )
    page = None
    if run.executed.is_file():
        try:
            page = render_html(run.executed)
        except Exception as problem:  # noqa: BLE001 - a missing page must not hide the results
            print(f"    (no HTML page for {run.executed.name}: {problem})", file=sys.stderr)
    return NotebookReport(
        notebook.stem,
        output_dir,
        run.executed,
        run.seconds,
        run.error,
        read_summary(output_dir),
        page,
    )


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
        help="notebook parameter, repeatable (None, True, False and numbers are typed)",
    )
    parser.add_argument(
        "--output-root",
        type=Path,
        help="where the run goes (default: outputs/run, or outputs/smoke with --smoke)",
    )
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per notebook")
    parser.add_argument(
        "--cell-timeout",
        type=int,
        default=CELL_TIMEOUT_S,
        help=f"seconds per cell, papermill's execution_timeout (default {CELL_TIMEOUT_S}; 0: none)",
    )
    parser.add_argument(
        "--skip-solutions",
        action="store_true",
        help="leave out the exercises' solution cells: a job that needs only the results",
    )
    args = parser.parse_args(argv)
    parameters = dict(SMOKE_PARAMETERS) if args.smoke else {}
    parameters |= {name: parameter_value(value) for name, value in args.p}
    kind = "smoke" if args.smoke else "run"
    output_root = args.output_root or OUTPUT_ROOT / kind
    notebooks = notebook_paths(args.only)
    reports = []
    for number, notebook in enumerate(notebooks, start=1):
        shown = parameters or "(default parameters)"
        print(f"==> [{number}/{len(notebooks)}] {notebook.name} {shown}", flush=True)
        report = execute(
            notebook,
            output_root,
            parameters,
            args.timeout,
            args.skip_solutions,
            args.cell_timeout or None,
        )
        reports.append(report)
        cells = report.cells()
        figures = (
            f"; {cells['images in'] or 0} images, {cells['failed'] or 0} failed, "
            f"{cells['images/s'] or '?'} images/s, {cells['accuracy / mAP']}"
            if report.summary
            else ""
        )
        print(
            f"<== [{number}/{len(notebooks)}] {notebook.name}: {report.status} in "
            f"{cells['duration']}{figures}" + (f"; {report.error}" if report.error else ""),
            file=sys.stderr if report.status == "failed" else sys.stdout,
            flush=True,
        )
    title = "Smoke run (offline)" if args.smoke else "Notebook run"
    index = write_index(reports, output_root, title)
    print(f"\n{index.read_text()}\nReport: {index} and {index.with_suffix('.html')}")
    return 1 if any(report.status == "failed" for report in reports) else 0


if __name__ == "__main__":
    raise SystemExit(main())
