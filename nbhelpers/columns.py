"""List columns read back from Parquet (a detector's boxes, labels and scores), where a failed
image holds a null: each cell as a plain list, or boxes as a ``(k, 4)`` array.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def as_list(value) -> list:
    """A list cell (list, array, or null: ``None``, ``NaN``, ``pd.NA``) as a plain list."""
    return [] if value is None or (np.ndim(value) == 0 and pd.isna(value)) else list(value)


def as_boxes(value) -> np.ndarray:
    """A ``boxes`` cell (lists, nested arrays from Parquet, or null) as a ``(k, 4)`` float array."""
    boxes = [np.asarray(box, dtype=np.float32) for box in as_list(value)]
    return np.stack(boxes).reshape(-1, 4) if boxes else np.zeros((0, 4), dtype=np.float32)
