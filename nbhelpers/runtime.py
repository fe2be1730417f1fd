"""Starting or joining Ray, and every piece of this package that depends on the installed
version of Ray, ipykernel or IPython rather than on a public, stable API.

Each piece, what it relies on, the version it was written for, and what replaces it when that
changes (``tests/claims/test_runtime.py`` runs each against the installed version):

==============================  ======================================  ============================
piece                           relies on (version)                     replaced by
==============================  ======================================  ============================
STOP_ON_ACTOR_CRASH             map_batches(**ray_remote_args) passes   Ray Data's named parameter
                                max_restarts to the actors (Ray 2.60:   for restarts, once it has
                                deprecated, removed in 2.64)            one
choose_token_authentication     ray._raylet.Config.initialize re-reads  nothing, once ray.init reads
                                RAY_AUTH_MODE (private, Ray 2.60)       the mode itself
through_ray_client              ray.util.client.num_connected_contexts  a public test for a Ray
                                (developer API, Ray 2.60)               Client driver
mark_kernel_output_interactive  ipykernel 7's OutStream._isatty         a DataContext flag for the
                                (private); Ray Data picks its display   progress display
                                by isatty() (2.60)
DisplayHandleLive               Ray Data 2.60's private rich_progress   nothing, once nbclient stops
                                module's Live; rich 15; nbclient 0.11   sending on the shell channel
                                (ray/data/_internal/progress)           mid-cell
release_interrupted_cells       IPython 9's post_run_cell event, and    IPython's own release of
                                where it keeps a traceback              interrupted cells
stage_table                     the text of Dataset.stats() (Ray 2.60,  a structured stats API, if
                                ray/data/_internal/stats.py)            Ray Data publishes one
==============================  ======================================  ============================

No public API does any of these today (checked against Ray 2.60, ipykernel 7.4, IPython 9);
nothing else in ``nbhelpers`` imports a private name. Lifting ``pyproject.toml``'s cap on Ray
starts here.
"""

from __future__ import annotations

import gc
import io
import logging
import os
import re
import sys
import traceback
from pathlib import Path
from typing import Any

import IPython.display
import pandas as pd
import ray
from ray._raylet import Config  # private in Ray 2.60: used by _reload_ray_config alone

try:  # rich draws Ray Data's live display; without it, Ray Data draws none
    from ray.data._internal.progress import rich_progress  # Ray 2.60's own name, private
    from rich.console import Console
    from rich.live import Live as _RichLive
except ImportError:  # pragma: no cover - rich comes with Ray Data's progress display
    rich_progress = None
    _RichLive = object

import nbhelpers
from nbhelpers.pool import ClusterResources

# Starting Ray, or joining a cluster -----------------------------------------------------------

ACTOR_START_TIMEOUT_S = 600  # on a cluster: how long the actors may take to start and load


# Ray Data restarts a crashed actor (out of memory, say) and retries its batch without end; with
# no restarts, the job stops with the actor's error. Ray 2.60's map_batches names no parameter for
# it: it rides the deprecated **ray_remote_args, gone in Ray 2.64 (pyproject.toml's cap on Ray).
STOP_ON_ACTOR_CRASH = {"max_restarts": 0}
# Ray Data's per-stage CPU reservation (DataContext.op_resource_reservation_enabled): off, so
# that the read tasks may use every CPU the model actors leave (start_ray).
READ_STAGE_RESERVATION = False


def start_ray(num_cpus: int | None = None) -> ClusterResources:
    """Start a local Ray instance (with ``num_cpus``), or join the cluster in ``RAY_ADDRESS``."""
    address = os.environ.get("RAY_ADDRESS") or None
    if not ray.is_initialized():
        # WARNING, not INFO: Ray's start-up and Ray Data's plan logs would fill the cell.
        options = dict(
            runtime_env=worker_runtime_env(remote=address is not None),
            logging_level=logging.WARNING,
        )
        if address is None:
            choose_token_authentication()
            # Workers inherit this: torch threads that wait for each other sleep instead of
            # spinning, so they leave the CPU to the read tasks on a small machine.
            os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
            ray.init(num_cpus=num_cpus, include_dashboard=False, **options)
        else:
            join_cluster(address, options)
    quiet_ray_output()
    release_interrupted_cells()  # in a notebook: an interrupted cell's actors do not linger
    # Ray Data starts the model actors before any task, and waits for them: an actor pool
    # that cannot be placed fails after this long with a message about resources, instead
    # of waiting forever; and the actors' start (torch, the model) never queues behind the
    # start of dozens of read tasks' worker processes.
    context = ray.data.DataContext.get_current()
    context.wait_for_min_actors_s = ACTOR_START_TIMEOUT_S
    # Ray Data's default reserves a share of the CPUs for each stage and hands what no stage
    # reserved to the last one, the write tasks: beside a GPU actor the read tasks then ran
    # one at a time, and a 2-core machine fed 0.4x of what it decodes (docs/performance.md,
    # "The CPU account"). Off, the read tasks take every CPU the actors leave; the object
    # store's limit still holds them back when the model falls behind.
    context.op_resource_reservation_enabled = READ_STAGE_RESERVATION
    return ClusterResources.from_ray()


