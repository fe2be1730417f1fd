"""Execute a notebook with papermill under an outer time limit: the project's one runner.

``make run`` / ``make smoke`` (:mod:`tools.run_notebooks`), the tests and the
benchmarks all call :func:`execute_notebook`. Papermill runs in a subprocess
(``python -m tools.papermill_runner``, see :func:`run_papermill`):

- with the ``python3`` kernel, the kernel of the Python that runs this module, so
  that a notebook always runs in the environment that started it;
- with the parameters as one JSON mapping, so that ``None``, numbers, booleans,
  lists and strings reach the notebook with their types;
- stopping the kernel at once when the notebook is done or has failed, so that
  its Ray driver prints no stack trace (see :func:`run_papermill`);
- with a time limit for every cell (papermill's ``execution_timeout``,
  :data:`CELL_TIMEOUT_S` unless the caller gives another): papermill waits for a
  cell's reply without end by default, and a reply that never comes (a kernel that
  died, or a message lost on the way) would hold the job for ever. A cell that
  passes its limit fails the run, and the executed copy says so in that cell;
- under an outer time limit for the whole run, because papermill waits forever when
  its kernel dies (for instance when it is killed for memory). On a time-out the
  whole process tree is stopped: papermill, the kernel, and the local Ray instance
  the kernel started. Other Ray instances on the machine are left alone.

A failed execution says why in one line, :attr:`NotebookExecution.error`: the
notebook's own exception, read from the failing cell's output in the executed copy;
for a time-out, which cell was running.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import nbformat

from nbhelpers.lessons import NOTEBOOK_DIR, PROJECT_ROOT

KERNEL = "python3"
"""Papermill's kernel: ``python3`` resolves to the Python that runs papermill."""
ERROR_TEXT_LIMIT = 600
"""At most this many characters of an exception's message in :attr:`NotebookExecution.error`."""
CELL_TIMEOUT_S = 1800
"""The default limit of one cell, in seconds: Ray Data's own limit for a run that makes no
progress (``execution_no_progress_timeout_s``, 30 minutes). ``make run``'s longest cell, the
whole dataset through the model, takes minutes on a CPU."""
CELL_TIMEOUT_ERROR = "CellTimeoutError"
"""The ``ename`` of the error output the runner writes into a cell that passed its limit."""


@dataclass(frozen=True)
class NotebookExecution:
    """Where one execution landed and how it went."""

    notebook: Path
    executed: Path
    """The executed copy, with every cell's output (missing when papermill failed early)."""
    output_dir: Path
    """The notebook's ``output_dir`` parameter: predictions and ``summary.json``."""
    seconds: float
    returncode: int | None
    """Papermill's exit status; ``None`` when it ran past the time limit and was stopped."""
    timeout_s: float
    output: str = ""
    """What papermill printed (stderr after stdout), when the caller captured it."""
    cell_timeout_s: int | None = None
    """Each cell's limit (papermill's ``execution_timeout``)."""

    @property
    def timed_out(self) -> bool:
        """Whether the execution was stopped at the time limit."""
        return self.returncode is None

    @property
    def error(self) -> str | None:
        """``None`` when every cell ran, else one line that says what happened.

        For a failing cell, the notebook's own exception: ``"DataSourceError: Cannot
        reach ... (cell In [6] of 01_resnet_classification.ipynb)"``. When papermill
        stopped before a cell failed (no kernel, for instance), its exit status and the
        last line it printed, if the output was captured.
        """
        if self.timed_out:
            running = running_cell(self.executed)
            return f"ran past {self.timeout_s:g}s and was stopped" + (
                f", in {running}" if running else ""
            )
        if self.returncode == 0:
            return None
        cell_error = notebook_error(self.executed)
        if cell_error:
            return cell_error
        last_lines = [line.strip() for line in self.output.splitlines() if line.strip()]
        said = f": {last_lines[-1][:ERROR_TEXT_LIMIT]}" if last_lines else ""
        return f"stopped with an error (exit {self.returncode}); see {self.executed.name}{said}"


