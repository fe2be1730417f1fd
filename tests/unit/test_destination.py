"""nbhelpers.destination: where results go (a local folder, or ``s3://`` on a real local S3
server), checked before any model work."""

from __future__ import annotations

import re

import pyarrow.fs as pafs
import pytest
import ray

from nbhelpers import destination, runtime
from nbhelpers.destination import WRITE_TASK_CPUS, OutputLocationError, output_location


def refused(uri) -> str:
    """The start of every refusal's message: the parameter and the value given."""
    return re.escape(f"output_dir {str(uri)!r}")


def test_a_local_folder_is_created_and_left_empty(tmp_path):
    output = output_location(tmp_path / "new" / "run")
    assert output.is_local and output.path == str(tmp_path / "new" / "run")
    assert output.predictions == f"{output.path}/predictions"
    assert (tmp_path / "new" / "run").is_dir()
    assert list((tmp_path / "new" / "run").iterdir()) == []  # the test write left nothing


def test_a_relative_folder_becomes_absolute(tmp_path, monkeypatch):
    """Ray's workers do not share the notebook's working directory."""
    monkeypatch.chdir(tmp_path)
    assert output_location("results").path == str(tmp_path / "results")


def test_the_default_is_the_notebooks_folder_under_outputs(tmp_path, monkeypatch):
    monkeypatch.setattr(destination, "OUTPUT_ROOT", tmp_path)
    output = destination.output_location(None, "01_resnet_classification")
    assert output.path == str(tmp_path / "01_resnet_classification")


def test_a_folder_that_cannot_be_made_is_refused_naming_output_dir(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(OutputLocationError, match=refused(tmp_path / "a-file" / "run")):
        output_location(tmp_path / "a-file" / "run")


def test_other_schemes_and_anonymous_s3_are_refused():
    with pytest.raises(OutputLocationError, match=refused("gs://bucket/results")):
        output_location("gs://bucket/results")
    anonymous = "s3://anonymous@air-example-data/results"
    with pytest.raises(OutputLocationError, match=refused(anonymous)) as raised:
        output_location(anonymous)
    assert "AWS_ACCESS_KEY_ID" in str(raised.value)  # what it needs to write


def test_s3_is_checked_with_a_test_write_that_leaves_nothing(private_env):
    output = output_location("s3://team-photos/results/unit")
    assert not output.is_local and output.ray_remote_args == {"num_cpus": WRITE_TASK_CPUS}
    assert output.path == "team-photos/results/unit"
    assert isinstance(output.filesystem, pafs.S3FileSystem)
    listing = private_env.client().list_objects_v2(Bucket="team-photos", Prefix="results/")
    keys = [item["Key"] for item in listing.get("Contents", [])]
    assert not [key for key in keys if ".write-test-" in key]  # the test write was removed


def test_s3_that_refuses_writing_stops_before_the_work(private_env, monkeypatch):
    with pytest.raises(OutputLocationError, match=refused("s3://no-such-bucket/results")):
        output_location("s3://no-such-bucket/results")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    with pytest.raises(OutputLocationError, match=refused("s3://team-photos/results")):
        output_location("s3://team-photos/results")


def test_no_filesystem_is_needed_for_the_local_disk(tmp_path):
    assert isinstance(output_location(tmp_path).filesystem, pafs.LocalFileSystem)


def test_a_local_output_dir_is_refused_through_ray_client(monkeypatch, tmp_path):
    """Through Ray Client (``ray://``) the workers cannot write to this machine's folders.

    The connection is stood in for by what :func:`nbhelpers.runtime.through_ray_client` asks
    (``tests/claims/test_runtime.py`` checks that Ray itself asks the same).
    """
    assert not runtime.through_ray_client()  # no connection in this process
    assert destination.output_location(tmp_path / "run").is_local
    monkeypatch.setattr(ray.util.client, "num_connected_contexts", lambda: 1)
    assert runtime.through_ray_client()
    with pytest.raises(OutputLocationError, match=refused(tmp_path / "run")) as raised:
        destination.output_location(tmp_path / "run")
    assert "ray://" in str(raised.value) and "s3://" in str(raised.value)
