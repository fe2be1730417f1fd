"""Each piece of ``nbhelpers.runtime``'s table, run against the installed Ray, ipykernel and
IPython: when an upgrade changes what a piece relies on, its test here fails.

STOP_ON_ACTOR_CRASH, choose_token_authentication, through_ray_client,
mark_kernel_output_interactive, DisplayHandleLive (release_interrupted_cells runs in a real
kernel in ``tests/system/test_interrupt.py``; stage_table on real reports in
``test_ray_data.py``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import types

import numpy as np
import pytest
import ray
from ipykernel.iostream import OutStream

from nbhelpers import runtime


def _python(script: str, ray_dir: str, **env: str) -> subprocess.CompletedProcess:
    """``script`` in a new Python, with a home and a Ray folder of its own (no other Ray
    instance of the machine is joined) and no Ray settings but ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    return subprocess.run(
        [sys.executable, "-c", script],
        env=clean | {"HOME": ray_dir, "RAY_TMPDIR": ray_dir, **env},
        capture_output=True,
        text=True,
        timeout=240,
    )


@pytest.fixture()
def ray_dir():
    """A short folder for Ray's sockets (their paths must stay under ~100 characters)."""
    folder = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


# STOP_ON_ACTOR_CRASH ----------------------------------------------------------------------------


class CrashOnce:
    """A model actor whose process dies at its first batch, once: a restarted actor succeeds."""

    def __init__(self, marker: str):
        self.marker = marker

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os._exit(1)  # as the kernel's OOM killer ends it
        return batch


def run_crashing_pool(marker: str, **remote_args) -> int:
    dataset = ray.data.range(8, override_num_blocks=2).map_batches(
        CrashOnce,
        fn_constructor_kwargs={"marker": marker},
        compute=ray.data.ActorPoolStrategy(size=1),
        num_cpus=0.5,
        batch_size=4,
        **remote_args,
    )
    return dataset.count()


def test_max_restarts_through_ray_remote_args_stops_the_job_when_an_actor_crashes(
    local_ray, tmp_path
):
    """Ray 2.60 passes ``max_restarts`` given to ``map_batches`` on to the pool's actors, and
    warns that ``**ray_remote_args`` is deprecated: with it a crashed actor stops the job;
    without it, Ray Data restarts the actor and retries its batch."""
    with pytest.warns(DeprecationWarning, match="ray_remote_args"):  # still there, still going
        with pytest.raises(ray.exceptions.RayError):
            run_crashing_pool(str(tmp_path / "crashed"), **runtime.STOP_ON_ACTOR_CRASH)
    assert (tmp_path / "crashed").exists()  # it did crash, and the job stopped
    assert run_crashing_pool(str(tmp_path / "restarted")) == 8  # Ray Data's default: restarts


# choose_token_authentication --------------------------------------------------------------------

READ_AUTH_MODE = """
import json, os
import ray  # reads RAY_AUTH_MODE once, here
from ray._raylet import AuthenticationMode, get_authentication_mode
from nbhelpers import runtime

def token_mode():
    return get_authentication_mode() == AuthenticationMode.TOKEN

seen = {"imported": token_mode()}
os.environ["RAY_AUTH_MODE"] = "token"
seen["variable set"] = token_mode()  # not read again by itself
del os.environ["RAY_AUTH_MODE"]
runtime.choose_token_authentication()  # sets it, then has Ray read its settings again
seen["chosen"] = token_mode()
print(json.dumps(seen))
"""


def test_ray_reads_the_auth_mode_again_only_when_told(ray_dir):
    """Ray 2.60 reads ``RAY_AUTH_MODE`` at import; ``Config.initialize`` makes it read again."""
    result = _python(READ_AUTH_MODE, ray_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen == {"imported": False, "variable set": False, "chosen": True}


START_AND_STOP = """
import json, os
import ray
from nbhelpers.runtime import start_ray, stop_ray
start_ray(num_cpus=1)
result = ray.get(ray.remote(lambda: 1 + 1).remote())
reserving = ray.data.DataContext.get_current().op_resource_reservation_enabled
stop_ray()
print(json.dumps({"result": result, "mode": os.environ.get("RAY_AUTH_MODE"), "reserving": reserving}))
"""


def test_a_local_ray_starts_with_token_authentication_and_no_warning(ray_dir):
    """Ray 2.60 turns token mode on for a local instance and warns at every start; nbhelpers
    chooses the mode (after ``import ray``, as in a notebook), so the token is made, the
    driver uses it, and Ray's warning does not show."""
    result = _python(START_AND_STOP, ray_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found == {"result": 2, "mode": "token", "reserving": False}  # read tasks take every CPU
    assert os.path.isfile(f"{ray_dir}/.ray/auth_token")  # the token Ray made for token mode
    assert "RAY_AUTH_MODE=disabled" not in result.stdout + result.stderr  # Ray's warning's advice


# through_ray_client -----------------------------------------------------------------------------


def test_a_driver_on_a_local_ray_is_not_a_ray_client(local_ray):
    """``ray.util.client.num_connected_contexts`` counts Ray Client connections: none for a
    driver of a local Ray. Its other side, a ``ray://`` connection, needs ``ray[client]``,
    which the project does not install: ``tests/unit/test_destination.py`` stands it in."""
    assert ray.util.client.num_connected_contexts() == 0
    assert not runtime.through_ray_client()


# mark_kernel_output_interactive and DisplayHandleLive -------------------------------------------


class ZMQInteractiveShell:
    """Stands for Jupyter's kernel shell: the runtime module looks at its class name."""


def test_in_a_kernel_ray_data_draws_its_live_display_through_a_display_handle(monkeypatch):
    """ipykernel's ``OutStream`` answers ``isatty()`` from ``_isatty``; Ray Data picks its
    progress display by ``isatty()``, and builds its live display with ``rich_progress.Live``."""
    from ray.data._internal.progress import get_progress_manager, rich_progress

    stream = OutStream.__new__(OutStream)  # a kernel's stdout: isatty() False, as made
    stream._isatty = False
    ipython = types.SimpleNamespace(get_ipython=ZMQInteractiveShell)
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setattr(sys, "stdout", stream)
    monkeypatch.setattr(rich_progress, "Live", rich_progress.Live)  # put back afterwards
    context = ray.data.DataContext.get_current()
    monkeypatch.setattr(context, "enable_rich_progress_bars", False)
    monkeypatch.setattr(context, "use_ray_tqdm", True)
    before = type(get_progress_manager(context, "before", {}, False)).__name__
    runtime.quiet_ray_output()
    after = get_progress_manager(context, "after", {}, False)
    assert stream.isatty()
    assert (before, type(after).__name__) == (
        "LoggingExecutionProgressManager",
        "RichExecutionProgressManager",
    )
    assert isinstance(after._live, runtime.DisplayHandleLive)
    runtime.draw_live_display_with_display_handles()  # a second start_ray: the same
    assert rich_progress.Live is runtime.DisplayHandleLive
