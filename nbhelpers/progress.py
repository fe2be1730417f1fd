"""What Ray shows in a notebook while it works: live progress bars, not pages of log lines."""

from __future__ import annotations

import logging
import sys
import warnings

import ray


def quiet_ray_output() -> None:
    """Progress as a live display in notebooks; no false alarms, no deprecation noise.

    The notebooks pass ``map_batches(..., max_restarts=0)``: Ray Data otherwise starts
    its actors with infinite restarts and its own state in the object store, a
    combination for which Ray logs an error line, and an actor that runs out of memory
    would restart forever. Ray 2.60 takes that option only through its extra keyword
    arguments, deprecated in favour of named ones it does not have yet.
    """
    warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
    show_progress_in_notebook()


def show_progress_in_notebook() -> None:
    """Draw Ray Data's progress as a live display in a Jupyter notebook, not as log lines.

    Ray Data 2.60 decides from ``sys.stdout.isatty()`` whether anyone watches: a
    notebook kernel's output says no, so Ray Data logs its progress instead, dozens
    of lines per run. In a kernel, this marks the output as interactive and turns on
    Ray Data's rich progress display, which JupyterLab shows as a live table of bars
    (an output widget) and which leaves no text behind under papermill. Ray Data's
    own INFO messages go too; warnings and errors stay. Outside a kernel: nothing.
    """
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
    """Drop Ray Data's "no available CPUs" warning, a false alarm in these notebooks.

    ``write_parquet`` checks the free CPUs again just after its run, while the model
    actors still hold theirs: the warning then says that a job which just finished
    "will hang". :func:`size_actor_pool` always leaves CPU for the read tasks.
    """
    return "does not have any available CPUs" not in record.getMessage()