def notebook_error(executed: Path) -> str | None:
    """The exception that stopped ``executed``, from the error output of its failing cell.

    Returns:
        ``"<type>: <the message's first two lines> (cell In [<n>] of <file name>)"``, or
        ``None`` when the file is missing, unreadable, or holds no error output.
    """
    try:
        notebook = nbformat.read(executed, as_version=4)
    except (OSError, ValueError):  # missing, or not a notebook (nbformat's NotJSONError)
        return None
    for index in reversed(range(len(notebook.cells))):  # papermill stops at the first error
        cell = notebook.cells[index]
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                lines = [line.strip() for line in output.get("evalue", "").splitlines()]
                message = " ".join([line for line in lines if line][:2])[:ERROR_TEXT_LIMIT]
                where = f"{cell_name(cell, index)} of {executed.name}"
                return f"{output.get('ename', 'Error')}{': ' if message else ''}{message} ({where})"
    return None


def cell_name(cell: nbformat.NotebookNode, index: int) -> str:
    """``"cell In [7]"`` as Jupyter numbers a cell that ran; ``"cell #13"`` (its place in the
    executed copy, from 1) for one that never got a number."""
    count = cell.get("execution_count")
    return f"cell In [{count}]" if count else f"cell #{index + 1}"


def running_cell(executed: Path) -> str | None:
    """The cell papermill marked running in ``executed``: ``"cell In [7] (preview = ...)"``
    with its first line, or ``None`` (no such file, or no cell running)."""
    try:
        notebook = nbformat.read(executed, as_version=4)
    except (OSError, ValueError):
        return None
    for index, cell in enumerate(notebook.cells):
        if cell.metadata.get("papermill", {}).get("status") == "running":
            first_line = cell.source.strip().splitlines()[0] if cell.source.strip() else ""
            return f"{cell_name(cell, index)} ({first_line[:120]})"
    return None


def mark_cell_timeout(executed: Path, limit_s: int) -> str | None:
    """Write into ``executed`` that its running cell passed ``limit_s``: an error output
    (:data:`CELL_TIMEOUT_ERROR`) and papermill's ``failed`` status; the cell's name, or
    ``None`` when no cell was running (nothing written then)."""
    try:
        notebook = nbformat.read(executed, as_version=4)
    except (OSError, ValueError):
        return None
    started = [
        index
        for index, cell in enumerate(notebook.cells)
        if cell.metadata.get("papermill", {}).get("start_time")
    ]
    if not started:
        return None
    index = started[-1]  # cells run in order: the last one started is the one that timed out
    cell = notebook.cells[index]
    message = (
        f"The cell ran past its limit of {limit_s} s (papermill's execution_timeout) and "
        "was stopped: no reply from the kernel in that time."
    )
    cell.outputs.append(
        nbformat.v4.new_output("error", ename=CELL_TIMEOUT_ERROR, evalue=message, traceback=[])
    )
    cell.metadata.setdefault("papermill", {})["status"] = "failed"
    for later in notebook.cells[index + 1 :]:  # papermill's end marks them completed: never ran
        later.metadata.setdefault("papermill", {})["status"] = "pending"
    nbformat.write(notebook, executed)
    return cell_name(cell, index)


@dataclass(frozen=True)
class PapermillJob:
    """One execution of ``notebook`` into ``executed`` by papermill, with its settings.

    :func:`execute_notebook` hands it to a subprocess as a command line
    (:meth:`command`), whose :func:`main` reads it back and runs it (:func:`run_papermill`).
    """

    notebook: Path
    executed: Path
    parameters: Mapping[str, object]
    cwd: Path
    """The kernel's working directory."""
    progress_bar: bool = False
    """Show papermill's progress bar (on stderr)."""
    show_traceback: bool = True
    """On a failing cell, print its traceback (papermill's text) on stderr; without, print
    nothing: :attr:`NotebookExecution.error` says what failed and the executed copy holds
    the traceback."""
    skip_solutions: bool = False
    """Leave out the exercises' solution cells (see :func:`without_solutions`)."""
    cell_timeout_s: int | None = CELL_TIMEOUT_S
    """Each cell's limit in seconds (papermill's ``execution_timeout``); ``None``: none."""

    def command(self) -> list[str]:
        """The command line that runs this job with :func:`run_papermill`, from
        :data:`PROJECT_ROOT` (where ``tools`` can be imported)."""
        command = [sys.executable, "-m", "tools.papermill_runner", str(self.notebook)]
        command += [str(self.executed), "--cwd", str(self.cwd)]
        command += ["--parameters", json.dumps(dict(self.parameters), default=str)]
        command += ["--progress-bar"] if self.progress_bar else []
        command += ["--skip-solutions"] if self.skip_solutions else []
        command += ["--cell-timeout", str(self.cell_timeout_s or 0)]
        return command + ([] if self.show_traceback else ["--quiet"])


