"""Nodes shaped as clusters have them, on a real Ray: a GPU that this torch cannot use, a GPU
node seen from a head node without one, a head node that offers no CPU."""

from __future__ import annotations

import json
import subprocess
import sys

from nbhelpers.destination import WRITE_TASK_CPUS

ON_A_REAL_RAY = """
import json, sys
import ray
from nbhelpers import pool
from nbhelpers.pool import ClusterResources, GPUUnavailableError, size_actor_pool
from nbhelpers.destination import output_location

found = {}
# Ray counts a GPU that torch (a CPU build, here) cannot use: the pool plans CPUs, and says why.
ray.init(num_cpus=2, num_gpus=1, include_dashboard=False)
resources = ClusterResources.from_ray()
found["unusable"] = [resources.gpus, size_actor_pool(resources).use_gpu, resources.gpu_problem]
found["described"] = resources.gpu_problem in resources.describe()
try:
    size_actor_pool(resources, use_gpu=True)
except GPUUnavailableError as error:
    found["required"] = type(error).__name__
# A cluster whose GPUs torch can use, seen from a process that has none (a CPU-only head node).
pool.torch_can_use_the_gpus = lambda: None  # what the check finds on a real GPU node
plan = size_actor_pool(ClusterResources.from_ray())
found["gpu_cluster"] = [plan.use_gpu, plan.device, plan.gpus_per_actor]
found["pinned"] = output_location(sys.argv[1]).ray_remote_args.get("num_cpus")
ray.shutdown()
# A node that offers no CPU, as a head node started with --num-cpus 0.
ray.init(num_cpus=0, include_dashboard=False)
args = output_location(sys.argv[1]).ray_remote_args
found["no_cpu"] = [args.get("num_cpus"), type(args["scheduling_strategy"]).__name__]
ray.shutdown()
print(json.dumps(found))
"""


def test_devices_and_write_tasks_follow_what_each_node_really_has(tmp_path):
    """A real Ray: the plan follows the cluster's GPU where torch can use it; a local output's
    write tasks are pinned to this node, and reserve no CPU where it has none."""
    result = subprocess.run(
        [sys.executable, "-c", ON_A_REAL_RAY, str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=180,
        env={"RAY_ADDRESS": "", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    gpus, uses_gpu, problem = found["unusable"]
    assert gpus == 1 and not uses_gpu and problem  # why, in the plan's resources
    assert found["described"] and found["required"] == "GPUUnavailableError"
    assert found["gpu_cluster"] == [True, "cuda", 1.0]
    assert found["pinned"] == WRITE_TASK_CPUS < 1  # never the whole CPU: see WRITE_TASK_CPUS
    assert found["no_cpu"] == [0, "NodeAffinitySchedulingStrategy"]
