"""Build the models, pretrained or offline, without ever falling back silently.

``pretrained=True`` loads the real weights (downloaded once into torch's cache).
``pretrained=False`` builds the same architecture with seeded random weights, so
that every process (the notebook and each Ray actor) builds the same model
without any download. Category names and transforms come from torchvision's
weight metadata, which ships inside torchvision.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision.models import ResNet152_Weights, Weights, resnet152

from nbhelpers.preprocess import CenterCrop, ProcessorResize

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
def _network_timeout(seconds: float):
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
        with _network_timeout(30):
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


def offline_environment() -> bool:
    """Whether the Hugging Face offline switch is set (``HF_HUB_OFFLINE=1``)."""
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


# Hugging Face image classification (notebook 02) ------------------------------------

VIT_MODEL_ID = "google/vit-base-patch16-224"
"""The pretrained ViT of notebook 02 on the Hugging Face hub (ImageNet-1k classes)."""

OFFLINE_VIT_LAYOUT = {
    "image_size": 224,
    "patch_size": 32,
    "hidden_size": 48,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 96,
    "initializer_range": 0.2,
}
"""The tiny offline ViT: 49 patches, two layers, about 0.2 M parameters.

A larger ``initializer_range`` than the usual 0.02 (with the classifier scaled by
:data:`OFFLINE_VIT_HEAD_SCALE`) makes the random network's answers depend on the image
and leaves a clear gap between the top class and the runner-up, so that comparing
two runs tests something.
"""

OFFLINE_VIT_HEAD_SCALE = 10.0


@dataclass(frozen=True)
class ImageClassifierSpec:
    """What the ViT notebook needs around a Hugging Face image-classification pipeline.

    Attributes:
        labels: the model's class names, by class id (``config.id2label``).
        imagenet_index: for each class id, its ImageNet-1k index, or -1 where the
            label is not an ImageNet category.
        mean, std: the processor's normalisation (after scaling to [0, 1]).
        preprocess: the processor's resize and crop, for a separate CPU stage.
    """

    labels: tuple[str, ...]
    imagenet_index: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    preprocess: ProcessorResize

    def class_ids(self) -> dict[str, int]:
        """Class id of each label (the first one, where two classes share a name)."""
        ids: dict[str, int] = {}
        for class_id, label in enumerate(self.labels):
            ids.setdefault(label, class_id)
        return ids


def imagenet_categories() -> tuple[str, ...]:
    """The 1000 ImageNet-1k category names, by index (from torchvision's metadata, no download)."""
    return tuple(ResNet152_Weights.DEFAULT.meta["categories"])


def _first_name(label: str) -> str:
    return label.split(",")[0].strip().lower()


def imagenet_indices(labels: Sequence[str]) -> tuple[int, ...]:
    """The ImageNet-1k index of each class of a model, -1 where a label is no ImageNet category.

    A 1000-class model whose labels name ImageNet's categories in ImageNet's order
    (``"tench, Tinca tinca"`` is ``"tench"``), for at least nine in ten classes, is an
    ImageNet-1k head: class id and ImageNet index are the same. Otherwise each label
    whose first name is exactly one ImageNet category gets that category's index.
    """
    categories = imagenet_categories()
    names = [_first_name(label) for label in labels]
    if len(names) == len(categories):
        agreeing = sum(
            name == category.lower() for name, category in zip(names, categories, strict=True)
        )
        if agreeing >= 0.9 * len(categories):
            return tuple(range(len(categories)))
    index_of: dict[str, list[int]] = {}
    for index, category in enumerate(categories):
        index_of.setdefault(category.lower(), []).append(index)
    return tuple(index_of[name][0] if len(index_of.get(name, [])) == 1 else -1 for name in names)


def image_classifier_spec(classifier) -> ImageClassifierSpec:
    """Labels, ImageNet indices, normalisation and resize of a transformers pipeline's model."""
    processor = classifier.image_processor
    config = classifier.model.config
    labels = tuple(str(config.id2label[i]) for i in range(config.num_labels))
    scale = float(getattr(processor, "rescale_factor", 1 / 255)) * 255
    return ImageClassifierSpec(
        labels=labels,
        imagenet_index=imagenet_indices(labels),
        mean=tuple(float(m) / scale for m in processor.image_mean),
        std=tuple(float(s) / scale for s in processor.image_std),
        preprocess=ProcessorResize(processor),
    )


def save_offline_vit(folder: str | Path, seed: int = OFFLINE_SEED) -> Path:
    """Build the tiny offline ViT (seeded) and its image processor, and save both to ``folder``.

    The model has the 1000 ImageNet-1k category names as labels, so its predictions
    go through the same evaluation as a real ImageNet model's. Nothing is downloaded.
    """
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    categories = imagenet_categories()
    config = ViTConfig(
        **OFFLINE_VIT_LAYOUT,
        num_labels=len(categories),
        id2label=dict(enumerate(categories)),
        label2id={name: index for index, name in enumerate(categories)},
    )
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = ViTForImageClassification(config).eval()
    finally:
        torch.random.set_rng_state(state)
    with torch.no_grad():
        model.classifier.weight.mul_(OFFLINE_VIT_HEAD_SCALE)
    size = OFFLINE_VIT_LAYOUT["image_size"]
    processor = ViTImageProcessor(
        size={"height": size, "width": size}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    folder = Path(folder)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def offline_vit_folder(root: str | Path | None = None) -> Path:
    """The folder of the tiny offline ViT, built on first use and reused after.

    Every process (the notebook, each Ray actor, on any node) calls this and gets
    the same seeded model. The folder is built under a temporary name and renamed,
    so that processes starting together never see half a model.

    Args:
        root: where to keep it (default: ``nbhelpers-offline-vit`` in the system's
            temporary folder).
    """
    import transformers

    root = Path(root) if root else Path(tempfile.gettempdir()) / "nbhelpers-offline-vit"
    layout = json.dumps(
        [OFFLINE_VIT_LAYOUT, OFFLINE_VIT_HEAD_SCALE, OFFLINE_SEED, transformers.__version__]
    )
    folder = root / f"tiny-vit-{hashlib.sha256(layout.encode()).hexdigest()[:12]}"
    if (folder / "config.json").exists():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=".building-", dir=root))
    try:
        save_offline_vit(building)
        building.rename(folder)
    except OSError:
        if not (folder / "config.json").exists():  # not another process winning the race
            raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return folder


