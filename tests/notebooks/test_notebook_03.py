"""Notebook 03 (Faster R-CNN): its lesson's shape, and offline executions on CPU.

The VOC-folder execution, with its exercises, also sweeps the parameters a user will try: a
folder whose broken file sorts first, ``batch_size=1``, more actors than CPUs. The S3 one:
``num_images=1`` with a ``batch_size`` larger than the data.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pyarrow.parquet as pq
import pytest
from PIL import Image

from nbhelpers.models import OFFLINE_SCORE_THRESHOLD
from nbhelpers.rows import as_boxes, as_list
from tests.conftest import check_quiet, check_small_figures
from tests.support.contract import (
    MAX_EXECUTED_BYTES,
    by_exercise,
    check_parity_spans_batches,
    solution_outputs,
)
from tests.support.contract import SUMMARY_FIELDS as CONTRACT_FIELDS

NOTEBOOK = "03_fasterrcnn_detection"
PATH = Path(__file__).resolve().parents[2] / "notebooks" / f"{NOTEBOOK}.ipynb"
SUMMARY_FIELDS = CONTRACT_FIELDS | {
    "parity",
    "score_threshold",
    "num_detections",
    "detections_per_class",
    "mean_average_precision",
}
PREDICTION_COLUMNS = {"path", "width", "height", "boxes", "labels", "scores", "error", "node_id"}
PREDICTION_COLUMNS |= {"model_call"}
MAX_HELPER_NAMES = 15  # as tests/notebooks/test_lesson_shape.py allows every lesson

VOC_OBJECTS = {  # image -> annotated objects (VOC names, 1-based boxes)
    "2008_000001": [("person", (120, 30, 400, 512))],
    "2008_000002": [("cat", (1, 1, 451, 300)), ("dog", (10, 10, 60, 60))],
    "2008_000003": [("tvmonitor", (40, 40, 300, 250))],
}


def cells(tag: str | None = None) -> list[nbformat.NotebookNode]:
    """The notebook's code cells, or those tagged ``tag``."""
    code = [cell for cell in nbformat.read(PATH, as_version=4).cells if cell.cell_type == "code"]
    return [cell for cell in code if tag is None or tag in cell.metadata.get("tags", [])]


def test_the_job_is_in_the_pipeline_cells_and_runs_as_a_plain_script():
    job = "\n".join(cell.source for cell in cells("pipeline"))
    ast.parse(job)  # no magics, no top-level await
    assert "display(" not in job
    for definition in (
        "def read_images(batch",
        "def detect(model",
        "def to_photo_pixels(",
        "class FasterRCNNPredictor:",
        "SCHEMA = pa.schema(",
    ):
        assert definition in job, definition
    call = job[job.index("    def __call__(self") :]
    call = call[: call.index("\n\n") if "\n\n" in call else None]
    for step in ("detect(self.model", "to_photo_pixels(", "pa.table(rows, schema=SCHEMA)"):
        assert step in call, step  # the boxes go back to the photo's pixels in plain sight
    for call_name in ("open_image_with_size(", "ActorPoolStrategy(", "STOP_ON_ACTOR_CRASH"):
        assert call_name in job, call_name
    assert job.count("map_batches(") == 2 and "write_parquet(" in job
    assert "read_predictions(output, source.paths, columns=SCHEMA.names)" in job


def test_the_lesson_keeps_to_its_own_subject_with_few_helpers():
    notebook = nbformat.read(PATH, as_version=4)
    exercises = next(i for i, c in enumerate(notebook.cells) if c.source.startswith("## Exercises"))
    lesson = "\n".join(c.source for c in notebook.cells[:exercises] if c.cell_type == "code")
    for gone in ("autocast", "stats()", "bfloat16", "with_backbone_in", "image_rows"):
        assert gone not in lesson, gone
    assert "draw_bounding_boxes(" in lesson and "compare_detections" not in lesson
    modules = "cluster|destination|detection|evaluate|reading|results|sources|visualize"
    helpers = set(re.findall(rf"\b(?:{modules})\.\w+", lesson))
    assert len(helpers) <= MAX_HELPER_NAMES, sorted(helpers)
    assert "evaluate.check_detection_parity" in helpers  # compare_detections, with its tolerance
    assert all(cell.metadata["jupyter"]["source_hidden"] for cell in cells("solution"))
    solutions = by_exercise(nbformat.read(PATH, as_version=4), lambda cell: cell.source)
    assert 2 <= len(solutions) <= 3
    for source in solutions:
        assert "ray.data." in source or "dataset." in source
        assert 'print(f"Answer:' in source
    assert "docs.ray.io" in PATH.read_text()


