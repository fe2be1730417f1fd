"""nbhelpers.rows: the rows the model stage writes, one per image, failed images kept with
their error and nulls in the model's columns; list cells read back from Parquet."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nbhelpers.destination import output_location
from nbhelpers.results import read_predictions
from nbhelpers.rows import (
    CALL_COLUMN,
    CLASSIFIER_SCHEMA,
    DETECTOR_SCHEMA,
    NODE_COLUMN,
    as_boxes,
    as_list,
    decoded_mask,
    detections_per_class,
    image_rows,
    object_array,
    predicted_columns,
    prediction_schema,
    scale_boxes,
)

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


def read_batch(errors: list[str | None], value: int = 10) -> dict[str, np.ndarray]:
    """A read function's batch: a path, a 4 x 4 image and an error (None: read) per row."""
    rows = len(errors)
    return {
        "path": np.array([f"p{i}.jpg" for i in range(rows)], dtype=object),
        "image": np.full((rows, 4, 4, 3), value, dtype=np.uint8),
        "error": np.array(errors, dtype=object),
    }


def as_table(columns: dict[str, np.ndarray], schema: pa.Schema) -> pa.Table:
    """The table an actor returns from :func:`predicted_columns`' columns."""
    return pa.table({field.name: pa.array(columns[field.name], field.type) for field in schema})


def test_decoded_mask_takes_none_and_nan_for_read():
    """An ``error`` column that is all None reaches the model stage as float NaN."""
    batch = {"error": np.array([None, float("nan"), "empty file (0 bytes)"], dtype=object)}
    assert decoded_mask(batch).tolist() == [True, True, False]


def test_predicted_columns_predicts_the_rows_read_and_keeps_the_failed_ones():
    batch = read_batch([None, "empty file (0 bytes)", None])
    batch["image"][2] = 200
    seen = []
    out = predicted_columns(batch, lambda ims: seen.append(len(ims)) or fake_classify(ims), SCHEMA)
    assert seen == [2]  # the failed row never reaches the model
    assert set(out) == set(SCHEMA.names) and "image" not in out
    assert list(out["path"]) == ["p0.jpg", "p1.jpg", "p2.jpg"]
    assert list(out["label"]) == ["dark", None, "bright"]
    assert list(out["label_index"]) == [0, None, 1]  # a failed row: nulls in the model's columns
    assert out["score"][1] is None and out["score"][2] == pytest.approx(200 / 255)
    assert list(out["error"]) == [None, "empty file (0 bytes)", None]
    assert len(set(out[CALL_COLUMN])) == 1  # one id for the call's rows
    table = as_table(out, SCHEMA)
    assert table.schema == SCHEMA and table.num_rows == 3


def test_predicted_columns_refuses_a_column_the_schema_lacks():
    with pytest.raises(KeyError, match="'colour'"):
        predicted_columns(read_batch([None]), lambda images: {"colour": ["red"]}, SCHEMA)


def test_with_every_row_failed_the_model_is_never_called():
    out = predicted_columns(
        read_batch(["corrupt image: x"]), lambda ims: pytest.fail("model called"), SCHEMA
    )
    assert list(out["label"]) == [None] and list(out["error"]) == ["corrupt image: x"]


def test_each_call_has_its_own_id():
    first = predicted_columns(read_batch([None]), fake_classify, SCHEMA)[CALL_COLUMN][0]
    second = predicted_columns(read_batch([None]), fake_classify, SCHEMA)[CALL_COLUMN][0]
    assert first != second


def test_blocks_with_and_without_failures_read_back_as_one_table(tmp_path):
    """Text columns keep their type in a block where every value is null: one Parquet schema."""

    def block(errors):
        return as_table(predicted_columns(read_batch(errors), fake_classify, SCHEMA), SCHEMA)

    pq.write_table(block([None, None]), tmp_path / "0.parquet")  # no failure: error all null
    pq.write_table(block(["empty file (0 bytes)"]), tmp_path / "1.parquet")  # label all null
    frame = pd.read_parquet(tmp_path)
    assert len(frame) == 3 and frame["error"].notna().sum() == 1
    assert all(pq.read_schema(tmp_path / f"{i}.parquet") == SCHEMA for i in range(2))


def test_predicted_columns_keep_list_columns_whole():
    def detect(images):
        return {"boxes": [[[0, 0, 1, 1]], [[0, 0, 2, 2], [1, 1, 3, 3]]]}

    schema = prediction_schema(pa.field("boxes", pa.list_(pa.list_(pa.float32()))))
    out = predicted_columns(read_batch([None, None]), detect, schema)
    assert out["boxes"][1] == [[0, 0, 2, 2], [1, 1, 3, 3]]
    assert as_table(out, schema).column("boxes").to_pylist()[1] == [[0, 0, 2, 2], [1, 1, 3, 3]]


def test_the_classifier_schema_holds_the_bookkeeping_columns():
    assert CLASSIFIER_SCHEMA.names[0] == "path"
    assert CLASSIFIER_SCHEMA.names[-3:] == ["error", NODE_COLUMN, CALL_COLUMN]
    assert {"label_index", "label", "score", "margin"} <= set(CLASSIFIER_SCHEMA.names)


# A detector's rows ----------------------------------------------------------------------------


