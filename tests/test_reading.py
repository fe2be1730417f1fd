"""The read stage and the model stage's bookkeeping: no row is ever lost, failures say why."""

from __future__ import annotations

import threading

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pytest
import quirky_images as quirks
from PIL import Image

from benchmarks.feed import DelayedFiles
from nbhelpers.reading import (
    CenterCrop,
    NoReadableImagesError,
    decode_batch,
    first_decoded,
    rows_per_block,
)
from nbhelpers.rows import decoded_mask, predict_decoded, prediction_schema
from nbhelpers.sources import find_images

SCHEMA = prediction_schema(
    pa.field("label_index", pa.int64()),
    pa.field("label", pa.string()),
    pa.field("score", pa.float32()),
)


def fake_classify(images: np.ndarray) -> dict[str, np.ndarray]:
    """Stands in for a notebook's model: the mean pixel decides the 'class'."""
    means = images.reshape(len(images), -1).mean(axis=1)
    return {
        "label_index": (means > 100).astype(np.int64),
        "label": np.array(["bright" if m > 100 else "dark" for m in means], dtype=object),
        "score": means / 255,
    }


def broken_first_folder(root, good: int = 3, broken: int = 12):
    """A folder whose broken files sort before every good photo."""
    for i in range(broken):
        (root / f"a_{i:02d}_broken.jpg").write_bytes(b"" if i % 2 else b"<html>oops</html>")
    for i in range(good):
        quirks.write_halves(root / f"z_{i:02d}_good.jpg", fmt="JPEG")
    return root


def test_first_decoded_skips_the_broken_files_that_sort_first(tmp_path):
    source = find_images(str(broken_first_folder(tmp_path)))
    batch = first_decoded(source, CenterCrop(), count=8)
    assert [p.rsplit("/", 1)[-1] for p in batch["path"]] == [
        "z_00_good.jpg",
        "z_01_good.jpg",
        "z_02_good.jpg",
    ]
    assert batch["image"].shape == (3, 224, 224, 3) and batch["image"].dtype == np.uint8
    assert all(error is None for error in batch["error"])


def test_nothing_readable_stops_with_counts_kinds_examples_and_advice(tmp_path):
    source = find_images(str(broken_first_folder(tmp_path, good=0, broken=6)))
    with pytest.raises(NoReadableImagesError) as raised:
        first_decoded(source, CenterCrop())
    message = str(raised.value)
    assert "None of the first 6 of 6 images could be read" in message
    assert "3 x empty file" in message and "3 x not an image" in message
    assert "a_01_broken.jpg" in message  # an example file of each kind
    assert "data_uri" in message


def test_first_decoded_gives_up_after_max_tries(tmp_path):
    source = find_images(str(broken_first_folder(tmp_path, good=1, broken=12)))
    with pytest.raises(NoReadableImagesError, match="first 5 of 13"):
        first_decoded(source, CenterCrop(), max_tries=5)


def test_decode_batch_keeps_one_row_per_path_in_order(tmp_path):
    paths = [str(quirks.write_halves(tmp_path / "ok.png")), str(tmp_path / "missing.jpg")]
    batch = decode_batch({"path": np.array(paths, dtype=object)}, CenterCrop(), None)
    assert list(batch["path"]) == paths
    assert batch["error"][0] is None and batch["error"][1].startswith("unreadable file")
    assert list(decoded_mask(batch)) == [True, False]


def test_predict_decoded_predicts_good_rows_and_keeps_failed_ones():
    images = np.stack([np.full((4, 4, 3), v, dtype=np.uint8) for v in (10, 0, 200)])
    batch = {
        "path": np.array(["a", "b", "c"], dtype=object),
        "image": images,
        "error": np.array([None, "empty file (0 bytes)", None], dtype=object),
    }
    seen = []
    table = predict_decoded(batch, lambda ims: seen.append(len(ims)) or fake_classify(ims), SCHEMA)
    out = table.to_pydict()
    assert seen == [2]  # the failed row never reaches the model
    assert out["path"] == ["a", "b", "c"] and "image" not in out
    assert out["label"] == ["dark", None, "bright"]
    assert out["label_index"] == [0, None, 1]  # a failed row: nulls in the model's columns
    assert out["score"][1] is None and out["score"][2] == pytest.approx(200 / 255)
    assert out["error"] == [None, "empty file (0 bytes)", None]
    assert table.schema == SCHEMA and "node_id" in out


def test_predict_decoded_refuses_a_column_the_schema_lacks():
    batch = {
        "path": np.array(["a"], dtype=object),
        "image": np.zeros((1, 4, 4, 3), dtype=np.uint8),
        "error": np.array([None], dtype=object),
    }
    with pytest.raises(KeyError, match="'colour'"):
        predict_decoded(batch, lambda images: {"colour": ["red"]}, SCHEMA)


