"""Decoding: every file becomes an RGB uint8 image as a person sees it, or a reason (no Ray)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import quirky_images as quirks
from PIL import Image

from nbhelpers.decode import DecodeError, decode, failure_kind
from nbhelpers.reading import (
    CenterCrop,
    LimitSize,
    decode_batch,
    load_image,
    prepare_image,
    read_bytes,
)

RED, BLUE, WHITE = quirks.RED, quirks.BLUE, (255, 255, 255)


def pixels(path: Path, **bounds) -> np.ndarray:
    image = load_image(str(path), **bounds).image
    assert image.mode == "RGB"
    array = np.asarray(image)
    assert array.dtype == np.uint8 and array.shape[2] == 3
    return array


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
    image, original_size = load_image(str(path))
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
    [
        (quirks.write_empty, "empty file"),
        (quirks.write_truncated_jpeg, "truncated image"),
        (quirks.write_text_as_image, "not an image"),
        (quirks.write_html_as_image, "not an image"),
        (quirks.write_broken_symlink, "unreadable file"),
    ],
)
def test_bad_files_raise_a_reason(tmp_path, writer, kind):
    path = writer(tmp_path / "bad.jpg")
    with pytest.raises(DecodeError) as raised:
        load_image(str(path))
    assert failure_kind(str(raised.value)) == kind
    item = prepare_image(str(path), CenterCrop(), None)
    assert item.error == str(raised.value) and item.image.shape == (224, 224, 3)


def test_reasons_say_what_the_file_is(tmp_path):
    reasons = {}
    for name, writer in [
        ("notes.jpg", quirks.write_text_as_image),
        ("page.png", quirks.write_html_as_image),
        ("gone.jpg", quirks.write_broken_symlink),
    ]:
        with pytest.raises(DecodeError) as raised:
            load_image(str(writer(tmp_path / name)))
        reasons[name] = str(raised.value)
    assert "holds text" in reasons["notes.jpg"]
    assert "web page" in reasons["page.png"]
    assert "broken symbolic link" in reasons["gone.jpg"] and "gone-for-good" in reasons["gone.jpg"]


def test_unreadable_things_named_like_images(tmp_path):
    folder = tmp_path / "folder.jpg"
    folder.mkdir()
    with pytest.raises(DecodeError, match="unreadable file: it is a directory"):
        load_image(str(folder))
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)  # open() would block forever on it
    with pytest.raises(DecodeError, match="unreadable file: not a regular file"):
        load_image(str(fifo))
    with pytest.raises(DecodeError, match="unreadable file: no such file"):
        read_bytes(str(tmp_path / "missing.jpg"))


def test_heic_photo_is_reported_as_unsupported():
    header = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64
    with pytest.raises(DecodeError, match="unsupported format: HEIC"):
        decode(io.BytesIO(header))


def test_empty_bytes():
    with pytest.raises(DecodeError, match=r"empty file \(0 bytes\)"):
        decode(io.BytesIO(b""))


def test_failure_kind():
    assert failure_kind("truncated image: image file is truncated (75 bytes)") == "truncated image"
    assert failure_kind("empty file (0 bytes)") == "empty file"
    assert failure_kind("something odd") == "something odd"


def test_large_images_are_decoded_at_reduced_scale_with_the_same_result_size(tmp_path):
    big = quirks.write_halves(tmp_path / "big.png", size=(3000, 2000))
    image, original_size = load_image(str(big), min_side=256)
    assert original_size == (3000, 2000)
    assert min(image.size) >= 256 and image.size[0] <= 1000  # a whole factor of 3 or more
    assert prepare_image(str(big), CenterCrop(), None).image.shape == (224, 224, 3)
    # Detection keeps the longest side: a reduced decode must not shrink the result.
    limit = LimitSize(max_side=320)
    for name, size in [("wide.jpg", (1000, 700)), ("panorama.png", (4000, 500))]:
        path = quirks.write_halves(tmp_path / name, size=size)
        assert max(prepare_image(str(path), limit, None).image.shape[:2]) == 320


def test_prepare_batch_keeps_every_row(tmp_path):
    good = quirks.write_halves(tmp_path / "good photo é.jpg")
    bad = quirks.write_empty(tmp_path / "empty.jpg")
    missing = tmp_path / "missing.jpg"
    paths = np.array([str(good), str(bad), str(missing)], dtype=object)
    batch = decode_batch({"path": paths}, CenterCrop(), None)
    assert list(batch["path"]) == list(paths)
    assert batch["image"].shape == (3, 224, 224, 3) and batch["image"].dtype == np.uint8
    assert batch["error"][0] is None
    assert batch["error"][1].startswith("empty file") and "no such file" in batch["error"][2]
    assert list(batch["width"]) == [80, 0, 0]


PEAK_MEMORY_SCRIPT = """
import resource, sys
from nbhelpers.reading import prepare_image
from nbhelpers.reading import CenterCrop
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
item = prepare_image(sys.argv[1], CenterCrop(), None)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(item.error, item.width, item.height, item.image.shape[0], (after - before) // 1024)
"""


def test_huge_jpeg_is_decoded_at_reduced_scale_without_exhausting_memory(tmp_path):
    huge = quirks.write_huge_jpeg(tmp_path / "huge.jpg", side=12000)
    image, original_size = load_image(str(huge), min_side=256)
    assert original_size == (12000, 12000)
    assert 256 <= image.size[0] <= 1500  # at most 1/8 of each side: under 7 MB, not 432 MB
    # Peak memory of the whole read-decode-preprocess step, in a fresh process.
    result = subprocess.run(
        [sys.executable, "-c", PEAK_MEMORY_SCRIPT, str(huge)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    error, width, height, crop, peak_mb = result.stdout.split()
    assert (error, width, height, crop) == ("None", "12000", "12000", "224")
    assert int(peak_mb) < 100, f"decoding the 12000 x 12000 JPEG took {peak_mb} MB more"


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
    with pytest.raises(DecodeError, match="image too large"):
        decode(io.BytesIO(_png_header_only(30000, 30000)), min_side=256)
    with pytest.raises(DecodeError, match="truncated image|corrupt image"):
        decode(io.BytesIO(_png_header_only(300, 300)), min_side=256)


@pytest.mark.parametrize("size", [(640, 427), (427, 640), (501, 333), (257, 999), (300, 300)])
def test_center_crop_gives_torchvisions_pixels(size):
    """The crop in the read tasks equals torchvision's Resize + CenterCrop, pixel for pixel."""
    from torchvision.transforms import v2

    rng = np.random.default_rng(sum(size))
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    reference = v2.Compose([v2.Resize(232), v2.CenterCrop(224)])(image)
    ours = CenterCrop(resize_size=232, crop_size=224)(image)
    assert ours.shape == (224, 224, 3)
    np.testing.assert_array_equal(ours, np.asarray(reference))
