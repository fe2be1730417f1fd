"""s3:// for real: a local S3-compatible server (moto), public and private buckets."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import pytest
from conftest import IMAGENETTE_SYNSETS, run_into_bucket

from nbhelpers.reading import CenterCrop, prepare_image
from nbhelpers.sources import DataSourceError, find_images

PUBLIC_URI = "s3://anonymous@public-photos/imagenette/val"
PRIVATE_URI = "s3://team-photos/imagenette/val/"
IMAGE_KEYS = 5  # four photos and one empty file; README.txt is skipped
NB01 = "01_resnet_classification"


@pytest.fixture()
def public_env(public_s3, monkeypatch):
    """The process environment of a user without AWS credentials, pointed at the server."""
    for key, value in public_s3.env(credentials=False).items():
        monkeypatch.setenv(key, value) if value else monkeypatch.delenv(key, raising=False)
    return public_s3


def test_public_bucket_anonymously(public_env):
    source = find_images(PUBLIC_URI)
    assert source.kind == "s3" and len(source.paths) == IMAGE_KEYS
    assert "public-photos/imagenette/val/n03445777/golf ball #2 ü.jpeg" in source.paths
    assert source.skipped == {".txt": 1}
    crop = CenterCrop()
    prepared = [prepare_image(path, crop, source.filesystem) for path in source.paths]
    errors = {item.path.rsplit("/", 1)[1]: item.error for item in prepared}
    assert errors.pop("empty.jpg") == "empty file (0 bytes)"
    assert set(errors.values()) == {None}
    assert all(item.image.shape == (224, 224, 3) for item in prepared)


def test_anonymous_access_is_really_anonymous(public_env):
    """Objects that are not public-read are refused to the same anonymous reader."""
    source = find_images("s3://anonymous@private-photos/imagenette/val")
    item = prepare_image(source.paths[0], CenterCrop(), source.filesystem)
    assert item.error.startswith("unreadable file:") and "ACCESS_DENIED" in item.error


def test_private_bucket_with_credentials_from_the_environment(private_env):
    source = find_images(PRIVATE_URI, num_images=2)
    assert source.num_found == IMAGE_KEYS and len(source.paths) == 2
    item = prepare_image(source.paths[0], CenterCrop(), source.filesystem)
    assert item.error is None and item.width > 0


def test_wrong_credentials_are_refused_with_a_clear_message(private_env, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG0")
    with pytest.raises(DataSourceError) as raised:
        find_images(PRIVATE_URI)
    message = str(raised.value)
    assert "Access to 's3://team-photos/imagenette/val/' was refused" in message
    assert "AWS_ACCESS_KEY_ID" in message and "anonymous@" in message


def test_endpoint_for_s3_wins_over_the_general_one(private_env, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    assert len(find_images(PRIVATE_URI).paths) == IMAGE_KEYS
    monkeypatch.setenv("AWS_ENDPOINT_URL", private_env.endpoint)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    assert len(find_images(PRIVATE_URI).paths) == IMAGE_KEYS


def test_missing_bucket_prefix_and_empty_prefix_are_named(private_env):
    with pytest.raises(DataSourceError, match="there is no bucket 'no-such-bucket'"):
        find_images("s3://no-such-bucket/photos")
    with pytest.raises(DataSourceError, match="does not exist: the bucket has no object"):
        find_images("s3://team-photos/imagenette/VAL")
    private_env.client().put_object(Bucket="team-photos", Key="notes/only.txt", Body=b"x")
    with pytest.raises(DataSourceError) as raised:
        find_images("s3://team-photos/notes")
    assert "No images in s3://team-photos/notes: it holds no image, only: 1 .txt" in str(
        raised.value
    )


def test_a_single_object(private_env):
    uri = "s3://team-photos/imagenette/val/n01440764/tench one.JPEG"
    assert find_images(uri).paths == ["team-photos/imagenette/val/n01440764/tench one.JPEG"]


READ_IN_A_CLEAN_PROCESS = """
import pickle, sys
from nbhelpers.reading import read_bytes
filesystem = pickle.loads(sys.stdin.buffer.read())
print(len(read_bytes(sys.argv[1], filesystem)))
"""


def test_workers_read_through_the_endpoint_with_the_drivers_settings(private_env):
    """Ray ships the filesystem pickled: endpoint and credentials must travel with it.

    The reading process has no AWS variables at all, like a worker on another machine.
    """
    source = find_images(PRIVATE_URI)
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    result = subprocess.run(
        [sys.executable, "-c", READ_IN_A_CLEAN_PROCESS, source.paths[0]],
        input=pickle.dumps(source.filesystem),
        capture_output=True,
        env=clean_env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert int(result.stdout) > 1000


@pytest.mark.notebook
@pytest.mark.parametrize("mode", [pytest.param("anonymous", marks=pytest.mark.long), "credentials"])
def test_notebook_01_reads_s3(run_notebook, tmp_path, public_s3, private_s3, mode):
    """Notebook 01 through Ray Data on S3: public anonymously, private with credentials."""
    from test_notebook_01 import check_contract, true_indices

    server, uri = (public_s3, PUBLIC_URI) if mode == "anonymous" else (private_s3, PRIVATE_URI)
    offline = {"pretrained": False, "data_uri": uri, "batch_size": 2}  # several model calls
    if mode == "credentials":  # the results go to the bucket too
        results = "s3://team-photos/results/01"
        run = run_into_bucket(NB01, tmp_path, server, results, **offline)
    else:
        env = server.env(credentials=False)
        run = run_notebook(NB01, tmp_path, env=env, **offline)
    check_contract(run, IMAGE_KEYS)
    predictions = run.predictions.set_index(run.predictions["path"].str.rsplit("/", n=1).str[1])
    assert predictions.loc["empty.jpg", "error"] == "empty file (0 bytes)"
    good = predictions.drop("empty.jpg")
    assert good["error"].isna().all() and good["label"].notna().all()
    assert set(true_indices(good["path"])) <= set(IMAGENETTE_SYNSETS.values())
    assert run.summary["num_failed"] == 1 and run.summary["accuracy"] is not None
    assert run.summary["failures"] == {"empty file (0 bytes)": 1}
