"""Detect objects in a batch: the same code for the single image and for the Ray actors.

Faster R-CNN takes images of any size. It resizes each one itself, then pads the
images of one call to a common size. Padding changes the results a little, so a
detection would depend on which other images shared its batch. :func:`detect`
therefore calls the model once per group of images that pad to the same size:
an image then gets the same boxes whether it is detected alone or in a batch.

Boxes come back in the pixels of the original image (before any resizing), so
they can be drawn on it or compared with annotations directly.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import ray
import torch
from torchvision.models.detection import (
    FasterRCNN_ResNet50_FPN_V2_Weights,
    fasterrcnn_resnet50_fpn_v2,
)

from nbhelpers.models import load_pretrained, seeded
from nbhelpers.pipeline import collect_predictions, decoded_rows
from nbhelpers.preprocess import LimitSize

PRETRAINED_SCORE_THRESHOLD = 0.9
"""Keep detections at least this confident with COCO weights (as the Ray tutorial does)."""

OFFLINE_SCORE_THRESHOLD = 0.5
"""Offline threshold: random weights score lower, and every drawing should still have boxes."""

OFFLINE_MIN_SIZE, OFFLINE_MAX_SIZE = 224, 320
"""Offline input size (shorter side, longest side cap): small, so CPU runs take seconds."""

OFFLINE_PROPOSALS = 50
"""Region proposals per image offline (torchvision's default is 1000): the box head's cost."""


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


def to_detector_input(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """A uint8 ``(H, W, 3)`` array as the float ``(3, H, W)`` tensor in [0, 1] the model takes.

    The uint8 pixels travel to ``device`` and are converted there; the model
    normalises and resizes them itself.
    """
    pixels = np.require(image, dtype=np.uint8, requirements=["C", "W"])  # copies read-only rows
    tensor = torch.from_numpy(pixels).to(device, non_blocking=True)
    return tensor.permute(2, 0, 1).float().div_(255)


@torch.inference_mode()
def detect(
    model: torch.nn.Module,
    images: Sequence[np.ndarray],
    spec: DetectorSpec,
    device: torch.device,
) -> list[dict[str, np.ndarray]]:
    """Detect objects in uint8 images of any sizes; one result per image, in order.

    Each result has ``boxes`` (``(k, 4)`` float32, ``x1, y1, x2, y2`` in the pixels
    of the array given), ``labels`` (``k`` int64 COCO indices) and ``scores``
    (``k`` float32), sorted by decreasing score, all at least
    ``spec.score_threshold``.
    """
    results: list[dict[str, np.ndarray] | None] = [None] * len(images)
    for group in group_by_padded_size(images, spec):
        outputs = model([to_detector_input(images[i], device) for i in group])
        for index, output in zip(group, outputs, strict=True):
            keep = output["scores"] >= spec.score_threshold
            results[index] = {
                "boxes": output["boxes"][keep].float().cpu().numpy(),
                "labels": output["labels"][keep].cpu().numpy().astype(np.int64),
                "scores": output["scores"][keep].float().cpu().numpy(),
            }
    return results


def scale_boxes(
    boxes: np.ndarray, array_size: tuple[int, int], original_size: tuple[int, int]
) -> np.ndarray:
    """Boxes found on a resized array, in the pixels of the original image.

    Args:
        boxes: ``(k, 4)`` ``x1, y1, x2, y2`` on the array.
        array_size: (height, width) of the array the detector saw.
        original_size: (width, height) of the original image, as
            ``read_images_safely`` records it.

    Returns:
        ``(k, 4)`` float32 boxes, clipped to the original image.
    """
    (array_height, array_width), (width, height) = array_size, original_size
    factors = np.array([width / array_width, height / array_height] * 2, dtype=np.float64)
    scaled = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) * factors
    scaled[:, 0::2] = scaled[:, 0::2].clip(0, width)
    scaled[:, 1::2] = scaled[:, 1::2].clip(0, height)
    return scaled.astype(np.float32)


def detection_record(
    detection: dict[str, np.ndarray],
    array_size: tuple[int, int],
    original_size: tuple[int, int],
    categories: Sequence[str],
) -> dict[str, list]:
    """One image's detections as plain lists: what a Parquet row holds.

    Returns:
        ``boxes`` (``[[x1, y1, x2, y2], ...]`` in original-image pixels),
        ``labels`` (COCO category names), ``scores`` and ``num_detections``.
    """
    boxes = scale_boxes(detection["boxes"], array_size, original_size)
    return {
        "boxes": [[float(v) for v in box] for box in boxes],
        "labels": [categories[int(i)] for i in detection["labels"]],
        "scores": [float(s) for s in detection["scores"]],
        "num_detections": len(boxes),
    }


def detect_rows(
    model: torch.nn.Module,
    batch: dict[str, np.ndarray],
    spec: DetectorSpec,
    device: torch.device,
) -> dict[str, np.ndarray]:
    """Detect objects in the rows of a prepared batch that decoded; failed rows keep their error.

    ``batch`` comes from :func:`nbhelpers.pipeline.read_images_safely` with a
    :class:`~nbhelpers.preprocess.LimitSize` (images of different sizes, in an
    object array). The result has every input row: ``path``, ``width``,
    ``height``, ``boxes`` (original-image pixels), ``labels``, ``scores``,
    ``num_detections`` (-1 where the image failed, its detection columns null)
    and ``error``. No pixels leave the model stage.
    """
    ok = decoded_rows(batch)
    indices = np.flatnonzero(ok)
    detections = detect(model, [batch["image"][i] for i in indices], spec, device)
    rows = len(ok)
    records: list[dict | None] = [None] * rows
    for i, detection in zip(indices, detections, strict=True):
        original = (int(batch["width"][i]), int(batch["height"][i]))
        records[i] = detection_record(
            detection, batch["image"][i].shape[:2], original, spec.categories
        )
    out = {
        "path": batch["path"],
        "width": np.asarray(batch["width"], dtype=np.int32),
        "height": np.asarray(batch["height"], dtype=np.int32),
        "num_detections": np.array(
            [-1 if r is None else r["num_detections"] for r in records], dtype=np.int64
        ),
        "error": np.array(
            [None if good else error for good, error in zip(ok, batch["error"], strict=True)],
            dtype=object,
        ),
    }
    for key in ("boxes", "labels", "scores"):
        out[key] = _object_array([None if r is None else r[key] for r in records])
    return out


def _object_array(items: list) -> np.ndarray:
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array


def _missing(value) -> bool:
    """Whether a list cell is null (``None``, ``NaN`` or ``pd.NA``)."""
    return value is None or (np.ndim(value) == 0 and bool(pd.isna(value)))


def as_boxes(value) -> np.ndarray:
    """A ``boxes`` cell (lists, nested arrays from Parquet, or null) as a ``(k, 4)`` float array."""
    if _missing(value):
        return np.zeros((0, 4), dtype=np.float32)
    items = list(value)
    if not items:
        return np.zeros((0, 4), dtype=np.float32)
    return np.stack([np.asarray(box, dtype=np.float32) for box in items]).reshape(-1, 4)


def as_list(value) -> list:
    """A ``labels`` or ``scores`` cell (list, array or null) as a plain list."""
    return [] if _missing(value) else list(value)


def collect_detections(dataset: ray.data.Dataset, paths: list[str]) -> tuple[pd.DataFrame, float]:
    """:func:`~nbhelpers.pipeline.collect_predictions` for the rows of :func:`detect_rows`.

    Ray hands nested lists back as pyarrow-backed columns, which a Parquet file
    then records with a type that pandas cannot read again; here they become
    plain Python lists (null for the images that failed).

    Returns:
        The rows in the order of ``paths``, and the seconds the pipeline took.
    """
    frame, seconds = collect_predictions(dataset, paths)
    failed = frame["error"].notna()
    frame["boxes"] = [
        None if bad else [[float(v) for v in box] for box in as_boxes(cell)]
        for cell, bad in zip(frame["boxes"], failed, strict=True)
    ]
    for column, kind in (("labels", str), ("scores", float)):
        frame[column] = [
            None if bad else [kind(v) for v in as_list(cell)]
            for cell, bad in zip(frame[column], failed, strict=True)
        ]
    for column in ("width", "height", "num_detections"):
        frame[column] = frame[column].astype("int64")
    return frame, seconds
