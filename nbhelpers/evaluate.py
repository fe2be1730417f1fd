"""Evaluate predictions: accuracy, confusion matrix, mAP, and single-batch / scaled-up parity."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow.fs as pafs
import torch
import torchvision

from nbhelpers import voc
from nbhelpers.columns import as_boxes, as_list
from nbhelpers.labels import labels_from_paths

OTHER = "(other)"


def _labelled(true: Sequence[int | None], predicted: Sequence[int]) -> list[tuple[int, int]]:
    """The (true, predicted) pairs of the rows that have both a label and a prediction."""
    return [
        (int(t), int(p))
        for t, p in zip(true, predicted, strict=True)
        if t is not None and not pd.isna(t) and p >= 0
    ]


def accuracy(true: Sequence[int | None], predicted: Sequence[int]) -> float | None:
    """Top-1 accuracy over the rows that have a label; ``None`` when no row has one."""
    pairs = _labelled(true, predicted)
    return float(np.mean([t == p for t, p in pairs])) if pairs else None


def confusion_matrix(
    true: Sequence[int | None], predicted: Sequence[int], categories: Sequence[str]
) -> pd.DataFrame:
    """Counts of (true, predicted) class; ``(other)``: predictions outside the true classes."""
    pairs = _labelled(true, predicted)
    names = list(dict.fromkeys(categories[t] for t in sorted({t for t, _ in pairs})))
    truth = pd.Series([categories[t] for t, _ in pairs], name="true", dtype=object)
    guesses = [categories[p] if categories[p] in names else OTHER for _, p in pairs]
    guessed = pd.Series(guesses, name="predicted", dtype=object)
    return pd.crosstab(truth, guessed).reindex(index=names, columns=[*names, OTHER], fill_value=0)


HALF_PRECISION_TOLERANCE = 0.02
"""Score tolerance where either side computed in half precision (a GPU): bfloat16 keeps about
3 significant digits, and batches of other sizes run other GPU kernels, so probabilities move
in the second or third decimal."""


def parity_tolerance(
    single_device: str, actors_device: str, same_device: float
) -> tuple[float, str]:
    """The score tolerance for comparing the single batch with the actors, and why.

    ``same_device`` where both ran on the CPU in float32; wider
    (:data:`HALF_PRECISION_TOLERANCE`) where either ran on a GPU (TF32 or half precision).
    """
    if single_device == actors_device == "cpu":
        return same_device, f"Both on the CPU in float32: scores within {same_device:g}."
    tolerance = max(same_device, HALF_PRECISION_TOLERANCE)
    if single_device == actors_device:
        where = f"Both on {actors_device}, with batches of other sizes"
    else:
        where = f"The single batch on {single_device}, the actors on {actors_device}"
    return tolerance, (
        f"{where}: scores within {tolerance:g}, since a GPU computes in fewer digits "
        "(TF32 or half precision)."
    )


def compare_classifications(
    single: pd.DataFrame, scaled: pd.DataFrame, score_tolerance: float = 1e-3
) -> pd.DataFrame:
    """Compare the single-batch predictions with the scaled-up ones, image by image (``match``).

    The same image needs the same top-1 label and a score within ``score_tolerance``;
    floats differ in the last digits, so after a near-tie (``margin``) either label counts.
    An image listed several times (the sample's photos) is compared with each of its rows,
    and shown by the one that differs most.
    """
    merged = single[["path", "label", "score", "margin"]].merge(
        scaled[["path", "label", "score"]], on="path", how="left", suffixes=("_single", "_scaled")
    )
    merged["score_difference"] = (merged["score_single"] - merged["score_scaled"]).abs()
    same_label = merged["label_single"] == merged["label_scaled"]
    near_tie = merged["margin"] < score_tolerance
    merged["match"] = (same_label | near_tie) & (merged["score_difference"] <= score_tolerance)
    worst = merged.sort_values(["match", "score_difference"], ascending=[True, False])
    worst = worst.drop_duplicates("path").sort_index()  # one row per image, in single's order
    return worst.drop(columns=["margin"]).reset_index(drop=True)


def check_parity(
    single: pd.DataFrame,
    scaled: pd.DataFrame,
    single_device: str,
    actors_device: str,
    same_device: float = 1e-3,
) -> tuple[pd.DataFrame, dict]:
    """Compare the single batch with the scaled-up run (:func:`compare_classifications`), at
    the tolerance the two devices allow (:func:`parity_tolerance`), which it prints.

    Returns the comparison, one row per image of the single batch, and its
    :func:`parity_summary` (``ok`` is False where any image differs).
    """
    tolerance, why = parity_tolerance(single_device, actors_device, same_device)
    print(why)
    comparison = compare_classifications(single, scaled, tolerance)
    return comparison, parity_summary(comparison)


def parity_summary(comparison: pd.DataFrame) -> dict:
    """``{"checked", "matching", "ok"}`` for ``summary.json``."""
    checked = len(comparison)
    matching = int(comparison["match"].sum())
    return {"checked": checked, "matching": matching, "ok": bool(checked and checked == matching)}


def box_iou(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Intersection over union of every box of ``first`` with every box of ``second`` (n, m)."""
    a, b = (torch.as_tensor(x, dtype=torch.float64).reshape(-1, 4) for x in (first, second))
    return torchvision.ops.box_iou(a, b).nan_to_num(0.0).numpy()


def _detections(row) -> tuple[np.ndarray, list, list]:
    return as_boxes(row.get("boxes")), as_list(row.get("labels")), as_list(row.get("scores"))


def _unmatched(own: tuple, other: tuple, confident_from: float, tolerance: float, iou: float):
    """Confident detections of ``own`` without a counterpart in ``other``; IoUs, score gaps."""
    overlaps = box_iou(own[0], other[0])
    unmatched = 0
    ious: list[float] = []
    gaps: list[float] = []
    for i, (label, score) in enumerate(zip(own[1], own[2], strict=True)):
        candidates = [
            j
            for j, (other_label, other_score) in enumerate(zip(other[1], other[2], strict=True))
            if other_label == label
            and overlaps[i, j] >= iou
            and abs(other_score - score) <= tolerance
        ]
        if candidates:
            best = max(candidates, key=lambda j: overlaps[i, j])
            ious.append(float(overlaps[i, best]))
            gaps.append(abs(float(other[2][best]) - float(score)))
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
    """Compare the single-image detections with the scaled-up ones, image by image (``match``).

    A counterpart has the same label, a box overlapping by ``iou_threshold`` (VOC's "same
    object") and a score within ``score_tolerance``. Detections from ``score_threshold +
    score_tolerance`` need one, both ways; nearer the threshold, floats may tip either way.
    An image listed several times is compared with each of its rows, shown by the worst.
    """
    settings = (score_threshold + score_tolerance, score_tolerance, iou_threshold)
    scaled_rows: dict[str, list[dict]] = {}  # a path listed several times has several rows
    for row in scaled.to_dict("records"):
        scaled_rows.setdefault(row["path"], []).append(row)
    rows = []
    for row in single.to_dict("records"):
        own, compared = _detections(row), []
        for copy in scaled_rows.get(row["path"], [{}]):
            other = _detections(copy)
            missing_there, ious, gaps = _unmatched(own, other, *settings)
            unmatched = missing_there + _unmatched(other, own, *settings)[0]
            compared.append(
                {
                    "path": row["path"],
                    "detections_single": len(own[1]),
                    "detections_scaled": len(other[1]),
                    "unmatched": unmatched,
                    "min_iou": min(ious) if ious else None,
                    "max_score_difference": max(gaps) if gaps else None,
                    "match": bool(copy) and unmatched == 0,
                }
            )
        rows.append(min(compared, key=lambda result: (result["match"], -result["unmatched"])))
    return pd.DataFrame(rows)


def evaluate_against_path_labels(
    predictions: pd.DataFrame, categories: Sequence[str]
) -> tuple[float | None, pd.DataFrame | None, int]:
    """Accuracy and confusion matrix against the classes the paths name, and how many images
    had one (``None, None, 0`` when none had). ``predictions`` is left as it is."""
    true = labels_from_paths(predictions["path"], categories)
    predicted = predictions["label_index"].tolist()
    top1 = accuracy(true, predicted)
    if top1 is None:
        return None, None, 0
    labelled = len(_labelled(true, predicted))
    return top1, confusion_matrix(true, predicted, categories), labelled


def evaluate_against_voc_annotations(
    predictions: pd.DataFrame, filesystem: pafs.FileSystem | None, categories: Sequence[str]
) -> tuple[voc.AnnotationSet, dict | None]:
    """The Pascal VOC annotations beside the images, and the mAP against them (or ``None``)."""
    annotations = voc.find_voc_annotations(predictions["path"].tolist(), filesystem)
    evaluation = voc.mean_average_precision(predictions, annotations.annotations, categories)
    return annotations, evaluation


def check_detection_parity(
    single: pd.DataFrame,
    scaled: pd.DataFrame,
    score_threshold: float,
    single_device: str,
    actors_device: str,
    same_device: float = 0.01,
) -> tuple[pd.DataFrame, dict]:
    """Compare the single batch's detections with the scaled-up run's
    (:func:`compare_detections`), at the score tolerance the two devices allow
    (:func:`parity_tolerance`), which it prints.

    Both need ``path``, ``boxes`` (in the same pixels: the original photo's), ``labels`` and
    ``scores``. Returns the comparison, one row per image of the single batch, and its
    :func:`parity_summary` (``ok`` is False where any image differs).
    """
    tolerance, why = parity_tolerance(single_device, actors_device, same_device)
    print(why)
    comparison = compare_detections(single, scaled, score_threshold, tolerance)
    return comparison, parity_summary(comparison)
