"""Finding images: local folders, odd names, and clear errors before any Ray work (no Ray)."""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest

from nbhelpers.reading import CenterCrop, prepare_image
from nbhelpers.sources import (
    SAMPLE_REPEATS,
    DataSourceError,
    choose_num_images,
    find_images,
    is_image_name,
    pick_evenly,
)
from tests.conftest import IMAGE_KEYS, PRIVATE_URI, PUBLIC_URI
from tests.support import quirky_images as quirks


@pytest.fixture()
def nested_folder(tmp_path) -> Path:
    root = tmp_path / "My Photos"
    quirks.write_halves(root / "a.jpg")
    quirks.write_halves(root / "UPPER.JPEG")
    quirks.write_halves(root / "Mixed.Png", fmt="PNG")
    quirks.write_halves(root / "holiday 2024" / "beach day.jpeg")
    quirks.write_halves(root / "holiday 2024" / "Zürich" / "café ☕ 日本.jpg")
    quirks.write_halves(root / "deep" / "er" / "est" / "x.tif", fmt="TIFF")
    (root / "notes.txt").write_text("not a photo")
    (root / "deep" / "README").write_text("no extension")
    (root / ".DS_Store").write_bytes(b"\0")
    quirks.write_halves(root / "._a.jpg", fmt="JPEG")  # macOS metadata next to a.jpg
    quirks.write_halves(root / ".thumbnails" / "a.jpg")  # hidden folder: not searched
    return root


def test_local_folder_is_searched_recursively_with_any_case(nested_folder):
    source = find_images(str(nested_folder))
    names = sorted(Path(p).relative_to(nested_folder).as_posix() for p in source.paths)
    assert names == [
        "Mixed.Png",
        "UPPER.JPEG",
        "a.jpg",
        "deep/er/est/x.tif",
        "holiday 2024/Zürich/café ☕ 日本.jpg",
        "holiday 2024/beach day.jpeg",
    ]
    assert source.kind == "local" and source.num_found == 6 and source.filesystem is None
    assert all(os.path.isabs(p) and os.path.isfile(p) for p in source.paths)
    assert source.skipped == {"": 1, ".txt": 1, "(system or hidden files)": 3}


def test_relative_path_home_and_file_uri(nested_folder, monkeypatch):
    monkeypatch.chdir(nested_folder.parent)
    relative = find_images("My Photos")
    assert relative.paths == find_images(str(nested_folder)).paths
    assert all(os.path.isabs(p) for p in relative.paths)  # Ray workers run elsewhere
    assert find_images(nested_folder.as_uri()).paths == relative.paths
    assert find_images(nested_folder).paths == relative.paths  # a pathlib.Path works too
    monkeypatch.setenv("HOME", str(nested_folder.parent))
    assert find_images("~/My Photos").paths == relative.paths


def test_a_single_image_file(nested_folder):
    source = find_images(str(nested_folder / "UPPER.JPEG"))
    assert source.paths == [str(nested_folder / "UPPER.JPEG")]


def test_symlinked_folders_are_followed_once(tmp_path):
    quirks.write_halves(tmp_path / "photos" / "a.jpg")
    os.symlink(tmp_path / "photos", tmp_path / "photos" / "loop")  # a link back up
    os.symlink(tmp_path / "photos", tmp_path / "alias")
    (tmp_path / "root").mkdir()
    os.symlink(tmp_path / "alias", tmp_path / "root" / "linked")
    assert [Path(p).name for p in find_images(str(tmp_path / "root")).paths] == ["a.jpg"]
    assert len(find_images(str(tmp_path / "photos")).paths) == 1


def test_broken_links_named_like_images_are_listed_for_the_failure_report(tmp_path):
    quirks.write_halves(tmp_path / "good.jpg")
    quirks.write_broken_symlink(tmp_path / "gone.jpg")
    assert [Path(p).name for p in find_images(str(tmp_path)).paths] == ["gone.jpg", "good.jpg"]


def test_names_that_are_not_utf8_become_printable_and_still_open(tmp_path):
    """A Latin-1 name (old camera, ZIP extracted on Linux) must not break Arrow or Parquet."""
    import pyarrow as pa

    from nbhelpers.reading import CenterCrop, prepare_image

    latin1 = tmp_path / os.fsdecode(b"caf\xe9 photo.jpg")
    quirks.write_halves(latin1)
    (path,) = find_images(str(tmp_path)).paths
    assert path == str(tmp_path / "caf\\xe9 photo.jpg")
    pa.array([path])  # valid UTF-8: Arrow takes it
    assert prepare_image(path, CenterCrop(), None).error is None


def test_num_images_spreads_over_the_folders(tmp_path):
    for folder in "abc":
        for i in range(4):
            quirks.write_halves(tmp_path / folder / f"{i}.jpg", size=(8, 8))
    source = find_images(str(tmp_path), num_images=3)
    assert sorted(Path(p).parent.name for p in source.paths) == ["a", "b", "c"]
    assert source.num_found == 12 and len(source.paths) == 3
    assert pick_evenly(["x", "y"], None) == ["x", "y"]
    with pytest.raises(ValueError, match="num_images"):
        pick_evenly(["x", "y"], 0)


