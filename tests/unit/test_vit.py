"""nbhelpers.vit: notebook 02's Hugging Face ViT, pretrained or a tiny offline one, loaded
through ``transformers.pipeline``; its labels as ImageNet indices; the read stage's resize."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline

from nbhelpers import lessons, vit
from nbhelpers.models import WeightsUnavailableError, imagenet_categories
from nbhelpers.reading import prepare_image


@pytest.fixture(scope="module")
def offline_vit_pipeline():
    """The tiny offline ViT, loaded through transformers.pipeline as the notebook does."""
    source = vit.model_source(pretrained=False)
    with vit.model_loading(source):
        return pipeline("image-classification", model=source, device="cpu")


def test_the_read_stage_resize_gives_the_pipeline_its_own_pixels(
    offline_vit_pipeline, sample_photos
):
    """Resized in the read tasks or whole in the actor: the model sees the same pixels."""
    paths = [str(path) for path in sample_photos[:6]]
    resize = vit.read_preprocessing(offline_vit_pipeline)
    keep_whole = vit.read_preprocessing(offline_vit_pipeline, keep_whole=True)
    crops = [prepare_image(path, resize, None).image for path in paths]
    whole = [prepare_image(path, keep_whole, None).image for path in paths]
    assert crops[0].shape == (224, 224, 3) and crops[0].dtype == np.uint8
    assert any(image.shape != (224, 224, 3) for image in whole)
    processor = offline_vit_pipeline.image_processor
    pixels = [
        processor(images=[Image.fromarray(image) for image in images], return_tensors="np")
        for images in (crops, whole)
    ]
    np.testing.assert_array_equal(pixels[0]["pixel_values"], pixels[1]["pixel_values"])
    answers = [
        offline_vit_pipeline([Image.fromarray(image) for image in images], top_k=2, batch_size=6)
        for images in (crops, whole)
    ]
    assert answers[0] == answers[1]
    margins = [best["score"] - second["score"] for best, second in answers[0]]
    assert min(margins) > 0.01  # decisive: the notebook's parity check tests something


def test_offline_vit_is_the_same_in_every_process(offline_vit_pipeline, tmp_path):
    """A second build (another process, another node) gives the same weights."""
    rebuilt = pipeline("image-classification", model=str(vit.offline_vit_folder(tmp_path)))
    mine, theirs = offline_vit_pipeline.model.state_dict(), rebuilt.model.state_dict()
    assert mine.keys() == theirs.keys()
    for name in mine:
        assert torch.equal(mine[name], theirs[name]), name


def test_imagenet_indices():
    categories = imagenet_categories()
    hub_style = [f"{name}, another name" if i % 3 else name for i, name in enumerate(categories)]
    assert vit.imagenet_indices(hub_style) == tuple(range(1000))
    subset = ["tench, Tinca tinca", "golf ball", "Pizza", "not an imagenet class", "crane"]
    assert vit.imagenet_indices(subset) == (0, 574, 963, -1, 517)


def test_every_label_of_the_pipeline_has_its_imagenet_index(offline_vit_pipeline):
    to_imagenet = vit.imagenet_index_by_label(offline_vit_pipeline)
    categories = imagenet_categories()
    assert set(to_imagenet) == set(categories)
    assert to_imagenet["tench"] == 0 and to_imagenet["golf ball"] == 574
    assert to_imagenet["crane"] == categories.index("crane")  # two classes share the name


def test_loading_hides_the_weights_bar_and_keeps_the_download_bars(offline_vit_pipeline):
    import huggingface_hub.utils as hub_utils
    from transformers.utils import logging as transformers_logging

    before = transformers_logging.is_progress_bar_enabled()
    with vit.model_loading("any"):
        assert not transformers_logging.is_progress_bar_enabled()
        assert hub_utils.are_progress_bars_disabled() == bool(
            os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS")
        )
    assert transformers_logging.is_progress_bar_enabled() == before


def test_model_to_load_names_the_model_and_turns_failures_into_advice(tmp_path):
    with vit.model_to_load(pretrained=False) as source:
        assert Path(source).is_dir() and source == vit.model_source(pretrained=False)
    with pytest.raises(WeightsUnavailableError, match="pretrained=False"):
        with vit.model_to_load(pretrained=True, model_id="any/model") as source:
            assert source == "any/model"
            raise OSError("offline")


def test_missing_model_folder_says_what_to_do(tmp_path):
    with pytest.raises(WeightsUnavailableError, match="no-such-model"):
        vit.model_source(pretrained=True, model_id=str(tmp_path / "no-such-model"))
    assert vit.model_source(pretrained=True) == lessons.VIT_MODEL_ID
    assert Path(vit.model_source(pretrained=False)).is_dir()


def test_offline_hub_without_cache_stops_with_a_clear_message(tmp_path):
    """HF_HUB_OFFLINE=1 and an empty cache: no silent fallback, a message naming the way out."""
    code = (
        "from transformers import pipeline\n"
        "from nbhelpers import lessons, vit\n"
        "from nbhelpers.models import WeightsUnavailableError\n"
        "try:\n"
        "    with vit.model_loading(lessons.VIT_MODEL_ID):\n"
        "        pipeline('image-classification', model=lessons.VIT_MODEL_ID)\n"
        "except WeightsUnavailableError as error:\n"
        "    print(type(error).__name__, error)\n"
    )
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("WeightsUnavailableError")  # no silent fallback
    assert "HF_HUB_OFFLINE" in result.stdout  # what stopped it
    assert "pretrained=False" in result.stdout and "hf download" in result.stdout  # the ways out
