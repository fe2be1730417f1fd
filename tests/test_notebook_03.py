"""Notebook 03 (Faster R-CNN): its lesson's shape, and two offline executions on CPU.

The two executions also sweep the parameters a user will try: a folder whose broken file
sorts first, ``batch_size=1``, more actors than CPUs; ``num_images=1`` with a ``batch_size``
larger than the data.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pyarrow.parquet as pq
import pytest
from conftest import check_quiet, check_small_figures
from PIL import Image
from test_notebook_01 import MAX_EXECUTED_BYTES, check_parity_spans_batches
from test_notebook_01 import SUMMARY_FIELDS as CONTRACT_FIELDS

from nbhelpers.columns import as_boxes, as_list
from nbhelpers.detection import OFFLINE_SCORE_THRESHOLD, PLACEHOLDERS

NOTEBOOK = "03_fasterrcnn_detection"
PATH = Path(__file__).resolve().parent.parent / "notebooks" / f"{NOTEBOOK}.ipynb"
SUMMARY_FIELDS = CONTRACT_FIELDS | {
    "parity",
    "score_threshold",
    "num_detections",
    "detections_per_class",
    "mean_average_precision",
    "annotated_images",
}
PREDICTION_COLUMNS = {"path", "width", "height", "boxes", "labels", "scores", "error", "node_id"}
PREDICTION_COLUMNS |= {"model_call"}

VOC_OBJECTS = {  # image -> annotated objects (VOC names, 1-based boxes)
    "2008_000001": [("person", (120, 30, 400, 512))],
    "2008_000002": [("cat", (1, 1, 451, 300)), ("dog", (10, 10, 60, 60))],
    "2008_000003": [("tvmonitor", (40, 40, 300, 250))],
}


def code_cells() -> list[nbformat.NotebookNode]:
    return [cell for cell in nbformat.read(PATH, as_version=4).cells if cell.cell_type == "code"]


def test_the_lesson_keeps_ray_data_and_the_model_call_in_its_own_short_cells():
    cells = code_cells()
    source = "\n".join(cell.source for cell in cells)
    for call in ("map_batches(", "ActorPoolStrategy(", "take_batch(", "write_parquet("):
        assert call in source, call
    for call in (
        "inference_mode()",
        "draw_bounding_boxes(",
        "first_decoded(",
        "predicted_columns(",
    ):
        assert call in source, call
    solutions = [cell for cell in cells if "solution" in cell.metadata.get("tags", [])]
    assert len(solutions) >= 3
    assert all(cell.metadata["jupyter"]["source_hidden"] for cell in solutions)
    assert "docs.ray.io" in PATH.read_text()


def check_detections(run, expected_paths: int, parity_checked: int) -> None:
    """DESIGN.md's contract plus what a detection row promises: boxes on the original image."""
    summary, predictions = run.summary, run.predictions
    assert SUMMARY_FIELDS <= set(summary)
    assert summary["notebook"] == NOTEBOOK
    assert len(predictions) == expected_paths == summary["num_images_in"]
    assert predictions["path"].is_unique
    assert summary["num_predicted"] + summary["num_failed"] == summary["num_images_in"]
    assert summary["num_failed"] == int(predictions["error"].notna().sum())
    assert PREDICTION_COLUMNS <= set(predictions.columns)
    check_parity_spans_batches(run)
    assert run.executed.stat().st_size <= MAX_EXECUTED_BYTES, run.executed
    assert "image" not in predictions.columns
    assert summary["images_per_second"] > 0
    assert summary["accuracy"] is None
    assert summary["resources"]["actors"] >= 1
    assert summary["score_threshold"] == OFFLINE_SCORE_THRESHOLD
    assert summary["parity"] == {"checked": parity_checked, "matching": parity_checked, "ok": True}

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
        total += sum(label not in PLACEHOLDERS for label in labels)  # 80 classes, no N/A
    assert total == summary["num_detections"] > 0
    assert sum(summary["detections_per_class"].values()) <= total
    check_quiet(run.executed)


@pytest.fixture
def voc_folder(tmp_path_factory, sample_photos) -> Path:
    """A small folder in Pascal VOC's layout, whose first file (by name) is broken."""
    root = tmp_path_factory.mktemp("voc")
    images, annotations = root / "JPEGImages", root / "Annotations"
    images.mkdir()
    annotations.mkdir()
    for index, photo in enumerate(sample_photos[:4], start=1):
        Image.open(photo).convert("RGB").save(images / f"2008_{index:06d}.jpg", quality=90)
    (images / "2008_000000.jpg").write_bytes((images / "2008_000001.jpg").read_bytes()[:2000])
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


@pytest.mark.notebook
def test_voc_folder_broken_file_first_one_photo_per_batch_more_actors_than_cpus(
    run_notebook, tmp_path, voc_folder
):
    """The single batch skips the broken first file; alone in its block, the failed row's null
    boxes still share the Parquet schema of the others; mAP against the annotations. The
    exercises run too."""
    run = run_notebook(
        NOTEBOOK,
        tmp_path,
        exercises=True,
        pretrained=False,
        data_uri=str(voc_folder),
        batch_size=1,
        num_actors=3,
    )
    check_detections(run, 5, parity_checked=4)
    assert check_small_figures(run.executed) >= 2  # the single batch and the run's boxes
    # Exercise 1 counts what section 6 counted: COCO's classes, the "N/A" placeholders left out.
    answer = f"Answer: {run.summary['num_detections']} detections at the run's threshold"
    assert answer in run.executed.read_text()
    failed = run.predictions[run.predictions["error"].notna()]
    assert list(failed["path"].map(lambda p: Path(p).name)) == ["2008_000000.jpg"]
    assert failed["boxes"].isna().all() and (failed["num_detections"] == -1).all()
    assert "truncated" in failed["error"].iloc[0]
    # The failed row's null boxes were written with the others' type (one schema in every
    # Parquet file, about 1,000 rows a file), and pandas read them back above.
    files = sorted((tmp_path / "predictions").glob("*.parquet"))
    tables = [pq.read_table(f) for f in files]
    assert any(failed["path"].iloc[0] in table.column("path").to_pylist() for table in tables)
    assert all(str(table.schema.field("boxes").type).startswith("list") for table in tables)
    evaluation = run.summary["mean_average_precision"]
    assert evaluation is not None and evaluation["images"] == 3
    assert run.summary["annotated_images"] == 3
    for key in ("map", "map_50", "map_75"):
        assert -1 <= evaluation[key] <= 1
    assert run.summary["parameters"]["batch_size"] == 1
    assert run.summary["resources"]["actors"] == 3


@pytest.mark.notebook
@pytest.mark.long
def test_one_sample_photo_with_a_batch_larger_than_the_data_results_to_s3(
    run_notebook, tmp_path, private_s3
):
    from conftest import run_into_bucket

    uri = "s3://team-photos/results/03"
    parameters = {"pretrained": False, "data_uri": "sample", "num_images": 1, "batch_size": 64}
    run = run_into_bucket(NOTEBOOK, tmp_path, private_s3, uri, **parameters)
    check_detections(run, 1, parity_checked=1)
    assert run.summary["num_failed"] == 0
    assert run.summary["mean_average_precision"] is None  # no annotations beside the photos
    assert run.summary["annotated_images"] == 0
    executed = run.executed.read_text()
    assert "image/jpeg" in executed  # this run's own drawings, photos as JPEG
