"""What the lessons say Ray Data does, checked by running the installed version.

Each test names the notebook sentence it backs. When an upgrade changes one of these
behaviours, the test fails and the sentence must change with it.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import ray
from ray.data._internal.execution.interfaces.execution_options import ExecutionResources
from ray.data._internal.execution.resource_manager import ResourceManager

from nbhelpers import runtime
from nbhelpers.runtime import stage_table
from tests.claims.conftest import RAY_REMOTE_ARGS_DEPRECATION


class Doubler:
    """A callable class for map_batches, as the notebooks' predictors are."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"id": batch["id"] * 2}


def test_blocks_use_at_most_half_the_object_store_and_a_lower_limit_only_lowers(
    local_ray, monkeypatch
):
    # Notebooks 01-03, "The object store": Ray Data's blocks may use half of it, and a
    # resource_limits of our own is taken with min(), so it can only throttle. Observed on
    # the limits Ray Data's executor computes while it runs a dataset.
    seen: list[float] = []
    original = ResourceManager.get_global_limits

    def recording(self):
        limits = original(self)
        seen.append(limits.object_store_memory)
        return limits

    monkeypatch.setattr(ResourceManager, "get_global_limits", recording)
    monkeypatch.setattr(ResourceManager, "GLOBAL_LIMITS_UPDATE_INTERVAL_S", 0)  # each call
    options = ray.data.DataContext.get_current().execution_options
    monkeypatch.setattr(options, "resource_limits", options.resource_limits)  # put back after
    total = ray.cluster_resources()["object_store_memory"]
    ray.data.range(16, override_num_blocks=4).materialize()  # the executor has seen the cluster
    limits = {}
    for name, asked in (("default", None), ("lower", total / 8), ("higher", total * 2)):
        if asked is not None:
            options.resource_limits = ExecutionResources.for_limits(object_store_memory=asked)
        seen.clear()
        ray.data.range(16, override_num_blocks=4).materialize()
        limits[name] = max(seen)
    assert limits == pytest.approx({"default": total / 2, "lower": total / 8, "higher": total / 2})


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
    with pytest.raises(ValueError, match="batch_size"):
        dataset.map_batches(Doubler, compute=ray.data.ActorPoolStrategy(size=1), num_gpus=1)
    dataset.map_batches(
        Doubler, compute=ray.data.ActorPoolStrategy(size=1), num_gpus=1, batch_size=2
    )  # planned, not run: no GPU is needed for that


@pytest.mark.filterwarnings(RAY_REMOTE_ARGS_DEPRECATION)
def test_stats_rates_are_rows_over_the_stage_window_and_over_its_tasks_time(local_ray):
    # Notebook 01, "Where the time went": "Ray Data throughput" is a stage's rows over its
    # window (the seconds its header says it produced its blocks in), "Estimated single
    # task throughput" its rows over its tasks' summed time, so their ratio is how many of
    # its tasks were at work on average: about as many as its actors for the stage that
    # held the run.

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
        stage = stage_table(dataset.materialize().stats()).loc["MapBatches(Sleeper)"]
        assert stage["rows"] == 64
        assert stage["rows_per_s"] == pytest.approx(64 / stage["seconds"], rel=0.05)
        # 8 batches of a quarter second: the tasks' summed time is at least 2 s.
        assert stage["rows_per_s_one_task"] <= 64 / 2.0 * 1.05
        assert at_least <= stage["at_work"] <= actors * 1.05


def test_the_write_stage_returns_one_row_per_write_task(local_ray, tmp_path):
    # Notebook 01, "Where the time went": the dataset's throughput, the last line of stats(),
    # counts the rows of the last stage, the write, which returns one per write task.
    dataset = ray.data.range(64, override_num_blocks=4)
    dataset.write_parquet(str(tmp_path))
    report = dataset.stats()
    write = stage_table(report).iloc[-1]  # here fused with the read: ReadRange->Write
    assert write.name.endswith("Write") and write["tasks"] == write["rows"] == 4
    assert len(list(tmp_path.glob("*.parquet"))) == 4  # and 64 rows in the files
