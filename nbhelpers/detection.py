"""The detector: Faster R-CNN built once per process, and the bookkeeping around its call.

Notebook 03 calls the model itself (its ``detect`` function); this module holds
what surrounds that call:

- :func:`build_fasterrcnn`: the network, pretrained or offline, and its
  :class:`DetectorSpec` (COCO class names, input size, score threshold);
- :func:`group_by_padded_size`: Faster R-CNN pads the images of one call to a
  common size, and padding nudges the results. Calling it once per group of
  images that pad to the same size gives an image the same boxes alone or in
  any batch;
- :func:`image_rows`: one typed row per image, boxes in the pixels of the
  original photo (the read stage may have shrunk it), nulls for failed images;
- readers of those rows once they come back from Parquet (:func:`as_boxes`,
  :func:`as_list`, :func:`detections_table`).
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

OFFLINE_MIN_SIZE, OFFLINE_MAX_SIZE = 224, 320
"""Offline input size (shorter side, longest side cap): small, so CPU runs take seconds."""

OFFLINE_PROPOSALS = 50
"""Region proposals per image offline (torchvision's default is 1000): the box head's cost."""

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
"""The columns of a detection row. Every block has these types, even one that holds only
failed images (all nulls) or images without detections (empty lists), so that the Parquet
files Ray Data writes all share one schema and read back together."""


@dataclass(frozen=True)
class DetectorSpec:
    """What a detector needs around the network itself.

    Attributes:
        categories: COCO category names by label index (``"__background__"`` at 0,
            ``"N/A"`` for unused indices), from torchvision's weight metadata.
        min_size: the model resizes the shorter side of each image to this ...
        max_size: ... unless the longer side would exceed this.
        score_threshold: detections below this score are dropped.
        preprocess: caps the longest side at ``max_size`` before batching, so rows
            never carry more pixels than the model will use.
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
    """Faster R-CNN ResNet50-FPN v2 in eval mode, and its spec.

    ``pretrained=True``: COCO weights (downloaded once into torch's cache; a clear
    :class:`~nbhelpers.models.WeightsUnavailableError` when that is impossible).
    ``pretrained=False``: the same architecture with seeded random weights, no
    backbone download, a smaller input size and fewer region proposals, so that
    an offline run on a laptop CPU takes seconds per batch.
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
    spec = DetectorSpec(
        categories=tuple(weights.meta["categories"]),
        min_size=min_size,
        max_size=max_size,
        score_threshold=threshold,
        preprocess=LimitSize(max_side=max_size),
    )
    return model.eval(), spec


def padded_size(
    height: int, width: int, min_size: int, max_size: int, divisor: int = 32
) -> tuple[int, int]:
    """The (height, width) an image of this size is padded to inside the model.

    The model scales the shorter side to ``min_size`` (the longer one at most to
    ``max_size``), then pads up to a multiple of ``divisor``.
    """
    scale = min(min_size / min(height, width), max_size / max(height, width))
    return (
        math.ceil(math.floor(height * scale) / divisor) * divisor,
        math.ceil(math.floor(width * scale) / divisor) * divisor,
    )


def group_by_padded_size(images: Sequence[np.ndarray], spec: DetectorSpec) -> list[list[int]]:
    """Indices of ``images`` grouped so that the images of a group pad to the same size."""
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for index, image in enumerate(images):
        height, width = image.shape[:2]
        groups[padded_size(height, width, spec.min_size, spec.max_size)].append(index)
    return list(groups.values())


def scale_boxes(
    boxes: np.ndarray, array_size: tuple[int, int], original_size: tuple[int, int]
) -> np.ndarray:
    """Boxes found on a resized array, in the pixels of the original image.

    Args:
        boxes: ``(k, 4)`` ``x1, y1, x2, y2`` on the array.
        array_size: (height, width) of the array the detector saw.
        original_size: (width, height) of the original image, as the read stage
            records it.

    Returns:
        ``(k, 4)`` float32 boxes, clipped to the original image.
    """
    (array_height, array_width), (width, height) = array_size, original_size
    factors = np.array([width / array_width, height / array_height] * 2, dtype=np.float64)
    scaled = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) * factors
    scaled[:, 0::2] = scaled[:, 0::2].clip(0, width)
    scaled[:, 1::2] = scaled[:, 1::2].clip(0, height)
    return scaled.astype(np.float32)


def image_rows(batch: dict[str, np.ndarray], found: dict[str, Sequence]) -> pa.Table:
    """One row per image of ``batch``, boxes in the pixels of the original photo.

    Args:
        batch: ``path``, ``image``, ``width``, ``height`` and ``error`` from the read
            stage (``width`` and ``height``: the photo's size before it was shrunk).
        found: ``boxes`` (in the pixels of ``batch["image"]``), ``labels`` and
            ``scores``, one entry per row, null for a failed image; optionally
            ``error`` and ``node_id`` (what ``batches.predict_decoded`` adds).

    Returns:
        A table of :data:`ROW_SCHEMA`: ``num_detections`` is -1 and the detection
        columns are null where the image failed. No pixels.
    """
    rows = len(batch["path"])
    errors = found.get("error", batch["error"])
    boxes: list[list | None] = []
    for i in range(rows):
        if found["boxes"][i] is None:
            boxes.append(None)
            continue
        original = (int(batch["width"][i]), int(batch["height"][i]))
        boxes.append(scale_boxes(found["boxes"][i], batch["image"][i].shape[:2], original).tolist())
    columns = {
        "path": [str(path) for path in batch["path"]],
        "width": batch["width"],
        "height": batch["height"],
        "num_detections": [-1 if labels is None else len(labels) for labels in found["labels"]],
        "boxes": boxes,
        "labels": list(found["labels"]),
        "scores": list(found["scores"]),
        "error": [error if isinstance(error, str) else None for error in errors],
        "node_id": list(found.get("node_id", [None] * rows)),
    }
    return pa.table(columns, schema=ROW_SCHEMA)


def _missing(value) -> bool:
    """Whether a list cell is null (``None``, ``NaN`` or ``pd.NA``)."""
    return value is None or (np.ndim(value) == 0 and bool(pd.isna(value)))


def as_boxes(value) -> np.ndarray:
    """A ``boxes`` cell (lists, nested arrays from Parquet, or null) as a ``(k, 4)`` float array."""
    if _missing(value) or len(value) == 0:
        return np.zeros((0, 4), dtype=np.float32)
    return np.stack([np.asarray(box, dtype=np.float32) for box in value]).reshape(-1, 4)


def as_list(value) -> list:
    """A ``labels`` or ``scores`` cell (list, array or null) as a plain list."""
    return [] if _missing(value) else list(value)


def detections_table(predictions: pd.DataFrame) -> pd.DataFrame:
    """One row per detection: ``path``, ``label``, ``score``, ``x1``, ``y1``, ``x2``, ``y2``.

    ``predictions`` holds one row per image with list columns ``boxes``, ``labels``
    and ``scores``; failed images contribute nothing.
    """
    records = []
    for row in predictions.itertuples():
        labels, scores = as_list(row.labels), as_list(row.scores)
        for box, label, score in zip(as_boxes(row.boxes), labels, scores, strict=True):
            records.append((row.path, label, float(score), *map(float, box)))
    columns = ["path", "label", "score", "x1", "y1", "x2", "y2"]
    return pd.DataFrame.from_records(records, columns=columns)


def detections_per_class(predictions: pd.DataFrame) -> pd.Series:
    """How many detections each class got, most frequent first."""
    table = detections_table(predictions)
    return table["label"].value_counts().rename("detections").rename_axis("label")
