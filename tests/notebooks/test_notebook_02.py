"""Notebook 02 (a Hugging Face ViT through transformers.pipeline): the notebook's shape and its classify against the pipeline's own call, and the notebook executed end to end,
offline, on CPU.

Three executions cover the parameters a user will try: the sample photos with the default
batch size (larger than the 12 photos) and the exercises; a labelled folder whose broken
files sort first, with ``batch_size=1``; and one image with more actors than CPUs.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import numpy as np
import pytest

from benchmarks import pipelines
from nbhelpers import lessons, vit
from nbhelpers.decode import failure_kind
from nbhelpers.evaluate import labels_from_paths
from nbhelpers.models import imagenet_categories
from nbhelpers.reading import open_image
from nbhelpers.sources import SAMPLE_REPEATS
from tests.conftest import IMAGENETTE_SYNSETS, ROOT, check_quiet, check_small_figures, copy_tree
from tests.support import quirky_images as quirks
from tests.support.contract import check_contract

NOTEBOOK = "02_vit_classification"
NOTEBOOK_PATH = ROOT / "notebooks" / f"{NOTEBOOK}.ipynb"


# --- the notebook as a lesson (no execution) -----------------------------------------

HELPER_MODULES = (
    "destination|evaluate|models|pool|reading|results|rows|runtime|sources|visualize|vit"
)


def code_cells(notebook) -> list:
    """The lesson's code cells (not the first one, which installs what a new kernel lacks)."""
    return [
        cell
        for cell in notebook.cells
        if cell.cell_type == "code" and "install" not in cell.metadata.get("tags", [])
    ]


def before_exercises(notebook) -> list:
    """The cells before the ``## Exercises`` heading."""
    headings = [cell.source.startswith("## Exercises") for cell in notebook.cells]
    return notebook.cells[: headings.index(True)]


def test_the_lesson_is_in_the_notebooks_own_cells():
    notebook = nbformat.read(NOTEBOOK_PATH, as_version=4)
    pipeline_code = "\n".join(pipelines.pipeline_cells(NOTEBOOK_PATH))
    for written in [
        "def read_images(",
        "reading.open_image(",
        "def classify(",
        "class ViTPredictor",
        "def __call__(",
        "SCHEMA = pa.schema(",
        'pipeline("image-classification"',
        "do_resize=False",
        "device=vit_pipeline.device",
        "ray.data.from_items(",
        "ActorPoolStrategy(size=plan.num_actors)",
        "fn_constructor_kwargs=",
        "**runtime.STOP_ON_ACTOR_CRASH",
        "write_parquet(",
        "results.read_predictions(output, source.paths, columns=SCHEMA.names)",
    ]:
        assert written in pipeline_code, written
    # the pipeline cells run as a plain script: no IPython display, magics or top-level await
    for cell in pipelines.pipeline_cells(NOTEBOOK_PATH):
        assert "display(" not in cell and "await " not in cell
        assert not any(line.lstrip().startswith(("%", "!")) for line in cell.splitlines())
    code = "\n".join(cell.source for cell in code_cells(notebook))
    # GPU precision and stats() are notebook 04's; "classifier" is a package module's name
    for absent in ["bfloat16", "float16", "autocast", "stats(", "classifier =", "classifier("]:
        assert absent not in code, absent
    lesson = "\n".join(c.source for c in before_exercises(notebook) if c.cell_type == "code")
    helpers = set(re.findall(rf"\b(?:{HELPER_MODULES})\.\w+", lesson))
    assert len(helpers) <= 16, sorted(helpers)  # as many as notebook 01 (short_names included)
    text = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "markdown")
    assert "What you will learn" in text and "## Exercises" in text and "## Next steps" in text
    assert "<!-- time table: written by `make time-tables` from a measured run -->" in text
    for api in ["from_items", "map_batches", "ActorPoolStrategy", "write_parquet"]:
        assert re.search(rf"docs\.ray\.io/\S+{api}", text), api


