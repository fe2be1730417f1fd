"""What an image classifier needs around the network: its categories, normalisation and crop.

torchvision's classification weights carry all three in their metadata, so any of them
(ResNet152 in notebook 01, a ResNet18 in its exercise, a new lesson's network) gets its
spec from :func:`classifier_spec` without a download.
"""

from __future__ import annotations

from dataclasses import dataclass

from torchvision.models import Weights

from nbhelpers.preprocess import CenterCrop


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
