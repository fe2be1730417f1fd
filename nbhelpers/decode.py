"""Decode an image file's bytes into an RGB image the way a person sees the photo.

Every failure becomes a :class:`DecodeError` whose message is a short reason
(``"empty file (0 bytes)"``), so one bad file never stops a job: its row says why.
Opening the file (local disk or S3) is the read stage's part: :mod:`nbhelpers.reading`.
"""

from __future__ import annotations

import codecs
import contextlib
import io
import warnings
from typing import BinaryIO, NamedTuple

import numpy as np
from PIL import ExifTags, Image, ImageCms, ImageFile, ImageOps, UnidentifiedImageError

# A truncated file must be reported, not silently padded with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False


# Pillow refuses images above twice this many pixels as decompression bombs: failed
# rows. Below that, large JPEGs are decoded at a reduced scale (see :func:`decode`).
Image.MAX_IMAGE_PIXELS = 100_000_000


_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I", "F"}


_ALPHA_MODES = {"RGBA", "LA", "PA", "La", "RGBa"}


_REDUCIBLE_MODES = {"L", "LA", "La", "RGB", "RGBA", "RGBa", "CMYK", "YCbCr", "I", "F"}


with contextlib.suppress(ImportError):  # HEIC/HEIF photos, with the optional plugin
    from pillow_heif import register_heif_opener

    register_heif_opener()


_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


class DecodeError(Exception):
    """A file could not be turned into an image; the message is the reason."""


def failure_kind(reason: str) -> str:
    """The kind of a failure reason, its text before the first ``:`` or ``(``, to count by."""
    cut = min((i for i in (reason.find(":"), reason.find("(")) if i > 0), default=len(reason))
    return reason[:cut].strip()


class DecodedImage(NamedTuple):
    """A decoded image and the size of the original photo as viewed (before any reduction)."""

    image: Image.Image
    original_size: tuple[int, int]


def decode(
    stream: BinaryIO, min_side: int | None = None, *, min_long_side: int | None = None
) -> DecodedImage:
    """Decode an image file's bytes into an upright RGB image; else a :class:`DecodeError`.

    Large images are decoded (JPEG) or shrunk by the largest whole factor that keeps the
    sides at least ``min_side`` and ``min_long_side`` long: a 12000 x 12000 JPEG costs
    MBs, not 400. ``original_size`` is the full size as viewed (EXIF orientation applied).
    """
    if not stream.read(1):
        raise DecodeError("empty file (0 bytes)")
    stream.seek(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(stream)
            original_size = image.size
            with contextlib.suppress(Exception):  # a broken EXIF block must not fail the image
                if int(image.getexif().get(ExifTags.Base.Orientation, 1)) in (5, 6, 7, 8):
                    original_size = original_size[::-1]  # the photo is viewed on its side
            factor = _reduction_factor(image.size, min_side, min_long_side)
            if factor > 1 and image.format == "JPEG":
                # The JPEG decoder can skip detail at 1/2, 1/4 or 1/8 scale.
                width, height = image.size
                image.draft(image.mode, (-(-width // factor), -(-height // factor)))
            image.load()
            factor = _reduction_factor(image.size, min_side, min_long_side)
            if factor > 1 and image.mode.startswith("I;16"):
                image = image.convert("I")
            if factor > 1 and image.mode in _REDUCIBLE_MODES:  # a box filter, keeping EXIF etc.
                info = image.info  # reduce() drops it: EXIF orientation, ICC profile
                image = image.reduce(factor)
                image.info = dict(info)
            with contextlib.suppress(Exception):  # a broken EXIF block must not fail the image
                image = ImageOps.exif_transpose(image)
            rgb = _as_viewed_rgb(image)
    except UnidentifiedImageError:
        raise DecodeError(_unrecognised_reason(stream)) from None
    except Image.DecompressionBombError as error:
        raise DecodeError(f"image too large: {short_message(error)}") from None
    except MemoryError:
        raise DecodeError("image too large: not enough memory to decode it") from None
    except OSError as error:
        kind = "truncated image" if "truncated" in str(error) else "corrupt image"
        raise DecodeError(f"{kind}: {short_message(error)}") from None
    except Exception as error:  # any decoder surprise is a corrupt file
        raise DecodeError(
            f"corrupt image: {type(error).__name__}: {short_message(error)}"
        ) from None
    return DecodedImage(rgb, original_size)


def _reduction_factor(size: tuple[int, int], min_side: int | None, min_long: int | None) -> int:
    """The largest whole factor that keeps the sides at least as long as asked (1: none)."""
    wanted = ((min(size), min_side), (max(size), min_long))
    return max(1, min((side // least for side, least in wanted if least), default=1))


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
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
    if icc_profile and image.mode in ("RGB", "CMYK"):
        with contextlib.suppress(Exception):  # a broken profile: a plain conversion
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
            return ImageCms.profileToProfile(image, source, _SRGB, outputMode="RGB")
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


def _unrecognised_reason(stream: BinaryIO) -> str:
    """Why Pillow did not recognise a file, guessed from its first bytes."""
    head = b""
    with contextlib.suppress(OSError, ValueError):
        stream.seek(0)
        head = stream.read(512)
    if head[4:8] == b"ftyp" and head[8:12] in (b"heic", b"heix", b"mif1", b"msf1", b"hevc"):
        return "unsupported format: HEIC/HEIF photo (install pillow-heif or convert it to JPEG)"
    if head[4:8] == b"ftyp":
        return "not an image: a video or other ISO media file"
    if head.lstrip().lower().startswith((b"<!doctype html", b"<html", b"<?xml", b"<head")):
        return "not an image: the file holds a web page or XML (a failed download?)"
    for magic, what in ((b"%PDF", "a PDF document"), (b"PK\x03\x04", "a ZIP archive")):
        if head.startswith(magic):
            return f"not an image: the file is {what}"
    if head and b"\x00" not in head:
        with contextlib.suppress(UnicodeDecodeError):  # a character cut at the end is fine
            codecs.getincrementaldecoder("utf-8")().decode(head)
            return "not an image: the file holds text"
    return "not an image: format not recognised"


def short_message(error: BaseException) -> str:
    """An exception's message on one line, cut to a readable length."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."
