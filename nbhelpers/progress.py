"""What Ray shows in a notebook while it works: live progress bars, not pages of log lines.

Everything here depends on the versions of Ray Data, rich, ipykernel and nbclient, and is
kept in this one module: the kernel's output marked interactive
(:func:`mark_kernel_output_interactive`), and the live display drawn with IPython's display
handles instead of a widget (:class:`DisplayHandleLive`).
"""

from __future__ import annotations

import io
import logging
import sys
from typing import Any

import IPython.display
import ray

try:  # rich draws Ray Data's live display; without it, Ray Data draws none
    from ray.data._internal.progress import rich_progress  # Ray 2.60's own name, private
    from rich.console import Console
    from rich.live import Live as _RichLive
except ImportError:  # pragma: no cover - rich comes with Ray Data's progress display
    rich_progress = None
    _RichLive = object


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
