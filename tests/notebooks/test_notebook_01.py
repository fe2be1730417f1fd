"""Notebook 01 (ResNet152) executed end to end, offline, on CPU."""

from __future__ import annotations

import re

import pytest

from nbhelpers.sources import SAMPLE_REPEATS
from tests.conftest import (
    IMAGE_KEYS,
    IMAGENETTE_SYNSETS,
    PRIVATE_URI,
    PUBLIC_URI,
    check_small_figures,
    execute_with_nbmake,
    run_into_bucket,
)
from tests.support.contract import check_contract, solution_outputs, true_indices

pytestmark = pytest.mark.notebook


def test_sample_photos_offline_through_nbmake(tmp_path, sample_photos):
    """Run by ``pytest --nbmake`` on a copy prepared with the lesson's offline parameters:
    the sample's 48 rows make three batches of 16, three model calls."""
    parameters = {"pretrained": False, "data_uri": "sample"}
    run = execute_with_nbmake("01_resnet_classification", tmp_path, **parameters)
    check_contract(run, len(sample_photos) * SAMPLE_REPEATS, listed=SAMPLE_REPEATS)
    assert '"output_type": "error"' not in run.executed.read_text()
    assert "Wrote" in run.executed.read_text()  # the executed copy kept its outputs
    assert check_small_figures(run.executed) >= 1  # the grid of photos and their labels
    # the exercises ran and answered: batch sizes, a broken folder through the pool, ResNet18
    answers = solution_outputs(run.executed)
    assert len(answers) == 3 and all("Answer: " in answer for answer in answers)
    speedup = re.search(r"Answer: \D*(\d+) \D*([\d.]+)", answers[0])  # batches of 4: x times
    assert speedup and int(speedup[1]) == 4 and float(speedup[2]) > 0
    assert re.search(r"Answer: (\d+)\D+(\d+)", answers[1]).groups() == ("3", "3")  # rows, files
    assert int(re.search(r"Answer: (\d+)", answers[2])[1]) == 16  # ResNet18 on 16 images
    assert run.predictions["model_call"].nunique() == 3  # 48 rows in batches of 16
    assert run.summary["num_failed"] == 0
    assert run.summary["accuracy"] is None  # the sample photos carry no labels
    assert run.summary["parity"]["ok"] and run.summary["parity"]["checked"] == 8
    assert run.predictions["label"].notna().all()
    assert (run.predictions["score"].between(0, 1)).all()


NB01 = "01_resnet_classification"


@pytest.mark.notebook
@pytest.mark.parametrize("mode", [pytest.param("anonymous", marks=pytest.mark.long), "credentials"])
def test_notebook_01_reads_s3(run_notebook, tmp_path, public_s3, private_s3, mode):
    """Notebook 01 through Ray Data on S3: public anonymously, private with credentials."""
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