def test_two_or_three_hidden_solutions_each_with_an_answer():
    notebook = nbformat.read(NOTEBOOK_PATH, as_version=4)
    solutions = [
        cell for cell in code_cells(notebook) if "solution" in cell.metadata.get("tags", [])
    ]
    assert 2 <= len(solutions) <= 3
    for cell in solutions:
        assert cell.metadata["jupyter"] == {"source_hidden": True}
        assert "Answer: " in cell.source


def test_committed_without_outputs():
    notebook = nbformat.read(NOTEBOOK_PATH, as_version=4)
    assert [cell.id for cell in notebook.cells] == [f"cell-{n}" for n in range(len(notebook.cells))]
    for cell in code_cells(notebook):
        assert cell.outputs == [] and cell.execution_count is None


def test_classify_gives_the_pipelines_own_answers(sample_photos):
    """The notebook's split (the processor's resize in the read function, its rescale and
    normalisation in classify) against the pipeline's own call on the whole photos."""
    names = ["load_vit_pipeline", "read_images", "classify"]
    lesson = pipelines.notebook_definitions(NOTEBOOK_PATH, names)
    vit_pipeline = lesson["load_vit_pipeline"](False, lessons.VIT_MODEL_ID, "cpu")
    preprocess = vit.read_preprocessing(vit_pipeline)
    paths = np.array([str(path) for path in sample_photos[:6]] + [str(sample_photos[0]) + ".no"])
    batch = lesson["read_images"]({"path": paths}, None, preprocess)
    assert batch["image"].shape == (7, 224, 224, 3) and batch["image"].dtype == np.uint8
    assert [error is None for error in batch["error"]] == [True] * 6 + [False]
    mine = lesson["classify"](vit_pipeline, batch["image"][:6])
    photos = [open_image(path, None, preprocess) for path in paths[:6]]
    theirs = vit_pipeline(photos, top_k=2, batch_size=6)
    assert list(mine["label"]) == [best["label"] for best, _ in theirs]
    np.testing.assert_allclose(mine["score"], [best["score"] for best, _ in theirs], atol=1e-5)
    margins = [best["score"] - second["score"] for best, second in theirs]
    np.testing.assert_allclose(mine["margin"], margins, atol=1e-5)
    labels = vit_pipeline.model.config.id2label
    assert [labels[int(i)] for i in mine["label_index"]] == list(mine["label"])


# --- the notebook, executed ----------------------------------------------------------


def stdout_of(executed: Path, fragment: str) -> str:
    """What the first code cell whose source contains ``fragment`` printed."""
    notebook = nbformat.read(executed, as_version=4)
    cell = next(cell for cell in code_cells(notebook) if fragment in cell.source)
    return "".join(o.text for o in cell.outputs if o.output_type == "stream")


@pytest.mark.notebook
def test_sample_photos_offline(run_notebook, tmp_path, sample_photos):
    """The lesson's offline parameters: the sample's 48 rows make three batches of 16, where
    the single batch's 8 photos come back beside other ones; the exercises run."""
    parameters = {"pretrained": False, "data_uri": "sample"}
    run = run_notebook(NOTEBOOK, tmp_path, exercises=True, **parameters)
    check_contract(run, len(sample_photos) * SAMPLE_REPEATS, listed=SAMPLE_REPEATS)
    summary, predictions = run.summary, run.predictions
    assert summary["notebook"] == NOTEBOOK and summary["num_failed"] == 0
    assert summary["accuracy"] is None  # the sample photos carry no labels
    assert summary["parity"] == {"checked": 8, "matching": 8, "ok": True}
    assert summary["parameters"]["model_id"] == lessons.VIT_MODEL_ID
    assert summary["parameters"]["batch_size"] == 16
    assert summary["model"] == str(vit.model_source(pretrained=False))
    assert list(predictions.columns[:6]) == [
        "path",
        "error",
        "label_index",
        "label",
        "score",
        "margin",
    ]
    assert predictions["model_call"].nunique() == 3  # 48 rows in batches of 16
    assert set(predictions["label"]) <= set(imagenet_categories())
    assert predictions["label_index"].between(0, 999).all()
    assert predictions["score"].between(0, 1).all()
    # the tiny offline ViT answers decisively and differently for different photos
    assert (predictions["margin"] > 0.01).all() and predictions["label"].nunique() >= 3
    text = run.executed.read_text()
    assert '"output_type": "error"' not in text
    check_quiet(run.executed)
    assert check_small_figures(run.executed) == 1  # the grid of photos and their labels
    # the exercises' solutions ran and answered
    notebook = nbformat.read(run.executed, as_version=4)
    solutions = [
        cell for cell in code_cells(notebook) if "solution" in cell.metadata.get("tags", [])
    ]
    for cell in solutions:
        printed = "".join(o.text for o in cell.outputs if o.output_type == "stream")
        assert "Answer: " in printed, cell.source[:80]
        assert cell.metadata["papermill"]["duration"] < 60  # 15 s on an idle 2-core machine
    exercise_1 = stdout_of(run.executed, "answers = vit_pipeline(photos")
    assert "Same labels: True" in exercise_1
    moved = float(exercise_1.split("largest score difference: ")[1].split()[0])
    assert moved < 1e-4, exercise_1
    assert "times the bytes of its 224x224 uint8 image" in exercise_1


