"""The Ray Data side of the data stage: read, decode and preprocess, never failing a row.

``ray.data.read_images`` stops the whole job on one empty or truncated file. Here
the file list comes from :func:`nbhelpers.sources.find_images`, and each file is
read and decoded inside a ``map_batches`` task that turns failures into an
``error`` string on the row. Every input path comes out as exactly one row.
"""

from __future__ import annotations

import inspect
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import ray

from nbhelpers.cluster import ActorPoolPlan
from nbhelpers.decode import DecodeError, load_image
from nbhelpers.sources import ImageSource

Preprocess = Callable  # a CenterCrop or LimitSize from nbhelpers.preprocess


@dataclass(frozen=True)
class PreparedImage:
    """One file after reading, decoding and preprocessing."""

    path: str
    image: np.ndarray
    width: int
    height: int
    error: str | None


def prepare_image(
    path: str, preprocess: Preprocess, filesystem: pafs.FileSystem | None
) -> PreparedImage:
    """Read, decode and preprocess one file; a failure is recorded, never raised.

    The single-batch step of each notebook and the Ray pipeline both call this,
    so both see exactly the same pixels.
    """
    try:
        image = load_image(path, filesystem, **decode_bounds(preprocess))
        width, height = image.info["original_size"]
        return PreparedImage(path, preprocess(image), width, height, None)
    except DecodeError as error:
        return PreparedImage(path, preprocess.empty, 0, 0, str(error))
    except Exception as error:  # noqa: BLE001 - any surprise becomes a recorded failure
        return PreparedImage(path, preprocess.empty, 0, 0, f"{type(error).__name__}: {error}")


def decode_bounds(preprocess: Preprocess) -> dict[str, int | None]:
    """How far a decoder may shrink a large image before ``preprocess`` sees it.

    ``min_side`` keeps the shorter side long enough for a resize-and-crop;
    ``min_long_side`` keeps the longer side long enough for a preprocessing step that
    caps it (``LimitSize.max_side``), so that reduced-scale decoding never changes
    the size that reaches the model.
    """
    return {
        "min_side": getattr(preprocess, "min_side", None),
        "min_long_side": getattr(preprocess, "max_side", None),
    }


def prepare_batch(
    batch: dict[str, np.ndarray], preprocess: Preprocess, filesystem: pafs.FileSystem | None
) -> dict[str, np.ndarray]:
    """``map_batches`` function: ``{"path"}`` in, ``{"path", "image", "width", "height", "error"}`` out."""
    prepared = [prepare_image(str(path), preprocess, filesystem) for path in batch["path"]]
    images = [item.image for item in prepared]
    stacked = np.stack(images) if preprocess.fixed_size else _object_array(images)
    return {
        "path": np.array([item.path for item in prepared], dtype=object),
        "image": stacked,
        "width": np.array([item.width for item in prepared], dtype=np.int32),
        "height": np.array([item.height for item in prepared], dtype=np.int32),
        "error": np.array([item.error for item in prepared], dtype=object),
    }


def decoded_rows(batch: dict[str, np.ndarray]) -> np.ndarray:
    """Boolean mask of the rows whose image decoded (their ``error`` is null)."""
    return np.array([error is None or error != error for error in batch["error"]], dtype=bool)


def _object_array(items: list[np.ndarray]) -> np.ndarray:
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array


def read_images_safely(
    source: ImageSource,
    preprocess: Preprocess,
    plan: ActorPoolPlan | None = None,
    rows_per_block: int | None = None,
) -> ray.data.Dataset:
    """A Ray dataset of prepared images: one row per path in ``source``, failures included.

    Args:
        source: the images, from :func:`nbhelpers.sources.find_images`.
        preprocess: a :class:`~nbhelpers.preprocess.CenterCrop` or
            :class:`~nbhelpers.preprocess.LimitSize`, applied in the read tasks.
        plan: the actor pool the rows go to (:func:`nbhelpers.cluster.size_actor_pool`):
            its CPUs per read task, so that the model actors never starve these tasks,
            and its size, for the block size (``None``: one CPU per task, one actor).
        rows_per_block: paths per block (``None``: :func:`choose_rows_per_block`).
    """
    paths = [{"path": path} for path in source.paths]
    num_actors = plan.num_actors if plan else 1
    rows_per_block = rows_per_block or choose_rows_per_block(len(paths), num_actors)
    num_blocks = max(1, math.ceil(len(paths) / rows_per_block))
    return ray.data.from_items(paths, override_num_blocks=num_blocks).map_batches(
        prepare_batch,
        fn_kwargs={"preprocess": preprocess, "filesystem": source.filesystem},
        batch_size=rows_per_block,
        num_cpus=plan.cpus_per_task if plan else 1.0,
        batch_format="numpy",
    )


