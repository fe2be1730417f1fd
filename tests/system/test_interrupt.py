"""A learner interrupts notebook 01's write cell while it runs, then runs it again: ten times.

The cells run in a real Jupyter kernel, as in JupyterLab: the notebook's cells up to the write
cell once, then the write cell interrupted at a different moment each time (the kernel gets
SIGINT, as from the stop button) and run again to the end. Each rerun must finish with every
image, well within the time limit: an interrupted run must leave no actor holding the CPUs.
"""

from __future__ import annotations

import json
import queue
import random
import time
from pathlib import Path

import pytest
from jupyter_client.manager import start_new_kernel

from tools import papermill_runner

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "01_resnet_classification.ipynb"
TRIES = 10
RERUN_TIMEOUT_S = 120  # a rerun on 12 photos takes about 10 s here


def run_cell(kernel, code: str, timeout: float, interrupt_after: float | None = None, manager=None):
    """Execute ``code``; optionally interrupt the kernel after ``interrupt_after`` seconds.

    Returns ``(status, printed)``: the reply's status (``ok`` or ``error``) and the text the
    cell printed. Fails the test when no reply comes within ``timeout``.
    """
    message_id = kernel.execute(code)
    started = time.monotonic()
    interrupted = interrupt_after is None
    printed: list[str] = []
    status = None
    while True:
        if not interrupted and time.monotonic() - started >= interrupt_after:
            manager.interrupt_kernel()
            interrupted = True
        if time.monotonic() - started > timeout:
            pytest.fail(f"no answer from the kernel after {timeout} s:\n{''.join(printed)[-3000:]}")
        try:
            message = kernel.get_iopub_msg(timeout=0.2)
        except queue.Empty:
            continue
        if message["parent_header"].get("msg_id") != message_id:
            continue
        kind, content = message["msg_type"], message["content"]
        if kind == "stream":
            printed.append(content["text"])
        elif kind == "error":
            status = "error"
            printed.append(f"{content['ename']}: {content['evalue']}\n")
        elif kind == "status" and content["execution_state"] == "idle":
            return status or "ok", "".join(printed)


def lesson_cells(parameters: dict) -> tuple[list[str], str]:
    """The code of notebook 01 up to its write cell (parameters applied, the install cell
    left out), and the write cell itself."""
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    before: list[str] = []
    for cell in cells:
        source = "".join(cell["source"])
        tags = cell.get("metadata", {}).get("tags", [])
        if cell["cell_type"] != "code" or "install" in tags:
            continue
        if "predictions.write_parquet(" in source:
            return before, source
        before.append(source)
        if "parameters" in tags:
            before.append("\n".join(f"{name} = {value!r}" for name, value in parameters.items()))
    raise AssertionError("notebook 01 has no write cell")


@pytest.mark.notebook
@pytest.mark.long
def test_the_write_cell_interrupted_and_run_again_ten_times_finishes_every_time(tmp_path):
    parameters = {"pretrained": False, "data_uri": "sample", "num_images": 12}  # each photo once
    parameters["output_dir"] = str(tmp_path)
    before, write_cell = lesson_cells(parameters)
    env = papermill_runner.environment({"RAY_ADDRESS": ""})
    manager, kernel = start_new_kernel(kernel_name="python3", cwd=str(tmp_path), env=env)
    try:
        for code in before:
            status, printed = run_cell(kernel, code, timeout=300)
            assert status == "ok", f"{code[:200]}\n{printed[-3000:]}"
        moments = random.Random(0)  # the same ten moments on every run of the test
        for attempt in range(TRIES):
            after = moments.uniform(0.5, 8.0)
            status, printed = run_cell(
                kernel, write_cell, timeout=RERUN_TIMEOUT_S, interrupt_after=after, manager=manager
            )
            if "images in" not in printed:  # stopped before its end: the kernel says so
                assert status == "error" and "KeyboardInterrupt" in printed, printed
            status, printed = run_cell(kernel, write_cell, timeout=RERUN_TIMEOUT_S)
            assert status == "ok", (
                f"try {attempt + 1} (interrupted after {after:.1f} s):\n{printed}"
            )
            assert "12 images in" in printed, printed
    finally:
        try:  # its local Ray, before the kernel; a kernel that does not answer is shut down
            manager.interrupt_kernel()
            run_cell(kernel, "cluster.stop_ray()", timeout=60)
        except BaseException as error:  # noqa: BLE001 - the test's own failure is the one to show
            print(f"stopping Ray in the kernel failed: {error!r}")
        finally:
            kernel.stop_channels()
            manager.shutdown_kernel(now=True)
