"""Read one file and decode it into an RGB image the way a person sees the photo.

Every failure becomes a :class:`DecodeError` whose message is a short reason
(``"empty file (0 bytes)"``, ``"truncated image: ..."``, ``"unreadable file: ..."``), so
one bad file never stops a job: its row says why it was not predicted. The text
before the first ``:`` or ``(`` is the kind of failure, stable enough to count by.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import warnings
from typing import BinaryIO

import numpy as np
import pyarrow.fs as pafs
from PIL import Image, ImageCms, ImageFile, ImageOps, UnidentifiedImageError

from nbhelpers.sources import path_on_disk, printable_path

# A truncated file must be reported, not silently padded with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False
# Pillow refuses images above twice this many pixels as decompression bombs: failed
# rows. Below that, large JPEGs are decoded at a reduced scale (see ``decode_image``).
Image.MAX_IMAGE_PIXELS = 100_000_000

_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I", "F"}
_ALPHA_MODES = {"RGBA", "LA", "PA", "La", "RGBa"}
_REDUCIBLE_MODES = {"L", "LA", "La", "RGB", "RGBA", "RGBa", "CMYK", "YCbCr", "I", "F"}
_ORIENTATION_TAG = 0x0112
with contextlib.suppress(ImportError):  # HEIC/HEIF photos, with the optional plugin
    from pillow_heif import register_heif_opener

    register_heif_opener()

_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
_MAX_REASON_CHARS = 200


class DecodeError(Exception):
    """A file could not be turned into an image; the message is the reason."""


def failure_kind(reason: str) -> str:
    """The kind of a failure reason, its text before the first ``:`` or ``(``, to count by.

    ``"truncated image: image file is truncated (75 bytes not processed)"`` -> ``"truncated image"``.
    """
    cut = min((i for i in (reason.find(":"), reason.find("(")) if i > 0), default=len(reason))
    return reason[:cut].strip()


def read_bytes(path: str, filesystem: pafs.FileSystem | None = None) -> bytes:
    """The bytes of ``path``, from the local disk or from ``filesystem`` (S3).

    Raises:
        DecodeError: ``"unreadable file: ..."``: missing, a directory, a broken link, ...
    """
    if filesystem is None:
        with _open_local(path) as file:
            return file.read()
    try:
        with filesystem.open_input_file(path) as file:
            return file.readall()
    except OSError as error:
        raise DecodeError(f"unreadable file: {_short(error)}") from None


def _open_local(path: str) -> BinaryIO:
    """Open a local file for reading, once it is known to be a regular file: a FIFO named
    ``x.jpg`` would block ``open`` forever, a broken link would give an unclear error."""
    path = path_on_disk(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            target = os.fsdecode(os.readlink(path))
            raise DecodeError(
                f"unreadable file: broken symbolic link (points to {printable_path(target)!r})"
            ) from None
        raise DecodeError("unreadable file: no such file (moved or deleted?)") from None
    except OSError as error:
        raise DecodeError(f"unreadable file: {error.strerror or error}") from None
    if stat.S_ISDIR(info.st_mode):
        raise DecodeError("unreadable file: it is a directory")
    if not stat.S_ISREG(info.st_mode):
        raise DecodeError("unreadable file: not a regular file (a pipe, socket or device)")
    try:
        return open(path, "rb")
    except OSError as error:
        raise DecodeError(f"unreadable file: {error.strerror or error}") from None


def decode_image(
    data: bytes, min_side: int | None = None, *, min_long_side: int | None = None
) -> Image.Image:
    """Decode ``data`` into an RGB PIL image.

    Args:
        data: the file's bytes.
        min_side: large images are decoded (JPEG) or shrunk by a whole factor that keeps
            the shorter side at least this long: a 12000 x 12000 JPEG costs MBs, not 400.
        min_long_side: the reduction also keeps the longer side at least this long.

    Returns:
        The RGB image; ``image.info["original_size"]`` is the (width, height) of the
        full-size image as viewed, before any reduced-scale decoding.

    Raises:
        DecodeError: with a short reason (empty, not an image, truncated, too large).
    """
    if not data:
        raise DecodeError("empty file (0 bytes)")
    return _decode(io.BytesIO(data), min_side, min_long_side)


def load_image(
    path: str,
    filesystem: pafs.FileSystem | None = None,
    min_side: int | None = None,
    *,
    min_long_side: int | None = None,
) -> Image.Image:
    """Read and decode one image file (see :func:`decode_image`); raises :class:`DecodeError`.

    Local files are decoded straight from disk (a large non-image is never read whole).
    """
    if filesystem is not None:
        return decode_image(read_bytes(path, filesystem), min_side, min_long_side=min_long_side)
    with _open_local(path) as file:
        if os.fstat(file.fileno()).st_size == 0:
            raise DecodeError("empty file (0 bytes)")
        return _decode(file, min_side, min_long_side)


def _decode(stream: BinaryIO, min_side: int | None, min_long_side: int | None) -> Image.Image:
    """Open, decode at the smallest useful scale, turn upright and convert to RGB."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(stream)
            original_size = _viewed_size(image)
            factor = _reduction_factor(image.size, min_side, min_long_side)
            if factor > 1 and image.format == "JPEG":
                # The JPEG decoder can skip detail at 1/2, 1/4 or 1/8 scale.
                width, height = image.size
                image.draft(image.mode, (-(-width // factor), -(-height // factor)))
            image.load()
            image = _reduce(image, _reduction_factor(image.size, min_side, min_long_side))
            rgb = _as_viewed_rgb(_upright(image))
    except DecodeError:
        raise
    except UnidentifiedImageError:
        raise DecodeError(_unrecognised_reason(_head(stream))) from None
    except Image.DecompressionBombError as error:
        raise DecodeError(f"image too large: {_short(error)}") from None
    except MemoryError:
        raise DecodeError("image too large: not enough memory to decode it") from None
    except OSError as error:
        kind = "truncated image" if "truncated" in str(error) else "corrupt image"
        raise DecodeError(f"{kind}: {_short(error)}") from None
    except Exception as error:  # noqa: BLE001 - any decoder surprise is a corrupt file
        raise DecodeError(f"corrupt image: {type(error).__name__}: {_short(error)}") from None
    rgb.info["original_size"] = original_size
    return rgb


def _reduction_factor(
    size: tuple[int, int], min_side: int | None, min_long_side: int | None
) -> int:
    """The largest whole factor that keeps the sides at least as long as asked (1: none)."""
    if not min_side and not min_long_side:
        return 1
    short, long = min(size), max(size)
    factors = []
    if min_side:
        factors.append(short // min_side)
    if min_long_side:
        factors.append(long // min_long_side)
    return max(1, min(factors))


def _reduce(image: Image.Image, factor: int) -> Image.Image:
    """Shrink by a whole ``factor`` (box filter), keeping ``info`` (EXIF, colour profile)."""
    if factor <= 1:
        return image
    if image.mode.startswith("I;16"):
        image = image.convert("I")
    if image.mode not in _REDUCIBLE_MODES:
        return image
    reduced = image.reduce(factor)
    reduced.info = dict(image.info)
    return reduced


def _viewed_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) as viewed: swapped when the EXIF orientation turns the image on its side."""
    try:
        orientation = int(image.getexif().get(_ORIENTATION_TAG, 1))
    except Exception:  # noqa: BLE001 - a broken EXIF block must not fail the image
        orientation = 1
    width, height = image.size
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _upright(image: Image.Image) -> Image.Image:
    """The image turned the way the camera meant it to be seen (Pillow's ``exif_transpose``)."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not fail the image
        return image


def _as_viewed_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB: 16-bit scaled, transparency on white, colour profile applied."""
    icc_profile = image.info.get("icc_profile")
    if image.mode in _SIXTEEN_BIT_MODES:
        return _scale_to_8_bits(image).convert("RGB")
    if "transparency" in image.info and image.mode in ("P", "L", "RGB"):
        image = image.convert("RGBA")
    if image.mode == "P":
        image = image.convert("RGBA" if image.palette and image.palette.mode == "RGBA" else "RGB")
    if image.mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba).convert("RGB")
    if icc_profile and image.mode in ("RGB", "CMYK"):
        converted = _to_srgb(image, icc_profile)
        if converted is not None:
            return converted
    return image.convert("RGB")


def _scale_to_8_bits(image: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit or float grey image as 8-bit ``L``, scaled to its bit depth."""
    values = np.asarray(image).astype(np.float32)
    top = float(values.max()) if values.size else 0.0
    if image.mode.startswith("I;16"):
        full_scale = 65535.0
    elif image.mode == "F" and top <= 1.0:
        full_scale = 1.0
    else:  # the smallest usual bit depth that holds the brightest value
        full_scale = next(scale for scale in (255.0, 65535.0, top) if top <= scale)
    scaled = np.rint(np.clip(values * (255.0 / full_scale), 0, 255)).astype(np.uint8)
    return Image.fromarray(scaled, "L")


def _to_srgb(image: Image.Image, icc_profile: bytes) -> Image.Image | None:
    """``image`` converted from its embedded colour profile to sRGB (``None``: cannot)."""
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
        return ImageCms.profileToProfile(image, source, _SRGB, outputMode="RGB")
    except Exception:  # noqa: BLE001 - a broken profile falls back to a plain conversion
        return None


def _unrecognised_reason(head: bytes) -> str:
    """Why Pillow did not recognise a file, guessed from its first bytes."""
    text = head.lstrip().lower()
    if head[4:8] == b"ftyp" and head[8:12] in (b"heic", b"heix", b"mif1", b"msf1", b"hevc"):
        return "unsupported format: HEIC/HEIF photo (install pillow-heif or convert it to JPEG)"
    if head[4:8] == b"ftyp":
        return "not an image: a video or other ISO media file"
    if text.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head")):
        return "not an image: the file holds a web page or XML (a failed download?)"
    for magic, what in ((b"%PDF", "a PDF document"), (b"PK\x03\x04", "a ZIP archive")):
        if head.startswith(magic):
            return f"not an image: the file is {what}"
    if _looks_like_text(head):
        return "not an image: the file holds text"
    return "not an image: format not recognised"


def _looks_like_text(head: bytes) -> bool:
    """Whether ``head`` reads as UTF-8 text (a cut multi-byte character at the end is fine)."""
    if not head or b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as error:
        return error.start >= len(head) - 3
    return True


def _head(stream: BinaryIO) -> bytes:
    """The first bytes of ``stream`` (empty when it cannot be read again)."""
    with contextlib.suppress(OSError, ValueError):
        stream.seek(0)
        return stream.read(512)
    return b""


def _short(error: BaseException) -> str:
    """An exception's message on one line, cut to a readable length."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= _MAX_REASON_CHARS else text[: _MAX_REASON_CHARS - 3] + "..."
