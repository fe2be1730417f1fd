"""The Vision Transformer of notebook 02: what ``transformers.pipeline(...)`` loads, and its labels.

The notebook calls ``pipeline("image-classification", model=...)`` itself; this
module provides what surrounds that call:

- :func:`model_source`: the model to load, ``google/vit-base-patch16-224`` (or any
  hub id or local folder), or offline a tiny ViT built here with seeded random
  weights and the 1000 ImageNet class names (:func:`offline_vit_folder`);
- :func:`model_loading`: around the call, a message that says what to do when the
  model cannot be had, instead of a bare ``OSError``;
- :func:`read_preprocessing`: the image processor's own resize, for the Ray tasks
  that decode the images;
- :func:`imagenet_index_by_label`: each label's ImageNet-1k index, for evaluation.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import huggingface_hub.utils as hub_utils
import torch
import transformers
from huggingface_hub.constants import HF_HUB_CACHE
from torchvision.models import ResNet152_Weights
from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor
from transformers.utils import logging as transformers_logging

from nbhelpers.models import OFFLINE_SEED, WeightsUnavailableError, network_timeout
from nbhelpers.preprocess import KeepDecoded, ProcessorResize

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


def imagenet_categories() -> tuple[str, ...]:
    """The 1000 ImageNet-1k category names, by index (torchvision's metadata, no download)."""
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


def imagenet_index_by_label(classifier) -> dict[str, int]:
    """For each label a pipeline can answer, its ImageNet-1k index (-1: not an ImageNet class).

    The pipeline answers with label names (``config.id2label``); evaluation compares
    ImageNet indices. Where two classes share a name (ImageNet has two "crane"s), the
    first class's index is used.

    Args:
        classifier: an image-classification pipeline.
    """
    config = classifier.model.config
    labels = [str(config.id2label[class_id]) for class_id in range(config.num_labels)]
    mapping: dict[str, int] = {}
    for label, index in zip(labels, imagenet_indices(labels), strict=True):
        mapping.setdefault(label, index)
    return mapping


def read_preprocessing(classifier, keep_whole: bool = False) -> ProcessorResize | KeepDecoded:
    """What the Ray tasks that decode the images do next, for this pipeline's model.

    Args:
        classifier: an image-classification pipeline.
        keep_whole: ``False``: resize (and crop) with the pipeline's image processor's
            own steps, to uint8 (:class:`~nbhelpers.preprocess.ProcessorResize`); the
            pipeline then finds the images at their final size, so its own resize
            changes nothing. ``True``: keep the decoded images whole, for the
            pipeline's processor to resize in the model actor. Both decode alike, so
            both give the model the same pixels.
    """
    resize = ProcessorResize(classifier.image_processor)
    return KeepDecoded(min_side=resize.min_side) if keep_whole else resize


def _looks_like_folder(model_id: str) -> bool:
    return model_id.startswith(("/", "./", "../", "~")) or Path(model_id).expanduser().exists()


def model_source(pretrained: bool, model_id: str = VIT_MODEL_ID) -> str:
    """What ``pipeline(model=...)`` loads: ``model_id``, or offline the tiny ViT's folder.

    Args:
        pretrained: ``False``: the tiny offline ViT (built on first use, nothing
            downloaded), whatever ``model_id`` says.
        model_id: a Hugging Face hub id, or a local folder (``~`` is expanded).

    Raises:
        WeightsUnavailableError: ``model_id`` names a local folder that does not exist.
    """
    if not pretrained:
        return str(offline_vit_folder())
    if not _looks_like_folder(model_id):
        return model_id
    folder = Path(model_id).expanduser()
    if not folder.is_dir():
        raise WeightsUnavailableError(
            f"Model folder {model_id} does not exist. Give model_id a folder holding "
            "config.json, the weights and preprocessor_config.json (model.save_pretrained and "
            "processor.save_pretrained write them), or a Hugging Face hub id."
        )
    return str(folder)


def offline_environment() -> bool:
    """Whether the Hugging Face offline switch is set (``HF_HUB_OFFLINE=1``)."""
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


@contextmanager
def model_loading(source: str) -> Iterator[None]:
    """Around ``pipeline(..., model=source)``: clear errors, a time limit, no loading bar.

    - A model that is neither cached nor downloadable raises
      :class:`~nbhelpers.models.WeightsUnavailableError`, whose message says how to
      run offline or pre-download (``HF_HUB_OFFLINE=1`` restricts loading to the cache).
    - Network reads time out after 30 s instead of hanging.
    - transformers' "Loading weights" progress bar is hidden (every model actor would
      print one); downloads keep theirs.
    """
    try:
        with network_timeout(30), _no_loading_bar():
            yield
    except OSError as error:
        offline = ""
        if offline_environment():
            offline = " HF_HUB_OFFLINE=1 is set, so only the local cache was searched."
        raise WeightsUnavailableError(
            f"Model {source!r} is not available: it is not in the Hugging Face cache "
            f"({HF_HUB_CACHE}) and could not be downloaded ({type(error).__name__}: "
            f"{str(error).splitlines()[0]}).{offline} To run without network, set "
            "pretrained=False (a tiny ViT built locally, meaningless predictions), or download "
            f"the model once on a machine with network (hf download {source}) and copy the "
            "cache folder (HF_HOME), or pass a local folder as model_id."
        ) from error


@contextmanager
def _no_loading_bar() -> Iterator[None]:
    """Hide transformers' own progress bars (loading, saving); keep the hub's download bars."""
    shown = transformers_logging.is_progress_bar_enabled()
    hub_off = hub_utils.are_progress_bars_disabled()
    transformers_logging.disable_progress_bar()  # also turns the hub's bars off
    if not hub_off:
        hub_utils.enable_progress_bars()
    try:
        yield
    finally:
        if shown:
            transformers_logging.enable_progress_bar()
        if hub_off:
            hub_utils.disable_progress_bars()


def save_offline_vit(folder: str | Path, seed: int = OFFLINE_SEED) -> Path:
    """Build the tiny offline ViT (seeded) and its image processor, and save both to ``folder``.

    The model has the 1000 ImageNet-1k category names as labels, so its predictions
    go through the same evaluation as a real ImageNet model's. Nothing is downloaded.
    """
    categories = imagenet_categories()
    config = ViTConfig(
        **OFFLINE_VIT_LAYOUT,
        num_labels=len(categories),
        id2label=dict(enumerate(categories)),
        label2id={name: index for index, name in enumerate(categories)},
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ViTForImageClassification(config).eval()
    with torch.no_grad():
        model.classifier.weight.mul_(OFFLINE_VIT_HEAD_SCALE)
    size = OFFLINE_VIT_LAYOUT["image_size"]
    processor = ViTImageProcessor(
        size={"height": size, "width": size}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    folder = Path(folder)
    with _no_loading_bar():
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
