"""The pipelines that ``make bench`` times, each run in a fresh process by :mod:`benchmarks.bench`.

- ``collection``: notebook 01's pipeline; ``vit_resize_in_read`` and
  ``vit_processor_in_actor``: notebook 02's, with the image processor's resize in the
  read tasks (the notebook's way) or left to the model actor;
- ``tutorial``: the Ray docs' batch-inference tutorial as written: ``ray.init()``,
  ``read_images``, a row-by-row ``map`` to float32 tensors that carries the original
  image along, one model actor;
- ``dataloader``: a plain PyTorch ``DataLoader`` whose workers decode notebook 01's crops,
  feeding its ``classify``: the same work without Ray;
- ``model_only``: notebook 01's ``classify`` on batches already in memory: the ceiling.

**How the benchmark stays what the notebooks run.** ``collection`` and the ``vit_``
pipelines execute the notebook's own cells tagged ``pipeline`` (:func:`run_notebook_pipeline`):
the imports, Ray's start and the pool's sizing, the object-store budget, the images, the
model call, the dataset, the actor class and ``map_batches``, and ``write_parquet``. Only
the teaching steps between them (the single batch, the preview, the plots) are left out, and
a subclass stamps the time on each batch (:func:`stamped`). ``dataloader`` and ``model_only``
run the notebook's ``classify`` (:func:`notebook_definitions`). So there is no copy of a
notebook's code to keep in step.

Every runner returns wall-clock times (``time.time()``, one clock for every process of
the machine): ``launched``, ``end``, ``batches`` (``[done_at, rows]``) and ``phases``
(``[name, began, ended]``, see :data:`benchmarks.metrics.PHASES`).
"""

from __future__ import annotations

import ast
import json
import os
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent


def notebook_entry(only: str):
    """The lesson's entry (:mod:`nbhelpers.lessons`) of the notebook whose name holds ``only``."""
    from nbhelpers import lessons

    return lessons.entry(only)


def notebook_definitions(notebook: Path, names: list[str]) -> dict:
    """Execute the imports and the named top-level definitions of ``notebook``'s code cells.

    The import statements of the cells up to the last definition asked for run first
    (the exercises' imports do not), then the definitions, in the notebook's order. The
    cell tagged ``install`` (IPython's ``%pip``, not Python) is left out. Returns the
    namespace they ran in.
    """
    cells = json.loads(notebook.read_text())["cells"]
    wanted, kept = set(names), []
    code = [c for c in cells if c["cell_type"] == "code"]
    for cell in (c for c in code if "install" not in c["metadata"].get("tags", [])):
        for node in ast.parse("".join(cell["source"])).body if wanted else []:
            targets = [getattr(t, "id", None) for t in getattr(node, "targets", [])]
            defined = {getattr(node, "name", None), *targets} & set(names)
            if isinstance(node, ast.Import | ast.ImportFrom) or defined:
                kept.append(node)
                wanted -= defined
    if wanted:
        raise LookupError(f"{notebook.name} defines no {sorted(wanted)} at the top of a cell.")
    namespace = {"__name__": notebook.stem}
    exec(compile(ast.Module(kept, type_ignores=[]), str(notebook), "exec"), namespace)
    return namespace


def stamped(predictor: type) -> type:
    """``predictor``, adding to each batch when its actor's process started, built, called, done."""
    import numpy as np
    import pyarrow as pa

    class Stamped(predictor):
        stamped = True

        def __init__(self, **kwargs):
            self.times = {"process_at": process_started_at(os.getpid()), "init_at": time.time()}
            super().__init__(**kwargs)
            self.times["built_at"] = time.time()

        def __call__(self, batch: dict) -> dict:
            called = time.time()
            out = super().__call__(batch)
            rows = len(next(iter(batch.values())))
            times = self.times | {"called_at": called, "done_at": time.time()}
            if isinstance(out, dict):  # a batch of NumPy arrays, or an Arrow table
                return out | {key: np.full(rows, value) for key, value in times.items()}
            for key, value in times.items():
                out = out.append_column(key, pa.array(np.full(rows, value)))
            return out

    return Stamped


# --------------------------------------------------------------------------- the pipelines
# Each runs in its own process and returns the wall-clock times (time.time(), one clock
# for every process of the machine) of its phases and of every batch it finished.


PIPELINE_TAG = "pipeline"
"""The tag of the notebooks' cells that :func:`run_notebook_pipeline` executes."""

