"""Bookkeeping for the model stage: run the model on the rows that decoded, keep the others,
so that no image is ever lost between the stages."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import ray

from nbhelpers.reading import object_array

NODE_COLUMN = "node_id"  # the Ray node whose model actor predicted the row
CALL_COLUMN = "model_call"  # which model call predicted the row: rows of one batch share it


def decoded_mask(batch: dict[str, np.ndarray]) -> np.ndarray:
    """Boolean mask of the rows whose image decoded (their ``error`` is null)."""
    return np.array([error is None or error != error for error in batch["error"]], dtype=bool)


def predict_decoded(
    batch: dict[str, np.ndarray],
    predict: Callable[[np.ndarray], dict[str, np.ndarray]],
    empty: dict[str, object],
) -> pa.Table:
    """Every row of ``batch`` with ``predict``'s columns, or nulls and its error where it failed.

    ``predict`` takes the decoded images and returns one array per output column.
    ``empty`` holds each column's value for a failed row (``{"label": None, "score":
    np.nan}``) and so decides its type: it is the output's schema, and ``predict`` may
    return no column that it lacks. No pixels come out: nothing heavy leaves the stage.
    The result is an Arrow table whose text columns stay text even in a block where every
    value is null, so that the Parquet files Ray writes all share one schema.
    """
    columns = predicted_columns(batch, predict, empty)
    return pa.table({column: _typed(values) for column, values in columns.items()})


def predicted_columns(
    batch: dict[str, np.ndarray],
    predict: Callable[[np.ndarray], dict[str, np.ndarray]],
    empty: dict[str, object],
) -> dict[str, np.ndarray]:
    """What :func:`predict_decoded` puts in its table, as NumPy columns: ``path``, ``error``,
    each column of ``empty``, ``node_id`` and ``model_call`` (one id per call, so that a
    check can tell which rows were batched together). For a stage that builds its own table."""
    ok = decoded_mask(batch)
    rows = len(ok)
    out = {"path": batch["path"], "error": np.where(ok, None, batch["error"]).astype(object)}
    for column, value in empty.items():
        out[column] = np.full(rows, value, dtype=object if value is None else type(value))
    if ok.any():
        for column, values in predict(batch["image"][ok]).items():
            if column not in out:
                raise KeyError(f"predict returned the column {column!r}, missing from empty")
            dtype = out[column].dtype  # lists (a detector's boxes) stay whole in object columns
            out[column][ok] = (
                object_array(values) if dtype.kind == "O" else np.asarray(values, dtype)
            )
    node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    out[NODE_COLUMN] = np.full(rows, node, dtype=object)
    out[CALL_COLUMN] = np.full(rows, uuid.uuid4().hex[:12], dtype=object)
    return out


def _typed(values: np.ndarray) -> pa.Array:
    """An Arrow column; one with no value but nulls is typed as text (an error, a label)."""
    if values.dtype.kind != "O":
        return pa.array(values)
    array = pa.array(values, from_pandas=True)
    return array.cast(pa.string()) if pa.types.is_null(array.type) else array
