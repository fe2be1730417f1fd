"""A real multi-process Ray cluster on this machine: a head node and a worker node.

Both are started with ``ray start`` as separate processes, with token
authentication on, the way ``ray start --head`` runs a cluster since Ray 2.5x.
The notebook joins through ``RAY_ADDRESS`` and gets the token from
``RAY_AUTH_TOKEN`` alone: ``nbhelpers`` turns token mode on for the driver, and
ships itself to the workers (``runtime_env``).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.cluster, pytest.mark.notebook]

RAY = str(Path(sys.executable).with_name("ray"))
CPUS_PER_NODE = 2


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _ray(*args: str, env: dict[str, str], timeout: int = 120) -> None:
    result = subprocess.run([RAY, *args], env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"ray {' '.join(args)} failed:\n{result.stderr[-3000:]}")


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """``(address, token)`` of a two-node cluster (2 CPUs each) with token authentication."""
    home = tmp_path_factory.mktemp("cluster-home")  # no ~/.ray/auth_token of the user's
    token = secrets.token_hex(32)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env |= {"HOME": str(home), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    address = f"127.0.0.1:{_free_port()}"
    common = ["--node-ip-address=127.0.0.1", f"--num-cpus={CPUS_PER_NODE}", "--num-gpus=0"]
    common += ["--disable-usage-stats"]
    try:
        _ray(
            "start",
            "--head",
            f"--port={address.split(':')[1]}",
            "--include-dashboard=false",
            *common,
            env=env,
        )
        _ray("start", f"--address={address}", *common, env=env)
        _wait_for_nodes(address, env, expected=2)
        yield address, token
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(home, ignore_errors=True)


def _wait_for_nodes(address: str, env: dict[str, str], expected: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = subprocess.run(
            [RAY, "status", f"--address={address}"], env=env, capture_output=True, text=True
        )
        active = status.stdout.split("Pending:")[0].count("node_")
        if active >= expected:
            return
        time.sleep(1)
    raise RuntimeError(f"the cluster at {address} did not reach {expected} nodes:\n{status}")


def test_notebook_joins_the_cluster_and_its_actors_run_on_both_nodes(
    ray_cluster, run_notebook, tmp_path, imagenette_folder
):
    """Notebook 01 on a labelled folder in Imagenette's layout, on the two-node cluster."""
    from test_notebook_01 import check_labelled_run

    address, token = ray_cluster
    run = run_notebook(
        "01_resnet_classification",
        tmp_path,
        # Only the address and the token: no RAY_AUTH_MODE, no nbhelpers on the workers' path.
        env={"RAY_ADDRESS": address, "RAY_AUTH_TOKEN": token, "RAY_AUTH_MODE": ""},
        pretrained=False,
        data_uri=str(imagenette_folder),
        num_actors=2,
        batch_size=2,
    )
    check_labelled_run(run, num_images=8, batch_size=2)
    resources = run.summary["resources"]
    assert resources["nodes"] == 2 and resources["cpus"] == 2 * CPUS_PER_NODE
    assert resources["actors"] == 2
    rows_per_node = resources["actor_nodes"]
    assert len(rows_per_node) == 2, f"the actors ran on one node only: {rows_per_node}"
    assert sum(rows_per_node.values()) == run.summary["num_images_in"]
    assert set(run.predictions["node_id"]) == set(rows_per_node)
    log = run.executed.read_text()
    assert "RAY_AUTH_MODE=token" in log  # the driver switched token mode on by itself
    assert "on 2 node(s)" in log


def test_a_pool_larger_than_the_cluster_says_what_it_got(ray_cluster, tmp_path):
    """Asking for more than the cluster has never waits: the plan shrinks and says so."""
    address, token = ray_cluster
    script = (
        "from nbhelpers.cluster import size_actor_pool, start_ray, stop_ray\n"
        "resources = start_ray()\n"
        "print(size_actor_pool(resources, num_actors=1).describe())\n"
        "print(size_actor_pool(resources, num_actors=16).describe())\n"
        "stop_ray()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env |= {"RAY_ADDRESS": address, "RAY_AUTH_TOKEN": token, "HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "as many as the smallest node has" in result.stdout
    assert "16 actors share" in result.stdout


def test_joining_without_the_token_fails_with_advice(ray_cluster, tmp_path):
    address, _ = ray_cluster
    script = "from nbhelpers.cluster import start_ray\nstart_ray()\n"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env |= {"RAY_ADDRESS": address, "HOME": str(tmp_path)}  # no token anywhere
    env["RAY_gcs_server_port_wait_time_s"] = "2"  # Ray retries ~1 s apart; fewer in the test
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=180
    )
    assert result.returncode != 0
    assert "ClusterConnectionError" in result.stderr
    assert "RAY_AUTH_TOKEN" in result.stderr and "Do not turn authentication off" in result.stderr
