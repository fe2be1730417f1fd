"""Where the images are: a local folder, an ``s3://`` URI (or its local copy made by
``make prefetch``) or the sample photos; file names that are not UTF-8, as text and back.

A name that is not valid UTF-8 (old cameras, unzipped archives) travels as ``\\xNN`` escapes:
every stage that shows or stores a path uses :func:`printable_path`; the one that opens the
file uses :func:`path_on_disk`.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pyarrow.fs as pafs

from nbhelpers.lessons import local_copy_of

# File names that are not UTF-8, as text and back ----------------------------------------------


def printable_path(path: str) -> str:
    """``path`` as valid UTF-8 text: bytes of a name that is not UTF-8 become ``\\xNN``.

    Old cameras and unzipped archives leave names in Latin-1 or cp437, which Arrow,
    Parquet and JSON refuse. :func:`path_on_disk` gives back the real name.
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


# The s3:// file system, with the environment's endpoint and credentials -----------------------


class S3SourceError(OSError):
    """An ``s3://`` URI that cannot be listed or read; the message says what to check."""


def s3_filesystem(uri: str) -> tuple[pafs.S3FileSystem, str]:
    """A pyarrow S3 filesystem for ``uri`` and the ``bucket/prefix`` path inside it.

    ``s3://anonymous@bucket/prefix`` reads a public bucket without credentials. The
    endpoint (``AWS_ENDPOINT_URL_S3``), region and credentials of the environment are
    resolved here, in the driver, and travel with the filesystem object, so that Ray
    workers on any machine read from the same place with the same credentials.
    """
    env = os.environ.get
    location, _, key = uri.split("://", 1)[1].partition("/")
    user, _, bucket = location.rpartition("@")
    if not bucket:
        raise S3SourceError(
            f"{uri!r} has no bucket name; expected s3://bucket/prefix "
            "(or s3://anonymous@bucket/prefix for a public bucket)."
        )
    anonymous = user == "anonymous"
    options: dict = {"anonymous": anonymous, "connect_timeout": 10, "request_timeout": 60}
    endpoint = env("AWS_ENDPOINT_URL_S3") or env("AWS_ENDPOINT_URL")
    region = env("AWS_REGION") or env("AWS_DEFAULT_REGION")
    if endpoint:
        endpoint_url = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
        options |= {"endpoint_override": endpoint_url.netloc, "scheme": endpoint_url.scheme}
        region = region or "us-east-1"
    elif not region:
        try:
            region = pafs.resolve_s3_region(bucket)
        except OSError as error:
            raise S3SourceError(
                f"Cannot reach the S3 bucket of {uri!r} ({error}). Without network, run "
                "offline with data_uri='sample' (or a local folder) and pretrained=False, "
                "or copy the images to a local folder first and give its path as data_uri."
            ) from error
    options["region"] = region
    if not anonymous and env("AWS_ACCESS_KEY_ID"):
        options["access_key"] = env("AWS_ACCESS_KEY_ID")
        options["secret_key"] = env("AWS_SECRET_ACCESS_KEY", "")
        if env("AWS_SESSION_TOKEN"):
            options["session_token"] = env("AWS_SESSION_TOKEN")
    if env("AWS_CA_BUNDLE"):
        options["tls_ca_file_path"] = env("AWS_CA_BUNDLE")
    return pafs.S3FileSystem(**options), f"{bucket}/{key.lstrip('/')}".rstrip("/")


def list_objects(uri: str) -> tuple[list[pafs.FileInfo], pafs.S3FileSystem]:
    """Every object below the prefix of ``uri`` (or the one object it names), and the file system."""
    fs, path = s3_filesystem(uri)
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    except FileNotFoundError:  # not a prefix: perhaps one object
        try:
            infos = [fs.get_file_info(path)]
        except OSError:
            infos = []
        if not infos or infos[0].type != pafs.FileType.File:
            raise S3SourceError(
                f"data_uri {uri!r} does not exist: the bucket has no object and no prefix "
                f"{path.partition('/')[2]!r}. Check the spelling (S3 keys are case-sensitive)."
            ) from None
    except OSError as error:
        text = str(error)
        refused = ("ACCESS_DENIED", "INVALID_ACCESS_KEY", "SIGNATURE", "FORBIDDEN", "EXPIRED")
        if any(marker in text.upper() for marker in refused):
            text = (
                f"Access to {uri!r} was refused ({error}). For a public bucket use "
                "s3://anonymous@bucket/prefix; for a private one set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) to credentials that may list it."
            )
        elif "NO_SUCH_BUCKET" in text or "bucket does not exist" in text:
            bucket = path.partition("/")[0]
            text = f"data_uri {uri!r} does not exist: there is no bucket {bucket!r}."
        else:
            text = (
                f"Cannot list {uri!r}: {error}. Check the URI, your network and your AWS "
                "credentials; use s3://anonymous@bucket/... for a public bucket, and "
                "AWS_ENDPOINT_URL_S3 for an S3-compatible server. Without network, run "
                "offline with data_uri='sample' and pretrained=False."
            )
        raise S3SourceError(text) from error
    return [info for info in infos if info.type == pafs.FileType.File], fs


