"""Build the models, pretrained or offline, without ever falling back silently.

``pretrained=True`` loads the real weights (downloaded once into torch's cache).
``pretrained=False`` builds the same architecture with seeded random weights, so
that every process (the notebook and each Ray actor) builds the same model
without any download. Category names and transforms come from torchvision's
weight metadata, which ships inside torchvision.
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
    return ClassifierSpec(
        categories=tuple(weights.meta["categories"]),
        mean=tuple(transforms.mean),
        std=tuple(transforms.std),
        preprocess=CenterCrop(
            resize_size=transforms.resize_size[0], crop_size=transforms.crop_size[0]
        ),
    )


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
    """``builder(weights=weights)``, with a clear error when the weights cannot be had.

    Raises:
        WeightsUnavailableError: not in the cache, and the download failed.
    """
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
    """``builder(weights=None, **kwargs)`` with random weights that are the same in every process."""
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return builder(weights=None, **kwargs)
    finally:
        torch.random.set_rng_state(state)


def offline_resnet(builder: Callable[..., torch.nn.Module]) -> torch.nn.Module:
    """A ResNet with seeded random weights whose predictions differ between images.

    Plain random weights make 152 layers blow activations up to about 1e8, and every
    image gets the same class with probability 1. Zero-initialising the last
    normalisation of each residual block (``zero_init_residual``) keeps the signal's
    scale, and a scaled classifier head makes the top class clearly ahead of the
    runner-up, so that comparisons between runs test something.
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


def pick_device(use_gpu: bool) -> torch.device:
    """The torch device for a model: CUDA when asked and present, else CPU."""
    if use_gpu and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")
