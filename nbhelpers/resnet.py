"""ResNet152 for notebook 01, pretrained or offline (its spec: :mod:`nbhelpers.classifier`).

Offline, seeded random weights give the notebook and every Ray actor the same model.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torchvision.models import ResNet152_Weights, resnet152

from nbhelpers.classifier import ClassifierSpec, classifier_spec
from nbhelpers.loading import load_pretrained, seeded

PRETRAINED_WEIGHTS = ResNet152_Weights.DEFAULT
"""The ImageNet weights notebook 01 loads with ``pretrained=True``."""


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
