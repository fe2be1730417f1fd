"""The read stage: open a file (local disk or S3), decode it (:mod:`nbhelpers.decode`) and
resize it to what the model expects, as uint8 (a quarter of float32's bytes); one row per file,
its failure kept as text; and what to say when nothing reads.
"""

from __future__ import annotations

import io
import os
import stat
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from typing import BinaryIO, Protocol

import numpy as np
import pyarrow.fs as pafs
from PIL import Image

from nbhelpers.decode import DecodedImage, DecodeError, decode, failure_kind, short_message
from nbhelpers.sources import path_on_disk, printable_path

# Resizing to what the model expects, as uint8 -------------------------------------------------


class Preprocess(Protocol):
    """What the read stage (``reading.prepare_image``) asks of a preprocessing step."""

    @property
    def min_side(self) -> int:
        """The shortest side a decoder may reduce a large image to without losing detail."""

    @property
    def max_side(self) -> int | None:
        """The longest side the model uses (``None``: any): larger images decode smaller."""

    @property
    def fixed_size(self) -> bool:
        """Whether every output has one shape, so that a batch stacks into one array."""

    @property
    def empty(self) -> np.ndarray:
        """The placeholder image of a row that failed to decode."""

    def __call__(self, image: Image.Image) -> np.ndarray:
        """The decoded RGB image as the model stage wants it: uint8, ``(H, W, 3)``."""


@dataclass(frozen=True)
class CenterCrop:
    """Resize the shorter side to ``resize_size``, then crop ``crop_size`` from the center.

    Sizes and offsets as torchvision's ``Resize`` and ``CenterCrop`` compute them, so
    the pixels are those of the weights' own transforms (``tests/unit/test_reading.py``).
    """

    resize_size: int = 256
    crop_size: int = 224
    fixed_size = True
    max_side = None

    @property
    def min_side(self) -> int:
        """The ``resize_size``."""
        return self.resize_size

    @property
    def empty(self) -> np.ndarray:
        """The placeholder for a failed row: a black crop."""
        return np.zeros((self.crop_size, self.crop_size, 3), dtype=np.uint8)

    def __call__(self, image: Image.Image) -> np.ndarray:
        """The cropped image as a ``(crop_size, crop_size, 3)`` uint8 array."""
        width, height = image.size
        new_long = int(self.resize_size * max(width, height) / min(width, height))  # truncated
        size = (self.resize_size, new_long) if width <= height else (new_long, self.resize_size)
        image = image.resize(size, Image.Resampling.BILINEAR)
        left = int(round((size[0] - self.crop_size) / 2.0))
        top = int(round((size[1] - self.crop_size) / 2.0))
        image = image.crop((left, top, left + self.crop_size, top + self.crop_size))
        return np.asarray(image, dtype=np.uint8)


@dataclass(frozen=True)
class LimitSize:
    """Shrink so that the longest side is at most ``max_side``, for detectors (any size)."""

    max_side: int = 1333
    fixed_size = False

    @property
    def min_side(self) -> int:
        """Half of ``max_side`` (a safe lower bound)."""
        return self.max_side // 2

    @property
    def empty(self) -> np.ndarray:
        """The placeholder for a failed row: one black pixel."""
        return np.zeros((1, 1, 3), dtype=np.uint8)

    def __call__(self, image: Image.Image) -> np.ndarray:
        """The image as an ``(H, W, 3)`` uint8 array, longest side at most ``max_side``."""
        scale = self.max_side / max(image.size)
        if scale < 1:
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            image = image.resize(size, Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.uint8)


@dataclass(frozen=True)
class KeepDecoded:
    """Keep the decoded image as it is, for a model whose own processor resizes it later.

    Give the ``min_side`` of the preprocessing it is compared with: the same pixels.
    """

    min_side: int = 256
    fixed_size = False
    max_side = None

    @property
    def empty(self) -> np.ndarray:
        """The placeholder for a failed row: one black pixel."""
        return np.zeros((1, 1, 3), dtype=np.uint8)

    def __call__(self, image: Image.Image) -> np.ndarray:
        """The decoded image as an ``(H, W, 3)`` uint8 array."""
        return np.asarray(image, dtype=np.uint8)


