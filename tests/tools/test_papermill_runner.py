"""The one papermill runner: typed parameters, failures reported, time-outs that leave nothing."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

from tools.papermill_runner import execute_notebook


def write_notebook(path: Path, *cells: str) -> Path:
    """A notebook whose first cell is tagged ``parameters``, then ``cells``."""
    parameters = new_code_cell("output_dir = None\nnum_images = None\ndata_uri = 'sample'")
    parameters.metadata["tags"] = ["parameters"]
    notebook = new_notebook(cells=[parameters, *map(new_code_cell, cells)])
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(notebook, path)
    return path


def is_running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie waiting to be reaped."""
    state = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True)
    return bool(state.stdout.strip()) and not state.stdout.strip().startswith("Z")


def test_parameters_keep_their_types_and_the_executed_copy_lands_in_output_dir(tmp_path):
    notebook = write_notebook(
        tmp_path / "echo.ipynb",
        "import json, pathlib\n"
        "values = {'num_images': num_images, 'data_uri': data_uri, 'flags': flags}\n"
        "pathlib.Path(output_dir, 'seen.json').write_text(json.dumps(values))",
    )
    parameters = {"num_images": 8, "data_uri": "s3://anonymous@bucket/1e3", "flags": [True, None]}
    run = execute_notebook(notebook, tmp_path / "out", parameters, timeout_s=120)
    assert run.error is None and run.returncode == 0, run.output[-3000:]
    assert run.executed == tmp_path / "out" / "echo.ipynb" and run.executed.is_file()
    seen = json.loads((tmp_path / "out" / "seen.json").read_text())
    assert seen == {"num_images": 8, "data_uri": "s3://anonymous@bucket/1e3", "flags": [True, None]}


def test_skip_solutions_leaves_out_the_cells_tagged_solution_and_only_those(tmp_path):
    notebook = nbformat.read(
        write_notebook(tmp_path / "ex.ipynb", "print('lesson')", "raise SystemExit('answer')"), 4
    )
    notebook.cells[-1].metadata["tags"] = ["solution"]
    nbformat.write(notebook, tmp_path / "ex.ipynb")
    skipped = execute_notebook(
        tmp_path / "ex.ipynb", tmp_path / "a", timeout_s=120, skip_solutions=True
    )
    assert skipped.returncode == 0, skipped.output[-3000:]
    assert "lesson" in skipped.executed.read_text() and "answer" not in skipped.executed.read_text()
    full = execute_notebook(tmp_path / "ex.ipynb", tmp_path / "b", timeout_s=120)
    assert full.returncode != 0 and "answer" in full.executed.read_text()


def test_a_failing_cell_is_reported_by_its_own_exception(tmp_path):
    """The error names the exception, its message's first two lines, and the cell."""
    notebook = write_notebook(
        tmp_path / "fails.ipynb",
        "print('fine so far')",
        "raise ValueError('no images at all\\nin /nowhere\\nthird line')",
        "print('never runs')",
    )
    run = execute_notebook(notebook, tmp_path / "out", timeout_s=120)
    assert not run.timed_out and run.returncode != 0
    # cells: parameters, papermill's injected parameters, print, raise
    assert run.error == "ValueError: no images at all in /nowhere (cell In [4] of fails.ipynb)"
    assert "Traceback" in run.output and "third line" in run.output  # captured: the traceback


def test_papermill_failing_before_any_cell_says_what_it_printed(tmp_path):
    """No cell ran (no such notebook): the error gives papermill's last line."""
    run = execute_notebook(tmp_path / "missing.ipynb", tmp_path / "out", timeout_s=120)
    assert run.returncode not in (0, None)
    assert run.error.startswith("stopped with an error (exit 1); see missing.ipynb: ")
    assert "FileNotFoundError" in run.error and str(tmp_path / "missing.ipynb") in run.error


def test_a_time_out_stops_the_kernel_and_what_it_started(tmp_path):
    """The kernel starts a process (as it starts Ray's) and hangs: both are gone afterwards."""
    pid_file = tmp_path / "child.pid"
    notebook = write_notebook(
        tmp_path / "hangs.ipynb",
        "import os, pathlib, subprocess, time\n"
        "child = subprocess.Popen(['sleep', '600'])\n"
        f"pathlib.Path({str(pid_file)!r}).write_text(f'{{os.getpid()}} {{child.pid}}')\n"
        "time.sleep(600)",
    )
    start = time.monotonic()
    run = execute_notebook(notebook, tmp_path / "out", timeout_s=12)
    assert time.monotonic() - start < 30
    assert run.timed_out
    # cells: parameters, papermill's injected parameters, the hanging cell (the third)
    assert (
        run.error
        == "ran past 12s and was stopped, in cell #3 (import os, pathlib, subprocess, time)"
    )
    assert pid_file.is_file(), f"the kernel never reached the hanging cell:\n{run.output[-3000:]}"
    kernel, child = map(int, pid_file.read_text().split())
    deadline = time.monotonic() + 10
    while (is_running(kernel) or is_running(child)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not is_running(kernel), "the kernel survived the time-out"
    assert not is_running(child), "a process the kernel started survived the time-out"


def test_a_cell_past_its_limit_stops_the_run_and_is_named(tmp_path):
    """Each cell has a limit (papermill's execution_timeout) well inside the outer one: the
    run stops at it, and the error and the executed copy say which cell passed it."""
    notebook = write_notebook(
        tmp_path / "slow.ipynb",
        "print('fine so far')",
        "import time\ntime.sleep(600)",
        "print('never')",
    )
    start = time.monotonic()
    run = execute_notebook(notebook, tmp_path / "out", timeout_s=120, cell_timeout_s=5)
    assert time.monotonic() - start < 60
    assert not run.timed_out and run.returncode == 1, run.output[-3000:]
    assert run.error.startswith("CellTimeoutError: The cell ran past its limit of 5 s")
    assert run.error.endswith("(cell In [4] of slow.ipynb)"), run.error
    assert "cell In [4] of slow.ipynb ran past its limit of 5 s" in run.output
    cells = nbformat.read(run.executed, 4).cells
    # cells: parameters, papermill's injected parameters, print, sleep, print
    assert cells[3].metadata.papermill.status == "failed"
    assert cells[3].outputs[-1].ename == "CellTimeoutError"
    assert cells[4].metadata.papermill.status == "pending" and not cells[4].outputs
