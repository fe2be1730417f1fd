"""Class labels from image paths, where the folder layout carries them.

ImageNet and Imagenette keep each class in a folder named after its WordNet synset
(``n01440764`` is "tench"). ImageNet-1k's class indices are the positions of its
1000 synsets in sorted order; the list ships with this package
(``imagenet_synsets.json``) and is the one place that maps synsets to indices.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from functools import cache
from pathlib import Path, PurePosixPath

_SYNSET = re.compile(r"n\d{8}")
_SYNSET_PREFIX = re.compile(r"(n\d{8})_")


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


IMAGENETTE_SYNSET_NAMES = (
    "n01440764",  # tench
    "n02102040",  # English springer
    "n02979186",  # cassette player
    "n03000684",  # chain saw
    "n03028079",  # church
    "n03394916",  # French horn
    "n03417042",  # garbage truck
    "n03425413",  # gas pump
    "n03445777",  # golf ball
    "n03888257",  # parachute
)

IMAGENETTE_SYNSETS: dict[str, int] = {
    synset: synset_index()[synset] for synset in IMAGENETTE_SYNSET_NAMES
}
"""Imagenette's ImageNet synset folders and their ImageNet-1k class indices."""


def label_from_path(path: str, categories: Sequence[str]) -> int | None:
    """The ImageNet-1k class index that ``path`` names, or ``None``.

    In order: the nearest folder named after an ImageNet synset (``n01440764``,
    Imagenette's and ImageNet's layout); a file name that starts with a synset
    (``n01440764_10026.JPEG``, ImageNet's training files); the image's own folder
    named after a category (``golf ball`` or ``golf_ball``, any case). Only the
    image's own folder is compared with category names, so that a folder higher up
    (``/data/library/...``) never labels a whole collection by accident.
    """
    return _label(path, _category_lookup(tuple(categories)))


def labels_from_paths(paths: Sequence[str], categories: Sequence[str]) -> list[int | None]:
    """:func:`label_from_path` for every path."""
    by_name = _category_lookup(tuple(categories))
    return [_label(path, by_name) for path in paths]


@cache
def _category_lookup(categories: tuple[str, ...]) -> dict[str, int]:
    """Category name (lower case, ``_`` as space) -> index; the first of duplicates wins."""
    by_name: dict[str, int] = {}
    for index, name in enumerate(categories):
        by_name.setdefault(_normal_name(name), index)
    return by_name


def _normal_name(name: str) -> str:
    return " ".join(name.replace("_", " ").lower().split())


def _label(path: str, by_name: dict[str, int]) -> int | None:
    parts = PurePosixPath(str(path).replace("\\", "/")).parts
    folders, file_name = parts[:-1], parts[-1] if parts else ""
    indices = synset_index()
    for folder in reversed(folders):
        if _SYNSET.fullmatch(folder) and folder in indices:
            return indices[folder]
    prefix = _SYNSET_PREFIX.match(file_name)
    if prefix and prefix.group(1) in indices:
        return indices[prefix.group(1)]
    if folders:
        return by_name.get(_normal_name(folders[-1]))
    return None