@dataclass(frozen=True)
class ProcessorResize:
    """Resize and crop with a Hugging Face image processor's own steps, and stop there: uint8 out.

    The model stage rescales and normalises into float32 instead, so what travels from
    the read tasks to the model is a quarter of the bytes.
    """

    processor: object  # the image processor (``pipeline.image_processor``)
    max_side = None

    @cached_property
    def output_shape(self) -> tuple[int, int, int]:
        """``(height, width, 3)`` of every output (the processor's fixed output size)."""
        return self(Image.new("RGB", (self.min_side * 2, self.min_side))).shape

    @cached_property
    def fixed_size(self) -> bool:
        """Whether every output has the same shape, whatever the input's aspect ratio."""
        tall = Image.new("RGB", (self.min_side, self.min_side * 2))
        return self(tall).shape == self.output_shape

    @cached_property
    def min_side(self) -> int:
        """The largest side the processor resizes or crops to."""
        values: list[int] = []
        keys = ("height", "width", "shortest_edge")
        for name in ("size", "crop_size"):
            size = getattr(self.processor, name, None)
            if isinstance(size, int):
                values.append(size)
            elif size is not None:  # a dict, or a SizeDict
                items = size.items() if isinstance(size, dict) else vars(size).items()
                values += [int(v) for k, v in items if k in keys and isinstance(v, int)]
        return max(values or [256])

    @property
    def empty(self) -> np.ndarray:
        """The placeholder for a failed row: a black image of the output's shape."""
        return np.zeros(self.output_shape, dtype=np.uint8)

    def __call__(self, image: Image.Image) -> np.ndarray:
        """The resized (and cropped) image as an ``(H, W, 3)`` uint8 array."""
        out = self.processor(
            images=image, do_rescale=False, do_normalize=False, return_tensors="np"
        )
        pixels = np.asarray(out["pixel_values"][0])
        if pixels.dtype != np.uint8:  # processors that compute in float: values are integral
            pixels = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(pixels.transpose(1, 2, 0))


# Opening a file, local or on S3, safely -------------------------------------------------------


ADVICE = {
    "unreadable file": (
        "Files that cannot be opened: check the path and permissions. For private s3:// "
        "objects, give credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or "
        "AWS_PROFILE) and drop 'anonymous@', which only works for public buckets."
    ),
    "unsupported format": (
        "HEIC/HEIF photos need the plugin: pip install pillow-heif (or convert them to JPEG)."
    ),
    "not an image": "The files hold something else (text, a web page, a PDF): check data_uri.",
}


class NoReadableImagesError(RuntimeError):
    """Not one of the images tried could be read and decoded."""


def read_bytes(path: str, filesystem: pafs.FileSystem | None = None) -> bytes:
    """The bytes of ``path``, from the local disk or ``filesystem`` (S3); else a DecodeError."""
    if filesystem is None:
        with _open_local(path) as file:
            return file.read()
    try:
        with filesystem.open_input_file(path) as file:
            return file.readall()
    except OSError as error:
        raise DecodeError(f"unreadable file: {short_message(error)}") from None


def _open_local(path: str) -> BinaryIO:
    """Open a local file once known to be a regular file (``open`` blocks on a FIFO ``x.jpg``)."""
    path = path_on_disk(path)
    try:
        mode = os.stat(path).st_mode
        if stat.S_ISDIR(mode):
            raise DecodeError("unreadable file: it is a directory")
        if not stat.S_ISREG(mode):
            raise DecodeError("unreadable file: not a regular file (a pipe, socket or device)")
        return open(path, "rb")
    except FileNotFoundError:
        if os.path.islink(path):
            target = printable_path(os.fsdecode(os.readlink(path)))
            raise DecodeError(
                f"unreadable file: broken symbolic link (points to {target!r})"
            ) from None
        raise DecodeError("unreadable file: no such file (moved or deleted?)") from None
    except OSError as error:
        raise DecodeError(f"unreadable file: {error.strerror or error}") from None


