"""A cell interrupted in a notebook, then run again: the interrupted run's actors let go.

Interrupting a cell (the kernel's stop button) raises ``KeyboardInterrupt`` wherever the
cell is. IPython 9.18 keeps that traceback for ``%debug``: in ``sys.last_traceback``, in its
traceback formatter (``shell.InteractiveTB.tb``) and in the cell's result. Its frames still
hold the interrupted Ray Data executor and its actor pool, so the actors keep their CPUs and
GPUs; run the cell again and the new pool waits for them. Measured with notebook 01's write
cell interrupted while its actor starts, the rerun waited with no output past 120 s (an
actor start-up time-out of 600 s, ``cluster.ACTOR_START_TIMEOUT_S``). Ray ends an actor once nothing refers to it, so forgetting the interrupted cell's
traceback is enough (``tests/test_interrupt.py``).
"""

from __future__ import annotations

import gc
import sys
import traceback


def release_interrupted_cells() -> bool:
    """In IPython, after each cell stopped by an interrupt, drop what its traceback holds.

    Registered once per kernel (calling it again does nothing); whether it is registered.
    Only interrupted cells: after any other error, ``%debug`` still has its traceback.
    """
    shell = sys.modules.get("IPython") and sys.modules["IPython"].get_ipython()
    if shell is None:
        return False
    if forget_interrupted_traceback not in shell.events.callbacks["post_run_cell"]:
        shell.events.register("post_run_cell", forget_interrupted_traceback)
    return True


def forget_interrupted_traceback(result) -> None:
    """IPython's ``post_run_cell`` event: if ``result`` is of an interrupted cell, clear its
    traceback's frames and IPython's references to it, then collect the garbage they held."""
    error = getattr(result, "error_in_exec", None)
    if not isinstance(error, KeyboardInterrupt):
        return
    if error.__traceback__ is not None:
        traceback.clear_frames(error.__traceback__)
    error.__traceback__ = None  # the error itself stays: the kernel still answers "error"
    sys.last_type = sys.last_value = sys.last_traceback = None
    if hasattr(sys, "last_exc"):  # Python 3.12 and later
        sys.last_exc = None
    shell = sys.modules["IPython"].get_ipython()
    formatter = getattr(shell, "InteractiveTB", None)
    if formatter is not None and hasattr(formatter, "tb"):
        formatter.tb = None
    gc.collect()  # the executor's objects form reference cycles: collect them now
