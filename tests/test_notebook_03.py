"""Notebook 03 (Faster R-CNN) executed end to end, offline, on CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import NotebookRun, run_smoke_job
from PIL import Image
from test_notebook_01 import SUMMARY_FIELDS as CONTRACT_FIELDS

from nbhelpers.detect import OFFLINE_SCORE_THRESHOLD, as_boxes, as_list

pytestmark = pytest.mark.notebook

NOTEBOOK = "03_fasterrcnn_detection"
SUMMARY_FIELDS = CONTRACT_FIELDS | {
    "parity",
    "score_threshold",
    "num_detections",
    "detections_per_class",
    "mean_average_precision",
}
PREDICTION_COLUMNS = {"path", "width", "height", "boxes", "labels", "scores", "error"}

VOC_OBJECTS = {  # image -> annotated objects (VOC names, 1-based boxes)
    "2008_000001": [("person", (120, 30, 400, 512))],
    "2008_000002": [("cat", (1, 1, 451, 300)), ("dog", (10, 10, 60, 60))],
    "2008_000003": [("tvmonitor", (40, 40, 300, 250))],
}


def check_detections(run, expected_paths: int) -> None:
    """DESIGN.md's contract plus what a detection row promises: boxes on the original image."""
    summary, predictions = run.summary, run.predictions
    assert SUMMARY_FIELDS <= set(summary)
    assert summary["notebook"] == NOTEBOOK
    assert len(predictions) == expected_paths == summary["num_images_in"]
    assert predictions["path"].is_unique
    assert summary["num_predicted"] + summary["num_failed"] == summary["num_images_in"]
    assert summary["num_failed"] == int(predictions["error"].notna().sum())
    assert PREDICTION_COLUMNS <= set(predictions.columns)
    assert "image" not in predictions.columns
    assert summary["images_per_second"] > 0
    assert summary["accuracy"] is None
    assert summary["resources"]["actors"] >= 1
    assert summary["score_threshold"] == OFFLINE_SCORE_THRESHOLD
    assert summary["parity"]["ok"] and summary["parity"]["checked"] == 1

    total = 0
    for row in predictions[predictions["error"].isna()].itertuples():
        width, height = Image.open(row.path).size
        assert (row.width, row.height) == (width, height), row.path
        boxes, labels, scores = as_boxes(row.boxes), as_list(row.labels), as_list(row.scores)
        assert len(boxes) == len(labels) == len(scores) == row.num_detections
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all(), row.path
        assert (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all(), row.path
        assert (boxes[:, :2] <= boxes[:, 2:]).all(), row.path
        assert all(s >= summary["score_threshold"] for s in scores)
        total += len(labels)
    assert total == summary["num_detections"] > 0
    assert sum(summary["detections_per_class"].values()) <= total


def test_sample_photos_offline_through_make_smoke(tmp_path, sample_photos):
    """``make smoke NB=03 P="num_images=6"``: the notebook, its HTML page and the run's index."""
    root = run_smoke_job("03", tmp_path / "smoke", num_images=6)
    folder = root / NOTEBOOK
    run = NotebookRun(folder, folder / f"{NOTEBOOK}.ipynb")
    check_detections(run, 6)
    assert run.summary["parameters"]["pretrained"] is False  # the smoke run's parameters
    assert run.summary["num_failed"] == 0
    assert run.summary["mean_average_precision"] is None  # no annotations beside the photos
    assert run.summary["annotated_images"] == 0

    page = (folder / f"{NOTEBOOK}.html").read_text()
    assert "data:image/png;base64" in page  # the plots travel inside the page
    index = (root / "index.md").read_text()
    row = next(line for line in index.splitlines() if NOTEBOOK in line)
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[1:6] == ["ok", "6", "6", "0", f"{run.summary['images_per_second']:.2f}"]
    assert cells[6] == "no labels" and cells[8].startswith("cpu: 1 actor")
    assert f'href="{NOTEBOOK}/{NOTEBOOK}.html"' in (root / "index.html").read_text()


@pytest.fixture
def voc_folder(tmp_path_factory, sample_photos) -> Path:
    """A small folder in Pascal VOC's layout: JPEGImages/ and Annotations/, one broken file."""
    root = tmp_path_factory.mktemp("voc")
    images, annotations = root / "JPEGImages", root / "Annotations"
    images.mkdir()
    annotations.mkdir()
    for index, photo in enumerate(sample_photos[:4], start=1):
        Image.open(photo).convert("RGB").save(images / f"2008_{index:06d}.jpg", quality=90)
    (images / "2008_000009.jpg").write_bytes((images / "2008_000001.jpg").read_bytes()[:2000])
    for stem, objects in VOC_OBJECTS.items():
        items = "".join(
            f"<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>{x1}</xmin>"
            f"<ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
            for name, (x1, y1, x2, y2) in objects
        )
        (annotations / f"{stem}.xml").write_text(
            f"<annotation><filename>{stem}.jpg</filename>{items}</annotation>"
        )
    return images


def test_voc_folder_with_annotations_offline(run_notebook, tmp_path, voc_folder):
    run = run_notebook(NOTEBOOK, tmp_path, pretrained=False, data_uri=str(voc_folder), batch_size=2)
    check_detections(run, 5)
    failed = run.predictions[run.predictions["error"].notna()]
    assert list(failed["path"].map(lambda p: Path(p).name)) == ["2008_000009.jpg"]
    assert failed["boxes"].isna().all() and (failed["num_detections"] == -1).all()
    evaluation = run.summary["mean_average_precision"]
    assert evaluation is not None and evaluation["images"] == 3
    assert run.summary["annotated_images"] == 3
    for key in ("map", "map_50", "map_75"):
        assert -1 <= evaluation[key] <= 1
    assert run.summary["parameters"]["batch_size"] == 2
