"""nbhelpers.decode: every file's bytes become an RGB uint8 image as a person sees it, or a
short reason whose kind (its text before ``:`` or ``(``) is what the summary counts."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nbhelpers.decode import DecodedImage, DecodeError, decode, failure_kind, short_message
from tests.support import quirky_images as quirks

RED, BLUE, WHITE = quirks.RED, quirks.BLUE, (255, 255, 255)


def decode_file(path: Path, **bounds) -> DecodedImage:
    with open(path, "rb") as stream:
        return decode(stream, **bounds)


def pixels(path: Path, **bounds) -> np.ndarray:
    image = decode_file(path, **bounds).image
    assert image.mode == "RGB"
    array = np.asarray(image)
    assert array.dtype == np.uint8 and array.shape[2] == 3
    return array


def kind_of(stream, **bounds) -> str:
    """The kind of the reason :func:`decode` gives for ``stream``; the test fails if it decodes."""
    with pytest.raises(DecodeError) as raised:
        decode(stream, **bounds)
    return failure_kind(str(raised.value))


def close_to(pixel: np.ndarray, colour: tuple[int, int, int], tolerance: int = 6) -> bool:
    return bool(np.all(np.abs(pixel.astype(int) - np.array(colour)) <= tolerance))


def test_grayscale_becomes_three_equal_channels(tmp_path):
    array = pixels(quirks.write_grayscale_jpeg(tmp_path / "grey.jpg", level=90))
    assert close_to(array[10, 10], (90, 90, 90), tolerance=2)


@pytest.mark.parametrize(
    "writer", [quirks.write_rgba_png, quirks.write_palette_png_with_transparency]
)
def test_transparent_parts_are_white_as_on_screen(tmp_path, writer):
    array = pixels(writer(tmp_path / "transparent.png"))
    assert close_to(array[24, 5], RED, tolerance=0)
    assert close_to(array[24, 60], WHITE, tolerance=0)


def test_cmyk_jpeg_keeps_its_colour(tmp_path):
    array = pixels(quirks.write_cmyk_jpeg(tmp_path / "cmyk.jpg"))
    assert close_to(array[24, 32], (255, 0, 0), tolerance=8)


@pytest.mark.parametrize("value, expected", [(32768, 128), (65535, 255), (256, 1), (0, 0)])
def test_16_bit_png_is_scaled_not_clipped(tmp_path, value, expected):
    path = quirks.write_16bit_gray_png(tmp_path / "deep.png", value)
    assert Image.open(path).mode.startswith("I;16")  # really a 16-bit file
    array = pixels(path)
    assert (array == expected).all()


def test_exif_orientation_is_applied(tmp_path):
    path = quirks.write_exif_rotated_jpeg(tmp_path / "phone.jpg", orientation=6)
    assert Image.open(path).size == (80, 60)  # as stored
    image, original_size = decode_file(path)
    assert image.size == (60, 80) and original_size == (60, 80)
    array = np.asarray(image)
    # Stored left half red; turned 90 degrees clockwise the red half is on top.
    assert close_to(array[5, 30], RED, tolerance=12) and close_to(array[75, 30], BLUE, 12)


def test_embedded_colour_profile_is_honoured(tmp_path):
    array = pixels(quirks.write_jpeg_with_colour_profile(tmp_path / "camera.jpg"))
    assert close_to(array[24, 5], RED, tolerance=8) and close_to(array[24, 60], BLUE, 8)


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF", "WEBP"])
def test_other_formats(tmp_path, fmt):
    path = quirks.write_halves(
        tmp_path / f"photo.{fmt.lower()}", fmt=fmt, **({"lossless": True} if fmt == "WEBP" else {})
    )
    array = pixels(path)
    assert close_to(array[30, 5], RED, tolerance=10) and close_to(array[30, 75], BLUE, 10)


@pytest.mark.parametrize(
    "writer, kind",
    quirks.BROKEN_FILES,
)
def test_bad_files_raise_a_reason_of_their_kind(tmp_path, writer, kind):
    with open(writer(tmp_path / "bad.jpg"), "rb") as stream:
        assert kind_of(stream) == kind


def test_an_empty_file_says_its_size():
    with pytest.raises(DecodeError) as raised:
        decode(io.BytesIO(b""))
    assert str(raised.value) == "empty file (0 bytes)"  # the reason summary.json counts


def test_a_heic_photo_is_an_unsupported_format():
    header = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64
    assert kind_of(io.BytesIO(header)) == "unsupported format"


@pytest.mark.parametrize("head", [b"%PDF-1.7\n", b"PK\x03\x04rest", b"\x00\x00\x00\x18ftypmp42"])
def test_other_files_are_not_images(head):
    assert kind_of(io.BytesIO(head + b"\x00" * 64)) == "not an image"


def test_failure_kind():
    assert failure_kind("truncated image: image file is truncated (75 bytes)") == "truncated image"
    assert failure_kind("empty file (0 bytes)") == "empty file"
    assert failure_kind("something odd") == "something odd"


def test_short_message_is_one_line_of_at_most_200_characters():
    assert short_message(OSError("two\n  lines")) == "two lines"
    assert len(short_message(ValueError("x" * 500))) == 200
    assert short_message(KeyError()) == "KeyError"


def test_large_images_are_decoded_at_reduced_scale(tmp_path):
    big = quirks.write_halves(tmp_path / "big.png", size=(3000, 2000))
    image, original_size = decode_file(big, min_side=256)
    assert original_size == (3000, 2000)
    assert min(image.size) >= 256 and image.size[0] <= 1000  # a whole factor of 3 or more
    image, _ = decode_file(
        quirks.write_halves(tmp_path / "wide.jpg", size=(4000, 500)), min_long_side=320
    )
    assert max(image.size) >= 320  # the longest side kept for a detector


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` pixels but holds no pixel data."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def test_decompression_bomb_is_refused_with_a_reason():
    assert kind_of(io.BytesIO(_png_header_only(30000, 30000)), min_side=256) == "image too large"
    pixels_missing = kind_of(io.BytesIO(_png_header_only(300, 300)), min_side=256)
    assert pixels_missing in {"truncated image", "corrupt image"}
