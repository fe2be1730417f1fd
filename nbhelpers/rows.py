"""The rows the model stage writes: the columns every lesson's rows share (``path``,
``error``, ``node_id``, ``model_call``), each model's schema, and list cells (a detector's boxes,
labels and scores) read back from Parquet, where a failed image holds a null.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import ray

PATH_COLUMN = "path"  # the image's file
ERROR_COLUMN = "error"  # why the image could not be decoded; null where it was predicted
NODE_COLUMN = "node_id"  # the Ray node whose model actor predicted the row
CALL_COLUMN = "model_call"  # which model call predicted the row: rows of one batch share it
BOOKKEEPING_COLUMNS = (PATH_COLUMN, ERROR_COLUMN, NODE_COLUMN, CALL_COLUMN)


def object_array(items) -> np.ndarray:
    """A 1-D object array holding ``items`` as they are (numpy would try to stack arrays)."""
    items = list(items)
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array


def prediction_schema(*model_fields: pa.Field) -> pa.Schema:
    """The columns of a model stage's rows: ``path``, the model's ``model_fields``, ``error``,
    and which node and which model call predicted the row (text)."""
    text = pa.string()
    return pa.schema(
        [
            pa.field(PATH_COLUMN, text),
            *model_fields,
            pa.field(ERROR_COLUMN, text),
            pa.field(NODE_COLUMN, text),
            pa.field(CALL_COLUMN, text),
        ]
    )


def decoded_mask(batch: dict[str, np.ndarray]) -> np.ndarray:
    """Boolean mask of the rows whose image decoded (their ``error`` is null)."""
    return np.array([error is None or error != error for error in batch["error"]], dtype=bool)


def predicted_columns(
    batch: dict[str, np.ndarray],
    predict: Callable[[np.ndarray], dict[str, np.ndarray]],
    schema: pa.Schema,
) -> dict[str, np.ndarray]:
    """Every row of ``batch`` with ``predict``'s columns, as NumPy columns: every column of
    ``schema``, ``None`` in the model's columns of a failed row (and in those ``predict`` does
    not return), one id per call in ``model_call`` (so that a check can tell which rows were
    batched together)."""
    ok = decoded_mask(batch)
    rows = len(ok)
    out = {name: np.full(rows, None, dtype=object) for name in schema.names}
    out[PATH_COLUMN] = batch["path"]
    out[ERROR_COLUMN] = np.where(ok, None, batch["error"]).astype(object)
    if ok.any():
        for column, values in predict(batch["image"][ok]).items():
            if column not in out or column in BOOKKEEPING_COLUMNS:
                raise KeyError(f"predict returned the column {column!r}, not in the schema")
            out[column][ok] = object_array(values)  # lists (a detector's boxes) stay whole
    node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    out[NODE_COLUMN] = np.full(rows, node, dtype=object)
    out[CALL_COLUMN] = np.full(rows, uuid.uuid4().hex[:12], dtype=object)
    return out


CLASSIFIER_SCHEMA = prediction_schema(
    pa.field("label_index", pa.int64()),  # the class's ImageNet-1k index; -1: not an ImageNet one
    pa.field("label", pa.string()),  # the class's name
    pa.field("score", pa.float32()),  # its probability
    pa.field("margin", pa.float32()),  # its lead on the runner-up's probability
)
"""One row per image of a classifier lesson: ``path``, the four columns above, ``error``,
``node_id`` and ``model_call``. An image that could not be decoded keeps its path and its
error, with nulls in the model's columns."""


# List cells read back from Parquet ------------------------------------------------------------


def as_list(value) -> list:
    """A list cell (list, array, or null: ``None``, ``NaN``, ``pd.NA``) as a plain list."""
    return [] if value is None or (np.ndim(value) == 0 and pd.isna(value)) else list(value)


def as_boxes(value) -> np.ndarray:
    """A ``boxes`` cell (lists, nested arrays from Parquet, or null) as a ``(k, 4)`` float array."""
    boxes = [np.asarray(box, dtype=np.float32) for box in as_list(value)]
    return np.stack(boxes).reshape(-1, 4) if boxes else np.zeros((0, 4), dtype=np.float32)


