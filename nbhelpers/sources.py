"""Find the images a notebook runs on: a local folder, an ``s3://`` URI or ``"sample"``."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pyarrow.fs as pafs

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
"""File extensions treated as images, matched case-insensitively (``.JPEG`` included)."""

IMAGENETTE_VAL_URI = "s3://anonymous@air-example-data-2/imagenette2/val/"
"""The Imagenette validation split on the public bucket the Ray docs use."""

VOC_ANIMALS_URI = "s3://anonymous@air-example-data/AnimalDetection/JPEGImages/"
"""The Pascal VOC cats-and-dogs subset on the public bucket the Ray docs use."""

SAMPLE_PHOTOS = (
    ("skimage", "astronaut.png"),
    ("skimage", "camera.png"),
    ("skimage", "chelsea.png"),
    ("skimage", "coffee.png"),
    ("skimage", "coins.png"),
    ("skimage", "hubble_deep_field.jpg"),
    ("skimage", "moon.png"),
    ("skimage", "motorcycle_left.png"),
    ("skimage", "motorcycle_right.png"),
    ("skimage", "retina.jpg"),
    ("skimage", "rocket.jpg"),
    ("matplotlib", "grace_hopper.jpg"),
)
"""Real photos that ship inside scikit-image and matplotlib: the offline data set."""

_IGNORED_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}


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
        """One line for the notebook: where the images are and how many are used."""
        text = f"{len(self.paths)} of {self.num_found} images from {self.uri} ({self.kind})"
        if self.skipped:
            others = ", ".join(f"{ext or '(no extension)'}: {n}" for ext, n in self.skipped.items())
            text += f"; skipped files that are not images by name: {others}"
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


def s3_filesystem(uri: str) -> tuple[pafs.S3FileSystem, str]:
    """A pyarrow S3 filesystem for ``uri`` and the ``bucket/prefix`` path inside it.

    ``s3://anonymous@bucket/prefix`` reads a public bucket without credentials.
    Otherwise credentials come from the standard AWS environment variables. An
    S3-compatible server is reached through ``AWS_ENDPOINT_URL_S3`` or
    ``AWS_ENDPOINT_URL``. Credentials are resolved here, in the driver, so that
    Ray workers on other machines read with the same ones.
    """
    parsed = urlparse(uri)
    anonymous = parsed.username == "anonymous"
    bucket = parsed.hostname or ""
    if not bucket:
        raise DataSourceError(f"{uri!r} has no bucket name; expected s3://bucket/prefix.")
    path = f"{bucket}/{parsed.path.lstrip('/')}".rstrip("/")
    options: dict = {"anonymous": anonymous}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if endpoint:
        endpoint_url = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
        options["endpoint_override"] = endpoint_url.netloc
        options["scheme"] = endpoint_url.scheme
        options["region"] = region or "us-east-1"
    elif region:
        options["region"] = region
    else:
        options["region"] = _bucket_region(bucket, uri)
    if not anonymous and os.environ.get("AWS_ACCESS_KEY_ID"):
        options["access_key"] = os.environ["AWS_ACCESS_KEY_ID"]
        options["secret_key"] = os.environ.get("AWS_SECRET_ACCESS_KEY", "")
        if os.environ.get("AWS_SESSION_TOKEN"):
            options["session_token"] = os.environ["AWS_SESSION_TOKEN"]
    options["connect_timeout"] = 10
    options["request_timeout"] = 60
    return pafs.S3FileSystem(**options), path


def _bucket_region(bucket: str, uri: str) -> str:
    try:
        return pafs.resolve_s3_region(bucket)
    except OSError as error:
        raise DataSourceError(
            f"Cannot reach the S3 bucket of {uri!r} ({error}). Without network, run "
            "offline with data_uri='sample' (or a local folder) and pretrained=False, "
            "or copy the images to a local folder first (make prefetch)."
        ) from error


def _list_local(root: Path) -> tuple[list[str], Counter]:
    images, skipped = [], Counter()
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if name in _IGNORED_NAMES or name.startswith("._"):
                continue
            if is_image_name(name):
                images.append(os.path.join(folder, name))
            else:
                skipped[Path(name).suffix.lower()] += 1
    return images, skipped


def _list_s3(uri: str) -> tuple[list[str], Counter, pafs.S3FileSystem]:
    fs, path = s3_filesystem(uri)
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    except FileNotFoundError as error:
        raise DataSourceError(f"{uri!r} does not exist (no such bucket or prefix).") from error
    except OSError as error:
        raise DataSourceError(
            f"Cannot list {uri!r}: {error}. Check the URI, your network and your AWS "
            "credentials; use s3://anonymous@bucket/... for a public bucket. Without "
            "network, run offline with data_uri='sample' and pretrained=False."
        ) from error
    images, skipped = [], Counter()
    for info in infos:
        if info.type != pafs.FileType.File or info.base_name in _IGNORED_NAMES:
            continue
        if is_image_name(info.base_name):
            images.append(info.path)
        else:
            skipped[Path(info.base_name).suffix.lower()] += 1
    return images, skipped, fs


def pick_evenly(paths: list[str], num_images: int | None) -> list[str]:
    """At most ``num_images`` paths, spread evenly over the sorted list.

    Evenly spaced picks keep every class folder represented, where the first N
    paths would all come from the first folder.
    """
    if num_images is None or num_images >= len(paths):
        return list(paths)
    if num_images <= 0:
        raise ValueError(f"num_images must be positive or None, got {num_images}.")
    indices = np.linspace(0, len(paths) - 1, num_images).round().astype(int)
    return [paths[i] for i in indices]


def find_images(data_uri: str, num_images: int | None = None) -> ImageSource:
    """Resolve ``data_uri`` to the list of images to run on, before any Ray work.

    Args:
        data_uri: a local folder (searched recursively), an ``s3://`` URI, or
            ``"sample"`` for the photos bundled with scikit-image and matplotlib.
        num_images: use at most this many images, spread evenly (``None``: all).

    Returns:
        An :class:`ImageSource` with the sorted image paths.

    Raises:
        DataSourceError: the place does not exist, is empty, or holds no image.
    """
    data_uri = str(data_uri)
    filesystem = None
    if data_uri == "sample":
        kind, images, skipped = "sample", sample_photo_paths(), Counter()
    elif data_uri.startswith("s3://"):
        kind = "s3"
        images, skipped, filesystem = _list_s3(data_uri)
    else:
        kind = "local"
        root = Path(data_uri).expanduser()
        if not root.exists():
            raise DataSourceError(f"data_uri {data_uri!r} does not exist.")
        if root.is_file():
            images, skipped = ([str(root)], Counter()) if is_image_name(root.name) else ([], Counter({root.suffix.lower(): 1}))
        else:
            images, skipped = _list_local(root)
    if not images:
        found = f" (it holds only: {dict(skipped)})" if skipped else " (it is empty)"
        raise DataSourceError(
            f"No images in {data_uri!r}{found}. Looked recursively for files ending in "
            f"{', '.join(IMAGE_EXTENSIONS)} (any case)."
        )
    images.sort()
    return ImageSource(
        uri=data_uri,
        kind=kind,
        paths=pick_evenly(images, num_images),
        filesystem=filesystem,
        num_found=len(images),
        skipped=dict(sorted(skipped.items())),
    )


def choose_num_images(num_images: int | str | None, use_gpu: bool, cpu_default: int) -> tuple[int | None, str]:
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
        raise ValueError(f"num_images must be 'auto', None or a positive number, got {num_images!r}.")
    return int(num_images), f"Using at most {int(num_images)} images."
