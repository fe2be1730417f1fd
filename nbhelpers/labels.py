"""ImageNet's vocabulary (its 1000 category names and synsets), and class labels from image
paths, where the folder layout carries them.

ImageNet and Imagenette keep each class in a folder named after its WordNet synset
(``n01440764`` is "tench"); a class index is the position of its synset in the sorted
list of 1000 that ships with this package (``imagenet_synsets.json``), and its name the
same position in ``imagenet_categories.json`` (torchvision's names for the classes).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from functools import cache
from pathlib import Path, PurePosixPath

_SYNSET_PREFIX = re.compile(r"(n\d{8})_")


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


def labels_from_paths(paths: Sequence[str], categories: Sequence[str]) -> list[int | None]:
    """The ImageNet-1k class index that each path names, or ``None``.

    In order: the nearest folder named after a synset (``n01440764/``); a file name that
    starts with one (``n01440764_10026.JPEG``); the image's own folder named after a
    category (``golf_ball/``, any case), never a folder higher up (``/data/library/``).
    """
    by_name: dict[str, int] = {}  # lower case, "_" as space; the first of duplicates wins
    for index, name in enumerate(categories):
        by_name.setdefault(_normal_name(name), index)
    return [_label(path, by_name) for path in paths]


def _normal_name(name: str) -> str:
    return " ".join(name.replace("_", " ").lower().split())


def _label(path: str, by_name: dict[str, int]) -> int | None:
    parts = PurePosixPath(str(path).replace("\\", "/")).parts
    folders = parts[:-1]
    file_name = parts[-1] if parts else ""
    indices = synset_index()
    for folder in reversed(folders):
        if folder in indices:
            return indices[folder]
    prefix = _SYNSET_PREFIX.match(file_name)
    if prefix and prefix.group(1) in indices:
        return indices[prefix.group(1)]
    return by_name.get(_normal_name(folders[-1])) if folders else None
