"""nbhelpers.pool: the actor pool never takes the CPUs that reading and preprocessing need."""

from __future__ import annotations

import math

import pytest
import torch

from nbhelpers.pool import (
    GPU_ACTOR_CPUS,
    ClusterResources,
    GPUUnavailableError,
    compute_dtype,
    size_actor_pool,
    torch_threads_per_actor,
)


@pytest.mark.parametrize("cpus", [1, 2, 16])
def test_cpu_only_pool_leaves_cpu_for_preprocessing(cpus):
    plan = size_actor_pool(ClusterResources(cpus=cpus, gpus=0))
    assert not plan.use_gpu and plan.gpus_per_actor == 0
    assert plan.num_actors >= 1
    used = plan.num_actors * plan.cpus_per_actor
    assert used < cpus
    assert plan.cpus_left_for_tasks == pytest.approx(cpus - used)
    assert 0 < plan.cpus_per_task <= plan.cpus_left_for_tasks


def test_pool_sizes_for_known_machines():
    assert size_actor_pool(ClusterResources(1, 0)).cpus_per_actor == 0.5
    two = size_actor_pool(ClusterResources(2, 0))
    assert (two.num_actors, two.cpus_per_actor, two.cpus_left_for_tasks) == (1, 1.0, 1.0)
    sixteen = size_actor_pool(ClusterResources(16, 0))
    assert sixteen.num_actors * sixteen.cpus_per_actor == 12


@pytest.mark.parametrize("cpus,gpus", [(1, 1), (2, 1), (16, 4)])
def test_one_actor_per_gpu(cpus, gpus):
    plan = size_actor_pool(ClusterResources(cpus=cpus, gpus=gpus))
    assert plan.use_gpu and plan.num_actors == gpus and plan.gpus_per_actor == 1
    assert plan.num_actors * plan.cpus_per_actor < cpus


def test_more_actors_than_gpus_is_reduced_with_a_note():
    plan = size_actor_pool(ClusterResources(cpus=16, gpus=2), num_actors=8)
    assert plan.num_actors == 2
    assert len(plan.notes) == 1 and "8" in plan.notes[0]  # what was asked, noted


def test_more_actors_than_cpus_share_without_starving_tasks():
    plan = size_actor_pool(ClusterResources(cpus=2, gpus=0), num_actors=4)
    assert plan.num_actors == 4
    assert plan.num_actors * plan.cpus_per_actor <= 1.0
    assert plan.notes


@pytest.mark.parametrize("cpus", [1, 2, 16])
def test_asking_for_gpus_without_any_fails_clearly(cpus):
    with pytest.raises(GPUUnavailableError, match="use_gpu=False"):  # what to give instead
        size_actor_pool(ClusterResources(cpus=cpus, gpus=0), use_gpu=True)


def test_use_gpu_false_ignores_gpus():
    plan = size_actor_pool(ClusterResources(cpus=16, gpus=4), use_gpu=False)
    assert not plan.use_gpu and plan.gpus_per_actor == 0


def test_cpu_tasks_are_not_fused_into_actors():
    # Equal per-task and per-actor CPUs would let Ray Data fuse decoding into the actor.
    for cpus in (1, 2, 3, 16):
        plan = size_actor_pool(ClusterResources(cpus=cpus, gpus=0))
        assert plan.cpus_per_task != plan.cpus_per_actor


@pytest.mark.parametrize("num_actors", [None, 1, 2, 3, 5, 8])
def test_every_actor_and_a_read_task_fit_on_the_nodes_of_a_cluster(num_actors):
    """Two 2-CPU nodes: no actor may ask for more than a node has, and a task must still fit."""
    nodes = [2.0, 2.0]
    resources = ClusterResources(cpus=sum(nodes), gpus=0, nodes=2, node_cpus=tuple(nodes))
    plan = size_actor_pool(resources, num_actors=num_actors)
    assert plan.cpus_per_actor <= min(nodes)
    # Place the actors as Ray spreads them, one node after the other, then a read task.
    free = list(nodes)
    for i in range(plan.num_actors):
        node = max(range(len(free)), key=lambda n: (free[n] >= plan.cpus_per_actor, free[n]))
        assert free[node] >= plan.cpus_per_actor - 1e-9, f"actor {i} fits on no node: {plan}"
        free[node] -= plan.cpus_per_actor
    assert max(free) >= plan.cpus_per_task - 1e-9, f"no node has room for a read task: {plan}"


