"""What makes the scaled-up stage fast: torch threads in the model actors, and the benchmark's sums."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from nbhelpers.cluster import ClusterResources, size_actor_pool, torch_threads_per_actor
from nbhelpers.pipeline import with_torch_threads

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench.py"


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
    assert "2 thread(s)" in plan.describe()
    assert plan.as_dict()["torch_threads"] == 2


class _Recorder:
    """A predictor that records the torch threads it sees."""

    def __init__(self, offset: int):
        self.offset = offset
        self.threads_at_init = torch.get_num_threads()

    def __call__(self, batch: dict) -> dict:
        return {"threads": torch.get_num_threads() + self.offset, **batch}


def test_with_torch_threads_sets_threads_before_init_and_on_every_call():
    before = torch.get_num_threads()
    try:
        wrapped = with_torch_threads(_Recorder, 1)
        assert wrapped.__name__ == "_Recorder" and issubclass(wrapped, _Recorder)
        predictor = wrapped(offset=0)
        assert predictor.threads_at_init == 1
        torch.set_num_threads(2)
        assert predictor({"x": 1}) == {"threads": 1, "x": 1}
    finally:
        torch.set_num_threads(before)


def _bench_module():
    spec = importlib.util.spec_from_file_location("bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench", module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_benchmark_throughput_leaves_out_the_warm_up_batches():
    bench = _bench_module()
    # 4 batches of 10 rows: the first two slow (start-up), then one every second.
    run = {"start": 0.0, "end": 20.0, "batches": [[10.0, 10], [15.0, 10], [16.0, 10], [17.0, 10]]}
    figures = bench.throughput(run)
    assert figures["num_images"] == 40
    assert figures["images_per_second"] == pytest.approx(2.0)
    assert figures["steady_images_per_second"] == pytest.approx(10.0)
    assert figures["first_batch_seconds"] == pytest.approx(10.0)
