"""What Ray shows in a notebook while it works: live progress bars, not pages of log lines."""

from __future__ import annotations

import logging
import sys
import warnings

import ray


def quiet_ray_output() -> None:
    """Draw Ray Data's progress as a live display in a notebook; no false alarms or noise.

    Ray 2.60 takes ``map_batches(..., max_restarts=0)`` (else an actor out of memory
    restarts forever) only through deprecated extra arguments: that warning is hidden.
    Ray Data asks ``sys.stdout.isatty()`` whether anyone watches; a notebook kernel says
    no, and Ray Data logs dozens of progress lines per run. In a kernel, the output is
    marked interactive instead, for the rich progress display (a live table of bars).
    """
    warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
    shell = sys.modules.get("IPython") and sys.modules["IPython"].get_ipython()
    if type(shell).__name__ != "ZMQInteractiveShell" or not hasattr(sys.stdout, "_isatty"):
        return
    sys.stdout._isatty = True
    context = ray.data.DataContext.get_current()
    context.enable_rich_progress_bars = True
    context.use_ray_tqdm = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data.dataset").addFilter(_not_the_busy_cpu_warning)


def _not_the_busy_cpu_warning(record: logging.LogRecord) -> bool:
    """Drop Ray Data's "no available CPUs" warning, a false alarm here: ``write_parquet``
    checks just after its run, while the model actors still hold their CPUs."""
    return "does not have any available CPUs" not in record.getMessage()