def check_detections(run, expected_paths: int, parity_checked: int) -> None:
    """DESIGN.md's contract plus what a detection row promises: boxes on the original photo."""
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

    total, per_class = 0, {}
    for row in predictions[predictions["error"].isna()].itertuples():
        width, height = Image.open(row.path).size
        assert (row.width, row.height) == (width, height), row.path
        boxes, labels, scores = as_boxes(row.boxes), as_list(row.labels), as_list(row.scores)
        assert len(boxes) == len(labels) == len(scores)
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all(), row.path
        assert (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all(), row.path
        assert (boxes[:, :2] <= boxes[:, 2:]).all(), row.path
        assert all(s >= summary["score_threshold"] for s in scores)
        assert list(scores) == sorted(scores, reverse=True)  # most confident first
        total += len(labels)
        for label in labels:
            per_class[label] = per_class.get(label, 0) + 1
    assert total == summary["num_detections"] > 0
    for label, count in summary["detections_per_class"].items():
        assert per_class[label] == count
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
    """The single batch reads the first four files, one of them broken; alone in its block,
    the failed row's null boxes still share the Parquet schema of the others; mAP against the
    annotations; the exercises run and answer."""
    run = run_notebook(
        NOTEBOOK,
        tmp_path,
        exercises=True,
        pretrained=False,
        data_uri=str(voc_folder),
        batch_size=1,
        num_actors=3,
    )
    check_detections(run, 5, parity_checked=3)
    assert check_small_figures(run.executed) >= 3  # the single batch, the run, exercise 2
    failed = run.predictions[run.predictions["error"].notna()]
    assert list(failed["path"].map(lambda p: Path(p).name)) == ["2008_000000.jpg"]
    assert failed["boxes"].isna().all() and (failed[["width", "height"]] == 0).all().all()
    assert "truncated" in failed["error"].iloc[0]
    files = sorted((tmp_path / "predictions").glob("*.parquet"))
    tables = [pq.read_table(f) for f in files]
    assert any(failed["path"].iloc[0] in table.column("path").to_pylist() for table in tables)
    assert all(str(table.schema.field("boxes").type).startswith("list") for table in tables)
    evaluation = run.summary["mean_average_precision"]
    assert evaluation is not None and evaluation["images"] == 3
    for key in ("map", "map_50", "map_75"):
        assert -1 <= evaluation[key] <= 1
    assert run.summary["parameters"]["batch_size"] == 1
    assert run.summary["resources"]["actors"] == 3

    answers = solution_outputs(run.executed)
    assert len(answers) == 3 and all("Answer: " in answer for answer in answers)
    # 1: the read stage's image column holds the photos at their own (different) shapes.
    shapes = set(re.findall(r"\((\d+), (\d+), 3\)", answers[0]))
    assert len(shapes) > 1 and int(re.search(r"Answer: (\d+)", answers[0])[1]) == 4
    # 2: a photo three times the first one's size: its row has that size, boxes within it.
    width, height = Image.open(voc_folder / "2008_000001.jpg").size
    assert f"{3 * width} x {3 * height}" in answers[1]
    boxes = re.findall(r"\[([\d.]+), ([\d.]+), ([\d.]+), ([\d.]+)\]", answers[1])
    last = [float(value) for value in boxes[-1]]  # the box in the photo's own pixels
    assert last[2] <= 3 * width and last[3] <= 3 * height
    # 3: the counts at the run's threshold are those of summary.json.
    assert int(re.search(r"Answer: (\d+)", answers[2])[1]) == run.summary["num_detections"]


@pytest.mark.notebook
@pytest.mark.long
def test_one_sample_photo_with_a_batch_larger_than_the_data_results_to_s3(
    run_notebook, tmp_path, private_s3
):
    from tests.conftest import run_into_bucket

    uri = "s3://team-photos/results/03"
    parameters = {"pretrained": False, "data_uri": "sample", "num_images": 1, "batch_size": 64}
    run = run_into_bucket(NOTEBOOK, tmp_path, private_s3, uri, **parameters)
    check_detections(run, 1, parity_checked=1)
    assert run.summary["num_failed"] == 0
    assert run.summary["mean_average_precision"] is None  # no annotations beside the photos
    assert "image/jpeg" in run.executed.read_text()  # this run's own drawings, photos as JPEG
