"""The detector: Faster R-CNN built once per process, and the bookkeeping around its call.

Notebook 03 calls the model itself (its ``detect`` function); this module builds it,
groups images by the size the model pads them to, and writes one typed row per image.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from torchvision.models.detection import (
    FasterRCNN_ResNet50_FPN_V2_Weights,
    fasterrcnn_resnet50_fpn_v2,
)

from nbhelpers.models import load_pretrained, seeded
from nbhelpers.preprocess import LimitSize

PRETRAINED_SCORE_THRESHOLD = 0.9
"""Keep detections at least this confident with COCO weights (as the Ray tutorial does)."""

OFFLINE_SCORE_THRESHOLD = 0.5
"""Offline threshold: random weights score lower, and every drawing should still have boxes."""

OFFLINE_MIN_SIZE, OFFLINE_MAX_SIZE, OFFLINE_PROPOSALS = 224, 320, 50
"""Offline: a small input size and 50 region proposals (not 1000), so CPU runs take seconds."""

ROW_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("num_detections", pa.int32()),
        ("boxes", pa.list_(pa.list_(pa.float32()))),
        ("labels", pa.list_(pa.string())),
        ("scores", pa.list_(pa.float32())),
        ("error", pa.string()),
        ("node_id", pa.string()),
    ]
)
"""The columns of a detection row, typed even in a block of only failed images or of images
without detections, so that all the Parquet files Ray Data writes read back together."""


@dataclass(frozen=True)
class DetectorSpec:
    """What a detector needs around the network: COCO names by index, input size, threshold.

    ``preprocess`` caps the longest side at ``max_size`` before batching, so rows never
    carry pixels the model would not use.
    """

    categories: tuple[str, ...]
    min_size: int
    max_size: int
    score_threshold: float
    preprocess: LimitSize

    def describe(self) -> str:
        """One line for the notebook."""
        return (
            f"{len(self.categories)} COCO label indices ({self.categories[1]}, "
            f"{self.categories[2]}, ...); images resized to {self.min_size} px on the shorter "
            f"side (at most {self.max_size} px); detections kept from a score of "
            f"{self.score_threshold}."
        )


def choose_score_threshold(score_threshold: float | None, pretrained: bool) -> float:
    """The ``score_threshold`` parameter, or the default for the weights (``None``)."""
    if score_threshold is None:
        return PRETRAINED_SCORE_THRESHOLD if pretrained else OFFLINE_SCORE_THRESHOLD
    if not 0 <= float(score_threshold) < 1:
        raise ValueError(f"score_threshold must be in [0, 1), got {score_threshold!r}.")
    return float(score_threshold)


def build_fasterrcnn(
    pretrained: bool, score_threshold: float | None = None
) -> tuple[torch.nn.Module, DetectorSpec]:
    """Faster R-CNN ResNet50-FPN v2 in eval mode and its spec; COCO weights, or seeded offline.

    Offline, a smaller input and fewer proposals keep a laptop CPU at seconds per batch.
    """
    weights = FasterRCNN_ResNet50_FPN_V2_Weights.DEFAULT
    threshold = choose_score_threshold(score_threshold, pretrained)
    if pretrained:
        min_size, max_size = 800, 1333
        model = load_pretrained(fasterrcnn_resnet50_fpn_v2, weights, box_score_thresh=threshold)
    else:
        min_size, max_size = OFFLINE_MIN_SIZE, OFFLINE_MAX_SIZE
        model = seeded(
            fasterrcnn_resnet50_fpn_v2,
            weights_backbone=None,
            num_classes=len(weights.meta["categories"]),
            min_size=min_size,
            max_size=max_size,
            box_score_thresh=threshold,
            rpn_post_nms_top_n_test=OFFLINE_PROPOSALS,
        )
    categories = tuple(weights.meta["categories"])
    spec = DetectorSpec(categories, min_size, max_size, threshold, LimitSize(max_side=max_size))
    return model.eval(), spec


def group_by_padded_size(images: Sequence[np.ndarray], spec: DetectorSpec) -> list[list[int]]:
    """Indices of ``images`` grouped so that the images of a group pad to the same size.

    The model scales each image, then pads the batch to a multiple of 32. Padding
    nudges the results: one call per group gives an image the same boxes in any batch.
    """
    groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for index, image in enumerate(images):
        height, width = image.shape[:2]
        scale = min(spec.min_size / min(height, width), spec.max_size / max(height, width))
        padded = tuple(math.ceil(math.floor(side * scale) / 32) * 32 for side in (height, width))
        groups[padded].append(index)
    return list(groups.values())


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
    """One :data:`ROW_SCHEMA` row per image of ``batch``, boxes in the original photo's pixels.

    ``found``: the model's ``boxes``, ``labels`` and ``scores`` per row (null for a failed
    image, which gets ``num_detections`` -1), maybe with ``error`` and ``node_id``.
    """
    found = found.to_pydict() if isinstance(found, pa.Table) else found
    rows = len(batch["path"])
    boxes: list[list | None] = []
    for i, array_boxes in enumerate(found["boxes"]):
        if array_boxes is None:
            boxes.append(None)
            continue
        original = (int(batch["width"][i]), int(batch["height"][i]))
        boxes.append(scale_boxes(array_boxes, batch["image"][i].shape[:2], original).tolist())
    columns = {
        "path": [str(path) for path in batch["path"]],
        "width": batch["width"],
        "height": batch["height"],
        "num_detections": [-1 if labels is None else len(labels) for labels in found["labels"]],
        "boxes": boxes,
        "labels": list(found["labels"]),
        "scores": list(found["scores"]),
        "error": [e if isinstance(e, str) else None for e in found.get("error", batch["error"])],
        "node_id": list(found.get("node_id", [None] * rows)),
    }
    return pa.table(columns, schema=ROW_SCHEMA)


def as_list(value) -> list:
    """A list cell (list, array, or null: ``None``, ``NaN``, ``pd.NA``) as a plain list."""
    return [] if value is None or (np.ndim(value) == 0 and pd.isna(value)) else list(value)


def as_boxes(value) -> np.ndarray:
    """A ``boxes`` cell (lists, nested arrays from Parquet, or null) as a ``(k, 4)`` float array."""
    boxes = [np.asarray(box, dtype=np.float32) for box in as_list(value)]
    return np.stack(boxes).reshape(-1, 4) if boxes else np.zeros((0, 4), dtype=np.float32)


def detections_per_class(predictions: pd.DataFrame) -> pd.Series:
    """How many detections each class got, most frequent first."""
    labels = pd.Series([label for cell in predictions["labels"] for label in as_list(cell)])
    return labels.value_counts().rename("detections").rename_axis("label")