MAX_ROWS_PER_BLOCK = 16
"""Paths per read task on a large dataset: enough to amortise Ray's cost per task."""


def choose_rows_per_block(num_paths: int, num_actors: int = 1) -> int:
    """Paths per block: 16, or fewer when a small dataset would leave actors idle.

    Ray Data hands whole blocks to the model actors, so 12 images in one block keep
    one actor busy and the others idle. With several actors, aim for two blocks per
    actor, so that every actor, on every node, gets a share. With one actor, fewer
    and fuller blocks are better: each extra read task may start another worker
    process, which on a small machine competes with the model for the CPU.
    """
    wanted_blocks = 2 * num_actors if num_actors > 1 else 1
    return max(1, min(MAX_ROWS_PER_BLOCK, math.ceil(num_paths / wanted_blocks)))


def predict_with_actors(
    dataset: ray.data.Dataset,
    predictor: type,
    plan: ActorPoolPlan,
    batch_size: int,
    **constructor_kwargs,
) -> ray.data.Dataset:
    """Apply ``predictor`` (a class: set-up in ``__init__``, one batch per call) in an actor pool.

    The pool's size and each actor's CPUs and GPUs come from ``plan``
    (:func:`nbhelpers.cluster.size_actor_pool`), so the read and preprocessing
    tasks keep the CPU they need. Each actor runs torch with ``plan.torch_threads``
    intra-op threads (Ray would otherwise give it one per reserved CPU).
    """
    predicted = dataset.map_batches(
        with_torch_threads(with_node_ids(predictor), plan.torch_threads),
        fn_constructor_kwargs=constructor_kwargs,
        batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=plan.num_actors),
        num_cpus=plan.cpus_per_actor,
        num_gpus=plan.gpus_per_actor,
        batch_format="numpy",
    )
    options = predicted.context.execution_options
    budget = plan.num_actors * OBJECT_STORE_BYTES_PER_ACTOR
    options.resource_limits = options.resource_limits.copy(object_store_memory=budget)
    return predicted


OBJECT_STORE_BYTES_PER_ACTOR = int(os.environ.get("NBHELPERS_STORE_MIB_PER_ACTOR", "64")) << 20
"""Prepared images that may wait in Ray's object store, per model actor.

Decoding is far faster than the model, so without a limit Ray Data keeps decoding
ahead until a large share of the object store (gigabytes) holds prepared images,
and memory grows with the dataset. 64 MiB per actor holds over 400 classification
crops of 224 x 224, or about 20 detection images at their largest: many batches,
enough to keep every actor busy, and a peak that no longer depends on the dataset.
"""


def with_torch_threads(predictor: type, threads: int) -> type:
    """``predictor`` (a class) whose instances run torch with ``threads`` intra-op threads.

    The number is set before ``__init__`` and checked on every call: OpenMP keeps it per
    calling thread, and Ray may call an actor from another thread than the one that
    built it. The subclass keeps the name of ``predictor``, so progress bars show it.
    """

    def __init__(self, *args, **kwargs):
        _use_torch_threads(threads)
        predictor.__init__(self, *args, **kwargs)

    def __call__(self, *args, **kwargs):
        _use_torch_threads(threads)
        return predictor.__call__(self, *args, **kwargs)

    namespace = {
        "__init__": __init__,
        "__doc__": predictor.__doc__,
        "__module__": predictor.__module__,
        "__qualname__": predictor.__qualname__,
    }
    call = predictor.__call__
    if not (inspect.iscoroutinefunction(call) or inspect.isasyncgenfunction(call)):
        namespace["__call__"] = __call__  # async predictors keep theirs: set in __init__ only
    return type(predictor.__name__, (predictor,), namespace)


NODE_COLUMN = "node_id"
"""Column naming the Ray node whose model actor predicted the row."""


def with_node_ids(predictor: type) -> type:
    """``predictor`` (a class) whose output batches name the Ray node that ran them.

    Adds a ``node_id`` column, so that a run on a cluster shows which nodes did the
    work (:func:`nbhelpers.results.build_summary` counts rows per node). Predictors
    whose ``__call__`` is asynchronous or a generator are returned unchanged.
    """
    call = predictor.__call__
    if inspect.iscoroutinefunction(call) or inspect.isasyncgenfunction(call):
        return predictor
    if inspect.isgeneratorfunction(call):
        return predictor

    def __call__(self, *args, **kwargs):
        return _add_node_id(predictor.__call__(self, *args, **kwargs))

    namespace = {
        "__call__": __call__,
        "__doc__": predictor.__doc__,
        "__module__": predictor.__module__,
        "__qualname__": predictor.__qualname__,
    }
    return type(predictor.__name__, (predictor,), namespace)