# Finding the images ---------------------------------------------------------------------------


# HEIC/HEIF too: without the optional pillow-heif, each is reported (a failed row), not skipped.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff")


IMAGE_EXTENSIONS += (".webp", ".avif", ".heic", ".heif")


SAMPLE_PHOTOS = {  # real photos that ship inside scikit-image and matplotlib: offline data
    "skimage": "astronaut.png camera.png chelsea.png coffee.png coins.png hubble_deep_field.jpg "
    "moon.png motorcycle_left.png motorcycle_right.png retina.jpg rocket.jpg",
    "matplotlib": "grace_hopper.jpg",
}


# "sample" lists each photo this many times (48 rows), so that an offline run has several
# batches per stage for stats() to report on (one batch of 12 says nothing about waiting).
SAMPLE_REPEATS = 4


_IGNORED_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}


_SYSTEM_FILES = "(system or hidden files)"


_SUPPORTED = "a local folder or image file, an s3://bucket/prefix URI, or 'sample'"


class DataSourceError(ValueError):
    """``data_uri`` points nowhere useful: missing, empty, or without a single image."""


@dataclass(frozen=True)
class ImageSource:
    """The images found at ``uri`` (as the user gave it), and how to read them."""

    uri: str
    kind: str  # "local", "s3" or "sample"
    paths: list[str]  # sorted; S3 paths are "bucket/key" as pyarrow expects
    filesystem: pafs.FileSystem | None = None  # for S3; None for local files
    num_found: int = 0  # image files found, before num_images was applied
    skipped: dict[str, int] = field(default_factory=dict)  # other files, by extension
    repeats: int = 1  # how many times each file is listed (SAMPLE_REPEATS for the sample)
    note: str = ""  # how many images num_images asked for, as a sentence

    def describe(self) -> str:
        """One line for the notebook: where the images are, how many are used, what was skipped."""
        listed = self.num_found * self.repeats
        text = f"{len(self.paths)} of {listed} images from {self.uri} ({self.kind})"
        if self.repeats > 1:
            text += f": {self.num_found} photos, each listed {self.repeats} times"
        if self.skipped:
            others = ", ".join(
                f"{count} {'system or hidden' if ext == _SYSTEM_FILES else ext or 'without extension'}"
                for ext, count in self.skipped.items()
            )
            text += f"; skipped {sum(self.skipped.values())} other files ({others})"
        return f"{text}. {self.note}" if self.note else text


def is_image_name(name: str) -> bool:
    """Whether a file name has an image extension (case-insensitive)."""
    return name.lower().endswith(IMAGE_EXTENSIONS)


def sample_photo_paths() -> list[str]:
    """Paths of the real photos bundled with scikit-image and matplotlib."""
    import matplotlib
    import skimage

    roots = {"skimage": Path(skimage.__file__).parent / "data"}
    roots["matplotlib"] = Path(matplotlib.get_data_path()) / "sample_data"
    paths = [roots[pkg] / name for pkg, names in SAMPLE_PHOTOS.items() for name in names.split()]
    return [str(p) for p in paths if p.is_file()]


def _sort_out(files: Iterable[tuple[str, str]], images: list[str], skipped: Counter) -> None:
    """Add the ``(name, path)`` files that are images to ``images``; count the others."""
    for name, path in files:
        if name in _IGNORED_NAMES or name.startswith("._"):  # ._IMG_1.jpg: left by macOS
            skipped[_SYSTEM_FILES] += 1
        elif is_image_name(name):
            images.append(path)
        else:
            skipped[Path(name).suffix.lower()] += 1


