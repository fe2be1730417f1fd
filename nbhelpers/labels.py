"""Class labels from image paths, where the folder layout carries them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePosixPath

IMAGENETTE_SYNSETS: dict[str, int] = {
    "n01440764": 0,  # tench
    "n02102040": 217,  # English springer
    "n02979186": 482,  # cassette player
    "n03000684": 491,  # chain saw
    "n03028079": 497,  # church
    "n03394916": 566,  # French horn
    "n03417042": 569,  # garbage truck
    "n03425413": 571,  # gas pump
    "n03445777": 574,  # golf ball
    "n03888257": 701,  # parachute
}
"""Imagenette's ImageNet synset folders and their ImageNet-1k class indices."""


def label_from_path(path: str, categories: Sequence[str]) -> int | None:
    """The ImageNet-1k class index that the folders of ``path`` name, or ``None``.

    A folder named after an Imagenette synset (``n01440764``) or after a category
    itself (``golf ball`` or ``golf_ball``) labels the images below it; the
    nearest such folder wins.
    """
    by_name = {name.lower(): index for index, name in enumerate(categories)}
    for folder in reversed(PurePosixPath(str(path).replace("\\", "/")).parent.parts):
        if folder in IMAGENETTE_SYNSETS:
            return IMAGENETTE_SYNSETS[folder]
        index = by_name.get(folder.replace("_", " ").lower())
        if index is not None:
            return index
    return None


def labels_from_paths(paths: Sequence[str], categories: Sequence[str]) -> list[int | None]:
    """:func:`label_from_path` for every path."""
    return [label_from_path(path, categories) for path in paths]