def _add_node_id(output):
    node = ray.get_runtime_context().get_node_id()
    if isinstance(output, pd.DataFrame):
        return output.assign(**{NODE_COLUMN: node})
    if isinstance(output, dict) and output:
        rows = len(next(iter(output.values())))
        return output | {NODE_COLUMN: np.full(rows, node, dtype=object)}
    return output


def _use_torch_threads(threads: int) -> None:
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def collect_predictions(dataset: ray.data.Dataset, paths: list[str]) -> tuple[pd.DataFrame, float]:
    """Run the pipeline to the end; the rows in the order of ``paths``, and the seconds it took.

    Raises :class:`nbhelpers.results.LostRowsError` unless every path came back
    exactly once. :func:`collect_predictions_timed` gives the timing in detail.
    """
    frame, throughput = collect_predictions_timed(dataset, paths)
    return frame, throughput.seconds


def _to_pandas(tables: list[pa.Table]) -> pd.DataFrame:
    """Blocks of results as one DataFrame, joined in Arrow.

    ``Dataset.to_pandas`` would join them in pandas and try to turn list columns
    (a detector's boxes) into tensors, which fails on the null of a failed image.
    """
    if not tables:
        return pd.DataFrame(columns=["path", "error"])
    return pa.concat_tables(tables, promote_options="default").to_pandas()


def in_input_order(frame: pd.DataFrame, paths: list[str]) -> pd.DataFrame:
    """The rows of ``frame`` in the order of ``paths``, ``error`` null (``None``) where none.

    Raises :class:`nbhelpers.results.LostRowsError` unless every path has exactly one row.
    """
    from nbhelpers.results import check_one_row_per_image

    check_one_row_per_image(frame, paths)
    order = {path: i for i, path in enumerate(paths)}
    frame = frame.sort_values("path", key=lambda column: column.map(order)).reset_index(drop=True)
    frame["error"] = frame["error"].astype(object).where(frame["error"].notna(), None)
    return frame


@dataclass(frozen=True)
class Throughput:
    """How fast a pipeline ran: end to end, and once it was running.

    Attributes:
        images: rows that came out.
        seconds: from the start to the last row, start-up included (starting the
            actors, loading the model, the first reads).
        first_batch_seconds: from the start to the first batch out: mostly start-up.
        steady_images_per_second: rows after the first batch over the time they took
            (``None`` when only one batch came out): the speed a long run settles at.
    """

    images: int
    seconds: float
    first_batch_seconds: float
    steady_images_per_second: float | None

    @property
    def images_per_second(self) -> float:
        """End to end, start-up included."""
        return self.images / self.seconds if self.seconds > 0 else float("nan")

    def as_dict(self) -> dict:
        """Rounded figures for a table or ``summary.json``."""
        steady = self.steady_images_per_second
        return {
            "images": self.images,
            "seconds": round(self.seconds, 2),
            "first_batch_seconds": round(self.first_batch_seconds, 2),
            "images_per_second": round(self.images_per_second, 2),
            "steady_images_per_second": None if steady is None else round(steady, 2),
        }


def collect_predictions_timed(
    dataset: ray.data.Dataset, paths: list[str]
) -> tuple[pd.DataFrame, Throughput]:
    """:func:`collect_predictions`, timing each batch as it arrives (see :class:`Throughput`).

    On a small run, start-up dominates the end-to-end figure; the steady figure
    leaves it out, so that two ways of running the same stage can be compared.
    """
    start = time.perf_counter()
    tables, arrivals = [], []
    for table in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
        tables.append(table)
        arrivals.append((time.perf_counter(), table.num_rows))
    seconds = time.perf_counter() - start
    frame = _to_pandas(tables)
    steady = None
    if len(arrivals) > 1 and arrivals[-1][0] > arrivals[0][0]:
        later_rows = sum(rows for _, rows in arrivals[1:])
        steady = later_rows / (arrivals[-1][0] - arrivals[0][0])
    first = arrivals[0][0] - start if arrivals else seconds
    return in_input_order(frame, paths), Throughput(len(frame), seconds, first, steady)
