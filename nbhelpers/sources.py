"""Find the images a notebook runs on: a local folder, an ``s3://`` URI or ``"sample"``."""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pyarrow.fs as pafs

from nbhelpers.cache import local_copy_of
from nbhelpers.s3 import S3SourceError, list_objects

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff")
IMAGE_EXTENSIONS += (".webp", ".avif", ".heic", ".heif")
"""Image extensions, in any case. HEIC/HEIF are listed so that failing to decode them
(without the optional ``pillow-heif``) is reported rather than skipped without a word."""

SAMPLE_PHOTOS = [
    ("skimage", name)
    for name in ("astronaut.png", "camera.png", "chelsea.png", "coffee.png", "coins.png")
    + ("hubble_deep_field.jpg", "moon.png", "motorcycle_left.png", "motorcycle_right.png")
    + ("retina.jpg", "rocket.jpg")
] + [("matplotlib", "grace_hopper.jpg")]
"""Real photos that ship inside scikit-image and matplotlib: the offline data set."""

_IGNORED_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}
_SYSTEM_FILES = "(system or hidden files)"
_SUPPORTED = "a local folder or image file, an s3://bucket/prefix URI, or 'sample'"


class DataSourceError(ValueError):
    """``data_uri`` points nowhere useful: missing, empty, or without a single image."""


@dataclass(frozen=True)
class ImageSource:
    """The images found at ``uri``, and how to read them.

    Attributes:
        uri: the ``data_uri`` as the user gave it.
        kind: ``"local"``, ``"s3"`` or ``"sample"``.
        paths: the image files, sorted; S3 paths are ``bucket/key`` as pyarrow expects.
        filesystem: a pyarrow filesystem for S3, ``None`` for local files.
        num_found: how many image files were found before ``num_images`` was applied.
        skipped: files that were not considered images, counted by extension.
    """

    uri: str
    kind: str
    paths: list[str]
    filesystem: pafs.FileSystem | None = None
    num_found: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        """One line for the notebook: where the images are, how many are used, what was skipped."""
        text = f"{len(self.paths)} of {self.num_found} images from {self.uri} ({self.kind})"
        if self.skipped:
            others = ", ".join(
                f"{count} {'system or hidden' if ext == _SYSTEM_FILES else ext or 'without extension'}"
                for ext, count in self.skipped.items()
            )
            text += f"; skipped {sum(self.skipped.values())} other files ({others})"
        return text


def is_image_name(name: str) -> bool:
    """Whether a file name has an image extension (case-insensitive)."""
    return name.lower().endswith(IMAGE_EXTENSIONS)


def sample_photo_paths() -> list[str]:
    """Paths of the real photos bundled with scikit-image and matplotlib."""
    import matplotlib
    import skimage

    roots = {
        "skimage": Path(skimage.__file__).parent / "data",
        "matplotlib": Path(matplotlib.get_data_path()) / "sample_data",
    }
    paths = [roots[package] / name for package, name in SAMPLE_PHOTOS]
    return [str(p) for p in paths if p.is_file()]


def printable_path(path: str) -> str:
    """``path`` as valid UTF-8 text: bytes of a name that is not UTF-8 become ``\\xNN``.

    Old cameras and ZIP files extracted on Linux leave names in Latin-1 or cp437;
    Python keeps their bytes as surrogates, which Arrow, Parquet and JSON refuse.
    :func:`path_on_disk` turns the printable form back into the real name.
    """
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(path).decode("utf-8", "backslashreplace")
    return path


def path_on_disk(path: str) -> str | bytes:
    """The name to open for a path from :func:`printable_path` (the bytes, where escaped)."""
    if "\\x" not in path or os.path.lexists(path):
        return path
    raw = re.sub(rb"\\x([0-9a-f]{2})", lambda m: bytes([int(m.group(1), 16)]), path.encode())
    return raw if os.path.lexists(raw) else path


def _is_system_file(name: str) -> bool:
    """Files that operating systems leave beside photos (``._IMG_1.jpg`` from macOS, ...)."""
    return name in _IGNORED_NAMES or name.startswith("._")


def _list_local(root: Path) -> tuple[list[str], Counter]:
    """Image files below ``root`` (recursively, following links once) and the others counted.

    Hidden folders (``.git``, ``.ipynb_checkpoints``) are not searched. A broken
    link named like an image is listed: decoding then reports it.
    """
    images, skipped = [], Counter()
    seen_folders: set[tuple[int, int]] = set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        info = os.stat(folder)
        if (info.st_dev, info.st_ino) in seen_folders:  # a link back up the tree
            dirs[:] = []
            continue
        seen_folders.add((info.st_dev, info.st_ino))
        hidden = [d for d in dirs if d.startswith(".")]
        if hidden:
            skipped[_SYSTEM_FILES] += len(hidden)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if _is_system_file(name):
                skipped[_SYSTEM_FILES] += 1
            elif is_image_name(name):
                images.append(printable_path(os.path.join(folder, name)))
            else:
                skipped[Path(name).suffix.lower()] += 1
    return images, skipped


def _list_s3(uri: str) -> tuple[list[str], Counter, pafs.S3FileSystem]:
    """Image objects below the prefix of ``uri`` and the others counted by extension."""
    try:
        infos, fs = list_objects(uri)
    except S3SourceError as error:
        raise DataSourceError(str(error)) from error
    images, skipped = [], Counter()
    for info in infos:
        if _is_system_file(info.base_name):
            skipped[_SYSTEM_FILES] += 1
        elif is_image_name(info.base_name):
            images.append(info.path)
        else:
            skipped[Path(info.base_name).suffix.lower()] += 1
    return images, skipped, fs


