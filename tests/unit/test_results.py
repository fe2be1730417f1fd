"""nbhelpers.results: one row per image, the predictions read back, ``summary.json``."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from nbhelpers.destination import output_location
from nbhelpers.pool import ClusterResources, size_actor_pool
from nbhelpers.results import (
    LostRowsError,
    build_summary,
    check_one_row_per_image,
    read_predictions,
    write_summary,
)

SUMMARY = {"num_images_in": 2, "num_predicted": 1, "num_failed": 1}


def test_lost_rows_are_detected():
    frame = pd.DataFrame({"path": ["a", "a"], "error": [None, None]})
    with pytest.raises(LostRowsError, match=r"missing \['b'\]"):
        check_one_row_per_image(frame, ["a", "b"])


def test_a_path_listed_twice_needs_two_rows_and_no_more():
    listed = ["a", "b", "a"]  # as the sample lists its photos
    check_one_row_per_image(pd.DataFrame({"path": ["a", "a", "b"]}), listed)
    with pytest.raises(LostRowsError, match=r"missing \['a'\]"):
        check_one_row_per_image(pd.DataFrame({"path": ["a", "b", "b"]}), listed)
    with pytest.raises(LostRowsError, match=r"duplicated \['a'\]"):
        check_one_row_per_image(pd.DataFrame({"path": ["a", "a", "a", "b"]}), listed)


def test_results_are_written_and_counts_add_up(tmp_path):
    predictions = pd.DataFrame(
        {
            "path": ["a", "b", "c"],
            "error": [None, "empty file (0 bytes)", None],
            "label": ["x", None, "y"],
        }
    )
    plan = size_actor_pool(ClusterResources(2, 0))
    summary = build_summary(
        "demo", predictions, 3.0, {"p": 1}, ClusterResources(2, 0), plan, accuracy=None
    )
    assert (summary["num_images_in"], summary["num_predicted"], summary["num_failed"]) == (3, 2, 1)
    assert summary["failures"] == {"empty file (0 bytes)": 1}
    output = output_location(tmp_path / "out")
    written = Path(write_summary(output, summary))
    assert written == tmp_path / "out" / "summary.json"
    assert json.loads(written.read_text())["num_failed"] == 1
    folder = tmp_path / "out" / "predictions"
    folder.mkdir()
    predictions.iloc[::-1].to_parquet(folder / "part-0.parquet", index=False)
    back = read_predictions(output, ["a", "b", "c"])
    assert back["error"].tolist() == [None, "empty file (0 bytes)", None]
    only = read_predictions(output, ["a", "b", "c"], columns=["path"])
    assert list(only.columns) == ["path", "error"]  # path and error always come back
    summary["num_failed"] = 0
    with pytest.raises(LostRowsError):
        write_summary(output_location(tmp_path / "bad"), summary)
    assert not (tmp_path / "bad" / "summary.json").exists()


def test_a_summary_field_that_summary_does_not_list_is_refused():
    predictions = pd.DataFrame({"path": ["a"], "error": [None]})
    resources = ClusterResources(2, 0)
    plan = size_actor_pool(resources)
    with pytest.raises(TypeError, match="'colour'"):
        build_summary("demo", predictions, 1.0, {}, resources, plan, colour="red")
    summary = build_summary("demo", predictions, 1.0, {}, resources, plan, batch_size=4)
    assert summary["batch_size"] == 4


def test_a_local_folder_is_written_and_read_back(tmp_path):
    output = output_location(tmp_path / "new" / "run")
    assert json.loads(open(write_summary(output, SUMMARY)).read()) == SUMMARY


def test_s3_results_are_written_and_read_back_through_the_same_file_system(private_env):
    output = output_location("s3://team-photos/results/unit")
    assert write_summary(output, SUMMARY) == "s3://team-photos/results/unit/summary.json"
    s3 = private_env.client()
    body = s3.get_object(Bucket="team-photos", Key="results/unit/summary.json")["Body"].read()
    assert json.loads(body) == SUMMARY
    frame = pd.DataFrame({"path": ["b", "a"], "error": [None, "empty file"], "label": ["x", None]})
    with output.filesystem.open_output_stream(f"{output.predictions}/part-0.parquet") as stream:
        frame.to_parquet(stream, index=False)
    back = read_predictions(output, ["a", "b"], columns=["label"])
    assert back["path"].tolist() == ["a", "b"] and back["error"].tolist() == ["empty file", None]
    assert pd.isna(back["label"].iloc[0]) and back["label"].iloc[1] == "x"
    keys = [item["Key"] for item in s3.list_objects_v2(Bucket="team-photos")["Contents"]]
    assert not [key for key in keys if ".write-test-" in key]  # the test write was removed