SOLUTION_TAG = "solution"
"""The tag of the exercises' solution cells, which ``skip_solutions`` leaves out."""


def without_solutions(notebook: Path) -> nbformat.NotebookNode:
    """``notebook`` without its cells tagged :data:`SOLUTION_TAG` (the exercises' answers)."""
    content = nbformat.read(notebook, as_version=4)
    content.cells = [
        cell for cell in content.cells if SOLUTION_TAG not in cell.metadata.get("tags", [])
    ]
    return content


def run_papermill(job: PapermillJob) -> int:
    """Execute ``job.notebook`` into ``job.executed`` with papermill, in this process; 0 when
    every cell ran.

    The kernel is stopped at once at the end (nbclient's ``shutdown_kernel="immediate"``:
    its process group is killed), not gently as papermill's command line does. Gently
    means: ask the kernel to exit, wait 2.5 s, SIGTERM its process group, wait 2.5 s,
    SIGKILL it. A kernel that started a local Ray never exits in that time (ipykernel
    first terminates its child processes, Ray's, and waits up to half a minute for
    them), so the SIGTERM always came, and the Ray driver in the kernel answered it
    with a C++ stack trace on the terminal (``*** SIGTERM received ...``). The end is
    the same kill, without the dump and 5 s sooner; the executed copy is complete by
    then, and a notebook that shut Ray down has nothing left to stop.

    A cell that runs past ``job.cell_timeout_s`` stops the run (nbclient's
    ``CellTimeoutError``); the executed copy then holds an error output in that cell
    (:func:`mark_cell_timeout`), so that :func:`notebook_error` names it.
    """
    import papermill  # here: importing this module for its other functions stays light
    from nbclient.exceptions import CellTimeoutError

    try:
        papermill.execute_notebook(
            without_solutions(job.notebook) if job.skip_solutions else str(job.notebook),
            str(job.executed),
            parameters=dict(job.parameters),
            kernel_name=KERNEL,
            cwd=str(job.cwd),
            progress_bar=job.progress_bar,
            shutdown_kernel="immediate",
            execution_timeout=job.cell_timeout_s,
        )
    except papermill.PapermillExecutionError as error:
        if job.show_traceback:
            print(error, file=sys.stderr)
        return 1
    except CellTimeoutError:
        where = mark_cell_timeout(job.executed, job.cell_timeout_s or 0) or "a cell"
        print(
            f"{where} of {job.notebook.name} ran past its limit of {job.cell_timeout_s} s "
            "and was stopped",
            file=sys.stderr,
        )
        return 1
    return 0