def stop_ray() -> None:
    """Shut Ray down (safe to call when it is not running)."""
    if ray.is_initialized():
        ray.shutdown()


AUTH_MODE_VARIABLE = "RAY_AUTH_MODE"
DEFAULT_TOKEN_FILE = Path.home() / ".ray" / "auth_token"


def worker_runtime_env(remote: bool) -> dict:
    """The settings every worker needs; on a remote cluster, also the ``nbhelpers`` package
    (a local Ray's workers import it from here: shipping it would slow their start)."""
    keep = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "TORCH_HOME")
    env = {"env_vars": {name: os.environ[name] for name in keep if name in os.environ}}
    if remote:
        env["py_modules"] = [str(Path(nbhelpers.__file__).parent)]
    return env if remote or env["env_vars"] else {}


class ClusterConnectionError(ConnectionError):
    """The Ray cluster in ``RAY_ADDRESS`` could not be joined."""


def auth_token_source() -> str | None:
    """Where this process would take a Ray authentication token from, in Ray's order, or ``None``."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "the environment variable RAY_AUTH_TOKEN"
    token_path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if token_path and Path(token_path).expanduser().is_file():
        return f"the file {token_path} (RAY_AUTH_TOKEN_PATH)"
    if DEFAULT_TOKEN_FILE.is_file():
        return f"the file {DEFAULT_TOKEN_FILE}"
    return None


def choose_token_authentication() -> None:
    """Turn Ray's token authentication on (``RAY_AUTH_MODE=token``) unless the user set a mode.

    Ray 2.60 turns it on by default for a local instance, and warns at every start that
    it did: choosing it keeps the same protection without the warning.
    """
    if not os.environ.get(AUTH_MODE_VARIABLE):
        os.environ[AUTH_MODE_VARIABLE] = "token"
        _reload_ray_config()


def _reload_ray_config() -> None:
    """Make this process's Ray read its settings (``RAY_AUTH_MODE``) from the environment again.

    No public call does this. Ray 2.60 reads its settings once, when ``ray`` is imported, so
    a mode set later (as here, in a notebook that imported ray first) would reach the Ray
    processes this one starts but not this driver, which then has no token. Ray turns token
    mode on itself the same way: ``ray/_private/authentication/authentication_token_setup.py``,
    ``_enable_token_auth``, sets the variable and calls ``ray._raylet.Config.initialize("")``.
    """
    Config.initialize("")


def join_cluster(address: str, options: dict) -> None:
    """``ray.init(address)`` with token authentication prepared; ClusterConnectionError if not.

    Since Ray 2.5x, ``ray start --head`` turns token authentication on and refuses a
    driver without the token; Ray turns the driver's token mode on only for a local
    cluster, so it is turned on here when a token is at hand.
    """
    source = auth_token_source()
    if source and not os.environ.get(AUTH_MODE_VARIABLE):
        choose_token_authentication()
        print(f"Ray token authentication on (RAY_AUTH_MODE=token), with the token from {source}.")
    try:
        ray.init(address=address, **options)
    except (ConnectionError, ray.exceptions.AuthenticationError) as error:
        mode = os.environ.get(AUTH_MODE_VARIABLE, "unset")
        raise ClusterConnectionError(
            f"Could not join the Ray cluster at RAY_ADDRESS={address!r} ({error}). "
            "Check that the cluster is running (`ray status` on its head node) and that the "
            "address is reachable from here. If the cluster uses token authentication (Ray "
            "2.5x's `ray start --head` turns it on), Ray's log above says InvalidAuthToken: "
            "give this process the cluster's token with RAY_AUTH_TOKEN (or a copy of the "
            "head node's ~/.ray/auth_token, or RAY_AUTH_TOKEN_PATH) and RAY_AUTH_MODE=token. "
            f"Now: RAY_AUTH_MODE={mode}, token: {source or 'none found'}. Do not turn "
            "authentication off. To run on this machine alone, unset RAY_ADDRESS."
        ) from error


# Ray Client -----------------------------------------------------------------------------------


def through_ray_client() -> bool:
    """Whether this process reaches its cluster through Ray Client (``ray.init("ray://...")``).

    ``ray.util.client.num_connected_contexts`` is a developer API of Ray 2.60, the one its
    own ``ray.init`` asks (``ray/client_builder.py``): no stable API tells a Ray Client
    driver from one on a node of the cluster.
    """
    return ray.util.client.num_connected_contexts() > 0


# A cell interrupted, then run again -----------------------------------------------------------


def release_interrupted_cells() -> bool:
    """In IPython, after each cell stopped by an interrupt, drop what its traceback holds.

    Interrupting a cell (the kernel's stop button) raises ``KeyboardInterrupt`` wherever the
    cell is. IPython 9 keeps that traceback for ``%debug``: in ``sys.last_traceback``, in its
    traceback formatter (``shell.InteractiveTB.tb``) and in the cell's result. Its frames still
    hold the interrupted Ray Data executor and its actor pool, so the actors keep their CPUs
    and GPUs, and the cell run again waits for them (up to :data:`ACTOR_START_TIMEOUT_S`).
    Ray ends an actor once nothing refers to it, so forgetting the traceback is enough.

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


# Progress in a notebook: live bars, not log lines ---------------------------------------------


def quiet_ray_output() -> None:
    """Draw Ray Data's progress as a live display in a notebook, instead of log lines.

    Ray Data asks ``sys.stdout.isatty()`` whether anyone watches; a notebook kernel says
    no, and Ray Data logs dozens of progress lines per run. In a kernel, the output is
    marked interactive instead (:func:`mark_kernel_output_interactive`), for the rich
    progress display (a live table of bars), drawn with display handles, never with a
    widget (:func:`draw_live_display_with_display_handles`). Ray Data's warnings still
    show: none is filtered.
    """
    if not mark_kernel_output_interactive():
        return
    draw_live_display_with_display_handles()
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


def draw_live_display_with_display_handles() -> None:
    """Make Ray Data's live progress display draw through an IPython display handle (one
    ``display_data``, then ``update_display_data`` messages), not an ipywidgets ``Output``.

    Why: a papermill run waited for ever, about 1 run in 5 to 20, for the reply of a cell
    that ran Ray Data (issue 36). rich 15's ``Live`` in a kernel (``rich/live.py``,
    ``Live.refresh``) draws into an ``ipywidgets.Output``. papermill's client, nbclient
    0.11, stands in for the front end's copy of that widget (``nbclient/output_widget.py``,
    ``OutputWidget.sync_state``): for every output the widget captures it sends a
    ``comm_msg`` to the kernel on the shell channel, dozens per Ray Data run, from the
    task that reads IOPub, while another task waits on that same shell socket for the
    cell's ``execute_reply``. jupyter_client 8.10's ``Session.send`` sends on a
    ``zmq.asyncio`` socket through a plain shadow socket (``jupyter_client/session.py``,
    ``zmq.Socket.shadow(stream.underlying)``), out of pyzmq's sight: the raw send runs
    libzmq's command processing, which consumes the edge-triggered ``ZMQ_FD`` wake-up of a
    reply that has just arrived, and pyzmq 27's waiting poll is never woken. Seen in a hung
    run: the kernel's trace shows the reply sent, papermill's shell socket says
    ``ZMQ_EVENTS`` = POLLIN with its poll still pending, 55 s later. Upstream: the same
    lost wake-up on the kernel's own shell socket is ipykernel PR #1529 (in 7.4) and
    issue #1554 (open); removing the shadow send is discussed in jupyter_client PR #1059
    (open).

    A display handle needs no widget and no comm: nbclient updates the output in place
    and sends nothing back; JupyterLab redraws it the same way. Only Ray Data's display
    is changed (``rich_progress.Live``, the name Ray Data 2.60 calls), not rich for the
    rest of the kernel. Drop this once nbclient no longer answers on the shell channel
    during a cell, or jupyter_client sends through the asyncio socket.
    """
    if rich_progress is None:  # no rich: Ray Data draws no live display at all
        return
    if rich_progress.Live is not DisplayHandleLive:
        rich_progress.Live = DisplayHandleLive


class DisplayHandleLive(_RichLive):  # type: ignore[misc, valid-type]
    """rich's ``Live``, drawn in a notebook through one IPython display handle.

    Outside a notebook (a terminal) it is rich's ``Live`` unchanged.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._display_handle: Any = None

    def refresh(self) -> None:
        """Draw the current table: the first time a new output, then that output updated."""
        if not self.console.is_jupyter or self._nested:
            super().refresh()
            return
        with self._lock:
            self._live_render.set_renderable(self.renderable)
            bundle = rendered_bundle(self._live_render.renderable, self.console.width)
            if self._display_handle is None:
                self._display_handle = IPython.display.display(bundle, raw=True, display_id=True)
            else:
                self._display_handle.update(bundle, raw=True)


def rendered_bundle(renderable: Any, width: int) -> dict[str, str]:
    """``renderable`` as a notebook shows rich's output: ``text/html`` (colours inline) and
    ``text/plain``, ``width`` characters wide."""
    console = Console(
        file=io.StringIO(), record=True, width=width, force_terminal=True, force_jupyter=False
    )
    console.print(renderable)
    return {
        "text/plain": console.export_text(clear=False),
        "text/html": console.export_html(
            inline_styles=True,
            code_format=(
                '<pre style="white-space:pre;overflow-x:auto;line-height:normal;'
                "font-family:Menlo,'DejaVu Sans Mono',consolas,'Courier New',monospace\">"
                "{code}</pre>"
            ),
        ),
    }


# Ray Data's stats() report as a table ---------------------------------------------------------

# One stage of the report (Ray 2.60, ``ray/data/_internal/stats.py``): its header line, then
# its lines up to the next stage or the dataset's own lines.
_STAGE = re.compile(
    r"^Operator \d+ (?P<stage>.+?): (?P<tasks>\d+) tasks executed, \d+ blocks "
    r"produced in (?P<seconds>[\d.]+)s$(?P<body>.*?)(?=^Operator |^Dataset |\Z)",
    re.M | re.S,
)


_ROWS = re.compile(r"Total output num rows: (\d+) rows")


_RATE = re.compile(r"Ray Data throughput: ([\d.e+-]+) rows/s")


_TASK_RATE = re.compile(r"Estimated single task throughput: ([\d.e+-]+) rows/s")


def stage_table(report: str) -> pd.DataFrame:
    """The stages of a ``stats()`` report, with the numbers that say which one held the run.

    Ray Data computes, per stage, ``rows_per_s`` ("Ray Data throughput": its rows over its
    window, from its first task's start to its last task's end) and ``rows_per_s_one_task``
    ("Estimated single task throughput": its rows over the sum of its tasks' times). Their
    ratio, ``at_work``, is how many of its tasks ran at once on average over that window: as
    many as it can run (its actors, or the CPUs it may take) for the stage that held the
    run; less for a stage that waited. A stage fused into another has no line of its own.
    """
    rows = []
    for match in _STAGE.finditer(report):
        body = match["body"]
        rate, task_rate, out = _RATE.search(body), _TASK_RATE.search(body), _ROWS.search(body)
        if not (rate and task_rate):
            continue
        rows.append(
            {
                "stage": match["stage"],
                "tasks": int(match["tasks"]),
                "rows": int(out[1]) if out else None,
                "seconds": float(match["seconds"]),
                "rows_per_s": float(rate[1]),
                "rows_per_s_one_task": float(task_rate[1]),
            }
        )
    if not rows:
        raise ValueError("No stage found in this stats() report: was the dataset executed?")
    table = pd.DataFrame(rows).set_index("stage")
    busy = table["rows_per_s"] / table["rows_per_s_one_task"].where(
        table["rows_per_s_one_task"] > 0
    )
    table["at_work"] = busy.round(2)
    return table.round({"rows_per_s": 1, "rows_per_s_one_task": 1})
