"""What an image classifier needs around the network: its categories, normalisation and crop,
and the columns of its predictions.

torchvision's classification weights carry the first three in their metadata, so any of them
(ResNet152 in notebook 01, a ResNet18 in its exercise, a new lesson's network) gets its
spec from :func:`classifier_spec` without a download. Every classifier lesson (ResNet, ViT)
writes rows of :data:`PREDICTION_SCHEMA`.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
from torchvision.models import Weights

from nbhelpers.batches import prediction_schema
from nbhelpers.preprocess import CenterCrop

PREDICTION_SCHEMA = prediction_schema(
    pa.field("label_index", pa.int64()),  # the class's ImageNet-1k index; -1: not an ImageNet one
    pa.field("label", pa.string()),  # the class's name
    pa.field("score", pa.float32()),  # its probability
    pa.field("margin", pa.float32()),  # its lead on the runner-up's probability
)
"""One row per image of a classifier lesson: ``path``, the four columns above, ``error``,
``node_id`` and ``model_call``. An image that could not be decoded keeps its path and its
error, with nulls in the model's columns."""


@dataclass(frozen=True)
class ClassifierSpec:
    """What an image classifier needs around the network itself."""

    categories: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    preprocess: CenterCrop


def classifier_spec(weights: Weights) -> ClassifierSpec:
    """Categories, normalisation and crop from torchvision's weight metadata (no download)."""
    transforms = weights.transforms()
    crop = CenterCrop(resize_size=transforms.resize_size[0], crop_size=transforms.crop_size[0])
    categories = tuple(weights.meta["categories"])
    return ClassifierSpec(categories, tuple(transforms.mean), tuple(transforms.std), crop)