def environment(overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment with ``overrides``; an empty value removes the variable."""
    merged = dict(os.environ) | {"PYTHONUNBUFFERED": "1"} | dict(overrides or {})
    return {name: value for name, value in merged.items() if value != ""}


def execute_notebook(
    notebook: str | Path,
    output_dir: str | Path,
    parameters: Mapping[str, object] | None = None,
    *,
    timeout_s: float,
    env: Mapping[str, str] | None = None,
    executed: str | Path | None = None,
    capture_output: bool = True,
    skip_solutions: bool = False,
    cell_timeout_s: int | None = CELL_TIMEOUT_S,
) -> NotebookExecution:
    """Execute ``notebook`` with papermill in a subprocess, stopped after ``timeout_s`` seconds.

    Args:
        notebook: a path, or a name in ``notebooks/`` with or without ``.ipynb``.
        output_dir: created if needed; passed as the notebook's ``output_dir``
            parameter unless ``parameters`` sets it.
        parameters: the notebook's parameters, as Python values.
        timeout_s: the outer time limit for the whole execution.
        cell_timeout_s: the limit of each cell (papermill's ``execution_timeout``);
            ``None``: no limit per cell, only the outer one. A cell past its limit fails
            the run with a ``CellTimeoutError`` in that cell of the executed copy.
        env: environment variables to set; an empty value removes one.
        executed: where the executed copy goes (default: ``<output_dir>/<name>.ipynb``).
        capture_output: keep papermill's output in the result, with a failing cell's
            traceback, instead of printing it; printed, it comes with papermill's
            progress bar and without the traceback (the caller prints ``error``).
        skip_solutions: leave out the exercises' solution cells, for a run that needs the
            results and not the answers (most of the tests: each notebook's exercises run
            in one test of their own).

    Returns:
        A :class:`NotebookExecution`; a failing cell or a time-out is reported in it,
        never raised, so that a caller can go on with other notebooks.
    """
    notebook = Path(notebook).absolute()
    if notebook.suffix != ".ipynb":
        notebook = NOTEBOOK_DIR / f"{notebook.name}.ipynb"
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    executed = Path(executed or output_dir / f"{notebook.stem}.ipynb").absolute()
    parameters = {"output_dir": str(output_dir)} | dict(parameters or {})
    # Printed on a terminal: a progress bar, and no traceback (the caller prints `error`).
    printed = not capture_output
    command = PapermillJob(
        notebook,
        executed,
        parameters,
        notebook.parent,
        printed,
        not printed,
        skip_solutions,
        cell_timeout_s,
    ).command()
    start = time.perf_counter()
    process = subprocess.Popen(
        command,
        cwd=PROJECT_ROOT,
        env=environment(env),
        stdout=subprocess.PIPE if capture_output else None,
        stderr=subprocess.PIPE if capture_output else None,
        text=True,
        start_new_session=True,  # its own process group: nothing of ours is signalled with it
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout_s)
        returncode = process.returncode
    except subprocess.TimeoutExpired:
        stop_process_tree(process.pid)
        stdout, stderr = process.communicate()
        returncode = None
    return NotebookExecution(
        notebook=notebook,
        executed=executed,
        output_dir=output_dir,
        seconds=time.perf_counter() - start,
        returncode=returncode,
        timeout_s=timeout_s,
        output=(stdout or "") + (stderr or ""),
        cell_timeout_s=cell_timeout_s,
    )


def descendants(pid: int) -> list[int]:
    """The processes started by ``pid``, directly or through others (from ``ps``)."""
    listing = subprocess.run(
        ["ps", "-A", "-o", "pid=", "-o", "ppid="], capture_output=True, text=True, check=True
    ).stdout
    children: dict[int, list[int]] = {}
    for line in listing.splitlines():
        child, parent = map(int, line.split())
        children.setdefault(parent, []).append(child)
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def stop_process_tree(pid: int) -> None:
    """Kill ``pid`` and every process it started: papermill, its kernel, the kernel's Ray.

    The kernel runs in a session of its own and Ray's processes are its children,
    so killing papermill's process group alone would leave them running. Every
    process of the tree is paused first, so that none starts another meanwhile.
    """
    paused: set[int] = set()
    while found := {pid, *descendants(pid)} - paused:
        for target in found:
            _signal(target, signal.SIGSTOP)
        paused |= found
    for target in paused:
        _signal(target, signal.SIGKILL)


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass  # already gone


def main(argv: list[str] | None = None) -> int:
    """What :func:`execute_notebook` runs in its subprocess: :func:`run_papermill`."""
    parser = argparse.ArgumentParser(description=run_papermill.__doc__.splitlines()[0])
    parser.add_argument("notebook", type=Path)
    parser.add_argument("executed", type=Path)
    parser.add_argument("--cwd", type=Path, required=True, help="the kernel's working directory")
    parser.add_argument("--parameters", default="{}", help="the parameters, one JSON mapping")
    parser.add_argument("--progress-bar", action="store_true")
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no traceback for a failing cell"
    )
    parser.add_argument("--skip-solutions", action="store_true", help="leave out the answers")
    parser.add_argument(
        "--cell-timeout",
        type=int,
        default=CELL_TIMEOUT_S,
        help=f"seconds each cell may run (default {CELL_TIMEOUT_S}; 0: no limit)",
    )
    args = parser.parse_args(argv)
    parameters = json.loads(args.parameters)
    return run_papermill(
        PapermillJob(
            args.notebook,
            args.executed,
            parameters,
            args.cwd,
            args.progress_bar,
            not args.quiet,
            args.skip_solutions,
            args.cell_timeout or None,
        )
    )


if __name__ == "__main__":
    raise SystemExit(main())
