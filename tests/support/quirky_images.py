"""Image files as they turn up in real folders: every mode and format quirk, good and bad.

Each ``write_*`` function writes one file and returns its path; the tests of the
decoder and the messy-folder notebook run share them.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms

RED, BLUE = (220, 30, 30), (30, 30, 220)


def _parent(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_halves(path: Path, size=(80, 60), fmt=None, **save) -> Path:
    """RGB photo: left half red, right half blue."""
    image = Image.new("RGB", size, BLUE)
    image.paste(RED, (0, 0, size[0] // 2, size[1]))
    image.save(_parent(path), fmt, **save)
    return path


def write_grayscale_jpeg(path: Path, level: int = 90) -> Path:
    Image.new("L", (64, 48), level).save(_parent(path), "JPEG", quality=95)
    return path


def write_rgba_png(path: Path) -> Path:
    """Left half opaque red, right half fully transparent (white on screen)."""
    image = Image.new("RGBA", (64, 48), (0, 0, 0, 0))
    image.paste((*RED, 255), (0, 0, 32, 48))
    image.save(_parent(path), "PNG")
    return path


def write_palette_png_with_transparency(path: Path) -> Path:
    """Palette image: index 0 transparent (white on screen), index 1 red on the left half."""
    image = Image.new("P", (64, 48), 0)
    image.putpalette([0, 0, 0, *RED] + [0, 0, 0] * 254)
    image.paste(1, (0, 0, 32, 48))
    image.save(_parent(path), "PNG", transparency=0)
    return path


def write_cmyk_jpeg(path: Path) -> Path:
    """Pure red in CMYK (no cyan, full magenta and yellow)."""
    Image.new("CMYK", (64, 48), (0, 255, 255, 0)).save(_parent(path), "JPEG", quality=95)
    return path


def write_16bit_gray_png(path: Path, value: int = 32768) -> Path:
    """16-bit grey at ``value`` / 65535 (50% by default)."""
    Image.fromarray(np.full((48, 64), value, dtype=np.uint16)).save(_parent(path), "PNG")
    return path


def write_exif_rotated_jpeg(path: Path, orientation: int = 6) -> Path:
    """Stored 80x60, left half red; orientation 6 shows it turned 90 degrees clockwise."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return write_halves(path, (80, 60), "JPEG", quality=95, exif=exif)


def write_jpeg_with_colour_profile(path: Path) -> Path:
    """A JPEG with an embedded sRGB colour profile, as cameras write them."""
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return write_halves(path, (64, 48), "JPEG", quality=95, icc_profile=srgb)


def write_huge_jpeg(path: Path, side: int = 12000) -> Path:
    """A ``side`` x ``side`` RGB JPEG (a gradient, so it compresses to a few MB)."""
    gradient = Image.linear_gradient("L").resize((side, side))
    Image.merge("RGB", (gradient, gradient.transpose(Image.Transpose.ROTATE_90), gradient)).save(
        _parent(path), "JPEG", quality=80
    )
    return path


def write_empty(path: Path) -> Path:
    _parent(path).write_bytes(b"")
    return path


def write_truncated_jpeg(path: Path) -> Path:
    buffer = io.BytesIO()
    Image.effect_noise((120, 90), 60).convert("RGB").save(buffer, "JPEG", quality=90)
    _parent(path).write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return path


def write_text_as_image(path: Path) -> Path:
    _parent(path).write_text("These are my holiday notes, saved with the wrong name.\n")
    return path


def write_html_as_image(path: Path) -> Path:
    _parent(path).write_text("<!DOCTYPE html><html><body>403 Forbidden</body></html>")
    return path


def write_broken_symlink(path: Path) -> Path:
    os.symlink(path.parent / "gone-for-good.jpg", _parent(path))
    return path


BROKEN_FILES = [
    (write_empty, "empty file"),
    (write_truncated_jpeg, "truncated image"),
    (write_text_as_image, "not an image"),
    (write_html_as_image, "not an image"),
]
"""Files that cannot become an image, each with the failure kind it must be recorded as."""
