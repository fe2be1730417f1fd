"""The detector: Faster R-CNN built once per process, and the bookkeeping around its call.

Notebook 03 calls the model itself (its ``detect`` function, one call per batch); this
module builds it and writes one typed row per image.
"""

from __future__ import annotations

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

from nbhelpers.batches import (
    CALL_COLUMN,
    ERROR_COLUMN,
    NODE_COLUMN,
    PATH_COLUMN,
    prediction_schema,
)
from nbhelpers.columns import as_list
from nbhelpers.loading import load_pretrained, seeded
from nbhelpers.preprocess import LimitSize

PRETRAINED_WEIGHTS = FasterRCNN_ResNet50_FPN_V2_Weights.DEFAULT
"""The COCO weights notebook 03 loads with ``pretrained=True``."""

PRETRAINED_SCORE_THRESHOLD = 0.9
"""Keep detections at least this confident with COCO weights (as the Ray tutorial does)."""

OFFLINE_SCORE_THRESHOLD = 0.5
"""Offline threshold: random weights score lower, and every drawing should still have boxes."""

OFFLINE_SIZE, OFFLINE_MAX_SIDE, OFFLINE_PROPOSALS = 256, 320, 50
"""Offline: every image stretched to 256 x 256 inside the model (its ``fixed_size``: the aspect
ratio is not kept), rows capped at 320 px on the long side, and 50 region proposals (not 1000),
so that CPU runs take seconds. The rows are larger than the model's input because it stretches
both sides to 256: at 320, a 4:3 photo's short side (240 px) is near 256, and the model rarely
enlarges it.

One size for every image means nothing is padded inside the model, so a photo gets the same
boxes in any batch. That matters for random weights only: their region proposals react to
the padding, which takes proposals from a photo as the batch around it changes. Pretrained
weights give padding no objects, and keep their aspect ratios (800 px, at most 1333)."""

PREDICTION_SCHEMA = prediction_schema(
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


@dataclass(frozen=True)
class DetectorSpec:
    """What a detector needs around the network: COCO names by index, input size, threshold.

    ``preprocess`` caps the longest side at ``max_size`` before batching (it only shrinks),
    so rows never carry pixels the model would not use. Inside the model, torchvision's
    ``GeneralizedRCNNTransform`` scales each image, keeping its aspect ratio, so that its
    shorter side is ``min_size`` unless its longer side would pass ``max_size``. ``square``
    (offline): the model stretches every image to ``min_size`` x ``min_size`` instead.
    """

    categories: tuple[str, ...]
    min_size: int
    max_size: int
    score_threshold: float
    preprocess: LimitSize
    square: bool = False

    def describe(self) -> str:
        """One line for the notebook."""
        read = f"photos read at most {self.max_size} px on the long side, then"
        if self.square:
            size = (
                f"{read} stretched to {self.min_size} x {self.min_size} inside the model "
                "(offline: aspect ratio not kept)"
            )
        else:
            size = (
                f"{read} scaled inside the model, aspect ratio kept, to {self.min_size} px "
                f"on the shorter side (the longer at most {self.max_size} px)"
            )
        return (
            f"{len(self.categories)} COCO label indices ({self.categories[1]}, "
            f"{self.categories[2]}, ...); {size}; detections kept from a score of "
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
    weights = PRETRAINED_WEIGHTS
    threshold = choose_score_threshold(score_threshold, pretrained)
    if pretrained:
        min_size, max_size = 800, 1333
        model = load_pretrained(fasterrcnn_resnet50_fpn_v2, weights, box_score_thresh=threshold)
    else:
        min_size, max_size = OFFLINE_SIZE, OFFLINE_MAX_SIDE
        model = seeded(
            fasterrcnn_resnet50_fpn_v2,
            weights_backbone=None,
            num_classes=len(weights.meta["categories"]),
            fixed_size=(OFFLINE_SIZE, OFFLINE_SIZE),
            box_score_thresh=threshold,
            rpn_post_nms_top_n_test=OFFLINE_PROPOSALS,
        )
    categories = tuple(weights.meta["categories"])
    limit = LimitSize(max_side=max_size)
    spec = DetectorSpec(categories, min_size, max_size, threshold, limit, square=not pretrained)
    return model.eval(), spec


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
    """One :data:`PREDICTION_SCHEMA` row per image of ``batch``, boxes in the original photo's
    pixels.

    ``found``: the model's ``boxes``, ``labels`` and ``scores`` per row (null for a failed
    image, which gets ``num_detections`` -1), maybe with ``error``, ``node_id`` and
    ``model_call`` (as :func:`nbhelpers.batches.predicted_columns` gives them).
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
    return pa.table(columns, schema=PREDICTION_SCHEMA)


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


class BackboneInHalfPrecision(torch.nn.Module):
    """A detector's backbone computing in ``dtype`` under autocast, its features back in float32.

    Under ``torch.autocast(bfloat16)`` the whole of Faster R-CNN would round its anchors,
    proposals and box coordinates to bfloat16's 8 bits of mantissa (±2 px at 512-1024 px,
    ±4 px beyond). The backbone holds most of the arithmetic and needs no such precision; the
    region proposals and the box heads then run in float32 on its features.
    """

    def __init__(self, backbone: torch.nn.Module, dtype: torch.dtype):
        super().__init__()
        self.backbone, self.dtype = backbone, dtype
        self.out_channels = backbone.out_channels  # what FasterRCNN's heads read

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The backbone's feature maps for ``images``, computed in ``dtype``, as float32."""
        with torch.autocast(images.device.type, dtype=self.dtype):
            features = self.backbone(images)
        return type(features)((name, value.float()) for name, value in features.items())


def with_backbone_in(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """``model`` with its backbone in ``dtype`` (see :class:`BackboneInHalfPrecision`); as it
    was for float32."""
    if dtype != torch.float32 and not isinstance(model.backbone, BackboneInHalfPrecision):
        model.backbone = BackboneInHalfPrecision(model.backbone, dtype)
    return model
