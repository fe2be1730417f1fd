"""The Ray Data side of the data stage: read, decode and preprocess, never failing a row.

``ray.data.read_images`` stops the whole job on one empty or truncated file. Here
the file list comes from :func:`nbhelpers.sources.find_images`, and each file is
read and decoded inside a ``map_batches`` task that turns failures into an
``error`` string on the row. Every input path comes out as exactly one row.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
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


def prepare_image(path: str, preprocess: Preprocess, filesystem: pafs.FileSystem | None) -> PreparedImage:
    """Read, decode and preprocess one file; a failure is recorded, never raised.

    The single-batch step of each notebook and the Ray pipeline both call this,
    so both see exactly the same pixels.
    """
    try:
        image = load_image(path, filesystem, min_side=preprocess.min_side)
        width, height = image.info["original_size"]
        return PreparedImage(path, preprocess(image), width, height, None)
    except DecodeError as error:
        return PreparedImage(path, preprocess.empty, 0, 0, str(error))
    except Exception as error:  # noqa: BLE001 - any surprise becomes a recorded failure
        return PreparedImage(path, preprocess.empty, 0, 0, f"{type(error).__name__}: {error}")


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
    cpus_per_task: float = 1.0,
    rows_per_block: int = 16,
) -> ray.data.Dataset:
    """A Ray dataset of prepared images: one row per path in ``source``, failures included.

    Args:
        source: the images, from :func:`nbhelpers.sources.find_images`.
        preprocess: a :class:`~nbhelpers.preprocess.CenterCrop` or
            :class:`~nbhelpers.preprocess.LimitSize`, applied in the read tasks.
        cpus_per_task: CPUs each read-and-preprocess task reserves (from the
            actor-pool plan, so that the model actors never starve these tasks).
        rows_per_block: paths per block; small blocks spread decoding over tasks.
    """
    paths = [{"path": path} for path in source.paths]
    num_blocks = max(1, math.ceil(len(paths) / rows_per_block))
    return ray.data.from_items(paths, override_num_blocks=num_blocks).map_batches(
        prepare_batch,
        fn_kwargs={"preprocess": preprocess, "filesystem": source.filesystem},
        batch_size=rows_per_block,
        num_cpus=cpus_per_task,
        batch_format="numpy",
    )


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
    tasks keep the CPU they need.
    """
    return dataset.map_batches(
        predictor,
        fn_constructor_kwargs=constructor_kwargs,
        batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=plan.num_actors),
        num_cpus=plan.cpus_per_actor,
        num_gpus=plan.gpus_per_actor,
        batch_format="numpy",
    )


def collect_predictions(dataset: ray.data.Dataset, paths: list[str]) -> tuple[pd.DataFrame, float]:
    """Run the pipeline to the end; the rows in the order of ``paths``, and the seconds it took.

    Raises :class:`nbhelpers.results.LostRowsError` unless every path came back
    exactly once.
    """
    from nbhelpers.results import check_one_row_per_image

    start = time.perf_counter()
    frame = dataset.to_pandas()
    seconds = time.perf_counter() - start
    check_one_row_per_image(frame, paths)
    order = {path: i for i, path in enumerate(paths)}
    frame = frame.sort_values("path", key=lambda column: column.map(order)).reset_index(drop=True)
    frame["error"] = frame["error"].astype(object).where(frame["error"].notna(), None)
    return frame, seconds
