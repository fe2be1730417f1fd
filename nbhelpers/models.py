"""Build ResNet152, pretrained or offline, without ever falling back silently.

Offline, seeded random weights give the notebook and every Ray actor the same model.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision.models import ResNet152_Weights, Weights, resnet152

from nbhelpers.preprocess import CenterCrop

OFFLINE_SEED = 0
"""Seed of the offline weights: the same in the notebook and in every actor."""


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights are neither cached nor downloadable."""


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


def cached_weights_path(weights: Weights) -> Path:
    """Where torch's hub cache keeps (or will keep) the file of ``weights``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name


@contextmanager
def network_timeout(seconds: float) -> Iterator[None]:
    """Network reads and connections in this block give up after ``seconds``."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def load_pretrained(
    builder: Callable[..., torch.nn.Module], weights: Weights, **kwargs
) -> torch.nn.Module:
    """``builder(weights=weights)``; ``WeightsUnavailableError`` if not cached nor downloadable."""
    path = cached_weights_path(weights)
    try:
        with network_timeout(30):
            return builder(weights=weights, **kwargs)
    except (OSError, RuntimeError) as error:
        if path.exists() and "download" not in str(error).lower():
            raise
        raise WeightsUnavailableError(
            f"Pretrained weights {weights} are not available: they are not in the cache "
            f"({path}) and downloading {weights.url} failed ({type(error).__name__}: {error}). "
            "To run without network, set pretrained=False (random weights, meaningless "
            "predictions), or download them once on a machine with network (make prefetch) "
            "and copy the cache folder (TORCH_HOME)."
        ) from error


def seeded(
    builder: Callable[..., torch.nn.Module], seed: int = OFFLINE_SEED, **kwargs
) -> torch.nn.Module:
    """``builder(weights=None, **kwargs)`` with the same random weights in every process."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return builder(weights=None, **kwargs)


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
    weights = ResNet152_Weights.DEFAULT
    model = load_pretrained(resnet152, weights) if pretrained else offline_resnet(resnet152)
    return model.eval(), classifier_spec(weights)
