"""nbhelpers.models: ResNet152 and Faster R-CNN, pretrained or seeded offline; ImageNet's
vocabulary against torchvision's own category list."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models import ResNet152_Weights, resnet152
from torchvision.models.detection import FasterRCNN_ResNet50_FPN_V2_Weights

from nbhelpers.models import (
    OFFLINE_SCORE_THRESHOLD,
    PRETRAINED_SCORE_THRESHOLD,
    WeightsUnavailableError,
    build_fasterrcnn,
    build_resnet152,
    choose_score_threshold,
    imagenet_categories,
    imagenet_synsets,
    load_pretrained,
    synset_index,
)
from nbhelpers.reading import prepare_image
from tests.conftest import IMAGENETTE_SYNSETS

CATEGORIES = ResNet152_Weights.DEFAULT.meta["categories"]
COCO = tuple(FasterRCNN_ResNet50_FPN_V2_Weights.DEFAULT.meta["categories"])

# Imagenette's ten classes as fastai names them, by synset.
IMAGENETTE_NAMES = {
    "n01440764": "tench",
    "n02102040": "English springer",
    "n02979186": "cassette player",
    "n03000684": "chain saw",
    "n03028079": "church",
    "n03394916": "French horn",
    "n03417042": "garbage truck",
    "n03425413": "gas pump",
    "n03445777": "golf ball",
    "n03888257": "parachute",
}


def test_the_category_file_is_torchvisions_list():
    assert imagenet_categories() == tuple(CATEGORIES)


def test_imagenette_synsets_name_torchvisions_categories():
    assert len(CATEGORIES) == 1000
    assert set(IMAGENETTE_SYNSETS) == set(IMAGENETTE_NAMES)
    for synset, index in IMAGENETTE_SYNSETS.items():
        assert CATEGORIES[index] == IMAGENETTE_NAMES[synset], synset


def test_the_imagenet_synset_list_lines_up_with_torchvisions_categories():
    synsets = imagenet_synsets()
    assert len(synsets) == 1000 and list(synsets) == sorted(set(synsets))
    # Spot checks across the whole range: a shifted or reordered list fails these.
    known = {
        "n01443537": "goldfish",
        "n01530575": "brambling",
        "n02085620": "Chihuahua",
        "n02123045": "tabby",
        "n02504458": "African elephant",
        "n03584829": "iron",
        "n04591713": "wine bottle",
        "n07714571": "head cabbage",
        "n09229709": "bubble",
        "n15075141": "toilet tissue",
    }
    for synset, name in known.items():
        assert CATEGORIES[synset_index()[synset]] == name, synset


# ResNet152 ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def offline_resnet():
    return build_resnet152(pretrained=False)


def test_offline_resnet_is_the_same_in_every_build(offline_resnet):
    again, _ = build_resnet152(pretrained=False)
    first = offline_resnet[0].state_dict()
    assert all(torch.equal(first[k], v) for k, v in again.state_dict().items())


def test_offline_resnet_predictions_are_decisive_and_image_dependent(offline_resnet, sample_photos):
    model, spec = offline_resnet
    images = np.stack([prepare_image(str(p), spec.preprocess, None).image for p in sample_photos])
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    pixels = (pixels - torch.tensor(spec.mean).view(1, 3, 1, 1)) / torch.tensor(spec.std).view(
        1, 3, 1, 1
    )
    with torch.inference_mode():
        top = model(pixels).softmax(dim=1).topk(2, dim=1)
    margins = (top.values[:, 0] - top.values[:, 1]).numpy()
    assert len(set(top.indices[:, 0].tolist())) > 1
    assert np.median(margins) > 0.005


def test_pretrained_without_network_or_cache_fails_clearly(no_network):
    with pytest.raises(WeightsUnavailableError, match="pretrained=False"):
        load_pretrained(resnet152, ResNet152_Weights.DEFAULT)


# Faster R-CNN -----------------------------------------------------------------------------


def test_choose_score_threshold():
    assert choose_score_threshold(None, pretrained=True) == PRETRAINED_SCORE_THRESHOLD
    assert choose_score_threshold(None, pretrained=False) == OFFLINE_SCORE_THRESHOLD
    assert choose_score_threshold(0.3, pretrained=True) == 0.3
    with pytest.raises(ValueError, match="score_threshold"):
        choose_score_threshold(1.5, pretrained=True)


def test_pretrained_detector_without_network_or_cache_fails_clearly(no_network):
    with pytest.raises(WeightsUnavailableError, match="pretrained=False"):
        build_fasterrcnn(pretrained=True)


@pytest.fixture(scope="module")
def offline_detector():
    """The offline detector, run on one thread: on a busy 2-core machine, two threads that
    wait for each other make a forward pass several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield build_fasterrcnn(pretrained=False)
    torch.set_num_threads(threads)


def test_offline_detector_is_the_same_in_every_build(offline_detector):
    model, spec = offline_detector
    again, _ = build_fasterrcnn(pretrained=False)
    first = next(iter(model.state_dict().values()))
    assert torch.equal(first, next(iter(again.state_dict().values())))
    assert spec.categories == COCO and spec.preprocess.max_side == spec.max_size


def _photos(sample_photos, count):
    return [
        np.asarray(Image.open(p).convert("RGB").resize((300, 200))) for p in sample_photos[:count]
    ]


def detect(model, images, spec) -> dict[str, list]:
    """What notebook 03's ``detect`` does: one model call for the whole batch."""
    tensors = [torch.tensor(image).permute(2, 0, 1) / 255 for image in images]
    with torch.inference_mode():
        outputs = [{key: value.tolist() for key, value in out.items()} for out in model(tensors)]
    return {
        "boxes": [output["boxes"] for output in outputs],
        "labels": [[spec.categories[i] for i in output["labels"]] for output in outputs],
        "scores": [output["scores"] for output in outputs],
    }


def test_one_call_per_batch_gives_a_photo_the_same_detections_among_other_sizes(
    offline_detector, sample_photos
):
    model, spec = offline_detector
    photo, other = _photos(sample_photos, 2)
    tall = np.ascontiguousarray(other.transpose(1, 0, 2))  # another size in the same call
    alone = detect(model, [photo], spec)
    mirrored = np.ascontiguousarray(photo[:, ::-1])
    together = detect(model, [tall, photo, mirrored], spec)
    assert len(alone["scores"][0]) > 0, "the offline detector should find something"
    assert min(alone["scores"][0]) >= spec.score_threshold
    assert alone["labels"][0] == together["labels"][1]
    np.testing.assert_allclose(alone["boxes"][0], together["boxes"][1], atol=0.05)
    np.testing.assert_allclose(alone["scores"][0], together["scores"][1], atol=1e-4)