@pytest.fixture()
def broken_first_folder(tmp_path, imagenette_folder) -> tuple[Path, dict[str, str]]:
    """The labelled folder, with an empty and a truncated file that sort before every photo."""
    root = copy_tree(imagenette_folder, tmp_path / "val")
    first = sorted(folder for folder in root.iterdir() if folder.is_dir())[0]
    bad = {
        quirks.write_empty(first / "000 empty.JPEG"): "empty file",
        quirks.write_truncated_jpeg(first / "001 cut off.JPEG"): "truncated image",
    }
    return root, {str(path): kind for path, kind in bad.items()}


@pytest.mark.notebook
@pytest.mark.long
def test_labelled_folder_broken_files_first_batch_size_one_more_actors_than_cpus(
    run_notebook, tmp_path, broken_first_folder
):
    root, bad = broken_first_folder
    run = run_notebook(
        NOTEBOOK,
        tmp_path / "out",
        pretrained=False,
        data_uri=str(root),
        batch_size=1,
        num_actors=3,
    )
    check_contract(run, 8 + len(bad))
    predictions = run.predictions.set_index("path")
    reported = predictions.loc[sorted(bad), "error"]
    assert {path: failure_kind(reason) for path, reason in reported.items()} == bad
    good = predictions.drop(index=sorted(bad))
    assert good["error"].isna().all() and good["label"].notna().all()
    truth = labels_from_paths(list(good.index), imagenet_categories())
    assert set(truth) <= set(IMAGENETTE_SYNSETS.values())
    expected = (np.array(truth) == good["label_index"].to_numpy()).mean()
    assert run.summary["accuracy"] == pytest.approx(expected)
    # the single batch is the first 8 files: the 2 broken ones and 6 photos, compared
    assert run.summary["parity"] == {"checked": 6, "matching": 6, "ok": True}
    assert run.summary["parameters"]["batch_size"] == 1
    assert run.summary["resources"]["actors"] == 3
    assert "3 actors share" in " ".join(run.summary["resources"]["actor_pool"]["notes"])
    check_quiet(run.executed)


@pytest.mark.notebook
@pytest.mark.long
def test_one_image_results_to_s3(run_notebook, tmp_path, private_s3):
    """The smallest run a learner tries: one photo, one batch, the exercises on it; the
    results go to a bucket of a local S3 server."""
    from tests.conftest import run_into_bucket

    uri = "s3://team-photos/results/02"
    run = run_into_bucket(
        NOTEBOOK, tmp_path, private_s3, uri, pretrained=False, data_uri="sample", num_images=1
    )
    check_contract(run, 1)
    assert run.summary["parity"] == {"checked": 1, "matching": 1, "ok": True}
    check_quiet(run.executed)