def test_predict_decoded_with_every_row_failed_never_calls_the_model():
    batch = {
        "path": np.array(["a"], dtype=object),
        "image": np.zeros((1, 4, 4, 3), dtype=np.uint8),
        "error": np.array(["corrupt image: x"], dtype=object),
    }
    out = predict_decoded(batch, lambda ims: pytest.fail("model called"), SCHEMA).to_pydict()
    assert out["label"] == [None] and out["error"] == ["corrupt image: x"]


def test_blocks_with_and_without_failures_read_back_as_one_table(tmp_path):
    """Text columns keep their type in a block where every value is null: one Parquet schema."""
    import pandas as pd
    import pyarrow.parquet as pq

    def block(errors):
        batch = {
            "path": np.array([f"p{i}" for i in range(len(errors))], dtype=object),
            "image": np.zeros((len(errors), 4, 4, 3), dtype=np.uint8),
            "error": np.array(errors, dtype=object),
        }
        return predict_decoded(batch, fake_classify, SCHEMA)

    pq.write_table(block([None, None]), tmp_path / "0.parquet")  # no failure: error all null
    pq.write_table(block(["empty file (0 bytes)"]), tmp_path / "1.parquet")  # label all null
    frame = pd.read_parquet(tmp_path)
    assert len(frame) == 3 and frame["error"].notna().sum() == 1
    assert all(pq.read_schema(tmp_path / f"{i}.parquet") == SCHEMA for i in range(2))


def test_predict_decoded_keeps_list_columns_whole():
    batch = {
        "path": np.array(["a", "b"], dtype=object),
        "image": np.zeros((2, 4, 4, 3), dtype=np.uint8),
        "error": np.array([None, None], dtype=object),
    }

    def detect(images):
        return {"boxes": [[[0, 0, 1, 1]], [[0, 0, 2, 2], [1, 1, 3, 3]]]}

    schema = prediction_schema(pa.field("boxes", pa.list_(pa.list_(pa.float32()))))
    out = predict_decoded(batch, detect, schema).to_pydict()
    assert out["boxes"][1] == [[0, 0, 2, 2], [1, 1, 3, 3]]


@pytest.mark.parametrize(
    ("paths", "actors", "expected"), [(1000, 1, 16), (12, 1, 12), (12, 3, 2), (1, 4, 1)]
)
def test_rows_per_block(paths, actors, expected):
    assert rows_per_block(paths, actors) == expected


def test_a_block_is_one_batch_on_large_datasets():
    assert rows_per_block(10_000, 1, batch_size=64) == 64  # a GPU's batch: a quarter the tasks
    assert rows_per_block(100, 2, batch_size=64) == 25  # still two blocks per actor


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
    paths = (
        [str(path) for path in photos[:3]]
        + [str(tmp_path / "broken.jpg")]
        + [str(p) for p in photos[3:]]
    )
    handler = CountingDelayedFiles()
    batch = decode_batch(
        {"path": np.array(paths, dtype=object)}, CenterCrop(), pafs.PyFileSystem(handler)
    )
    assert list(batch["path"]) == paths
    assert [error is None for error in batch["error"]] == [True] * 3 + [False] + [True] * 3
    assert handler.most > 1, "the reads waited one after the other"


def test_open_image_gives_the_decoded_photo_or_a_short_reason(tmp_path, sample_photos):
    from nbhelpers.decode import DecodeError
    from nbhelpers.reading import open_image, open_image_with_size

    crop = CenterCrop()
    image = open_image(str(sample_photos[0]), None, crop)
    assert image.mode == "RGB" and min(image.size) >= crop.min_side
    _, size = open_image_with_size(str(sample_photos[0]), None, crop)
    assert size == Image.open(sample_photos[0]).size  # the original, before any reduction
    with pytest.raises(DecodeError, match="empty file"):
        open_image(str(quirks.write_empty(tmp_path / "empty.jpg")), None, crop)
    with pytest.raises(DecodeError, match="not an image"):
        open_image(str(quirks.write_text_as_image(tmp_path / "notes.png")), None, crop)


def test_rows_read_is_the_mask_of_rows_without_an_error_and_stops_when_none_was():
    from nbhelpers.reading import rows_read

    batch = {"path": np.array(["a.jpg", "b.jpg"]), "error": np.array([None, "empty file"], object)}
    assert rows_read(batch, 2).tolist() == [True, False]
    failed = {
        "path": np.array(["a.jpg", "b.heic"]),
        "error": np.array(["empty file (0 bytes)", "unsupported format: HEIC"], object),
    }
    with pytest.raises(NoReadableImagesError) as stopped:
        rows_read(failed, 10)
    message = str(stopped.value)
    assert "None of the first 2 of 10 images could be read" in message
    assert "1 x empty file, e.g. a.jpg" in message and "pillow-heif" in message