PIPELINE_NAMES = {
    "source": "the images found (sources.ImageSource): its paths are read back",
    "plan": "the actor pool's plan (pool.ActorPoolPlan): the benchmark prints it",
    "output": "where the predictions went (destination.OutputLocation)",
}
"""What a notebook's ``pipeline`` cells must define, and why the benchmarks read each name:
renaming one in a notebook fails :func:`run_notebook_pipeline` with its name."""


def pipeline_cells(notebook: Path) -> list[str]:
    """The source of ``notebook``'s code cells tagged :data:`PIPELINE_TAG`, in order."""
    cells = json.loads(notebook.read_text())["cells"]
    return [
        "".join(cell["source"])
        for cell in cells
        if cell["cell_type"] == "code" and PIPELINE_TAG in cell["metadata"].get("tags", [])
    ]


def parameters_cell(notebook: Path) -> str:
    """The source of ``notebook``'s cell tagged ``parameters``."""
    cells = json.loads(notebook.read_text())["cells"]
    return next(
        "".join(c["source"]) for c in cells if "parameters" in c["metadata"].get("tags", [])
    )


def run_notebook_pipeline(
    run: dict, notebook: Path, actor: str, given: dict, adjust=lambda namespace: None
) -> dict:
    """Execute ``notebook``'s own pipeline cells, offline, on the benchmark's images.

    As papermill would: the parameters cell, then the benchmark's values over it; then
    every cell tagged ``pipeline``, from the imports to ``write_parquet``, with the names in
    ``given`` defined beforehand (what a skipped teaching cell would have made, such as
    notebook 01's ``spec``). The actor class ``actor`` is :func:`stamped` once its cell has
    run; ``adjust(namespace)`` runs after every cell (a variant's one change).
    """
    namespace = {"__name__": notebook.stem}
    exec(compile(parameters_cell(notebook), str(notebook), "exec"), namespace)
    namespace |= {
        "data_uri": run["folder"],
        "num_images": run["num_images"],
        "batch_size": run["batch_size"],
        "num_actors": None,
        "pretrained": False,
        "output_dir": run["output_dir"],
        "use_gpu": None,
    } | given
    times = {}
    for source in pipeline_cells(notebook):
        if "write_parquet(" in source:
            times["pipeline_started"] = time.time()
        exec(compile(source, str(notebook), "exec"), namespace)
        times.setdefault("imported", time.time())  # the first pipeline cell holds the imports
        if "start_ray(" in source:
            times["ray_started"] = time.time()
        if "write_parquet(" in source:
            times["end"] = time.time()
        if actor in namespace and not getattr(namespace[actor], "stamped", False):
            namespace[actor] = stamped(namespace[actor])
        adjust(namespace)
    missing = {name: why for name, why in PIPELINE_NAMES.items() if name not in namespace}
    if missing:
        raise LookupError(f"{notebook.name}'s pipeline cells define no {missing}.")
    from nbhelpers import results

    table = results.read_predictions(namespace["output"], namespace["source"].paths)
    return ray_pipeline_timings(run, times, table) | {"plan": namespace["plan"].describe()}


def skipped_definitions(notebook: str) -> dict:
    """What the teaching cells of ``notebook`` (``"01"``) that :func:`run_notebook_pipeline`
    skips would have defined for its pipeline cells: the model's spec (and notebook 03's
    score threshold), made without building the model where its weights carry it."""
    if "01" in notebook:
        from nbhelpers import models

        return {"spec": models.classifier_spec(models.RESNET152_WEIGHTS)}
    if "03" in notebook:
        from nbhelpers import models

        spec = models.build_fasterrcnn(False)[1]
        return {"spec": spec, "score_threshold": spec.score_threshold}
    return {}


def run_collection(run: dict) -> dict:
    """Notebook 01's pipeline: its own cells, with its spec made without building the model."""
    entry = notebook_entry("01")
    return run_notebook_pipeline(run, entry.path, entry.predictor, skipped_definitions("01"))


