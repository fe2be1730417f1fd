"""Bookkeeping for the model stage: run the model on the rows that decoded, keep the others.

A batch from :func:`nbhelpers.reading.decode_batch` may hold rows whose file could
not be read (``error`` is set, ``image`` is a placeholder). :func:`predict_decoded`
calls the notebook's own predict function on the good rows only and gives every
input row back, so that no image is ever lost between the stages.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import ray

NODE_COLUMN = "node_id"
"""Column naming the Ray node whose model actor predicted the row (``summary.json`` counts them)."""


def decoded_mask(batch: dict[str, np.ndarray]) -> np.ndarray:
    """Boolean mask of the rows whose image decoded (their ``error`` is null)."""
    return np.array([error is None or error != error for error in batch["error"]], dtype=bool)


def predict_decoded(
    batch: dict[str, np.ndarray],
    predict: Callable[[np.ndarray], dict[str, np.ndarray]],
    empty: dict[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """Every row of ``batch`` with ``predict``'s columns, or nulls and its error where it failed.

    Args:
        batch: ``path``, ``image``, ``error`` (and more) from the read stage.
        predict: takes the decoded images (``batch["image"][ok]``), returns one array per
            output column, one entry per image.
        empty: the value each output column holds for a failed row, e.g.
            ``{"label": None, "score": np.nan}``; also decides the column types.

    Returns:
        ``path``, ``error``, the output columns and ``node_id``: no pixels, so nothing
        heavy leaves the model stage.
    """
    ok = decoded_mask(batch)
    rows = len(ok)
    out = {"path": batch["path"], "error": np.where(ok, None, batch["error"]).astype(object)}
    for column, value in empty.items():
        out[column] = np.full(rows, value, dtype=object if value is None else type(value))
    if ok.any():
        for column, values in predict(batch["image"][ok]).items():
            if column not in out:
                raise KeyError(f"predict returned the column {column!r}, missing from empty")
            out[column][ok] = _as_column(values, out[column].dtype)
    out[NODE_COLUMN] = np.full(rows, _node_id(), dtype=object)
    return out


def _as_column(values, dtype: np.dtype) -> np.ndarray:
    """``values`` ready to be assigned into a column of ``dtype`` (lists kept whole in objects)."""
    if dtype.kind == "O":
        array = np.empty(len(values), dtype=object)
        array[:] = list(values)
        return array
    return np.asarray(values, dtype=dtype)


def _node_id() -> str | None:
    """The Ray node this runs on, or None outside Ray (the notebook's own process)."""
    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
