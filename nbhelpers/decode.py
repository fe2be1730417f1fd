"""Read one file and decode it into an RGB image the way a person sees the photo.

Every failure becomes a short reason string instead of an exception, so that one
bad file never stops a job: the row keeps its path and says why it was not predicted.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import pyarrow.fs as pafs
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

# A truncated file must be reported, not silently padded with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False
# Pillow refuses images above twice this many pixels (about 14000 x 14000) as
# decompression bombs; we report them as failed rows.
Image.MAX_IMAGE_PIXELS = 100_000_000

_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I", "F"}


class DecodeError(Exception):
    """A file could not be turned into an image; the message is the reason."""


def read_bytes(path: str, filesystem: pafs.FileSystem | None = None) -> bytes:
    """The bytes of ``path``, from the local disk or from ``filesystem`` (S3)."""
    try:
        if filesystem is None:
            with open(path, "rb") as file:
                return file.read()
        with filesystem.open_input_file(path) as file:
            return file.readall()
    except OSError as error:
        raise DecodeError(f"unreadable file: {error.strerror or error}") from error


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL image to 8-bit RGB as a viewer would show it.

    Applies the EXIF orientation (phone photos), scales 16-bit and float images
    down to 8 bits instead of clipping them, and puts transparent images on white.
    """
    try:
        image = ImageOps.exif_transpose(image)
    except Exception:  # a broken EXIF block leaves the pixels as stored
        pass
    if image.mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
        if image.mode == "F" and values.max() <= 1.0:
            top = 1.0
        image = Image.fromarray(np.clip(values * (255.0 / top), 0, 255).astype(np.uint8), "L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def decode_image(data: bytes, min_side: int | None = None) -> Image.Image:
    """Decode ``data`` into an RGB PIL image.

    Args:
        data: the file's bytes.
        min_side: when given, large JPEGs are decoded at a reduced scale that still
            keeps the shorter side at least this long; a 12000 x 12000 photo then
            costs a few MB instead of 400.

    Returns:
        The RGB image; ``image.info["original_size"]`` is the (width, height) of the
        full-size image as viewed, before any reduced-scale decoding.

    Raises:
        DecodeError: with a short reason (empty, not an image, truncated, too large).
    """
    if not data:
        raise DecodeError("empty file (0 bytes)")

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            original_size = _viewed_size(image)
            if min_side and image.format == "JPEG":
                # Decode at 1/2, 1/4 or 1/8 scale when the result stays large enough.
                width, height = image.size
                scale = min_side / min(width, height)
                image.draft("RGB", (max(1, round(width * scale)), max(1, round(height * scale))))
            image.load()
            rgb = to_rgb(image)
    except UnidentifiedImageError:
        raise DecodeError("not an image (format not recognised)") from None
    except Image.DecompressionBombError as error:
        raise DecodeError(f"image too large: {error}") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise DecodeError(f"truncated or corrupt image: {error}") from None
    rgb.info["original_size"] = original_size
    return rgb


def _viewed_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) of the full-size image after its EXIF rotation."""
    width, height = image.size
    try:
        orientation = image.getexif().get(0x0112, 1)
    except Exception:  # a broken EXIF block must not fail the image
        orientation = 1
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def load_image(
    path: str, filesystem: pafs.FileSystem | None = None, min_side: int | None = None
) -> Image.Image:
    """Read and decode one image file; raises :class:`DecodeError` with the reason."""
    return decode_image(read_bytes(path, filesystem), min_side=min_side)
