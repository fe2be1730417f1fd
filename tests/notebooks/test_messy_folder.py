"""A folder as users have them, every quirk at once, through notebook 01 offline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from nbhelpers.decode import failure_kind
from nbhelpers.sources import printable_path
from tests.support import quirky_images as quirks

pytestmark = pytest.mark.notebook

HEIC_HEADER = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64


def photo(source: Path, target: Path, mode: str = "RGB", fmt: str = "JPEG", **save) -> Path:
    """A real photo, small, in the given mode and format."""
    target.parent.mkdir(parents=True, exist_ok=True)
    image = Image.open(source).convert("RGB")
    image.thumbnail((240, 240))
    image.convert(mode).save(target, fmt, **save)
    return target


@pytest.fixture()
def messy_folder(tmp_path, sample_photos) -> tuple[Path, set[str], dict[str, str]]:
    """Good and bad files mixed in nested folders; returns (root, good names, bad name -> kind)."""
    root = tmp_path / "Camera Roll (copy)"
    good = [
        photo(sample_photos[0], root / "2019 trip" / "IMG_0001.JPEG"),
        photo(sample_photos[2], root / "2019 trip" / "Zürich" / "café ☕ 1.jpg"),
        photo(sample_photos[3], root / "2019 trip" / "日本" / "写真 2.png", "RGBA", "PNG"),
        photo(sample_photos[1], root / "scans" / "grey scan.jpg", "L"),
        photo(sample_photos[4], root / "scans" / "print proof.jpg", "CMYK"),
        photo(sample_photos[6], root / "web" / "palette.gif", "P", "GIF"),
        photo(sample_photos[7], root / "web" / "photo.WEBP", fmt="WEBP"),
        quirks.write_16bit_gray_png(root / "lab" / "sensor 16bit.png"),
        quirks.write_palette_png_with_transparency(root / "lab" / "logo.png"),
        quirks.write_exif_rotated_jpeg(root / "phone" / "IMG_2044.jpg"),
        photo(sample_photos[5], root / "old camera" / os.fsdecode(b"DSC\xe9 0001.JPG")),
    ]
    bad = {
        quirks.write_empty(root / "empty.jpg"): "empty file",
        quirks.write_truncated_jpeg(root / "2019 trip" / "cut off.JPG"): "truncated image",
        quirks.write_text_as_image(root / "notes saved as.jpg"): "not an image",
        quirks.write_html_as_image(root / "web" / "download.png"): "not an image",
        quirks.write_broken_symlink(root / "phone" / "moved away.jpg"): "unreadable file",
        root / "phone" / "IMG_2045.HEIC": "unsupported format",
    }
    (root / "phone" / "IMG_2045.HEIC").write_bytes(HEIC_HEADER)
    # Not images by name, or system files: skipped, and said so, but never rows.
    (root / "notes.txt").write_text("shopping list")
    (root / ".DS_Store").write_bytes(b"\0\0")
    photo(sample_photos[0], root / "2019 trip" / "._IMG_0001.JPEG")
    photo(sample_photos[0], root / ".thumbnails" / "IMG_0001.jpg")
    # Names are reported as printable UTF-8 (a Latin-1 byte as \\xe9).
    good_paths = {printable_path(str(p)) for p in good}
    return root, good_paths, {str(p): kind for p, kind in bad.items()}


def test_messy_folder_offline(run_notebook, tmp_path, messy_folder):
    from tests.support.contract import check_contract

    root, good, bad = messy_folder
    run = run_notebook(
        "01_resnet_classification",
        tmp_path / "out",
        pretrained=False,
        data_uri=str(root),
        num_images=None,
        batch_size=1,
        num_actors=3,  # more actors than CPUs: they share them, and reading still gets its share
    )
    check_contract(run, len(good) + len(bad))
    predictions = run.predictions.set_index("path")
    assert set(predictions.index) == good | set(bad)  # no row lost, nothing extra
    predicted = predictions.loc[sorted(good)]
    assert predicted["error"].isna().all()
    assert predicted["label"].notna().all() and predicted["score"].between(0, 1).all()
    reported = predictions.loc[sorted(bad), "error"]
    assert {path: failure_kind(reason) for path, reason in reported.items()} == bad
    assert run.summary["num_predicted"] == len(good) and run.summary["num_failed"] == len(bad)
    assert sum(run.summary["failures"].values()) == len(bad)
    # The notebook itself reports what failed and why.
    report = run.executed.read_text()
    assert "moved away.jpg" in report and "broken symbolic link" in report
