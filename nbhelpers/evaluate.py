"""Evaluate predictions: accuracy, confusion matrix, and single-batch / scaled-up parity."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

OTHER = "(other)"


def accuracy(true: Sequence[int | None], predicted: Sequence[int]) -> float | None:
    """Top-1 accuracy over the rows that have both a label and a prediction.

    Returns ``None`` when no row has a label (nothing to evaluate against).
    """
    pairs = [
        (t, p)
        for t, p in zip(true, predicted, strict=True)
        if t is not None and not pd.isna(t) and p >= 0
    ]
    if not pairs:
        return None
    return float(np.mean([t == p for t, p in pairs]))


def confusion_matrix(
    true: Sequence[int | None], predicted: Sequence[int], categories: Sequence[str]
) -> pd.DataFrame:
    """Counts of (true class, predicted class) over the labelled rows.

    Rows are the true classes present; columns the same classes plus ``(other)``
    for predictions outside them (a 1000-class model can predict anything).
    """
    pairs = [
        (int(t), int(p))
        for t, p in zip(true, predicted, strict=True)
        if t is not None and not pd.isna(t) and p >= 0
    ]
    classes = sorted({t for t, _ in pairs})
    names = [categories[c] for c in classes]
    matrix = pd.DataFrame(
        0, index=pd.Index(names, name="true"), columns=pd.Index([*names, OTHER], name="predicted")
    )
    for t, p in pairs:
        matrix.loc[categories[t], categories[p] if p in classes else OTHER] += 1
    return matrix


def compare_classifications(
    single: pd.DataFrame, scaled: pd.DataFrame, score_tolerance: float = 1e-3
) -> pd.DataFrame:
    """Compare the single-batch predictions with the scaled-up ones, image by image.

    Both frames need ``path``, ``label``, ``score`` and ``margin``. The same image
    must get the same top-1 label and a score within ``score_tolerance``. Float
    results differ in the last digits between batch sizes, so where the single
    batch saw a near-tie (``margin`` below the tolerance) either of the tied labels
    counts as the same answer.

    Returns:
        One row per image of ``single``, with a boolean ``match`` column.
    """
    merged = single[["path", "label", "score", "margin"]].merge(
        scaled[["path", "label", "score"]], on="path", how="left", suffixes=("_single", "_scaled")
    )
    merged["score_difference"] = (merged["score_single"] - merged["score_scaled"]).abs()
    same_label = merged["label_single"] == merged["label_scaled"]
    near_tie = merged["margin"] < score_tolerance
    merged["match"] = (same_label | near_tie) & (merged["score_difference"] <= score_tolerance)
    return merged.drop(columns=["margin"])


def parity_summary(comparison: pd.DataFrame) -> dict:
    """``{"checked", "matching", "ok"}`` for ``summary.json``."""
    checked, matching = len(comparison), int(comparison["match"].sum())
    return {"checked": checked, "matching": matching, "ok": bool(checked and checked == matching)}
