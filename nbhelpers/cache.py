"""The project's folders on disk: its root, and the cache of prefetched datasets.

``make prefetch`` (``python -m tools.prefetch``) copies an ``s3://`` dataset into
``cache/datasets/<bucket>/<prefix>`` at the project's root (``NBHELPERS_CACHE``
moves the whole cache folder) and writes a marker file beside the copy once every
file is there. :func:`nbhelpers.sources.find_images` then reads the local copy
instead of S3; :func:`local_copy_of` is how it finds one.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

PROJECT_ROOT = Path(__file__).resolve().parent.parent
"""The folder that holds ``notebooks/``, ``nbhelpers/`` and ``pyproject.toml``."""

IMAGENETTE_VAL_URI = "s3://anonymous@air-example-data-2/imagenette2/val/"
"""The Imagenette validation split on the public bucket the Ray docs use."""

VOC_ANIMALS_URI = "s3://anonymous@air-example-data/AnimalDetection/JPEGImages/"
"""The Pascal VOC cats-and-dogs subset on the public bucket the Ray docs use."""

CACHE_ENV = "NBHELPERS_CACHE"
"""Environment variable that moves the project's cache folder."""

MARKER_SUFFIX = ".prefetched.json"
"""``<copy folder>.prefetched.json`` is written beside a local copy once all its files are there."""


def cache_dir() -> Path:
    """The project's cache folder: ``$NBHELPERS_CACHE``, or ``cache/`` at the project's root."""
    return Path(os.environ.get(CACHE_ENV) or PROJECT_ROOT / "cache").expanduser().resolve()


def dataset_cache_dir() -> Path:
    """Where local copies of ``s3://`` datasets go: ``<cache>/datasets``."""
    return cache_dir() / "datasets"


def local_copy_path(uri: str) -> Path:
    """Where the local copy of an ``s3://`` URI lives (``<cache>/datasets/<bucket>/<prefix>``)."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.hostname:
        raise ValueError(f"Only s3:// URIs have a local copy; got {uri!r}.")
    return dataset_cache_dir() / parsed.hostname / parsed.path.strip("/")


def marker_path(folder: Path) -> Path:
    """The file that marks ``folder`` as a complete copy (beside it, not among the images)."""
    return folder.with_name(folder.name + MARKER_SUFFIX)


def local_copy_of(uri: str) -> Path | None:
    """The complete local copy of ``uri`` made by ``make prefetch``, or ``None``.

    A copy counts once its marker file exists, so an interrupted download is never
    used as if it were the dataset.
    """
    if not str(uri).startswith("s3://") or not urlparse(str(uri)).hostname:
        return None  # not S3, or no bucket: find_images explains what is wrong
    folder = local_copy_path(str(uri))
    return folder if marker_path(folder).is_file() and folder.is_dir() else None
