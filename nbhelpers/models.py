"""The models of notebooks 01, 03 and 04 (torchvision's ResNet152 and Faster R-CNN), built once
per process: pretrained weights with a clear error when they cannot be had, or seeded random
weights, the same in every process, offline; what a classifier or a detector needs around the
network (categories, normalisation, input size); ImageNet's vocabulary.

Notebook 02's Hugging Face model is :mod:`nbhelpers.vit`.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch
from torchvision.models import ResNet152_Weights, Weights, resnet152
from torchvision.models.detection import (
    FasterRCNN_ResNet50_FPN_V2_Weights,
    fasterrcnn_resnet50_fpn_v2,
)

from nbhelpers.reading import CenterCrop, LimitSize

# Weights: pretrained, or seeded offline -----------------------------------------------------


OFFLINE_SEED = 0
"""Seed of the offline weights: the same in the notebook and in every actor."""


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights are neither cached nor downloadable."""


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
    """``builder(weights=weights)``, from torch's cache or downloaded.

    Raises :class:`WeightsUnavailableError`, saying how to run offline or pre-download,
    when the weights are neither cached nor downloadable.
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
    """``builder(weights=None, **kwargs)`` with the same random weights in every process."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return builder(weights=None, **kwargs)


# ImageNet's vocabulary ----------------------------------------------------------------------


@cache
def imagenet_categories() -> tuple[str, ...]:
    """The 1000 ImageNet-1k category names, by class index (``imagenet_categories.json``)."""
    path = Path(__file__).with_name("imagenet_categories.json")
    categories = tuple(json.loads(path.read_text()))
    if len(categories) != 1000:
        raise RuntimeError(f"{path} must hold the 1000 ImageNet-1k category names.")
    return categories


@cache
def imagenet_synsets() -> tuple[str, ...]:
    """The 1000 ImageNet-1k synsets; the position of each is its class index."""
    path = Path(__file__).with_name("imagenet_synsets.json")
    synsets = tuple(json.loads(path.read_text()))
    if len(synsets) != 1000 or list(synsets) != sorted(set(synsets)):
        raise RuntimeError(f"{path} must hold the 1000 ImageNet-1k synsets, sorted and unique.")
    return synsets


@cache
def synset_index() -> dict[str, int]:
    """ImageNet-1k class index of every synset (``"n01440764"`` -> 0)."""
    return {synset: index for index, synset in enumerate(imagenet_synsets())}


# Classifiers: ResNet152 (notebooks 01 and 04) -----------------------------------------------


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


RESNET152_WEIGHTS = ResNet152_Weights.DEFAULT
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
        model = load_pretrained(resnet152, RESNET152_WEIGHTS)
    else:
        model = offline_resnet(resnet152)
    return model.eval(), classifier_spec(RESNET152_WEIGHTS)


# The detector: Faster R-CNN (notebook 03) ---------------------------------------------------


FASTERRCNN_WEIGHTS = FasterRCNN_ResNet50_FPN_V2_Weights.DEFAULT
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
    weights = FASTERRCNN_WEIGHTS
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
