"""The Vision Transformer of notebook 02: what ``transformers.pipeline(...)`` loads, and its labels.

The notebook calls ``pipeline("image-classification", model=...)`` itself, inside
:func:`model_to_load`, which picks the model (a hub id, a folder, or offline a tiny seeded
ViT) and turns loading failures into advice; :func:`read_preprocessing` gives the read
tasks the pipeline's image processor with its resize only.
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
from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor
from transformers.utils import logging as transformers_logging

from nbhelpers.lessons import VIT_MODEL_ID
from nbhelpers.models import (
    OFFLINE_SEED,
    WeightsUnavailableError,
    imagenet_categories,
    network_timeout,
)
from nbhelpers.reading import KeepDecoded, ProcessorResize

OFFLINE_VIT_LAYOUT = {
    "image_size": 224,
    "patch_size": 32,
    "hidden_size": 48,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 96,
    "initializer_range": 0.2,
}
"""The tiny offline ViT (0.2 M parameters). A large ``initializer_range`` (usually 0.02) and
a scaled head give answers that depend on the image, so comparing runs tests something."""


OFFLINE_VIT_HEAD_SCALE = 10.0


def imagenet_indices(labels: Sequence[str]) -> tuple[int, ...]:
    """The ImageNet-1k index of each class of a model, -1 where a label is no ImageNet category.

    1000 labels mostly naming ImageNet's categories in order (``"tench, Tinca tinca"``
    is ``"tench"``) are an ImageNet head; else each label is looked up by its first name.
    """
    categories = [category.lower() for category in imagenet_categories()]
    names = [label.split(",")[0].strip().lower() for label in labels]
    if len(names) == len(categories):
        agreeing = sum(name == category for name, category in zip(names, categories, strict=True))
        if agreeing >= 0.9 * len(categories):
            return tuple(range(len(categories)))
    return tuple(categories.index(n) if categories.count(n) == 1 else -1 for n in names)


def imagenet_index_by_label(classifier) -> dict[str, int]:
    """Each label a pipeline can answer -> its ImageNet-1k index (-1: none; the first "crane")."""
    config = classifier.model.config
    labels = [str(config.id2label[class_id]) for class_id in range(config.num_labels)]
    indices = imagenet_indices(labels)
    return {label: indices[labels.index(label)] for label in labels}  # the first of equal labels


def read_preprocessing(classifier, keep_whole: bool = False) -> ProcessorResize | KeepDecoded:
    """What the read tasks do after decoding: the pipeline processor's own resize, or nothing.

    ``keep_whole=True`` leaves it to the processor in the actor: the model sees the same pixels.
    """
    resize = ProcessorResize(classifier.image_processor)
    return KeepDecoded(min_side=resize.min_side) if keep_whole else resize


def model_source(pretrained: bool, model_id: str = VIT_MODEL_ID) -> str:
    """What ``pipeline(model=...)`` loads: ``model_id`` (hub id or local folder), or the tiny ViT.

    Raises ``WeightsUnavailableError`` when ``model_id`` names a missing folder.
    """
    if not pretrained:
        return str(offline_vit_folder())
    folder = Path(model_id).expanduser()
    if not (model_id.startswith(("/", "./", "../", "~")) or folder.exists()):
        return model_id  # a hub id
    if not folder.is_dir():
        raise WeightsUnavailableError(
            f"Model folder {model_id} does not exist. Give model_id a folder holding "
            "config.json, the weights and preprocessor_config.json (model.save_pretrained and "
            "processor.save_pretrained write them), or a Hugging Face hub id."
        )
    return str(folder)


@contextmanager
def model_to_load(pretrained: bool, model_id: str = VIT_MODEL_ID) -> Iterator[str]:
    """What ``pipeline(model=...)`` loads (:func:`model_source`), for a ``with`` block around
    the loading that turns a model neither cached nor downloadable into advice
    (:func:`model_loading`)."""
    source = model_source(pretrained, model_id)
    with model_loading(source):
        yield source


@contextmanager
def model_loading(source: str) -> Iterator[None]:
    """Around ``pipeline(..., model=source)``: advice on failure, a 30 s network limit, no bar.

    Raises ``WeightsUnavailableError`` saying how to run offline. The "Loading weights"
    bar, which every actor would print, is hidden; download bars stay.
    """
    try:
        with network_timeout(30), _no_loading_bar():
            yield
    except OSError as error:
        offline = ""
        if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
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


def _save_offline_vit(folder: Path) -> None:
    """Build the tiny seeded ViT, labelled with the 1000 ImageNet classes, and its processor."""
    id2label = dict(enumerate(imagenet_categories()))
    label2id = {name: index for index, name in id2label.items()}
    config = ViTConfig(**OFFLINE_VIT_LAYOUT, id2label=id2label, label2id=label2id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(OFFLINE_SEED)
        model = ViTForImageClassification(config).eval()
    with torch.no_grad():
        model.classifier.weight.mul_(OFFLINE_VIT_HEAD_SCALE)
    processor = ViTImageProcessor()  # the defaults: 224 x 224, mean and std 0.5
    with _no_loading_bar():
        model.save_pretrained(folder)
    processor.save_pretrained(folder)


def offline_vit_folder(root: str | Path | None = None) -> Path:
    """The folder of the tiny offline ViT, built on first use and reused after.

    Built under a temporary name and renamed: actors starting together never see half a model.
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
        _save_offline_vit(building)
        building.rename(folder)
    except OSError:
        if not (folder / "config.json").exists():  # not another process winning the race
            raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return folder
