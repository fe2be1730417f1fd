"""What every lesson's run promises (DESIGN.md's results contract), checked on a run's
``summary.json``, its predictions and its executed copy."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from nbhelpers.evaluate import labels_from_paths
from tests.conftest import IMAGENETTE_SYNSETS


def true_indices(paths) -> list[int | None]:
    """The ImageNet class each path's folders name (what the notebook evaluates against)."""
    from torchvision.models import ResNet152_Weights

    return labels_from_paths(list(paths), ResNet152_Weights.DEFAULT.meta["categories"])


SUMMARY_FIELDS = {
    "notebook",
    "num_images_in",
    "num_predicted",
    "num_failed",
    "images_per_second",
    "accuracy",
    "parameters",
    "resources",
}


def check_contract(run, expected_paths: int, listed: int = 1) -> None:
    """What DESIGN.md promises for every run: one row per image, counts that add up.

    ``listed``: how many times each path was listed (the sample lists its photos 4 times).
    """
    summary, predictions = run.summary, run.predictions
    assert SUMMARY_FIELDS <= set(summary)
    assert len(predictions) == expected_paths == summary["num_images_in"]
    assert (predictions["path"].value_counts() == listed).all()
    assert summary["num_predicted"] + summary["num_failed"] == summary["num_images_in"]
    assert summary["num_failed"] == int(predictions["error"].notna().sum())
    assert {"path", "error"} <= set(predictions.columns)
    assert "image" not in predictions.columns
    assert summary["images_per_second"] > 0
    assert summary["resources"]["cpus"] > 0 and summary["resources"]["actors"] >= 1
    check_parity_spans_batches(run)
    assert run.executed.stat().st_size <= MAX_EXECUTED_BYTES, run.executed


MAX_EXECUTED_BYTES = 1.5 * 2**20
"""An executed offline notebook stays small enough to open, share and keep as an example."""


def check_parity_spans_batches(run) -> None:
    """The scaled-up run batched the images otherwise than the single batch did, or its
    parity check compares the same images in the same batch: it could prove nothing."""
    if run.summary["num_images_in"] > 1:
        calls = run.predictions["model_call"].nunique()
        assert calls > 1, "every image went through one model call: give a smaller batch_size"


def check_labelled_run(run, num_images: int, batch_size: int) -> None:
    """A run on the generated Imagenette-layout folder: the contract, true labels, accuracy.

    Notebook 01 runs on that folder in ``tests/system/test_ray_cluster.py``, on a two-node
    cluster: one execution checks both.
    """
    check_contract(run, num_images)
    truth = pd.Series(true_indices(run.predictions["path"]))
    assert truth.notna().all()
    assert set(truth) <= set(IMAGENETTE_SYNSETS.values())
    expected = (truth == run.predictions["label_index"]).mean()
    assert run.summary["accuracy"] == pytest.approx(expected)
    assert run.summary["parity"]["ok"]
    assert run.summary["parameters"]["batch_size"] == batch_size


def by_exercise(notebook, part) -> list[str]:
    """``part(cell)`` of each exercise's solution cells, joined: one text per exercise (an
    exercise begins with a markdown cell ``**N.``)."""
    texts: list[str] = []
    for cell in notebook.cells:
        if cell.cell_type == "markdown" and re.search(r"^\*\*\d\.", cell.source, re.M):
            texts.append("")
        elif "solution" in cell.metadata.get("tags", []) and texts:
            texts[-1] += part(cell)
    return texts


def solution_outputs(executed: Path) -> list[str]:
    """The printed text of each exercise's solution cells, in an executed notebook."""
    notebook = nbformat.read(executed, as_version=4)
    return by_exercise(
        notebook, lambda cell: "".join(output.get("text", "") for output in cell.outputs)
    )
