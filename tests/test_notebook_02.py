"""Notebook 02 (Hugging Face ViT through transformers.pipeline): its helpers, and the notebook
executed end to end, offline, on CPU."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from test_notebook_01 import check_contract  # tests/ is on sys.path (rootdir-relative imports)

from nbhelpers.labels import IMAGENETTE_SYNSETS
from nbhelpers.models import (
    WeightsUnavailableError,
    build_image_classifier,
    image_classifier_spec,
    imagenet_categories,
    imagenet_indices,
    offline_vit_folder,
)
from nbhelpers.pipeline import prepare_image
from nbhelpers.predict import classify_crops, classify_images
from nbhelpers.preprocess import KeepDecoded

NOTEBOOK = "02_vit_classification"


@pytest.mark.notebook
def test_sample_photos_offline(run_notebook, tmp_path, sample_photos):
    run = run_notebook(NOTEBOOK, tmp_path, pretrained=False, data_uri="sample")
    check_contract(run, len(sample_photos))
    summary, predictions = run.summary, run.predictions
    assert summary["num_failed"] == 0
    assert summary["accuracy"] is None  # the sample photos carry no labels
    assert summary["parity"]["ok"] and summary["parity"]["checked"] == 10
    assert predictions["label"].notna().all()
    assert set(predictions["label"]) <= set(imagenet_categories())
    assert (predictions["label_index"].between(0, 999)).all()
    assert predictions["score"].between(0, 1).all()
    # the tiny offline ViT answers decisively and differently for different photos
    assert (predictions["margin"] > 0.01).all()
    assert predictions["label"].nunique() >= 3
    # both ways of running the image processor were timed, and agree with the single batch
    variants = summary["variants"]
    assert variants["separate_preprocessing_stage"]["images_per_second"] > 0
    assert variants["processor_in_actor"]["images_per_second"] > 0
    assert variants["processor_in_actor"]["parity"]["ok"]
    assert summary["parameters"]["model_id"] == "google/vit-base-patch16-224"


@pytest.mark.notebook
def test_labelled_imagenette_folder(run_notebook, tmp_path, imagenette_folder):
    run = run_notebook(
        NOTEBOOK,
        tmp_path,
        pretrained=False,
        data_uri=str(imagenette_folder),
        batch_size=3,
        compare_variants=False,
    )
    check_contract(run, 8)
    predictions = run.predictions
    truth = predictions["true_index"]
    assert truth.notna().all()
    assert set(truth) <= set(IMAGENETTE_SYNSETS.values())
    expected = (predictions["true_index"] == predictions["label_index"]).mean()
    assert run.summary["accuracy"] == pytest.approx(expected)
    assert run.summary["parity"]["ok"]
    assert run.summary["parameters"]["batch_size"] == 3
    assert set(run.summary["variants"]) == {"separate_preprocessing_stage"}


@pytest.fixture(scope="module")
def offline_classifier():
    """The tiny offline ViT, loaded through transformers.pipeline, and its spec."""
    classifier = build_image_classifier(str(offline_vit_folder()), "cpu")
    return classifier, image_classifier_spec(classifier)


def test_separate_preprocessing_reproduces_the_pipeline(offline_classifier, sample_photos):
    """uint8 crops from the processor's own resize, normalised later, give the pipeline's answers."""
    from PIL import Image

    classifier, spec = offline_classifier
    paths = [str(path) for path in sample_photos[:6]]
    whole = [prepare_image(path, KeepDecoded(spec.preprocess.min_side), None) for path in paths]
    crops = [prepare_image(path, spec.preprocess, None) for path in paths]
    assert crops[0].image.shape == (224, 224, 3) and crops[0].image.dtype == np.uint8
    by_pipeline = classify_images(classifier, [Image.fromarray(item.image) for item in whole], spec)
    by_crops = classify_crops(classifier, np.stack([item.image for item in crops]), spec)
    assert list(by_pipeline["label"]) == list(by_crops["label"])
    assert np.abs(by_pipeline["score"] - by_crops["score"]).max() < 1e-4
    assert list(by_pipeline["label_index"]) == list(by_crops["label_index"])
    assert (by_crops["margin"] > 0.01).all()  # decisive: parity tests something


def test_offline_vit_is_the_same_in_every_process(offline_classifier, tmp_path):
    """A second build (another process, another node) gives the same weights."""
    import torch

    classifier, _ = offline_classifier
    rebuilt = build_image_classifier(str(offline_vit_folder(tmp_path)), "cpu")
    for (name, mine), (_, theirs) in zip(
        classifier.model.state_dict().items(), rebuilt.model.state_dict().items(), strict=True
    ):
        assert torch.equal(mine, theirs), name


def test_imagenet_indices():
    categories = imagenet_categories()
    hub_style = [f"{name}, another name" if i % 3 else name for i, name in enumerate(categories)]
    assert imagenet_indices(hub_style) == tuple(range(1000))
    subset = ["tench, Tinca tinca", "golf ball", "Pizza", "not an imagenet class", "crane"]
    assert imagenet_indices(subset) == (0, 574, 963, -1, 517)


def test_missing_model_folder_says_what_to_do(tmp_path):
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        build_image_classifier(str(tmp_path / "no-such-model"))


def test_offline_hub_without_cache_stops_with_a_clear_message(tmp_path):
    """HF_HUB_OFFLINE=1 and an empty cache: no silent fallback, a message naming the way out."""
    code = (
        "from nbhelpers.models import build_image_classifier, WeightsUnavailableError\n"
        "try:\n"
        "    build_image_classifier('google/vit-base-patch16-224')\n"
        "except WeightsUnavailableError as error:\n"
        "    print(error)\n"
    )
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "HF_HUB_OFFLINE=1 is set" in result.stdout
    assert "pretrained=False" in result.stdout
