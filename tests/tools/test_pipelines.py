"""benchmarks/: the benchmark runs the notebooks' own pipeline cells, and its metrics and
memory sampler count what they say."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from benchmarks import metrics, pipelines, sampler
from nbhelpers import lessons
from tests.conftest import ROOT

# The benchmark's collection: notebook 01's own cells, no copy of them.


@pytest.mark.parametrize("entry", lessons.entries(), ids=lambda entry: entry.notebook)
def test_the_benchmark_runs_the_notebooks_pipeline_cells_from_imports_to_write(entry):
    cells = pipelines.pipeline_cells(entry.path)
    code = "\n".join(cells)
    assert "import " in cells[0] and "write_parquet(" in cells[-1]
    for call in (
        "start_ray(",
        "from_items(",
        "map_batches(",
        "ActorPoolStrategy(",
    ):
        assert call in code, call
    # The teaching steps stay out: no single batch, no preview, no plots.
    assert "first_decoded(" not in code and "take_batch(" not in code and "plot_" not in code


def test_the_benchmark_writes_no_ray_data_call_of_the_notebooks_again():
    source = inspect.getsource(pipelines)
    tutorial = inspect.getsource(pipelines.run_tutorial)
    assert source.count("map_batches(") == tutorial.count("map_batches(")
    assert "write_parquet(" not in source.replace('"write_parquet("', "")
    assert "object_store_memory" not in source


def test_the_benchmark_runs_the_notebooks_own_model_call_and_actor():
    names = ["classify", "ResNetPredictor"]
    notebook = pipelines.notebook_definitions(lessons.entry("01").path, names)
    assert callable(notebook["classify"]) and isinstance(notebook["ResNetPredictor"], type)
    assert notebook["ResNetPredictor"].__module__ == lessons.entry("01").path.stem
    assert "ResNet18_Weights" not in notebook  # the exercises' imports stay out
    with pytest.raises(LookupError, match="no_such_name"):
        pipelines.notebook_definitions(lessons.entry("01").path, ["no_such_name"])


class _Doubler:
    def __init__(self, factor: int):
        self.factor = factor

    def __call__(self, batch: dict) -> dict:
        return {"path": batch["path"], "value": batch["value"] * self.factor}


class _ArrowDoubler(_Doubler):
    def __call__(self, batch: dict) -> pa.Table:
        return pa.table(super().__call__(batch))


@pytest.mark.parametrize("predictor", [_Doubler, _ArrowDoubler])
def test_stamped_predictor_keeps_the_outputs_and_adds_its_times(predictor):
    stamped = pipelines.stamped(predictor)(factor=2)
    out = stamped({"path": np.array(["a", "b"]), "value": np.array([1, 2])})
    columns = out if isinstance(out, dict) else out.to_pydict()
    assert list(columns["value"]) == [2, 4]
    times = [
        columns[key][0] for key in ("process_at", "init_at", "built_at", "called_at", "done_at")
    ]
    assert times == sorted(times) and len(columns["done_at"]) == 2


def test_steady_state_counts_the_images_after_the_first_batch():
    # 4 batches of 10 rows: the first after 10 s of start-up, then one every second.
    batches = [[10.0, 10], [11.0, 10], [12.0, 10], [13.0, 10]]
    assert metrics.steady_images_per_second(batches) == pytest.approx(10.0)
    assert metrics.steady_images_per_second(batches[:1]) is None
    figures = metrics.figures({"launched": 0.0, "end": 14.0, "batches": batches, "phases": []})
    assert figures["first_batch_seconds"] == 10.0
    assert figures["images_per_second"] == pytest.approx(40 / 14)
    assert figures["startup_seconds"] == pytest.approx(14 - 40 / 10)


def test_crossover_where_start_up_plus_steady_time_is_equal():
    ray = {"startup_seconds": 30.0, "steady_images_per_second": 10.0}
    loader = {"startup_seconds": 5.0, "steady_images_per_second": 5.0}
    images = metrics.crossover(ray, loader)
    assert images == pytest.approx(250.0)  # 30 + 250 / 10 == 5 + 250 / 5
    assert metrics.predicted_seconds(ray, 250) == pytest.approx(
        metrics.predicted_seconds(loader, 250)
    )
    assert metrics.crossover(loader, ray) is None  # slower once running: never overtakes
    assert metrics.crossover(ray | {"startup_seconds": 1.0}, loader) == 0.0


def test_the_memory_sampler_counts_cpu_and_memory_per_service_of_real_processes(tmp_path):
    """Processes named as Ray names its workers (``ray::<task>``) land in their service, with
    their CPU seconds and resident memory; the steady window counts only what ran inside it."""
    import subprocess
    import sys
    import time

    burn = "import time\nend = time.time() + 1.5\nwhile time.time() < end: pass"
    titles = {
        "ray::MapWorker(MapBatches(ResNetPredictor))": burn,
        "ray::IDLE": "import time; time.sleep(2)",
    }
    with sampler.MemorySampler() as memory:
        started = time.time()
        children = [
            subprocess.Popen(["bash", "-c", f'exec -a "{title}" {sys.executable} -c "{code}"'])
            for title, code in titles.items()
        ]
        for child in children:
            child.wait(timeout=30)
        ended = time.time()
        time.sleep(0.6)
    services = memory.services((started, ended))
    actor, idle = services["model actor"], services["Ray: idle workers"]
    assert 0.8 < actor["cpu_seconds"] <= 2.0 and actor["peak_rss_mib"] > 1
    assert idle["cpu_seconds"] < 0.5
    assert actor["steady_cpu_seconds"] is not None and actor["steady_cpu_seconds"] > 0.5
    assert memory.peak_pss > 0 and memory.peak_rss >= memory.peak_pss


def test_ratios_hold_the_three_targets():
    row = {"first_batch_seconds": 7.0, "steady_images_per_second": 9.5, "peak_rss_bytes": 3e9}
    rows = {
        "collection": row,
        "tutorial": row | {"first_batch_seconds": 10.0, "steady_images_per_second": 5.0},
        "model_only": row | {"steady_images_per_second": 10.0},
        "dataloader, num_workers=1": row | {"peak_rss_bytes": 2e9},
    }
    ratios = metrics.ratios(rows, "dataloader, num_workers=1")
    assert ratios["first batch, collection / tutorial (target <= 0.7)"] == pytest.approx(0.7)
    assert ratios["steady, collection / model_only (target >= 0.93)"] == pytest.approx(0.95)
    assert ratios["peak RSS, collection / dataloader, num_workers=1 (target <= 1.5)"] == 1.5


LOADER = """
import json, sys, time
from benchmarks.pipelines import run_notebook_pipeline, skipped_definitions
from nbhelpers import lessons
rows = {}
for entry in lessons.NOTEBOOKS:
    run = {"launched": time.time(), "folder": "sample", "num_images": 2, "batch_size": 2,
           "output_dir": f"{sys.argv[1]}/{entry.notebook}"}
    given = skipped_definitions(entry.notebook)
    timings = run_notebook_pipeline(run, entry.path, entry.predictor, given)
    rows[entry.notebook] = sum(n for _, n in timings["batches"])
print(json.dumps(rows))
"""


@pytest.mark.notebook
@pytest.mark.long
def test_the_benchmarks_loader_runs_every_notebooks_pipeline_cells(tmp_path):
    """``make bench``'s loader on each notebook's own ``pipeline`` cells, offline, on 2 sample
    photos (about a minute on 2 cores): a name the loader reads that a notebook renamed, or a
    cell that no longer runs without the teaching cells, fails here and not in ``make bench``."""
    result = subprocess.run(
        [sys.executable, "-c", LOADER, str(tmp_path)],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = json.loads(result.stdout.strip().splitlines()[-1])
    assert rows == {entry.notebook: 2 for entry in lessons.NOTEBOOKS}