def test_missing_data_uri_names_the_place(tmp_path):
    missing = tmp_path / "no such folder"
    with pytest.raises(DataSourceError) as raised:
        find_images(str(missing))
    message = str(raised.value)
    assert str(missing) in message  # the place looked at
    assert "s3://" in message and "'sample'" in message  # what would work instead


def test_empty_folder_says_so(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataSourceError) as raised:
        find_images(str(tmp_path / "empty"))
    message = str(raised.value)
    assert str(tmp_path / "empty") in message and ".jpeg" in message  # where, and what it sought
    assert " only: " not in message  # nothing else to list either


def test_folder_without_images_lists_what_it_holds(tmp_path):
    (tmp_path / "docs" / "sub").mkdir(parents=True)
    (tmp_path / "docs" / "a.txt").write_text("x")
    (tmp_path / "docs" / "sub" / "b.csv").write_text("x")
    (tmp_path / "docs" / "sub" / "c.csv").write_text("x")
    with pytest.raises(DataSourceError) as raised:
        find_images(str(tmp_path / "docs"))
    message = str(raised.value)
    assert "2 .csv, 1 .txt" in message  # what it holds, counted by extension
    assert str(tmp_path / "docs") in message and ".png" in message


def test_unsupported_schemes_and_bad_values_are_refused():
    for data_uri in ("gs://bucket/images", "s3:///images", ""):
        with pytest.raises(DataSourceError, match=re.escape(repr(data_uri))):  # what was given
            find_images(data_uri)


def test_errors_come_before_ray_is_imported(tmp_path):
    """The data source is checked in plain Python: a typo costs no cluster start-up."""
    script = (
        "import sys\n"
        "from nbhelpers.sources import DataSourceError, find_images\n"
        "try:\n"
        f"    find_images({str(tmp_path / 'typo')!r})\n"
        "except DataSourceError:\n"
        "    print('ray' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "False", result.stderr


def test_sample_photos(sample_photos):
    source = find_images("sample", num_images=4)
    assert source.kind == "sample" and len(source.paths) == 4
    assert source.num_found == len(sample_photos)
    assert len(set(source.paths)) == 4  # a few rows: distinct photos, spread over the list


def test_the_sample_lists_its_photos_several_times_one_round_after_another(sample_photos):
    source = find_images("sample")
    photos = sorted(str(p) for p in sample_photos)
    assert source.paths == photos * SAMPLE_REPEATS  # every photo before the first repeats
    assert (source.num_found, source.repeats) == (len(photos), SAMPLE_REPEATS)
    assert find_images("sample", num_images=len(photos)).paths == photos


@pytest.mark.parametrize(
    "name, expected",
    [("a.JPG", True), ("b.jpeg", True), ("c.JPEG", True), ("d.heic", True), ("e.txt", False)],
)
def test_image_names(name, expected):
    assert is_image_name(name) is expected


# s3:// for real: a local S3-compatible server (moto), public and private buckets -------------


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
    assert "s3://team-photos/imagenette/val/" in message  # the place refused
    assert "AWS_ACCESS_KEY_ID" in message and "anonymous@" in message  # what to set or drop


def test_endpoint_for_s3_wins_over_the_general_one(private_env, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    assert len(find_images(PRIVATE_URI).paths) == IMAGE_KEYS
    monkeypatch.setenv("AWS_ENDPOINT_URL", private_env.endpoint)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    assert len(find_images(PRIVATE_URI).paths) == IMAGE_KEYS


def test_missing_bucket_prefix_and_empty_prefix_are_named(private_env):
    with pytest.raises(DataSourceError, match="'no-such-bucket'"):
        find_images("s3://no-such-bucket/photos")
    with pytest.raises(DataSourceError, match="imagenette/VAL"):
        find_images("s3://team-photos/imagenette/VAL")
    private_env.client().put_object(Bucket="team-photos", Key="notes/only.txt", Body=b"x")
    with pytest.raises(DataSourceError) as raised:
        find_images("s3://team-photos/notes")
    assert "s3://team-photos/notes" in str(raised.value) and "1 .txt" in str(raised.value)


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


def test_choose_num_images():
    assert choose_num_images("auto", use_gpu=True, cpu_default=200)[0] is None
    limit, note = choose_num_images("auto", use_gpu=False, cpu_default=200)
    assert limit == 200 and "num_images=None" in note  # the parameter that lifts the limit
    assert choose_num_images(None, use_gpu=False, cpu_default=200)[0] is None
    assert choose_num_images(7, use_gpu=False, cpu_default=200)[0] == 7
    with pytest.raises(ValueError, match="num_images"):
        choose_num_images("lots", use_gpu=False, cpu_default=200)


def test_find_images_takes_auto_and_notes_what_it_chose():
    on_cpu = find_images("sample", "auto", use_gpu=False, cpu_default=5)
    assert len(on_cpu.paths) == 5 and on_cpu.note  # the limit it chose, said
    on_gpu = find_images("sample", "auto", use_gpu=True)
    assert len(on_gpu.paths) == on_gpu.num_found * on_gpu.repeats
    assert find_images("sample", 3).note == ""  # a number asked for needs no sentence
