"""nbhelpers.reading: a file opened safely (local or S3), resized as the weights expect, and
what to say when nothing reads. A read function keeps one row per file, the error as text."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow.fs as pafs
import pytest
from PIL import Image

from benchmarks.feed import DelayedFiles
from nbhelpers.decode import DecodeError, failure_kind
from nbhelpers.reading import (
    CenterCrop,
    LimitSize,
    NoReadableImagesError,
    load_image,
    open_image,
    open_image_with_size,
    prepare_image,
    read_bytes,
    rows_read,
)
from tests.support import quirky_images as quirks


def read_images(paths: list[str], filesystem, preprocess) -> dict[str, np.ndarray]:
    """Notebook 01's read function, as a learner writes it with :func:`open_image`: one row
    per path, the error kept as text, never raised; files on S3 fetched several at once."""

    def read_one(path: str) -> tuple[np.ndarray, str | None]:
        try:
            return preprocess(open_image(path, filesystem, preprocess)), None
        except Exception as error:
            return preprocess.empty, str(error)

    with ThreadPoolExecutor(16 if filesystem else 1) as threads:  # as notebook 01
        images, errors = zip(*threads.map(read_one, paths), strict=True)
    return {
        "path": np.array(paths, dtype=object),
        "image": np.stack(images),
        "error": np.array(errors, dtype=object),
    }


def kinds(batch: dict[str, np.ndarray]) -> list[str | None]:
    return [None if error is None else failure_kind(error) for error in batch["error"]]


# Opening one file ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "writer, kind",
    [*quirks.BROKEN_FILES, (quirks.write_broken_symlink, "unreadable file")],
)
def test_bad_files_raise_a_reason_and_are_recorded_by_prepare_image(tmp_path, writer, kind):
    path = writer(tmp_path / "bad.jpg")
    with pytest.raises(DecodeError) as raised:
        load_image(str(path))
    assert failure_kind(str(raised.value)) == kind
    item = prepare_image(str(path), CenterCrop(), None)
    assert item.error == str(raised.value) and item.image.shape == (224, 224, 3)
    assert (item.width, item.height) == (0, 0)


def test_a_broken_link_names_its_target(tmp_path):
    with pytest.raises(DecodeError) as raised:
        load_image(str(quirks.write_broken_symlink(tmp_path / "gone.jpg")))
    assert "gone-for-good" in str(raised.value)


def test_unreadable_things_named_like_images(tmp_path):
    folder = tmp_path / "folder.jpg"
    folder.mkdir()
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)  # open() would block forever on it
    for path in (folder, fifo):
        with pytest.raises(DecodeError) as raised:
            load_image(str(path))
        assert failure_kind(str(raised.value)) == "unreadable file"
    with pytest.raises(DecodeError) as raised:
        read_bytes(str(tmp_path / "missing.jpg"))
    assert failure_kind(str(raised.value)) == "unreadable file"


def test_open_image_gives_the_decoded_photo_or_a_short_reason(tmp_path, sample_photos):
    crop = CenterCrop()
    image = open_image(str(sample_photos[0]), None, crop)
    assert image.mode == "RGB" and min(image.size) >= crop.min_side
    _, size = open_image_with_size(str(sample_photos[0]), None, crop)
    assert size == Image.open(sample_photos[0]).size  # the original, before any reduction
    for writer, kind in [
        (quirks.write_empty, "empty file"),
        (quirks.write_text_as_image, "not an image"),
    ]:
        with pytest.raises(DecodeError) as raised:
            open_image(str(writer(tmp_path / "bad.png")), None, crop)
        assert failure_kind(str(raised.value)) == kind


def test_large_images_give_the_same_result_size(tmp_path):
    big = quirks.write_halves(tmp_path / "big.png", size=(3000, 2000))
    assert prepare_image(str(big), CenterCrop(), None).image.shape == (224, 224, 3)
    # Detection keeps the longest side: a reduced decode must not shrink the result.
    limit = LimitSize(max_side=320)
    for name, size in [("wide.jpg", (1000, 700)), ("panorama.png", (4000, 500))]:
        path = quirks.write_halves(tmp_path / name, size=size)
        assert max(prepare_image(str(path), limit, None).image.shape[:2]) == 320


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


# A read function: one row per file, failures kept ----------------------------------------------


def test_a_read_function_keeps_one_row_per_path_in_order(tmp_path):
    good = quirks.write_halves(tmp_path / "good photo é.jpg")
    empty = quirks.write_empty(tmp_path / "empty.jpg")
    paths = [str(good), str(empty), str(tmp_path / "missing.jpg")]
    batch = read_images(paths, None, CenterCrop())
    assert list(batch["path"]) == paths
    assert batch["image"].shape == (3, 224, 224, 3) and batch["image"].dtype == np.uint8
    assert kinds(batch) == [None, "empty file", "unreadable file"]
    assert rows_read(batch, len(paths)).tolist() == [True, False, False]


class CountingDelayedFiles(DelayedFiles):
    """The local disk with every read 0.1 s late, counting how many wait at once."""

    def __init__(self):
        super().__init__(latency=0.1)
        self.lock, self.waiting, self.most = threading.Lock(), 0, 0

    def open_input_file(self, path):
        with self.lock:
            self.waiting += 1
            self.most = max(self.most, self.waiting)
        try:
            return super().open_input_file(path)
        finally:
            with self.lock:
                self.waiting -= 1


def test_remote_files_are_fetched_together_and_every_row_kept(tmp_path):
    """Files behind a file system (S3) are read several at a time, in order, failures kept."""
    photos = [tmp_path / f"{i}.jpg" for i in range(6)]
    for i, photo in enumerate(photos):
        Image.new("RGB", (64, 48), (i * 20, 0, 0)).save(photo)
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    paths = [str(p) for p in photos[:3]] + [str(tmp_path / "broken.jpg")]
    paths += [str(p) for p in photos[3:]]
    handler = CountingDelayedFiles()
    batch = read_images(paths, pafs.PyFileSystem(handler), CenterCrop())
    assert list(batch["path"]) == paths
    assert kinds(batch) == [None] * 3 + ["not an image"] + [None] * 3
    assert handler.most > 1, "the reads waited one after the other"


# When nothing reads -----------------------------------------------------------------------------


def broken_first_folder(root, good: int = 3, broken: int = 12):
    """A folder whose broken files sort before every good photo."""
    for i in range(broken):
        (root / f"a_{i:02d}_broken.jpg").write_bytes(b"" if i % 2 else b"<html>oops</html>")
    for i in range(good):
        quirks.write_halves(root / f"z_{i:02d}_good.jpg", fmt="JPEG")
    return root


def test_rows_read_is_the_mask_of_rows_without_an_error():
    batch = {"path": np.array(["a.jpg", "b.jpg"]), "error": np.array([None, "empty file"], object)}
    assert rows_read(batch, 2).tolist() == [True, False]


def test_nothing_readable_stops_with_counts_kinds_examples_and_advice(tmp_path):
    paths = sorted(str(p) for p in broken_first_folder(tmp_path, good=0, broken=6).iterdir())
    batch = read_images(paths, None, CenterCrop())
    with pytest.raises(NoReadableImagesError) as raised:
        rows_read(batch, 10)
    message = str(raised.value)
    assert "6 of 10" in message  # how many were tried, of how many listed
    assert "3 x empty file" in message and "3 x not an image" in message  # counted by kind
    assert "a_01_broken.jpg" in message  # an example file of each kind
    assert "data_uri" in message  # the parameter to check


def test_advice_follows_the_kinds_that_failed():
    failed = {
        "path": np.array(["a.jpg", "b.heic"]),
        "error": np.array(["empty file (0 bytes)", "unsupported format: HEIC"], object),
    }
    with pytest.raises(NoReadableImagesError) as stopped:
        rows_read(failed, 10)
    message = str(stopped.value)
    assert "1 x empty file" in message and "a.jpg" in message
    assert "pillow-heif" in message  # the package that reads HEIC


# Resizing as the weights expect ----------------------------------------------------------------


def test_center_crop_gives_fixed_size_uint8():
    crop = CenterCrop(resize_size=232, crop_size=224)
    out = crop(Image.new("RGB", (500, 375), (10, 20, 30)))
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    assert tuple(out[100, 100]) == (10, 20, 30)


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
