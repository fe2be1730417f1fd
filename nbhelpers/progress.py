"""What Ray shows in a notebook while it works: live progress bars, not pages of log lines."""

from __future__ import annotations

import logging
import sys

import ray


def quiet_ray_output() -> None:
    """Draw Ray Data's progress as a live display in a notebook, instead of log lines.

    Ray Data asks ``sys.stdout.isatty()`` whether anyone watches; a notebook kernel says
    no, and Ray Data logs dozens of progress lines per run. In a kernel, the output is
    marked interactive instead, for the rich progress display (a live table of bars).
    Ray Data's warnings still show: none is filtered.
    """
    shell = sys.modules.get("IPython") and sys.modules["IPython"].get_ipython()
    if type(shell).__name__ != "ZMQInteractiveShell" or not hasattr(sys.stdout, "_isatty"):
        return
    sys.stdout._isatty = True
    context = ray.data.DataContext.get_current()
    context.enable_rich_progress_bars = True
    context.use_ray_tqdm = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
