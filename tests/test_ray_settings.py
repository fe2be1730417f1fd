"""The Ray settings nbhelpers makes, each through what this Ray and ipykernel offer: the live
progress display in a kernel, token authentication without a warning, and a local
``output_dir`` refused through Ray Client."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import types

import pytest
import ray
from ipykernel.iostream import OutStream

from nbhelpers import destination, runtime


class ZMQInteractiveShell:
    """Stands for Jupyter's kernel shell: :mod:`nbhelpers.progress` looks at its class name."""


def test_in_a_kernel_ray_data_draws_progress_bars_not_log_lines(monkeypatch):
    from ray.data._internal.progress import get_progress_manager

    stream = OutStream.__new__(OutStream)  # a kernel's stdout: isatty() False, as made
    stream._isatty = False
    ipython = types.SimpleNamespace(get_ipython=ZMQInteractiveShell)
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setattr(sys, "stdout", stream)
    context = ray.data.DataContext.get_current()
    monkeypatch.setattr(context, "enable_rich_progress_bars", False)
    monkeypatch.setattr(context, "use_ray_tqdm", True)
    before = type(get_progress_manager(context, "before", {}, False)).__name__
    runtime.quiet_ray_output()
    after = type(get_progress_manager(context, "after", {}, False)).__name__
    assert stream.isatty()
    assert (before, after) == ("LoggingExecutionProgressManager", "RichExecutionProgressManager")


def test_outside_a_kernel_the_output_is_left_as_it_is(monkeypatch):
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: None))
    isatty = sys.stdout.isatty()
    assert not runtime.mark_kernel_output_interactive()
    assert sys.stdout.isatty() == isatty


def _python(script: str, ray_dir: str, **env: str) -> subprocess.CompletedProcess:
    """``script`` in a new Python, with a home and a Ray folder of its own (no other Ray
    instance of the machine is joined) and no Ray settings but ``env``."""
    return subprocess.run(
        [sys.executable, "-c", script],
        env=_environment(ray_dir, **env),
        capture_output=True,
        text=True,
        timeout=240,
    )


def _environment(ray_dir: str, **env: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    return clean | {"HOME": ray_dir, "RAY_TMPDIR": ray_dir, **env}


@pytest.fixture()
def ray_dir():
    """A short folder for Ray's sockets (their paths must stay under ~100 characters)."""
    folder = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_a_local_ray_starts_with_token_authentication_and_no_warning(ray_dir):
    """Ray 2.60 turns token mode on for a local instance and warns at every start; nbhelpers
    chooses the mode (after ``import ray``, as in a notebook), so the token is made, the
    driver uses it, and nothing is said."""
    script = (
        "import ray\n"
        "from nbhelpers.cluster import start_ray, stop_ray\n"
        "start_ray(num_cpus=1)\n"
        "print('sum', ray.get(ray.remote(lambda: 1 + 1).remote()))\n"
        "stop_ray()\n"
    )
    result = _python(script, ray_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "sum 2" in result.stdout
    assert os.path.isfile(f"{ray_dir}/.ray/auth_token")  # the token Ray made for token mode
    assert "Token authentication is" not in result.stdout + result.stderr


def test_a_local_output_dir_is_refused_through_ray_client(monkeypatch, tmp_path):
    """Through Ray Client (``ray://``) the workers cannot write to this machine's folders.

    Ray Client needs ``ray[client]``, which the project does not install: the connection is
    stood in for by what Ray 2.60's ``ray.init`` itself asks, its count of client connections.
    """
    assert not runtime.through_ray_client()  # no connection in this process
    assert destination.output_location(tmp_path / "run").is_local
    monkeypatch.setattr(ray.util.client, "num_connected_contexts", lambda: 1)
    assert runtime.through_ray_client()
    with pytest.raises(destination.OutputLocationError, match="through Ray Client"):
        destination.output_location(tmp_path / "run")