def run_vit(run: dict) -> dict:
    """Notebook 02's pipeline; the image processor resizes in the read tasks or in the actor.

    ``vit_processor_in_actor``: the read tasks keep each photo whole (the notebook's
    ``read_images``, one file at a time, so that photos of any size make one batch), and the
    actor resizes each one with the processor before the notebook's ``classify``.
    """
    import numpy as np

    def keep_whole(namespace: dict) -> None:
        from nbhelpers import vit

        if "vit_pipeline" in namespace and not namespace.get("kept_whole"):
            namespace["preprocess"] = vit.read_preprocessing(namespace["vit_pipeline"], True)
            namespace["kept_whole"] = True
        if "read_images" in namespace and not namespace.get("reads_whole"):
            read_images = namespace["read_images"]

            def read_whole(batch: dict, filesystem, preprocess) -> dict:
                rows = [
                    read_images({"path": np.array([path])}, filesystem, preprocess)
                    for path in batch["path"]
                ]
                images = np.empty(len(rows), dtype=object)
                for index, row in enumerate(rows):
                    images[index] = row["image"][0]
                errors = np.concatenate([row["error"] for row in rows])
                return {"path": batch["path"], "image": images, "error": errors}

            namespace["read_images"], namespace["reads_whole"] = read_whole, True
        if "classify" in namespace and not namespace.get("resizes_in_actor"):
            classify = namespace["classify"]

            def resize_then_classify(vit_pipeline, images) -> dict:
                resize = vit.read_preprocessing(vit_pipeline)  # the processor's resize, here
                return classify(vit_pipeline, np.stack([resize(image) for image in images]))

            namespace["classify"], namespace["resizes_in_actor"] = resize_then_classify, True

    adjust = keep_whole if run["pipeline"] == "vit_processor_in_actor" else lambda ns: None
    given = {"model_id": run["vit_model"], "pretrained": True}  # a local folder: no download
    entry = notebook_entry("02")
    return run_notebook_pipeline(run, entry.path, entry.predictor, given, adjust)


def run_tutorial(run: dict) -> dict:
    """The Ray docs' batch-inference tutorial as written, on these images, with seeded weights."""
    import ray
    import torch
    from torchvision import transforms
    from torchvision.models import ResNet152_Weights

    from nbhelpers.models import build_resnet152

    times = {"imported": time.time()}
    ray.init()
    times["ray_started"] = time.time()
    weights = ResNet152_Weights.DEFAULT
    transform = transforms.Compose([transforms.ToTensor(), weights.transforms()])

    def preprocess_image(row: dict) -> dict:
        return {"original_image": row["image"], "transformed_image": transform(row["image"])}

    class ResnetModel:
        def __init__(self):
            self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
            self.model = build_resnet152(pretrained=False)[0].to(self.device)

        def __call__(self, batch: dict) -> dict:
            torch_batch = torch.from_numpy(batch["transformed_image"]).to(self.device)
            with torch.inference_mode():
                predicted = self.model(torch_batch).argmax(dim=1).cpu().numpy()
            return {
                "predicted_label": [weights.meta["categories"][i] for i in predicted],
                "original_image": batch["original_image"],
            }

    predictions = (
        ray.data.read_images(run["paths"], mode="RGB")
        .map(preprocess_image)
        .map_batches(
            stamped(ResnetModel),
            compute=ray.data.ActorPoolStrategy(size=1),
            batch_size=run["batch_size"] or 16,
            **({"num_gpus": 1} if torch.cuda.is_available() else {}),
        )
    )
    times["pipeline_started"] = time.time()
    table = predictions.drop_columns(["original_image"]).to_pandas()
    times["end"] = time.time()
    return ray_pipeline_timings(run, times, table.assign(error=None))


def run_dataloader(run: dict) -> dict:
    """A ``DataLoader`` feeding notebook 01's ``classify`` with its crops; the workers decode.

    The same work as the collection (``reading.prepare_image``, ``classify``), without Ray.
    torchvision's transforms would hand the model NCHW float32 batches, which ResNet152 runs
    about 20 % slower on this CPU than the channels-last batches that ``classify`` makes
    from uint8 crops: a difference of memory layout, not of loading.
    """
    notebook = notebook_definitions(notebook_entry("01").path, ["classify"])
    import torch
    from torch.utils.data import DataLoader, Dataset

    from nbhelpers import models, reading

    class ImageFiles(Dataset):
        def __init__(self, paths: list[str], preprocess):
            self.paths, self.preprocess = paths, preprocess

        def __len__(self) -> int:
            return len(self.paths)

        def __getitem__(self, index: int):
            return reading.prepare_image(self.paths[index], self.preprocess, None).image

    imported = time.time()
    model, spec = models.build_resnet152(pretrained=False)
    model = model.to("cuda" if torch.cuda.is_available() else "cpu")
    built = time.time()
    loader = DataLoader(
        ImageFiles(run["paths"], spec.preprocess),
        batch_size=run["batch_size"] or (64 if torch.cuda.is_available() else 16),
        num_workers=run["loader_workers"],
    )
    batches = []
    for batch in loader:
        notebook["classify"](model, batch.numpy(), spec)
        batches.append([time.time(), len(batch)])
    phases = [
        ("imports", run["launched"], imported),
        ("model_build", imported, built),
        ("first_batch", built, batches[0][0]),
    ]
    return {"launched": run["launched"], "end": time.time(), "batches": batches, "phases": phases}


