"""The read stage: turn file paths into prepared images, one row per path, never failing a row.

Each file is opened safely (local disk or S3), decoded (:mod:`nbhelpers.decode`) and
preprocessed. ``ray.data.read_images`` stops the whole job at the first bad file;
:func:`decode_batch` turns each failure into an ``error`` string on that file's row instead.
"""

from __future__ import annotations

import io
import math
import os
import stat
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import pyarrow.fs as pafs
from PIL.Image import Image

from nbhelpers.decode import DecodedImage, DecodeError, decode, failure_kind, short_message
from nbhelpers.paths import path_on_disk, printable_path
from nbhelpers.preprocess import Preprocess
from nbhelpers.sources import ImageSource

MAX_ROWS_PER_BLOCK = 16  # paths per read task on a large dataset: amortises Ray's cost per task
REMOTE_READS_AT_ONCE = 16  # files a read task fetches together from S3: each GET waits 20-100 ms

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


def open_image(path: str, filesystem: pafs.FileSystem | None, preprocess: Preprocess) -> Image:
    """One image file, opened safely and decoded upright in RGB, at the smallest scale that
    ``preprocess`` allows (a 12-megapixel JPEG decodes at a fraction of its size).

    Any failure raises :class:`DecodeError` whose message is a short reason
    (``"empty file (0 bytes)"``, ``"truncated file: ..."``): a read function keeps it as the
    row's ``error``. ``filesystem``: S3's, or None for a local file.
    """
    return open_image_with_size(path, filesystem, preprocess).image


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
        image, (width, height) = load_image(
            path, filesystem, preprocess.min_side, min_long_side=preprocess.max_side
        )
        return PreparedImage(path, preprocess(image), width, height, None)
    except DecodeError as error:
        return PreparedImage(path, preprocess.empty, 0, 0, str(error))
    except Exception as error:  # any surprise becomes a recorded failure
        return PreparedImage(path, preprocess.empty, 0, 0, f"{type(error).__name__}: {error}")


def object_array(items) -> np.ndarray:
    """A 1-D object array holding ``items`` as they are (numpy would try to stack arrays)."""
    items = list(items)
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array


def as_batch(prepared: list[PreparedImage], fixed_size: bool) -> dict[str, np.ndarray]:
    """Prepared images as one batch in Ray Data's format: a dict of equally long arrays
    (``image`` stacked into one array when ``fixed_size``, else an object array)."""
    images = [item.image for item in prepared]
    return {
        "path": np.array([item.path for item in prepared], dtype=object),
        "image": np.stack(images) if fixed_size and images else object_array(images),
        "width": np.array([item.width for item in prepared], dtype=np.int32),
        "height": np.array([item.height for item in prepared], dtype=np.int32),
        "error": np.array([item.error for item in prepared], dtype=object),
    }


def decode_batch(
    batch: dict[str, np.ndarray], preprocess: Preprocess, filesystem: pafs.FileSystem | None
) -> dict[str, np.ndarray]:
    """``map_batches`` function: ``{"path"}`` in, one row per path out (see :func:`as_batch`).

    Remote files (a ``filesystem``: S3) are fetched and decoded in threads, up to
    :data:`REMOTE_READS_AT_ONCE` at a time, so that the task waits for one round trip
    instead of one per file; local files are read one after the other.
    """
    paths = [str(path) for path in batch["path"]]
    if filesystem is None or len(paths) < 2:
        prepared = [prepare_image(path, preprocess, filesystem) for path in paths]
    else:
        with ThreadPoolExecutor(min(REMOTE_READS_AT_ONCE, len(paths))) as threads:
            prepared = list(
                threads.map(lambda path: prepare_image(path, preprocess, filesystem), paths)
            )
    return as_batch(prepared, preprocess.fixed_size)


def rows_per_block(
    num_paths: int, num_actors: int = 1, batch_size: int = MAX_ROWS_PER_BLOCK
) -> int:
    """Paths per read task: one model batch (16 by default), or fewer when a small dataset
    would leave actors idle.

    A block of one batch reaches the actor as it is, without being cut or joined to others,
    and a large batch (64 on a GPU) means fewer tasks, each of which costs Ray a few
    milliseconds. Ray Data hands whole blocks to the model actors: aim for two blocks per
    actor. With one actor, fewer blocks are better: each read task may start another worker.
    """
    wanted_blocks = 2 * num_actors if num_actors > 1 else 1
    return max(1, min(batch_size, math.ceil(num_paths / wanted_blocks)))


def first_decoded(
    source: ImageSource, preprocess: Preprocess, count: int = 8, max_tries: int = 64
) -> dict[str, np.ndarray]:
    """The first ``count`` images of ``source`` that decode, as one batch (see :func:`as_batch`).

    Files that fail are skipped (the scaled-up run records them); at most ``max_tries``
    are tried. Raises :class:`NoReadableImagesError`, saying what to do, when none decodes.
    """
    decoded: list[PreparedImage] = []
    failed: list[PreparedImage] = []
    for path in source.paths[:max_tries]:
        item = prepare_image(path, preprocess, source.filesystem)
        (failed if item.error else decoded).append(item)
        if len(decoded) == count:
            break
    if decoded:
        return as_batch(decoded, preprocess.fixed_size)
    raise none_read_error([(item.path, item.error) for item in failed], len(source.paths))


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
