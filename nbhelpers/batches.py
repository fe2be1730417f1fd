"""Bookkeeping for the model stage: run the model on the rows that decoded, keep the others,
so that no image is ever lost between the stages; and the columns every stage's rows share."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import ray

from nbhelpers.reading import object_array

PATH_COLUMN = "path"  # the image's file
ERROR_COLUMN = "error"  # why the image could not be decoded; null where it was predicted
NODE_COLUMN = "node_id"  # the Ray node whose model actor predicted the row
CALL_COLUMN = "model_call"  # which model call predicted the row: rows of one batch share it
BOOKKEEPING_COLUMNS = (PATH_COLUMN, ERROR_COLUMN, NODE_COLUMN, CALL_COLUMN)


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


def predict_decoded(
    batch: dict[str, np.ndarray],
    predict: Callable[[np.ndarray], dict[str, np.ndarray]],
    schema: pa.Schema,
) -> pa.Table:
    """Every row of ``batch`` with ``predict``'s columns, or nulls and its error where it failed.

    ``predict`` takes the decoded images and returns one array per column of ``schema``
    (:func:`prediction_schema`) that the model fills; it may return no column that
    ``schema`` lacks. No pixels come out: nothing heavy leaves the stage. The result is an
    Arrow table of ``schema``: every block has the same types, even one where every row
    failed, so that the Parquet files Ray writes all read back together.
    """
    columns = predicted_columns(batch, predict, schema)
    arrays = [pa.array(columns[field.name], field.type, from_pandas=True) for field in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def predicted_columns(
    batch: dict[str, np.ndarray],
    predict: Callable[[np.ndarray], dict[str, np.ndarray]],
    schema: pa.Schema,
) -> dict[str, np.ndarray]:
    """What :func:`predict_decoded` puts in its table, as NumPy columns, for a stage that
    builds its own: every column of ``schema``, ``None`` in the model's columns of a failed
    row (and in those ``predict`` does not return), one id per call in ``model_call`` (so
    that a check can tell which rows were batched together)."""
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