# A detector's rows ----------------------------------------------------------------------------


DETECTOR_SCHEMA = prediction_schema(
    pa.field("width", pa.int32()),  # the original photo's size, in pixels
    pa.field("height", pa.int32()),
    pa.field("num_detections", pa.int32()),  # -1 for a photo that could not be decoded
    pa.field("boxes", pa.list_(pa.list_(pa.float32()))),  # [x1, y1, x2, y2] in its pixels
    pa.field("labels", pa.list_(pa.string())),  # COCO names, one per box
    pa.field("scores", pa.list_(pa.float32())),
)
"""One row per photo, typed even in a block of only failed photos or of photos without
detections, so that all the Parquet files Ray Data writes read back together: ``path``, the
columns above, ``error``, ``node_id`` and ``model_call``. A photo that could not be decoded
keeps its path and error, with width and height 0, ``num_detections`` -1 and null boxes,
labels and scores."""


def scale_boxes(
    boxes: np.ndarray, array_size: tuple[int, int], original_size: tuple[int, int]
) -> np.ndarray:
    """Boxes found on an array of ``array_size`` (h, w) in the original's pixels (w, h), clipped."""
    (array_height, array_width), (width, height) = array_size, original_size
    factors = np.array([width / array_width, height / array_height] * 2, dtype=np.float64)
    scaled = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) * factors
    scaled[:, 0::2] = scaled[:, 0::2].clip(0, width)
    scaled[:, 1::2] = scaled[:, 1::2].clip(0, height)
    return scaled.astype(np.float32)


def image_rows(batch: dict[str, np.ndarray], found: dict[str, Sequence]) -> pa.Table:
    """One :data:`DETECTOR_SCHEMA` row per image of ``batch``, boxes in the original photo's
    pixels.

    ``found``: the model's ``boxes``, ``labels`` and ``scores`` per row (null for a failed
    image, which gets ``num_detections`` -1), maybe with ``error``, ``node_id`` and
    ``model_call`` (as :func:`predicted_columns` gives them).
    """
    rows = len(batch["path"])
    boxes: list[list | None] = []
    for i, array_boxes in enumerate(found["boxes"]):
        if array_boxes is None:
            boxes.append(None)
            continue
        original = (int(batch["width"][i]), int(batch["height"][i]))
        boxes.append(scale_boxes(array_boxes, batch["image"][i].shape[:2], original).tolist())
    errors = found.get(ERROR_COLUMN, batch["error"])
    columns = {
        PATH_COLUMN: [str(path) for path in batch["path"]],
        "width": batch["width"],
        "height": batch["height"],
        "num_detections": [-1 if labels is None else len(labels) for labels in found["labels"]],
        "boxes": boxes,
        "labels": list(found["labels"]),
        "scores": list(found["scores"]),
        ERROR_COLUMN: [error if isinstance(error, str) else None for error in errors],
        NODE_COLUMN: list(found.get(NODE_COLUMN, [None] * rows)),
        CALL_COLUMN: list(found.get(CALL_COLUMN, [None] * rows)),
    }
    return pa.table(columns, schema=DETECTOR_SCHEMA)


PLACEHOLDERS = ("__background__", "N/A")
"""The COCO label indices that name no class: 0 is the background, and 10 are ``"N/A"``, ids
of classes that COCO dropped before release (91 indices, 80 classes). Pretrained weights
never predict them; random ones (offline) may."""


def detections_per_class(predictions: pd.DataFrame) -> pd.Series:
    """How many detections each of COCO's 80 classes got, most frequent first; detections
    of a placeholder index (:data:`PLACEHOLDERS`) are left out."""
    labels = [label for cell in predictions["labels"] for label in as_list(cell)]
    labels = pd.Series([label for label in labels if label not in PLACEHOLDERS], dtype=object)
    return labels.value_counts().rename("detections").rename_axis("label")