def _list_local(root: Path, data_uri: str) -> tuple[list[str], Counter]:
    """The images at ``root``: one image file, or a folder searched recursively (links
    followed once; hidden folders such as ``.ipynb_checkpoints`` skipped)."""
    if not root.is_dir():
        if is_image_name(root.name):
            return [str(root)], Counter()
        return [], Counter({root.suffix.lower(): 1})
    images: list[str] = []
    skipped: Counter = Counter()
    seen_folders: set[tuple[int, int]] = set()  # (device, inode): a link back up is seen once
    try:
        for folder, dirs, files in os.walk(root, followlinks=True):
            info = os.stat(folder)
            if (info.st_dev, info.st_ino) in seen_folders:  # a link back up the tree
                dirs[:] = []
                continue
            seen_folders.add((info.st_dev, info.st_ino))
            skipped[_SYSTEM_FILES] += sum(d.startswith(".") for d in dirs)
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            names = ((name, printable_path(os.path.join(folder, name))) for name in files)
            _sort_out(names, images, skipped)
    except PermissionError as error:
        raise DataSourceError(f"Cannot list {data_uri!r}: {error}.") from error
    return images, +skipped


def pick_evenly(paths: list[str], num_images: int | None) -> list[str]:
    """At most ``num_images`` paths, spread evenly so that every class folder stays represented."""
    if num_images is None or num_images >= len(paths):
        return list(paths)
    if num_images <= 0:
        raise ValueError(f"num_images must be positive or None, got {num_images}.")
    indices = np.linspace(0, len(paths) - 1, num_images).round().astype(int)
    return [paths[i] for i in indices]


def find_images(
    data_uri: str | os.PathLike,
    num_images: int | str | None = None,
    use_gpu: bool = False,
    cpu_default: int = 200,
) -> ImageSource:
    """The images to run on, before any Ray work: at most ``num_images``, spread evenly.

    ``num_images="auto"``: every image where the actors use GPUs (``use_gpu``), else at most
    ``cpu_default``, so that a laptop run finishes in minutes; the source's ``describe()``
    says which.

    ``data_uri``: a folder (searched recursively), an image file, an ``s3://`` URI, or
    ``"sample"`` (its photos listed :data:`SAMPLE_REPEATS` times, one round after the other,
    when ``num_images`` asks for more than there are).
    Raises :class:`DataSourceError`, saying what to do, when it holds no image.
    """
    auto = num_images == "auto"
    num_images, note = choose_num_images(num_images, use_gpu, cpu_default)
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
            images, skipped = _list_local(copy, data_uri)
        else:
            try:
                infos, filesystem = list_objects(data_uri)
            except S3SourceError as error:
                raise DataSourceError(str(error)) from error
            images, skipped = [], Counter()
            _sort_out(((info.base_name, info.path) for info in infos), images, skipped)
    elif scheme in ("", "file"):
        path = unquote(urlparse(data_uri).path) if scheme else data_uri
        root = Path(os.path.abspath(Path(path).expanduser()))  # Ray workers may run elsewhere
        if not os.path.lexists(root):
            raise DataSourceError(
                f"data_uri {data_uri!r} does not exist (looked for a folder or an image file at "
                f"{root}). Give {_SUPPORTED}."
            )
        if not root.exists():
            raise DataSourceError(f"data_uri {data_uri!r} is a broken symbolic link ({root}).")
        kind, place = "local", str(root)
        images, skipped = _list_local(root, data_uri)
    else:
        raise DataSourceError(
            f"data_uri {data_uri!r}: {scheme}:// is not supported. Give {_SUPPORTED} "
            "(copy the images to a local folder or an S3 bucket first)."
        )
    if not images:
        others = ", ".join(f"{n} {ext or '(no extension)'}" for ext, n in sorted(skipped.items()))
        found = f"it holds no image, only: {others}" if others else "it is empty"
        where = place if place == data_uri else f"{place}, from data_uri {data_uri!r}"
        raise DataSourceError(
            f"No images in {where}: {found}. "
            f"Looked recursively for files ending in {', '.join(IMAGE_EXTENSIONS)} (any case)."
        )
    images.sort()
    repeats = SAMPLE_REPEATS if kind == "sample" else 1
    if num_images is not None and num_images <= len(images):
        repeats = 1  # no photo twice when there are enough
    return ImageSource(
        uri=data_uri,
        kind=kind,
        paths=pick_evenly(images * repeats, num_images),
        filesystem=filesystem,
        num_found=len(images),
        skipped=dict(sorted(skipped.items())),
        repeats=repeats,
        note=note if auto else "",
    )


def choose_num_images(
    num_images: int | str | None, use_gpu: bool, cpu_default: int
) -> tuple[int | None, str]:
    """The limit for :func:`find_images` from the ``num_images`` parameter, and a sentence.

    ``"auto"``: every image on GPUs, ``cpu_default`` without, so that a laptop run finishes.
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
