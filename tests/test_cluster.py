"""Actor-pool sizing: the pool never takes the CPUs that reading and preprocessing need."""

from __future__ import annotations

import math

import pytest

from nbhelpers.pool import GPU_ACTOR_CPUS, ClusterResources, GPUUnavailableError, size_actor_pool


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
    assert "2 GPU" in plan.describe()


def test_more_actors_than_cpus_share_without_starving_tasks():
    plan = size_actor_pool(ClusterResources(cpus=2, gpus=0), num_actors=4)
    assert plan.num_actors == 4
    assert plan.num_actors * plan.cpus_per_actor <= 1.0
    assert plan.notes


@pytest.mark.parametrize("cpus", [1, 2, 16])
def test_asking_for_gpus_without_any_fails_clearly(cpus):
    with pytest.raises(GPUUnavailableError, match="no GPU.*use_gpu=False"):
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
    assert "smallest node" in plan.describe()


def test_small_datasets_are_split_so_that_every_actor_gets_work():
    from nbhelpers.reading import rows_per_block

    assert rows_per_block(12, num_actors=2) == 3  # 4 blocks: 2 for each actor
    assert rows_per_block(8, num_actors=2) == 2
    assert rows_per_block(12, num_actors=1) == 12  # one actor: one full block
    assert rows_per_block(1, num_actors=16) == 1
    assert rows_per_block(10_000, num_actors=4) == 16  # large datasets: full blocks


@pytest.mark.parametrize("cpus,gpus", [(2, 1), (16, 1), (16, 8)])
def test_gpu_actors_leave_nearly_every_cpu_to_the_decode_tasks(cpus, gpus):
    """A GPU actor only copies batches and waits on its GPU: it reserves a quarter of a CPU,
    and the decode tasks share what is left, one per CPU left, rounded up."""
    plan = size_actor_pool(ClusterResources(cpus=cpus, gpus=gpus))
    assert plan.cpus_per_actor == GPU_ACTOR_CPUS
    assert plan.cpus_left_for_tasks == cpus - gpus * GPU_ACTOR_CPUS
    tasks = plan.cpus_left_for_tasks / plan.cpus_per_task
    assert tasks == pytest.approx(math.ceil(plan.cpus_left_for_tasks), abs=0.01)


def test_gpus_that_torch_cannot_use_are_not_planned():
    resources = ClusterResources(cpus=16, gpus=1, gpu_problem="torch cannot use them")
    assert not size_actor_pool(resources).use_gpu
    with pytest.raises(GPUUnavailableError, match="torch cannot use them"):
        size_actor_pool(resources, use_gpu=True)
