"""Labels from paths: ImageNet synsets against torchvision's own category list."""

from __future__ import annotations

import pytest
from conftest import IMAGENETTE_SYNSETS
from torchvision.models import ResNet152_Weights

from nbhelpers.evaluate import labels_from_paths
from nbhelpers.models import imagenet_categories, imagenet_synsets, synset_index

CATEGORIES = ResNet152_Weights.DEFAULT.meta["categories"]

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


def label_from_path(path: str, categories) -> int | None:
    return labels_from_paths([path], categories)[0]


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


def test_label_from_imagenette_layout_local_and_s3():
    assert label_from_path("/data/imagenette2/val/n03445777/n03445777_123.JPEG", CATEGORIES) == 574
    assert label_from_path("air-example-data-2/imagenette2/val/n01440764/x.JPEG", CATEGORIES) == 0
    assert label_from_path(r"C:\data\val\n03888257\x.jpg", CATEGORIES) == 701


def test_label_from_imagenet_training_file_names_and_any_synset():
    assert label_from_path("/flat/n02085620_1234.JPEG", CATEGORIES) == 151  # Chihuahua
    assert label_from_path("/imagenet/train/n15075141/x.JPEG", CATEGORIES) == 999
    assert label_from_path("/imagenet/val/ILSVRC2012_val_00000001.JPEG", CATEGORIES) is None
    assert label_from_path("/imagenet/n99999999/x.jpg", CATEGORIES) is None  # not in ImageNet-1k


def test_label_from_a_category_folder_is_only_the_images_own_folder():
    assert label_from_path("/photos/golf ball/1.jpg", CATEGORIES) == 574
    assert label_from_path("/photos/Golf_Ball/1.jpg", CATEGORIES) == 574
    # "library" is an ImageNet category, but a folder higher up labels nothing.
    assert label_from_path("/srv/library/holiday/1.jpg", CATEGORIES) is None
    assert label_from_path("1.jpg", CATEGORIES) is None


def test_labels_from_paths():
    paths = ["/v/n01440764/a.jpg", "/v/unlabelled/b.jpg", "/v/n03888257/c.jpg"]
    assert labels_from_paths(paths, CATEGORIES) == [0, None, 701]


@pytest.mark.parametrize("folder", ["n01440764", "tench"])
def test_synset_folders_win_over_names(folder):
    assert label_from_path(f"/x/{folder}/a.jpg", CATEGORIES) == 0