def vit_model_source(pretrained: bool, model_id: str = VIT_MODEL_ID) -> str:
    """What to load: ``model_id`` (hub id or local folder), or the offline ViT's folder."""
    return str(model_id) if pretrained else str(offline_vit_folder())


def _looks_like_folder(model_id: str) -> bool:
    return model_id.startswith(("/", "./", "../", "~")) or Path(model_id).expanduser().exists()


def build_image_classifier(model_source: str, device: torch.device | str = "cpu"):
    """``transformers.pipeline("image-classification", model=model_source)`` on ``device``.

    Remote code is never run (``trust_remote_code=False``); ``HF_HUB_OFFLINE=1`` is
    respected (only the local cache is used).

    Raises:
        WeightsUnavailableError: the model is neither a local folder, nor in the cache,
            nor downloadable; the message says what to do.
    """
    from transformers import pipeline

    if _looks_like_folder(model_source) and not Path(model_source).expanduser().is_dir():
        raise WeightsUnavailableError(
            f"Model folder {model_source} does not exist. Give model_id a folder holding "
            "config.json, the weights and preprocessor_config.json (model.save_pretrained and "
            "processor.save_pretrained write them), or a Hugging Face hub id."
        )
    try:
        with _network_timeout(30):
            return pipeline(
                "image-classification",
                model=_local_or_hub(model_source),
                device=device,
                trust_remote_code=False,
            )
    except OSError as error:
        offline = ""
        if offline_environment():
            offline = " HF_HUB_OFFLINE=1 is set, so only the local cache was searched."
        raise WeightsUnavailableError(
            f"Model {model_source!r} is not available: it is not in the Hugging Face cache "
            f"({_hf_cache_dir()}) and could not be downloaded ({type(error).__name__}: "
            f"{str(error).splitlines()[0]}).{offline} To run without network, set "
            "pretrained=False (a tiny ViT built locally, meaningless predictions), or download "
            "the model once on a machine with network (hf download "
            f"{model_source}) and copy the cache folder (HF_HOME), or pass a local folder as "
            "model_id."
        ) from error


def _local_or_hub(model_source: str) -> str:
    """A local folder with ``~`` expanded, or the hub id unchanged."""
    return (
        str(Path(model_source).expanduser()) if _looks_like_folder(model_source) else model_source
    )


def _hf_cache_dir() -> str:
    try:
        from huggingface_hub.constants import HF_HUB_CACHE

        return str(HF_HUB_CACHE)
    except ImportError:  # pragma: no cover - huggingface_hub always ships with transformers
        return "the Hugging Face cache"