def pick_evenly(paths: list[str], num_images: int | None) -> list[str]:
    """At most ``num_images`` paths, spread evenly over the sorted list (every class folder
    stays represented, where the first N paths would all come from the first folder)."""
    if num_images is None or num_images >= len(paths):
        return list(paths)
    if num_images <= 0:
        raise ValueError(f"num_images must be positive or None, got {num_images}.")
    indices = np.linspace(0, len(paths) - 1, num_images).round().astype(int)
    return [paths[i] for i in indices]


def find_images(data_uri: str | os.PathLike, num_images: int | None = None) -> ImageSource:
    """Resolve ``data_uri`` to the list of images to run on, before any Ray work.

    Args:
        data_uri: a local folder (searched recursively; ``~`` and ``file://`` work),
            a single image file, an ``s3://`` URI, or ``"sample"`` for the photos
            bundled with scikit-image and matplotlib.
        num_images: use at most this many images, spread evenly (``None``: all).

    Returns:
        An :class:`ImageSource` with the sorted image paths (absolute for local files).

    Raises:
        DataSourceError: the place does not exist, is empty, or holds no image; the
            message names the place and what was looked for.
    """
    data_uri = os.fspath(data_uri).strip() if isinstance(data_uri, os.PathLike | str) else data_uri
    if not isinstance(data_uri, str) or not data_uri:
        raise DataSourceError(f"data_uri must be {_SUPPORTED}; got {data_uri!r}.")
    filesystem = None
    scheme = urlparse(data_uri).scheme.lower() if "://" in data_uri else ""
    if data_uri == "sample":
        kind, place = "sample", "the sample photos"
        images, skipped = sample_photo_paths(), Counter()
    elif scheme in ("s3", "s3a"):
        kind, place = "s3", data_uri
        data_uri = "s3://" + data_uri.split("://", 1)[1]
        if copy := local_copy_of(data_uri):
            kind = f"the local copy in {copy} made by `make prefetch`; no network needed"
            images, skipped = _list_local(copy)
        else:
            images, skipped, filesystem = _list_s3(data_uri)
    elif scheme in ("", "file"):
        kind = "local"
        root = _local_root(data_uri)
        place = str(root)
        images, skipped = _list_local_root(root, data_uri)
    else:
        raise DataSourceError(
            f"data_uri {data_uri!r}: {scheme}:// is not supported. Give {_SUPPORTED} "
            "(copy the images to a local folder or an S3 bucket first)."
        )
    if not images:
        raise DataSourceError(_no_images_message(data_uri, place, skipped))
    images.sort()
    return ImageSource(
        uri=data_uri,
        kind=kind,
        paths=pick_evenly(images, num_images),
        filesystem=filesystem,
        num_found=len(images),
        skipped=dict(sorted(skipped.items())),
    )


def _local_root(data_uri: str) -> Path:
    """The absolute local path that ``data_uri`` names (Ray workers may run elsewhere)."""
    path = data_uri
    if path.lower().startswith("file://"):
        path = unquote(urlparse(path).path)
    root = Path(os.path.abspath(Path(path).expanduser()))
    if not os.path.lexists(root):
        raise DataSourceError(
            f"data_uri {data_uri!r} does not exist (looked for a folder or an image file at "
            f"{root}). Give {_SUPPORTED}."
        )
    if not root.exists():
        raise DataSourceError(f"data_uri {data_uri!r} is a broken symbolic link ({root}).")
    return root


def _list_local_root(root: Path, data_uri: str) -> tuple[list[str], Counter]:
    """The images at a local ``root``: a folder searched recursively, or one image file."""
    if root.is_dir():
        try:
            return _list_local(root)
        except PermissionError as error:
            raise DataSourceError(f"Cannot list {data_uri!r}: {error}.") from error
    if is_image_name(root.name):
        return [str(root)], Counter()
    return [], Counter({root.suffix.lower(): 1})


def _no_images_message(data_uri: str, place: str, skipped: Counter) -> str:
    """Why no image was found at ``place``: empty, or only other kinds of files."""
    if skipped:
        others = ", ".join(
            f"{count} {ext or '(no extension)'}" for ext, count in sorted(skipped.items())
        )
        found = f"it holds no image, only: {others}"
    else:
        found = "it is empty"
    where = place if place == data_uri else f"{place}, from data_uri {data_uri!r}"
    return (
        f"No images in {where}: {found}. Looked recursively for files ending in "
        f"{', '.join(IMAGE_EXTENSIONS)} (any case)."
    )


def choose_num_images(
    num_images: int | str | None, use_gpu: bool, cpu_default: int
) -> tuple[int | None, str]:
    """Resolve the ``num_images`` parameter, and say what was chosen.

    ``"auto"`` means every image on GPUs and ``cpu_default`` images without, so a
    default run on a laptop finishes in minutes. ``None`` means every image; a
    number means at most that many.

    Returns:
        The limit for :func:`find_images` and a sentence for the notebook.
    """
    if num_images == "auto":
        if use_gpu:
            return None, "GPUs found: using every image."
        return cpu_default, (
            f"No GPU: using at most {cpu_default} images so that the run finishes in "
            "minutes. Set num_images=None to use every image (or a number of your choice)."
        )
    if num_images is None:
        return None, "Using every image."
    if isinstance(num_images, str) or int(num_images) < 1:
        raise ValueError(
            f"num_images must be 'auto', None or a positive number, got {num_images!r}."
        )
    return int(num_images), f"Using at most {int(num_images)} images."
