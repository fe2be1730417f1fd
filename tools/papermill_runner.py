"""Execute a notebook with papermill under an outer time limit: the project's one runner.

``make run`` / ``make smoke`` (:mod:`tools.run_notebooks`), the tests and the
benchmarks all call :func:`execute_notebook`. Papermill runs in a subprocess:

- with ``-k python3``, the kernel of the Python that runs this module, so that a
  notebook always runs in the environment that started it;
- with the parameters as one YAML (JSON) mapping, so that ``None``, numbers,
  booleans, lists and strings reach the notebook with their types;
- under an outer time limit, because papermill waits forever when its kernel
  dies (for instance when it is killed for memory). On a time-out the whole
  process tree is stopped: papermill, the kernel, and the local Ray instance the
  kernel started. Other Ray instances on the machine are left alone.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from nbhelpers.cache import PROJECT_ROOT

NOTEBOOK_DIR = PROJECT_ROOT / "notebooks"
KERNEL = "python3"
"""Papermill's kernel: ``python3`` resolves to the Python that runs papermill."""


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

    @property
    def timed_out(self) -> bool:
        """Whether the execution was stopped at the time limit."""
        return self.returncode is None

    @property
    def error(self) -> str | None:
        """``None`` when every cell ran, else one line that says what happened."""
        if self.timed_out:
            return f"ran past {self.timeout_s:g}s and was stopped"
        if self.returncode != 0:
            return f"stopped with an error (exit {self.returncode}); see {self.executed.name}"
        return None


def papermill_command(
    notebook: Path,
    executed: Path,
    parameters: Mapping[str, object],
    cwd: Path,
    progress_bar: bool = False,
) -> list[str]:
    """The papermill command line that executes ``notebook`` into ``executed``."""
    command = [sys.executable, "-m", "papermill", str(notebook), str(executed), "-k", KERNEL]
    command += ["--cwd", str(cwd)] + ([] if progress_bar else ["--no-progress-bar"])
    if parameters:
        command += ["-y", json.dumps(dict(parameters), default=str)]
    return command


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
) -> NotebookExecution:
    """Execute ``notebook`` with papermill in a subprocess, stopped after ``timeout_s`` seconds.

    Args:
        notebook: a path, or a name in ``notebooks/`` with or without ``.ipynb``.
        output_dir: created if needed; passed as the notebook's ``output_dir``
            parameter unless ``parameters`` sets it.
        parameters: the notebook's parameters, as Python values.
        timeout_s: the outer time limit for the whole execution.
        env: environment variables to set; an empty value removes one.
        executed: where the executed copy goes (default: ``<output_dir>/<name>.ipynb``).
        capture_output: keep papermill's output in the result instead of printing it
            (printed, it comes with papermill's progress bar).

    Returns:
        A :class:`NotebookExecution`; a failing cell or a time-out is reported in it,
        never raised, so that a caller can go on with other notebooks.
    """
    notebook = Path(notebook)
    if notebook.suffix != ".ipynb":
        notebook = NOTEBOOK_DIR / f"{notebook.name}.ipynb"
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    executed = Path(executed) if executed else output_dir / f"{notebook.stem}.ipynb"
    parameters = {"output_dir": str(output_dir)} | dict(parameters or {})
    command = papermill_command(
        notebook, executed, parameters, cwd=notebook.parent, progress_bar=not capture_output
    )
    start = time.perf_counter()
    process = subprocess.Popen(
        command,
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
