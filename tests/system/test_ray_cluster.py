"""A real multi-process Ray cluster on this machine, shaped as clusters really are.

Every node is started with ``ray start`` as separate processes, with token
authentication on, the way ``ray start --head`` runs a cluster since Ray 2.5x:

- the head node offers no CPU (``--num-cpus 0``: it runs only Ray's own services, as
  Ray advises for clusters), and the notebook's driver runs on it;
- each of the two worker nodes (2 CPUs) has a disk of its own: it starts inside a
  private mount namespace with a tmpfs over :data:`PRIVATE_DIR`, so that what it writes
  there only it can see, as on a machine of its own.

The notebook joins through ``RAY_ADDRESS`` and gets the token from ``RAY_AUTH_TOKEN``
alone: ``nbhelpers`` turns token mode on for the driver, and ships itself to the
workers (``runtime_env``).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.cluster, pytest.mark.notebook, pytest.mark.long]

RAY = str(Path(sys.executable).with_name("ray"))
CPUS_PER_NODE = 2  # on each of the two worker nodes; the head offers none


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _ray(*args: str, env: dict[str, str], timeout: int = 120) -> None:
    result = subprocess.run([RAY, *args], env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"ray {' '.join(args)} failed:\n{result.stderr[-3000:]}")


def _can_unshare() -> bool:
    """Whether this process may start a program in a private mount namespace (root, Linux)."""
    if not shutil.which("unshare") or os.geteuid() != 0:
        return False
    probe = ["unshare", "-m", "--propagation", "private", "true"]
    return subprocess.run(probe, capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """``(address, token, private_dir)`` of a cluster with token authentication: a head with
    no CPU, and two 2-CPU worker nodes that each see a tmpfs of their own at ``private_dir``."""
    if not _can_unshare():
        pytest.skip("needs root and unshare(1) to give each worker node a disk of its own")
    home = tmp_path_factory.mktemp("cluster-home")  # no ~/.ray/auth_token of the user's
    private_dir = tmp_path_factory.mktemp("nodes-own-disk")  # the driver's own folder there
    token = secrets.token_hex(32)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env |= {"HOME": str(home), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    address = f"127.0.0.1:{_free_port()}"
    common = ["--node-ip-address=127.0.0.1", "--num-gpus=0", "--disable-usage-stats"]
    try:
        _ray(
            "start",
            "--head",
            f"--port={address.split(':')[1]}",
            "--include-dashboard=false",
            "--num-cpus=0",
            *common,
            env=env,
        )
        worker = [RAY, "start", f"--address={address}", f"--num-cpus={CPUS_PER_NODE}", *common]
        for _ in range(2):
            _ray_in_private_mount(worker, private_dir, env)
        _wait_for_nodes(address, env, expected=3)
        yield address, token, private_dir
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(home, ignore_errors=True)


def _ray_in_private_mount(command: list[str], private_dir: Path, env: dict[str, str]) -> None:
    """Run ``ray start`` in a mount namespace of its own, with a fresh tmpfs over
    ``private_dir``: the node and its workers write there, and nobody else sees it."""
    script = f'mount -t tmpfs tmpfs "{private_dir}" && exec "$@"'
    full = ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", *command]
    result = subprocess.run(full, env=env, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(full)} failed:\n{result.stderr[-3000:]}")


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


def test_notebook_joins_the_cluster_and_its_results_come_back_whole(
    ray_cluster, run_notebook, tmp_path, imagenette_folder
):
    """Notebook 01 on a labelled folder in Imagenette's layout, its actors on both worker
    nodes, its ``output_dir`` a folder that each worker node has a private copy of: every
    row comes back to the head node, which offers no CPU for the write tasks. Its exercises
    run there too, and answer."""
    from tests.support.contract import check_labelled_run

    address, token, private_dir = ray_cluster
    output_dir = private_dir / "run"
    run = run_notebook(
        "01_resnet_classification",
        tmp_path,
        # Only the address and the token: no RAY_AUTH_MODE, no nbhelpers on the workers' path.
        env={"RAY_ADDRESS": address, "RAY_AUTH_TOKEN": token, "RAY_AUTH_MODE": ""},
        exercises=True,
        pretrained=False,
        data_uri=str(imagenette_folder),
        num_actors=2,
        batch_size=2,
        output_dir=str(output_dir),
    )
    check_labelled_run(run, num_images=8, batch_size=2)
    resources = run.summary["resources"]
    assert resources["nodes"] == 3 and resources["cpus"] == 2 * CPUS_PER_NODE
    assert resources["actors"] == 2
    rows_per_node = resources["actor_nodes"]
    assert len(rows_per_node) == 2, f"the actors ran on one node only: {rows_per_node}"
    assert sum(rows_per_node.values()) == run.summary["num_images_in"]
    assert set(run.predictions["node_id"]) == set(rows_per_node)
    log = run.executed.read_text()
    assert "RAY_AUTH_MODE=token" in log  # the driver switched token mode on by itself
    assert "on 3 node(s)" in log
    assert "which offers no CPU: the write tasks reserve none" in log
    assert log.count("Answer:") >= EXERCISE_ANSWERS["01_resnet_classification"], log[-3000:]


EXERCISE_ANSWERS = {  # the answers each notebook's exercises print, at least
    "01_resnet_classification": 3,
    "02_vit_classification": 3,
    "03_fasterrcnn_detection": 3,
}


@pytest.mark.parametrize("name", ["02_vit_classification", "03_fasterrcnn_detection"])
def test_the_other_lessons_and_their_exercises_run_on_the_cluster(
    ray_cluster, run_notebook, tmp_path, name
):
    """Notebooks 02 and 03 joined to the cluster, their exercises too: nothing waits for a
    CPU the head node does not offer, and every exercise answers."""
    address, token, private_dir = ray_cluster
    run = run_notebook(
        name,
        tmp_path,
        env={"RAY_ADDRESS": address, "RAY_AUTH_TOKEN": token, "RAY_AUTH_MODE": ""},
        exercises=True,
        pretrained=False,
        data_uri="sample",
        num_images=6,
        output_dir=str(private_dir / name),
    )
    assert run.summary["num_images_in"] == 6 and run.summary["num_failed"] == 0
    assert len(run.predictions) == 6
    log = run.executed.read_text()
    assert "on 3 node(s)" in log
    assert log.count("Answer:") >= EXERCISE_ANSWERS[name], log[-3000:]


def test_a_pool_larger_than_the_cluster_says_what_it_got(ray_cluster, tmp_path):
    """Asking for more than the cluster has never waits: the plan shrinks and says so."""
    address, token, _ = ray_cluster
    script = (
        "import json\n"
        "from nbhelpers.pool import size_actor_pool\n"
        "from nbhelpers.runtime import start_ray, stop_ray\n"
        "resources = start_ray()\n"
        "one, many = (size_actor_pool(resources, num_actors=n) for n in (1, 16))\n"
        "print(json.dumps({'smallest': min(resources.node_cpus), 'one': one.as_dict(),\n"
        "                  'many': many.as_dict()}))\n"
        "stop_ray()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env |= {"RAY_ADDRESS": address, "RAY_AUTH_TOKEN": token, "HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    plans = json.loads(result.stdout.strip().splitlines()[-1])
    one, many = plans["one"], plans["many"]
    assert one["cpus_per_actor"] == plans["smallest"] and one["notes"]  # capped, and noted
    assert many["num_actors"] == 16 and many["notes"]  # sharing the CPUs, and noted
    assert many["num_actors"] * many["cpus_per_actor"] < sum([plans["smallest"]] * 2)


def test_joining_without_the_token_fails_with_advice(ray_cluster, tmp_path):
    address, _, _ = ray_cluster
    script = "from nbhelpers.runtime import start_ray\nstart_ray()\n"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env |= {"RAY_ADDRESS": address, "HOME": str(tmp_path)}  # no token anywhere
    env["RAY_gcs_server_port_wait_time_s"] = "2"  # Ray retries ~1 s apart; fewer in the test
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=180
    )
    assert result.returncode != 0
    assert "ClusterConnectionError" in result.stderr
    assert "RAY_AUTH_TOKEN" in result.stderr  # what to give
