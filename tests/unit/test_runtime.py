"""nbhelpers.runtime, its own logic with stand-ins for what Ray and IPython provide: the live
display drawn through one display handle, the settings workers get, where a token comes from,
an interrupted cell's traceback released, the stats() report read as a table.
``tests/claims/test_runtime.py`` runs each piece against the installed libraries."""

from __future__ import annotations

import io
import sys
import types

import pytest
from rich.console import Console
from rich.text import Text

from nbhelpers import runtime


class Handle:
    """Stands for IPython's ``DisplayHandle``: records the updates."""

    def __init__(self, calls: list) -> None:
        self.calls = calls

    def update(self, bundle: dict, raw: bool) -> None:
        self.calls.append(("update", bundle, raw))


def test_the_live_display_is_one_output_updated_in_place(monkeypatch):
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


def test_outside_a_kernel_the_output_is_left_as_it_is(monkeypatch):
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: None))
    isatty = sys.stdout.isatty()
    assert not runtime.mark_kernel_output_interactive()
    assert sys.stdout.isatty() == isatty
    assert not runtime.release_interrupted_cells()  # no shell to register with


def test_workers_get_the_offline_settings_and_a_remote_cluster_the_package(monkeypatch):
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "TORCH_HOME"):
        monkeypatch.delenv(name, raising=False)
    assert runtime.worker_runtime_env(remote=False) == {}  # a local Ray's workers import it here
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert runtime.worker_runtime_env(remote=False) == {"env_vars": {"HF_HUB_OFFLINE": "1"}}
    remote = runtime.worker_runtime_env(remote=True)
    assert [path.rsplit("/", 1)[-1] for path in remote["py_modules"]] == ["nbhelpers"]


def test_a_token_is_taken_in_rays_order(monkeypatch, tmp_path):
    monkeypatch.setattr(runtime, "DEFAULT_TOKEN_FILE", tmp_path / "auth_token")
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    assert runtime.auth_token_source() is None
    (tmp_path / "auth_token").write_text("secret")
    assert str(tmp_path / "auth_token") in runtime.auth_token_source()
    (tmp_path / "other").write_text("secret")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "other"))
    assert "RAY_AUTH_TOKEN_PATH" in runtime.auth_token_source()
    monkeypatch.setenv("RAY_AUTH_TOKEN", "secret")
    assert "RAY_AUTH_TOKEN" in runtime.auth_token_source().split()[-1]


def test_a_mode_the_user_set_is_kept(monkeypatch):
    monkeypatch.setenv(runtime.AUTH_MODE_VARIABLE, "disabled")
    monkeypatch.setattr(runtime, "_reload_ray_config", lambda: pytest.fail("reloaded"))
    runtime.choose_token_authentication()
    assert runtime.os.environ[runtime.AUTH_MODE_VARIABLE] == "disabled"


def interrupted_cell() -> types.SimpleNamespace:
    """What IPython's ``post_run_cell`` gets for a cell stopped by an interrupt."""
    big = bytearray(10)  # a local of the interrupted frame

    def cell():
        assert big is not None
        raise KeyboardInterrupt

    try:
        cell()
    except KeyboardInterrupt as error:
        return types.SimpleNamespace(error_in_exec=error)


def test_an_interrupted_cells_traceback_is_released(monkeypatch):
    shell = types.SimpleNamespace(InteractiveTB=types.SimpleNamespace(tb=object()))
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: shell))
    result = interrupted_cell()
    assert result.error_in_exec.__traceback__ is not None
    runtime.forget_interrupted_traceback(result)
    assert result.error_in_exec.__traceback__ is None and shell.InteractiveTB.tb is None
    assert isinstance(result.error_in_exec, KeyboardInterrupt)  # the kernel still says error


def test_any_other_error_keeps_its_traceback_for_debug():
    try:
        raise ValueError("x")
    except ValueError as error:
        result = types.SimpleNamespace(error_in_exec=error)
    runtime.forget_interrupted_traceback(result)
    assert result.error_in_exec.__traceback__ is not None


STATS = """Operator 1 ReadRange->MapBatches(read_images): 4 tasks executed, 4 blocks produced in 2.5s
* Remote wall time: 1ms min, 2ms max, 1ms mean, 5ms total
* Operator throughput:
\t* Total input num rows: 64 rows
\t* Total output num rows: 64 rows
\t* Ray Data throughput: 25.6 rows/s
\t* Estimated single task throughput: 12.8 rows/s

Operator 2 MapBatches(ResNetPredictor): 4 tasks executed, 4 blocks produced in 8.0s
* Operator throughput:
\t* Total output num rows: 64 rows
\t* Ray Data throughput: 8.0 rows/s
\t* Estimated single task throughput: 8.0 rows/s

Dataset throughput:
\t* Ray Data throughput: 8.0 rows/s
"""


def test_a_stats_report_becomes_a_table_with_each_stages_tasks_at_work():
    table = runtime.stage_table(STATS)
    assert list(table.index) == [
        "ReadRange->MapBatches(read_images)",
        "MapBatches(ResNetPredictor)",
    ]
    assert table["tasks"].tolist() == [4, 4] and table["rows"].tolist() == [64, 64]
    assert table["seconds"].tolist() == [2.5, 8.0]
    assert table["at_work"].tolist() == [2.0, 1.0]  # the model stage held the run


def test_a_stats_report_without_an_executed_stage_is_refused():
    with pytest.raises(ValueError):
        runtime.stage_table("Dataset throughput:\n\t* Ray Data throughput: 0 rows/s\n")
