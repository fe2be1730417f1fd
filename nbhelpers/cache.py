"""The local copies of ``s3://`` datasets that ``make prefetch`` made.

``make prefetch`` copies a dataset into ``cache/datasets/<bucket>/<prefix>`` and, once
every file is there, writes a marker beside it; then ``find_images`` reads the copy.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

from nbhelpers.project import PROJECT_ROOT

CACHE_ENV = "NBHELPERS_CACHE"


def dataset_cache_dir() -> Path:
    """Where local copies of ``s3://`` datasets go: ``<$NBHELPERS_CACHE or cache/>/datasets``."""
    cache = Path(os.environ.get(CACHE_ENV) or PROJECT_ROOT / "cache")
    return cache.expanduser().resolve() / "datasets"


def local_copy_path(uri: str) -> Path:
    """Where the local copy of an ``s3://`` URI lives (``<cache>/datasets/<bucket>/<prefix>``)."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.hostname:
        raise ValueError(f"Only s3:// URIs have a local copy; got {uri!r}.")
    return dataset_cache_dir() / parsed.hostname / parsed.path.strip("/")


def marker_path(folder: Path) -> Path:
    """The file that marks ``folder`` as a complete copy (beside it, not among the images)."""
    return folder.with_name(folder.name + ".prefetched.json")


def local_copy_of(uri: str) -> Path | None:
    """The complete local copy of ``uri`` made by ``make prefetch`` (with its marker), or ``None``."""
    if not str(uri).startswith("s3://") or not urlparse(str(uri)).hostname:
        return None  # not S3, or no bucket: find_images explains what is wrong
    folder = local_copy_path(str(uri))
    return folder if marker_path(folder).is_file() and folder.is_dir() else None
