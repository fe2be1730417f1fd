"""What Ray shows in a notebook while it works: live progress bars, not pages of log lines."""

from __future__ import annotations

import logging
import sys

import ray


def quiet_ray_output() -> None:
    """Draw Ray Data's progress as a live display in a notebook, instead of log lines.

    Ray Data asks ``sys.stdout.isatty()`` whether anyone watches; a notebook kernel says
    no, and Ray Data logs dozens of progress lines per run. In a kernel, the output is
    marked interactive instead (:func:`mark_kernel_output_interactive`), for the rich
    progress display (a live table of bars). Ray Data's warnings still show: none is
    filtered.
    """
    if not mark_kernel_output_interactive():
        return
    context = ray.data.DataContext.get_current()
    context.enable_rich_progress_bars = True
    context.use_ray_tqdm = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def mark_kernel_output_interactive() -> bool:
    """In a Jupyter kernel, make ``sys.stdout.isatty()`` answer yes; whether it did.

    No public setting does this. Ray Data 2.60 chooses between its progress bars and log
    lines by ``sys.stdout.isatty()`` alone (``ray/data/_internal/progress/__init__.py``,
    ``get_progress_manager``; no ``DataContext`` flag skips that test), and ipykernel 7.4's
    ``OutStream`` takes ``isatty`` only as an argument of its constructor and keeps it in
    ``_isatty`` (``ipykernel/iostream.py``). So this sets that attribute, only where it
    exists, in a kernel of Jupyter's (``ZMQInteractiveShell``): anywhere else, nothing.
    """
    shell = sys.modules.get("IPython") and sys.modules["IPython"].get_ipython()
    if type(shell).__name__ != "ZMQInteractiveShell" or not hasattr(sys.stdout, "_isatty"):
        return False
    sys.stdout._isatty = True
    return True
