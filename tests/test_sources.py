"""Finding images: local folders, odd names, and clear errors before any Ray work (no Ray)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import quirky_images as quirks

from nbhelpers.sources import (
    SAMPLE_REPEATS,
    DataSourceError,
    find_images,
    is_image_name,
    pick_evenly,
)


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
    assert source.describe().endswith(
        "; skipped 5 other files (1 without extension, 3 system or hidden, 1 .txt)"
    )
    assert "6 of 6 images" in source.describe()


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
    assert source.num_found == 12 and "3 of 12 images" in source.describe()
    assert pick_evenly(["x", "y"], None) == ["x", "y"]
    with pytest.raises(ValueError, match="num_images"):
        pick_evenly(["x", "y"], 0)


def test_missing_data_uri_names_the_place(tmp_path):
    missing = tmp_path / "no such folder"
    with pytest.raises(DataSourceError) as raised:
        find_images(str(missing))
    message = str(raised.value)
    assert "does not exist" in message and str(missing) in message
    assert "s3://" in message and "'sample'" in message  # what would work instead


def test_empty_folder_says_so(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataSourceError) as raised:
        find_images(str(tmp_path / "empty"))
    message = str(raised.value)
    assert str(tmp_path / "empty") in message and "it is empty" in message
    assert "Looked recursively for files ending in .jpg, .jpeg" in message and "any case" in message


def test_folder_without_images_lists_what_it_holds(tmp_path):
    (tmp_path / "docs" / "sub").mkdir(parents=True)
    (tmp_path / "docs" / "a.txt").write_text("x")
    (tmp_path / "docs" / "sub" / "b.csv").write_text("x")
    (tmp_path / "docs" / "sub" / "c.csv").write_text("x")
    with pytest.raises(DataSourceError) as raised:
        find_images(str(tmp_path / "docs"))
    message = str(raised.value)
    assert "holds no image, only: 2 .csv, 1 .txt" in message
    assert str(tmp_path / "docs") in message and ".png" in message


def test_unsupported_schemes_and_bad_values_are_refused():
    with pytest.raises(DataSourceError, match="gs:// is not supported"):
        find_images("gs://bucket/images")
    with pytest.raises(DataSourceError, match="no bucket name"):
        find_images("s3:///images")
    with pytest.raises(DataSourceError, match="data_uri must be"):
        find_images("")


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
    import subprocess

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
    assert f"{len(photos)} photos, each listed {SAMPLE_REPEATS} times" in source.describe()
    assert find_images("sample", num_images=len(photos)).paths == photos


@pytest.mark.parametrize(
    "name, expected",
    [("a.JPG", True), ("b.jpeg", True), ("c.JPEG", True), ("d.heic", True), ("e.txt", False)],
)
def test_image_names(name, expected):
    assert is_image_name(name) is expected