def run_model_only(run: dict) -> dict:
    """Notebook 01's ``classify`` on batches prepared in memory; preparing them is not timed."""
    notebook = notebook_definitions(notebook_entry("01").path, ["classify"])
    import numpy as np
    import torch

    from nbhelpers import models, reading

    imported = time.time()
    model, spec = models.build_resnet152(pretrained=False)
    model = model.to("cuda" if torch.cuda.is_available() else "cpu")
    built = time.time()
    size = run["batch_size"] or (64 if torch.cuda.is_available() else 16)
    images = [reading.prepare_image(path, spec.preprocess, None).image for path in run["paths"]]
    chunks = [np.stack(images[i : i + size]) for i in range(0, len(images), size)]
    shift = time.time() - built  # the other pipelines prepare their inputs as the model runs
    batches = []
    for chunk in chunks:
        notebook["classify"](model, chunk, spec)
        batches.append([time.time() - shift, len(chunk)])
    phases = [
        ("imports", run["launched"], imported),
        ("model_build", imported, built),
        ("first_batch", built, batches[0][0]),
    ]
    return {
        "launched": run["launched"],
        "end": time.time() - shift,
        "batches": batches,
        "phases": phases,
    }


def process_started_at(pid: int) -> float:
    """When process ``pid`` started, on ``time.time()``'s clock (to 10 ms, from /proc on Linux)."""
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        booted = time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)
        return booted + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError, AttributeError):
        return psutil.Process(pid).create_time()


def ray_pipeline_timings(run: dict, times: dict, table) -> dict:
    """Phases and batches of a Ray pipeline whose model actor was :func:`stamped`.

    The first read task comes from Ray's task timeline; the worker processes from this
    driver's process tree (those started before the pipeline were pre-started by Ray).
    """
    import logging

    import ray

    if table["error"].notna().any():
        raise RuntimeError(f"Benchmark images failed: {table['error'].dropna().iloc[0]}")
    logging.getLogger("ray._private.state").setLevel(logging.ERROR)  # a notice about the future
    reads = [event for event in ray.timeline() if event["name"].endswith("_map_task")]
    read = min(reads, key=lambda event: event["ts"]) if reads else None
    workers = []
    for process in psutil.Process().children(recursive=True):
        try:
            title = " ".join(process.cmdline()).strip()
            if title.startswith("ray::") and not title.endswith("Agent"):  # not Ray's own agents
                workers.append(process_started_at(process.pid))
        except psutil.Error:
            pass
    ray.shutdown()
    start, first = times["pipeline_started"], table.loc[table["done_at"].idxmin()]
    worker = max(start, first["process_at"])
    phases = [
        ("imports", run["launched"], times["imported"]),
        ("ray_init", times["imported"], times["ray_started"]),
        ("setup", times["ray_started"], start),
        *(
            [("first_read_task", read["ts"] / 1e6, (read["ts"] + read["dur"]) / 1e6)]
            if read
            else []
        ),
        ("actor_worker_wait", start, worker),
        ("actor_worker_start", worker, first["init_at"]),
        ("model_build", first["init_at"], first["built_at"]),
        ("data_wait", first["built_at"], first["called_at"]),
        ("first_batch", first["called_at"], first["done_at"]),
    ]
    return {
        "launched": run["launched"],
        "end": times["end"],
        "batches": [[float(at), int(rows)] for at, rows in table.groupby("done_at").size().items()],
        "phases": phases,
        "workers": [sum(at < start for at in workers), sum(at >= start for at in workers)],
        "map_tasks": [  # [operator, task id, start, seconds]: Ray's timeline of its tasks
            [
                event.get("cat", event["name"]),
                event.get("args", {}).get("task_id", ""),
                event["ts"] / 1e6,
                event["dur"] / 1e6,
            ]
            for event in reads
        ],
    }


RUNNERS = {
    "collection": run_collection,
    "vit_resize_in_read": run_vit,
    "vit_processor_in_actor": run_vit,
    "tutorial": run_tutorial,
    "dataloader": run_dataloader,
    "model_only": run_model_only,
}


if __name__ == "__main__":  # python -m benchmarks.pipelines '{"pipeline": ..., "output_dir": ...}'
    run = json.loads(sys.argv[1])
    timings = RUNNERS[run["pipeline"]](run)
    (Path(run["output_dir"]) / "run.json").write_text(json.dumps(timings))