def test_an_actor_larger_than_a_node_is_capped_with_a_note():
    resources = ClusterResources(cpus=4, gpus=0, nodes=2, node_cpus=(2.0, 2.0))
    plan = size_actor_pool(resources, num_actors=1)
    assert plan.cpus_per_actor == 2.0
    assert len(plan.notes) == 1  # the cap is noted


def plan_with(actors: int):
    return size_actor_pool(ClusterResources(cpus=8, gpus=0), num_actors=actors)


def test_small_datasets_are_split_so_that_every_actor_gets_work():
    assert plan_with(2).read_tasks(12, batch_size=16) == 4  # 2 blocks for each actor
    assert plan_with(2).read_tasks(8, batch_size=16) == 4
    assert plan_with(1).read_tasks(12, batch_size=16) == 1  # one actor: one full block
    assert plan_with(8).read_tasks(1, batch_size=16) == 1
    assert plan_with(4).read_tasks(10_000, batch_size=16) == 625  # large datasets: full blocks


@pytest.mark.parametrize(
    "actors, paths, batch, tasks",
    [(1, 48, 16, 3), (1, 5, 16, 1), (4, 48, 16, 8), (2, 1000, 64, 16)],
)
def test_read_tasks_hold_one_batch_or_two_per_actor_on_small_data(actors, paths, batch, tasks):
    assert plan_with(actors).read_tasks(paths, batch) == tasks


@pytest.mark.parametrize("cpus,gpus", [(2, 1), (16, 1), (16, 8)])
def test_gpu_actors_leave_nearly_every_cpu_to_the_decode_tasks(cpus, gpus):
    """A GPU actor only copies batches and waits on its GPU: it reserves a quarter of a CPU,
    and the decode tasks share what is left, two per CPU left, rounded up."""
    plan = size_actor_pool(ClusterResources(cpus=cpus, gpus=gpus))
    assert plan.cpus_per_actor == GPU_ACTOR_CPUS
    assert plan.cpus_left_for_tasks == cpus - gpus * GPU_ACTOR_CPUS
    tasks = plan.cpus_left_for_tasks / plan.cpus_per_task
    assert tasks == pytest.approx(2 * math.ceil(plan.cpus_left_for_tasks), abs=0.01)


def test_gpus_that_torch_cannot_use_are_not_planned():
    resources = ClusterResources(cpus=16, gpus=1, gpu_problem="torch cannot use them")
    assert not size_actor_pool(resources).use_gpu
    with pytest.raises(GPUUnavailableError, match="torch cannot use them"):
        size_actor_pool(resources, use_gpu=True)


@pytest.mark.parametrize(
    "cpus,nodes,actors,expected",
    [(1, 1, 1, 1), (2, 1, 1, 2), (2, 1, 4, 1), (16, 1, 4, 4), (32, 2, 2, 16), (32, 2, 4, 8)],
)
def test_cpu_actors_share_every_core_of_their_node(cpus, nodes, actors, expected):
    resources = ClusterResources(cpus=cpus, gpus=0, nodes=nodes)
    assert torch_threads_per_actor(resources, actors, use_gpu=False, cpus_per_actor=1) == expected


def test_gpu_actors_keep_the_cpus_they_reserved():
    plan = size_actor_pool(ClusterResources(cpus=16, gpus=4))
    assert plan.torch_threads == max(1, int(plan.cpus_per_actor))


def test_two_core_machine_gives_the_single_actor_both_cores():
    plan = size_actor_pool(ClusterResources(cpus=2, gpus=0))
    assert (plan.num_actors, plan.cpus_per_actor, plan.torch_threads) == (1, 1.0, 2)
    assert plan.as_dict()["torch_threads"] == 2
    assert plan.numbers(batch_size=16).loc["torch threads per actor", "value"] == "2"


def test_the_plans_numbers_are_the_plans_values():
    plan = size_actor_pool(ClusterResources(cpus=16, gpus=2))
    numbers = plan.numbers(batch_size=64)["value"]
    assert numbers["model actors"] == "2" and numbers["GPUs per actor"] == "1"
    assert float(numbers["CPUs per actor"]) == plan.cpus_per_actor == GPU_ACTOR_CPUS
    assert numbers["batch size"] == "64"


def test_a_cpu_computes_in_float32():
    assert compute_dtype("cpu") == torch.float32


def test_read_tasks_feeding_a_gpu_hold_whole_batches_of_at_least_64_rows():
    plan = size_actor_pool(ClusterResources(cpus=2, gpus=1))
    assert plan.read_tasks(2000, 16) == 32 and plan.read_tasks(2000, 64) == 32
    assert plan.read_tasks(40, 16) == 1  # one actor: a small dataset in one task
