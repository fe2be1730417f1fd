"""Ray Data's live progress display in a notebook: one output, redrawn through a display
handle, with no widget (no comm for papermill's client to answer on the shell channel)."""

from __future__ import annotations

import io

from rich.console import Console
from rich.text import Text

from nbhelpers import runtime


class Handle:
    """Stands for IPython's ``DisplayHandle``: records the updates."""

    def __init__(self, calls: list) -> None:
        self.calls = calls

    def update(self, bundle: dict, raw: bool) -> None:
        self.calls.append(("update", bundle, raw))


def test_ray_data_draws_its_live_display_through_one_display_handle(monkeypatch):
    from ray.data._internal.progress import rich_progress

    monkeypatch.setattr(rich_progress, "Live", rich_progress.Live)  # put back afterwards
    runtime.draw_live_display_with_display_handles()
    assert rich_progress.Live is runtime.DisplayHandleLive
    runtime.draw_live_display_with_display_handles()  # a second start_ray: the same
    assert rich_progress.Live is runtime.DisplayHandleLive

    calls: list = []

    def display(bundle: dict, raw: bool = False, display_id: bool = False) -> Handle | None:
        if not display_id:  # rich's console flushing its (empty) buffer at the end
            assert not str(getattr(bundle, "text", "")).strip()
            return None
        calls.append(("display", bundle, raw))
        return Handle(calls)

    monkeypatch.setattr("IPython.display.display", display)
    console = Console(file=io.StringIO(), force_jupyter=True, width=60)
    live = runtime.DisplayHandleLive(Text("rows 1/4"), console=console, auto_refresh=False)
    live.start(refresh=True)
    live.update(Text("rows 4/4"), refresh=True)
    live.stop()
    assert [call[0] for call in calls] == ["display", "update"]
    assert all(raw for _, _, raw in calls)
    last = calls[-1][1]
    assert last["text/plain"].strip() == "rows 4/4"
    assert last["text/html"].startswith("<pre") and "rows 4/4" in last["text/html"]


def test_in_a_terminal_the_live_display_is_riches_own(monkeypatch):
    """Not a notebook: nothing is displayed through IPython, rich draws as it always does."""
    monkeypatch.setattr(
        "IPython.display.display", lambda *args, **kwargs: (_ for _ in ()).throw(AssertionError)
    )
    out = io.StringIO()
    console = Console(file=out, force_jupyter=False, force_terminal=False, width=60)
    with runtime.DisplayHandleLive(Text("rows 4/4"), console=console, auto_refresh=False):
        pass
    assert "rows 4/4" in out.getvalue()
