"""Evaluate predictions: accuracy, confusion matrix, mAP, and single-batch / scaled-up parity."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow.fs as pafs

from nbhelpers import voc
from nbhelpers.detection import as_boxes, as_list
from nbhelpers.labels import labels_from_paths

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


def box_iou(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Intersection over union of every box of ``first`` (n, 4) with every box of ``second`` (m, 4).

    Boxes are ``x1, y1, x2, y2``; the result is ``(n, m)``.
    """
    first = np.asarray(first, dtype=np.float64).reshape(-1, 4)
    second = np.asarray(second, dtype=np.float64).reshape(-1, 4)
    top_left = np.maximum(first[:, None, :2], second[None, :, :2])
    bottom_right = np.minimum(first[:, None, 2:], second[None, :, 2:])
    intersection = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    area_first = np.prod(first[:, 2:] - first[:, :2], axis=1)
    area_second = np.prod(second[:, 2:] - second[:, :2], axis=1)
    union = area_first[:, None] + area_second[None, :] - intersection
    return np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)


def _unmatched_detections(
    own: tuple[np.ndarray, list, list],
    other: tuple[np.ndarray, list, list],
    confident_from: float,
    score_tolerance: float,
    iou_threshold: float,
) -> tuple[int, list[float], list[float]]:
    """Confident detections of ``own`` without a counterpart in ``other``; IoUs and score gaps of the rest."""
    boxes, labels, scores = own
    other_boxes, other_labels, other_scores = other
    overlaps = box_iou(boxes, other_boxes)
    unmatched, ious, gaps = 0, [], []
    for i, (label, score) in enumerate(zip(labels, scores, strict=True)):
        candidates = [
            j
            for j, other_label in enumerate(other_labels)
            if other_label == label
            and overlaps[i, j] >= iou_threshold
            and abs(other_scores[j] - score) <= score_tolerance
        ]
        if candidates:
            best = max(candidates, key=lambda j: overlaps[i, j])
            ious.append(float(overlaps[i, best]))
            gaps.append(abs(float(other_scores[best]) - float(score)))
        elif score >= confident_from:
            unmatched += 1
    return unmatched, ious, gaps


def compare_detections(
    single: pd.DataFrame,
    scaled: pd.DataFrame,
    score_threshold: float,
    score_tolerance: float = 0.01,
    iou_threshold: float = 0.5,
) -> pd.DataFrame:
    """Compare the single-image detections with the scaled-up ones, image by image.

    Both frames need ``path``, ``boxes``, ``labels`` and ``scores`` (see
    :func:`nbhelpers.detection.image_rows`). A detection has a counterpart when the
    other run found the same label with a box that overlaps it by at least
    ``iou_threshold`` (0.5, Pascal VOC's criterion for "the same object") and a
    score within ``score_tolerance``. Every detection scoring at least
    ``score_threshold + score_tolerance`` must have one, in both directions. A
    detection closer to the threshold may legitimately be kept by one run and
    dropped by the other (float results differ in the last digits), so it needs
    none.

    Returns:
        One row per image of ``single``: detection counts of both runs,
        ``unmatched`` (confident detections without a counterpart), ``min_iou`` and
        ``max_score_difference`` over the detections that matched, and ``match``.
    """
    scaled_by_path = scaled.set_index("path")
    confident_from = score_threshold + score_tolerance
    rows = []
    for row in single.itertuples():
        own = (as_boxes(row.boxes), as_list(row.labels), as_list(row.scores))
        if row.path in scaled_by_path.index:
            found = scaled_by_path.loc[row.path]
            other = (as_boxes(found["boxes"]), as_list(found["labels"]), as_list(found["scores"]))
        else:
            other = (np.zeros((0, 4)), [], [])
        missing_there, ious, gaps = _unmatched_detections(
            own, other, confident_from, score_tolerance, iou_threshold
        )
        missing_here, _, _ = _unmatched_detections(
            other, own, confident_from, score_tolerance, iou_threshold
        )
        rows.append(
            {
                "path": row.path,
                "detections_single": len(own[1]),
                "detections_scaled": len(other[1]),
                "unmatched": missing_there + missing_here,
                "min_iou": min(ious) if ious else None,
                "max_score_difference": max(gaps) if gaps else None,
                "match": row.path in scaled_by_path.index and missing_there + missing_here == 0,
            }
        )
    return pd.DataFrame(rows)


def evaluate_against_path_labels(
    predictions: pd.DataFrame, categories: Sequence[str]
) -> tuple[float | None, pd.DataFrame | None]:
    """Top-1 accuracy and confusion matrix against the labels that the image paths carry.

    Adds the column ``true_index`` (ImageNet-1k index from the folders, see
    :func:`nbhelpers.labels.labels_from_paths`; null where the path says nothing) to
    ``predictions``, which need ``path`` and ``label_index``.

    Returns:
        ``(accuracy, confusion matrix)``, or ``(None, None)`` when no path has a label.
    """
    predictions["true_index"] = pd.array(
        labels_from_paths(predictions["path"], categories), dtype="Int64"
    )
    true, predicted = predictions["true_index"].tolist(), predictions["label_index"].tolist()
    top1 = accuracy(true, predicted)
    if top1 is None:
        return None, None
    return top1, confusion_matrix(true, predicted, categories)


def evaluate_against_voc_annotations(
    predictions: pd.DataFrame, filesystem: pafs.FileSystem | None, categories: Sequence[str]
) -> tuple[voc.AnnotationSet, dict | None]:
    """Mean average precision against the Pascal VOC annotations beside the images, if any.

    Looks for ``Annotations/<name>.xml`` beside each image's ``JPEGImages/`` folder
    (:func:`nbhelpers.voc.find_voc_annotations`), then scores the detections with
    :func:`nbhelpers.voc.mean_average_precision`.

    Args:
        predictions: one row per image with ``path``, ``boxes`` (original-image
            pixels), ``labels`` (COCO names), ``scores`` and ``error``.
        filesystem: the images' pyarrow filesystem (``None``: local files).
        categories: the detector's COCO category names by label index.

    Returns:
        ``(annotations found, evaluation)``; the evaluation is ``None`` when no
        predicted image has an annotation.
    """
    annotations = voc.find_voc_annotations(predictions["path"].tolist(), filesystem)
    evaluation = voc.mean_average_precision(predictions, annotations.annotations, categories)
    return annotations, evaluation