def test_image_rows_keep_failed_rows_and_give_boxes_in_original_pixels():
    """A photo of 1000 x 700 read as a 224 x 320 array, and an empty file, as notebook 03's
    read function gives them; the boxes found on the array come back in the photo's pixels."""
    batch = {
        "path": np.array(["big.png", "empty.jpg"], dtype=object),
        "image": object_array([np.zeros((224, 320, 3), np.uint8), np.zeros((1, 1, 3), np.uint8)]),
        "width": np.array([1000, 0], dtype=np.int32),
        "height": np.array([700, 0], dtype=np.int32),
        "error": np.array([None, "empty file (0 bytes)"], dtype=object),
    }

    def detect(images):
        assert len(images) == 1  # the photo read, alone
        return {"boxes": [[[32, 22.4, 320, 224]]], "labels": [["cat"]], "scores": [[0.9]]}

    found = predicted_columns(batch, detect, DETECTOR_SCHEMA)
    rows = image_rows(batch, found)
    assert rows.schema == DETECTOR_SCHEMA
    out = rows.to_pylist()
    assert [(row["width"], row["height"]) for row in out] == [(1000, 700), (0, 0)]
    assert [row["num_detections"] for row in out] == [1, -1]
    assert out[1]["boxes"] is None and out[1]["labels"] is None
    assert out[1]["error"] == "empty file (0 bytes)" and out[0]["error"] is None
    np.testing.assert_allclose(as_boxes(out[0]["boxes"]), [[100, 70, 1000, 700]], rtol=1e-6)
    assert out[0]["labels"] == ["cat"] and out[0][CALL_COLUMN] == out[1][CALL_COLUMN]
    # The single batch, without predicted_columns: the same row for the photo that was read.
    alone = image_rows({key: value[:1] for key, value in batch.items()}, detect(batch["image"][:1]))
    per_call = [NODE_COLUMN, CALL_COLUMN]  # who predicted it, and in which call
    assert alone.drop_columns(per_call).to_pylist()[0] == {
        key: value for key, value in out[0].items() if key not in per_call
    }


def test_rows_of_failed_images_and_of_images_without_boxes_read_back_with_the_rest(tmp_path):
    """Blocks holding only a failed image, or only images without detections, are written by
    Ray as separate Parquet files; all of them must share the schema and read back together."""
    batch = {
        "path": np.array(["bad.jpg", "blank.jpg", "a.jpg"], dtype=object),
        "image": object_array(
            [np.zeros((1, 1, 3), np.uint8)] + [np.zeros((10, 20, 3), np.uint8)] * 2
        ),
        "width": np.array([0, 40, 40], dtype=np.int32),
        "height": np.array([0, 20, 20], dtype=np.int32),
        "error": np.array(["empty file (0 bytes)", None, None], dtype=object),
    }
    found = {
        "boxes": [None, [], [[1.0, 2.0, 3.0, 4.0]]],
        "labels": [None, [], ["cat"]],
        "scores": [None, [], [0.9]],
    }
    for i in range(3):  # one file per block, as Ray Data writes them
        block = {key: value[i : i + 1] for key, value in batch.items()}
        rows = image_rows(block, {key: value[i : i + 1] for key, value in found.items()})
        (tmp_path / "predictions").mkdir(exist_ok=True)
        pq.write_table(rows, tmp_path / "predictions" / f"{i}.parquet")
    paths = ["bad.jpg", "blank.jpg", "a.jpg"]
    for frame in (
        read_predictions(output_location(tmp_path), paths),
        pd.read_parquet(tmp_path / "predictions").sort_values(
            "path", key=lambda p: p.map(paths.index)
        ),
    ):
        assert list(frame["path"]) == paths
        assert frame["boxes"].iloc[0] is None and frame["labels"].iloc[0] is None
        assert [as_boxes(cell).shape for cell in frame["boxes"]] == [(0, 4), (0, 4), (1, 4)]
        np.testing.assert_allclose(as_boxes(frame["boxes"].iloc[2]), [[2, 4, 6, 8]])
        assert list(frame["num_detections"]) == [-1, 0, 1]
        assert detections_per_class(frame).to_dict() == {"cat": 1}


def test_scale_boxes_maps_array_pixels_to_the_original_image_and_clips():
    boxes = np.array([[10, 20, 50, 40], [0, 0, 200, 100]], dtype=np.float32)
    scaled = scale_boxes(boxes, array_size=(100, 200), original_size=(400, 200))
    np.testing.assert_allclose(scaled, [[20, 40, 100, 80], [0, 0, 400, 200]])
    beyond = scale_boxes(np.array([[-5, -5, 250, 120]]), (100, 200), (400, 200))
    np.testing.assert_allclose(beyond, [[0, 0, 400, 200]])
    assert scale_boxes(np.zeros((0, 4)), (100, 200), (400, 200)).shape == (0, 4)


def test_list_cells_read_back_as_lists_and_boxes():
    assert as_list(None) == [] and as_list(float("nan")) == [] and as_list(pd.NA) == []
    assert as_list(np.array(["cat", "dog"], dtype=object)) == ["cat", "dog"]
    assert as_boxes(None).shape == (0, 4)
    nested = np.array([np.array([1, 2, 3, 4.0]), np.array([5, 6, 7, 8.0])], dtype=object)
    np.testing.assert_array_equal(as_boxes(nested), [[1, 2, 3, 4], [5, 6, 7, 8]])


def test_detections_per_class_leaves_out_the_placeholders():
    frame = pd.DataFrame({"labels": [["cat", "N/A", "dog"], None, ["cat", "__background__"]]})
    assert detections_per_class(frame).to_dict() == {"cat": 2, "dog": 1}
