"""What the notebooks say Ray Data, torch and torchvision do, checked against the installed versions.

Each test names the notebook sentence it backs. When an upgrade changes one of these
behaviours, the test fails and the sentence must change with it.
"""

from __future__ import annotations

import inspect
import time

import numpy as np
import pytest
import ray
import torch
from ray.data._internal.execution.resource_manager import ResourceManager
from ray.data._internal.stats import DatasetStatsSummary, OperatorStatsSummary
from torchvision.transforms.v2.functional import normalize

from nbhelpers import pool, runtime
from nbhelpers.runtime import stage_table


@pytest.fixture(scope="module")
def local_ray():
    """A small local Ray of this test module's own, stopped at its end."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


class Doubler:
    """A callable class for map_batches, as the notebooks' predictors are."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"id": batch["id"] * 2}


def test_ray_data_lets_blocks_use_at_most_half_the_object_store_and_a_lower_limit_only_lowers():
    # Notebooks 01-03, "The object store": Ray Data's blocks may use half of it, and a
    # resource_limits of our own is taken with min(), so it can only throttle.
    assert ResourceManager.DEFAULT_OBJECT_STORE_MEMORY_LIMIT_FRACTION == 0.5
    assert ray.data.DataContext.get_current().op_resource_reservation_enabled  # that branch
    source = " ".join(inspect.getsource(ResourceManager.get_global_limits).split())
    assert (
        "object_store_memory=total_resources.object_store_memory * default_mem_fraction" in source
    )
    assert "default_limits.min(total_resources)" in source


def test_map_batches_is_lazy_until_a_consuming_call(local_ray, tmp_path):
    # Notebook 01, section 3: "Nothing runs yet: Ray Data is lazy".
    marker = tmp_path / "ran"

    def touch(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        marker.touch()
        return batch

    dataset = ray.data.range(4).map_batches(touch)
    assert not marker.exists()
    dataset.take_batch(2)
    assert marker.exists()


def test_a_derived_dataset_shares_its_parents_context(local_ray):
    # Notebook 01, exercise 4: a setting on a dataset's context is on its parent's too, so
    # the exercise builds its own dataset from scratch instead of deriving it.
    parent = ray.data.range(4)
    child = parent.map_batches(Doubler, compute=ray.data.ActorPoolStrategy(size=1))
    assert child.context is parent.context
    assert ray.data.range(4).context is not parent.context


def test_map_batches_asks_for_a_batch_size_when_actors_take_gpus(local_ray):
    # Notebooks 01-03: with GPUs, batch_size is always given (64 by default).
    dataset = ray.data.range(4)
    with pytest.raises(ValueError, match="You must provide `batch_size`"):
        dataset.map_batches(Doubler, compute=ray.data.ActorPoolStrategy(size=1), num_gpus=1)
    dataset.map_batches(
        Doubler, compute=ray.data.ActorPoolStrategy(size=1), num_gpus=1, batch_size=2
    )  # planned, not run: no GPU is needed for that


def test_stats_rates_are_rows_over_the_stage_window_and_over_its_tasks_time(local_ray):
    # Notebook 01, "Where the time went": "Ray Data throughput" is a stage's rows over its
    # window, "Estimated single task throughput" its rows over its tasks' summed time, so
    # their ratio is how many of its tasks were at work on average: about as many as its
    # actors for the stage that held the run.
    window = inspect.getsource(OperatorStatsSummary.num_rows_per_s.fget)
    assert "self.output_num_rows.sum / self.time_total_s" in window
    one_task = inspect.getsource(OperatorStatsSummary.num_rows_per_task_s.fget)
    assert "self.output_num_rows.sum / self.wall_time.sum" in one_task
    produced_in = inspect.getsource(OperatorStatsSummary.from_block_metadata)
    assert "time_total_s = latest_end_time - earliest_start_time" in produced_in

    class Sleeper:  # defined here, so that Ray ships it by value to its actors
        """A quarter of a second per batch: the stage that holds the run."""

        def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            time.sleep(0.25)
            return batch

    for actors, at_least in ((1, 0.75), (2, 1.2)):  # the second actor may start a little late
        dataset = ray.data.range(64, override_num_blocks=8).map_batches(
            Sleeper,
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=0.5,
            batch_size=8,
            **runtime.STOP_ON_ACTOR_CRASH,
        )
        table = stage_table(dataset.materialize().stats())
        assert table.loc["MapBatches(Sleeper)", "rows"] == 64
        assert at_least <= table.loc["MapBatches(Sleeper)", "at_work"] <= actors * 1.05


def test_the_write_stage_returns_one_row_per_write_task(local_ray, tmp_path):
    # Notebook 01, "Where the time went": the dataset's throughput, the last line of stats(),
    # counts the rows of the last stage, the write, which returns one per write task.
    assert "self.operators_stats[-1].output_num_rows" in inspect.getsource(
        DatasetStatsSummary.num_rows_per_s.fget
    )
    dataset = ray.data.range(64, override_num_blocks=4)
    dataset.write_parquet(str(tmp_path))
    write = stage_table(dataset.stats()).iloc[-1]  # here fused with the read: ReadRange->Write
    assert write.name.endswith("Write") and write["tasks"] == write["rows"] == 4


def test_normalize_uses_tensors_already_on_the_device_as_they_are():
    # Notebooks 01 and 02: "given lists, normalize would copy them to the GPU at every call".
    imagenet_mean, imagenet_std = (0.485, 0.456, 0.406), [0.229, 0.224, 0.225]
    mean, std = pool.mean_and_std_on("cpu", imagenet_mean, imagenet_std)
    again = pool.mean_and_std_on(torch.device("cpu"), list(imagenet_mean), imagenet_std)
    assert again[0] is mean and again[1] is std  # made once
    assert torch.as_tensor(mean, dtype=torch.float32, device="cpu") is mean  # what normalize does
    assert torch.as_tensor([0.485], dtype=torch.float32, device="cpu") is not mean
    pixels = torch.rand(2, 3, 4, 4)
    assert torch.equal(normalize(pixels, mean, std), normalize(pixels, mean.tolist(), std.tolist()))


def test_a_cpu_computes_in_float32_and_autocast_runs_convolutions_in_bfloat16():
    # Notebook 01, section 2: float32 on a CPU; under autocast(bfloat16) the network's
    # convolutions compute in bfloat16 (CPU autocast here, as on a GPU).
    assert pool.compute_dtype("cpu") == torch.float32
    convolution = torch.nn.Conv2d(3, 4, 3)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert convolution(torch.rand(1, 3, 8, 8)).dtype == torch.bfloat16