def load_image(
    path: str,
    filesystem: pafs.FileSystem | None = None,
    min_side: int | None = None,
    *,
    min_long_side: int | None = None,
) -> DecodedImage:
    """Read and decode one image file (see :func:`nbhelpers.decode.decode`), streaming
    local files; raises :class:`DecodeError` with a short reason."""
    if filesystem is not None:
        data = read_bytes(path, filesystem)
        return decode(io.BytesIO(data), min_side, min_long_side=min_long_side)
    with _open_local(path) as file:
        return decode(file, min_side, min_long_side=min_long_side)


def open_image(
    path: str, filesystem: pafs.FileSystem | None, preprocess: Preprocess
) -> Image.Image:
    """One image file, opened safely and decoded upright in RGB, at the smallest scale that
    ``preprocess`` allows (a 12-megapixel JPEG decodes at a fraction of its size).

    Any failure raises :class:`DecodeError` whose message is a short reason
    (``"empty file (0 bytes)"``, ``"truncated file: ..."``): a read function keeps it as the
    row's ``error``. ``filesystem``: S3's, or None for a local file.
    """
    return open_image_with_size(path, filesystem, preprocess).image


# One file, read with its failure recorded (the benchmarks and the GPU check) ------------------


@dataclass(frozen=True)
class PreparedImage:
    """One file after reading, decoding and preprocessing (``error`` is None when it worked)."""

    path: str
    image: np.ndarray
    width: int
    height: int
    error: str | None


def prepare_image(
    path: str, preprocess: Preprocess, filesystem: pafs.FileSystem | None
) -> PreparedImage:
    """Read, decode and preprocess one file; a failure is recorded, never raised.

    The single batch and the Ray read tasks both call this: both see the same pixels.
    """
    try:
        image, (width, height) = open_image_with_size(path, filesystem, preprocess)
        return PreparedImage(path, preprocess(image), width, height, None)
    except DecodeError as error:  # open_image_with_size turns any surprise into one
        return PreparedImage(path, preprocess.empty, 0, 0, str(error))


# When nothing reads ---------------------------------------------------------------------------


def rows_read(batch: dict[str, np.ndarray], num_paths: int) -> np.ndarray:
    """Which rows of a read function's ``batch`` were read (their ``error`` is None).

    Raises :class:`NoReadableImagesError` when none was, saying what failed (by kind, with
    an example file each) and what to do: with nothing to run the model on, the notebook
    stops there, not with a NumPy error further on. ``num_paths``: how many images the
    source lists, for the message.
    """
    read = np.array([error is None for error in batch["error"]], dtype=bool)
    if not read.any():
        failures = list(zip(batch["path"], batch["error"], strict=True))
        raise none_read_error(failures, num_paths)
    return read


def none_read_error(failures: list[tuple[str, str]], num_paths: int) -> NoReadableImagesError:
    """The error for ``failures`` (path, reason), the first images of ``num_paths``, all failed."""
    kinds = Counter(failure_kind(error) for _, error in failures)
    examples = {failure_kind(error): (path, error) for path, error in reversed(failures)}
    lines = [
        f"None of the first {len(failures)} of {num_paths} images could be read, so "
        "there is nothing to run the model on. By kind:"
    ]
    for kind, number in kinds.most_common():
        path, error = examples[kind]
        lines.append(f"  {number} x {kind}, e.g. {printable_path(str(path))}: {error}")
    advice = [ADVICE[kind] for kind in kinds if kind in ADVICE]
    lines.append(
        " ".join(advice) or "Check data_uri, or run offline with data_uri='sample' to try it out."
    )
    return NoReadableImagesError("\n".join(lines))


def open_image_with_size(
    path: str, filesystem: pafs.FileSystem | None, preprocess: Preprocess
) -> DecodedImage:
    """One image file opened safely, as notebook 01's ``open_image`` does it, with the photo's
    original ``(width, height)`` as viewed: ``image, (width, height) = ...``.

    The decoder may shrink a large photo on the way, so ``image.size`` can be smaller than
    the photo: a detector's boxes, found on the smaller image, are scaled back with the
    original size. Raises :class:`DecodeError` with a short reason, as ``open_image``.
    """
    try:
        return load_image(path, filesystem, preprocess.min_side, min_long_side=preprocess.max_side)
    except DecodeError:
        raise
    except Exception as error:  # any surprise becomes a reason too
        raise DecodeError(f"{type(error).__name__}: {error}") from error
