"""ResNet152 for notebook 01, pretrained or offline, and what a classifier needs around it.

Offline, seeded random weights give the notebook and every Ray actor the same model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torchvision.models import ResNet152_Weights, Weights, resnet152

from nbhelpers.loading import load_pretrained, seeded
from nbhelpers.preprocess import CenterCrop

PRETRAINED_WEIGHTS = ResNet152_Weights.DEFAULT
"""The ImageNet weights notebook 01 loads with ``pretrained=True``."""


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


def offline_resnet(builder: Callable[..., torch.nn.Module]) -> torch.nn.Module:
    """A ResNet with seeded random weights whose predictions differ between images.

    Plain random weights blow activations up (every image gets one class);
    ``zero_init_residual`` keeps their scale, and a scaled head a clear top class.
    """
    model = seeded(builder, zero_init_residual=True)
    with torch.no_grad():
        model.fc.weight.mul_(100.0)
    return model


def build_resnet152(pretrained: bool) -> tuple[torch.nn.Module, ClassifierSpec]:
    """ResNet152 in eval mode and its spec; ImageNet weights, or seeded random ones offline."""
    if pretrained:
        model = load_pretrained(resnet152, PRETRAINED_WEIGHTS)
    else:
        model = offline_resnet(resnet152)
    return model.eval(), classifier_spec(PRETRAINED_WEIGHTS)
