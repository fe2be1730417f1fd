"""nbhelpers.evaluate: labels from paths, accuracy, parity between the single batch and the
scaled-up run, VOC annotations and mean average precision."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from torchvision.models import ResNet152_Weights
from torchvision.models.detection import FasterRCNN_ResNet50_FPN_V2_Weights

from nbhelpers.evaluate import (
    HALF_PRECISION_TOLERANCE,
    VOC_TO_COCO,
    AnnotationError,
    accuracy,
    annotation_path,
    box_iou,
    check_parity,
    coco_name,
    compare_classifications,
    compare_detections,
    confusion_matrix,
    evaluate_against_voc_annotations,
    find_voc_annotations,
    labels_from_paths,
    mean_average_precision,
    parity_summary,
    parity_tolerance,
    parse_voc_xml,
)

COCO = tuple(FasterRCNN_ResNet50_FPN_V2_Weights.DEFAULT.meta["categories"])
CATEGORIES = ResNet152_Weights.DEFAULT.meta["categories"]


# --- classification: labels from paths, accuracy, parity ----------------------------------


def label_from_path(path: str, categories) -> int | None:
    return labels_from_paths([path], categories)[0]


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


def test_accuracy_and_confusion_matrix():
    categories = ["tench", "goldfish", "shark"]
    true, predicted = [0, 0, 1, None], [0, 2, 1, 1]
    assert accuracy(true, predicted) == pytest.approx(2 / 3)
    assert accuracy([None, None], [0, 1]) is None
    matrix = confusion_matrix(true, predicted, categories)
    assert matrix.loc["tench", "tench"] == 1 and matrix.loc["tench", "(other)"] == 1
    assert matrix.to_numpy().sum() == 3


def test_parity_accepts_near_ties_and_rejects_real_differences():
    single = pd.DataFrame(
        {
            "path": ["a", "b", "c"],
            "label": ["x", "y", "z"],
            "score": [0.5, 0.30, 0.2],
            "margin": [0.2, 0.0001, 0.1],
        }
    )
    scaled = pd.DataFrame(
        {"path": ["c", "b", "a"], "label": ["z", "w", "x"], "score": [0.2, 0.30, 0.5]}
    )
    assert parity_summary(compare_classifications(single, scaled))["ok"]
    scaled.loc[2, "label"] = "q"  # a confident answer that changed
    summary = parity_summary(compare_classifications(single, scaled))
    assert not summary["ok"] and summary["matching"] == 2
    scaled.loc[2, "label"], scaled.loc[0, "score"] = "x", 0.25
    assert not parity_summary(compare_classifications(single, scaled))["ok"]


def test_parity_compares_every_row_of_an_image_listed_twice():
    single = pd.DataFrame({"path": ["a", "b"], "label": ["x", "y"], "score": [0.5, 0.3]})
    single["margin"] = 0.2
    scaled = pd.DataFrame(
        {"path": ["a", "b", "a", "b"], "label": ["x", "y", "x", "y"], "score": [0.5, 0.3, 0.5, 0.3]}
    )
    comparison = compare_classifications(single, scaled)
    assert comparison["path"].tolist() == ["a", "b"] and comparison["match"].all()
    scaled.loc[3, "score"] = 0.1  # b's second row differs
    comparison = compare_classifications(single, scaled)
    assert comparison["match"].tolist() == [True, False]
    assert comparison["score_difference"][1] == pytest.approx(0.2)  # shown by its worse row


def test_parity_tolerance_is_wider_in_half_precision():
    tolerance, why = parity_tolerance("cpu", "cpu", same_device=1e-3)
    assert tolerance == 1e-3 and why  # with the reason, for the notebook to print
    assert parity_tolerance("cpu", "cuda", same_device=1e-3)[0] == HALF_PRECISION_TOLERANCE
    assert parity_tolerance("cuda", "cuda", same_device=1e-3)[0] == HALF_PRECISION_TOLERANCE
    assert parity_tolerance("cpu", "cuda", same_device=0.05)[0] == 0.05


def test_check_parity_prints_its_tolerance_and_fails_a_real_difference(capsys):
    single = pd.DataFrame(
        {"path": ["a", "b"], "label": ["cat", "dog"], "score": [0.9, 0.6], "margin": [0.5, 0.3]}
    )
    scaled = pd.DataFrame({"path": ["a", "b"], "label": ["cat", "dog"], "score": [0.9, 0.6]})
    comparison, parity = check_parity(single, scaled, "cpu", "cpu")
    assert parity == {"checked": 2, "matching": 2, "ok": True}
    assert comparison["match"].tolist() == [True, True]
    assert "0.001" in capsys.readouterr().out  # the tolerance it used
    scaled.loc[1, "label"] = "cow"
    comparison, parity = check_parity(single, scaled, "cpu", "cuda")
    assert parity == {"checked": 2, "matching": 1, "ok": False}


# --- detection: VOC annotations and mean average precision ------------------------------


def voc_xml(objects: list[tuple[str, tuple[int, int, int, int], int]], size=(500, 375)) -> str:
    """The text of a VOC annotation with ``(name, (xmin, ymin, xmax, ymax), difficult)`` objects."""
    items = "".join(
        f"<object><name>{name}</name><pose>Left</pose><truncated>0</truncated>"
        f"<difficult>{difficult}</difficult><bndbox><xmin>{box[0]}</xmin><ymin>{box[1]}</ymin>"
        f"<xmax>{box[2]}</xmax><ymax>{box[3]}</ymax></bndbox></object>"
        for name, box, difficult in objects
    )
    return (
        f"<annotation><folder>VOC2012</folder><filename>x.jpg</filename><size>"
        f"<width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>"
        f"{items}</annotation>"
    )


# --- VOC annotations and class names ---------------------------------------------------


def test_parse_voc_xml_reads_size_objects_and_difficult_flags():
    annotation = parse_voc_xml(
        voc_xml([("Dog", (11, 21, 200, 300), 0), ("cat", (1, 1, 50, 60), 1)]), "a.xml"
    )
    assert (annotation.width, annotation.height) == (500, 375)
    assert [o.name for o in annotation.objects] == ["dog", "cat"]
    # 1-based inclusive pixel indices become continuous coordinates
    assert annotation.objects[0].box == (10, 20, 200, 300)
    assert [o.difficult for o in annotation.objects] == [False, True]


def test_parse_voc_xml_without_objects_is_an_empty_annotation():
    assert parse_voc_xml(voc_xml([])).objects == ()


@pytest.mark.parametrize(
    "text",
    [
        "not xml at all",
        "<html></html>",
        "<annotation><object><name>dog</name></object></annotation>",  # no <bndbox>
        voc_xml([("dog", ("a", 1, 2, 3), 0)]),  # a corner that is not a number
    ],
)
def test_parse_voc_xml_rejects_broken_files_naming_them(text):
    with pytest.raises(AnnotationError, match="broken.xml"):
        parse_voc_xml(text, "broken.xml")


def test_every_voc_class_maps_to_a_coco_category():
    assert len(VOC_TO_COCO) == 20
    assert set(VOC_TO_COCO.values()) <= set(COCO)
    assert coco_name("tvmonitor") == "tv"
    assert coco_name("Sofa") == "couch"
    assert coco_name("aeroplane") == "airplane"
    assert coco_name("cat") == "cat"
    with pytest.raises(KeyError, match="giraffe"):
        coco_name("giraffe")


def test_annotation_path_follows_the_voc_layout():
    assert annotation_path("/data/VOC/JPEGImages/2007_000063.jpg") == (
        "/data/VOC/Annotations/2007_000063.xml"
    )
    assert annotation_path("air-example-data/AnimalDetection/JPEGImages/a.b.JPG") == (
        "air-example-data/AnimalDetection/Annotations/a.b.xml"
    )
    assert annotation_path("/photos/holiday/a.jpg") is None


def test_find_voc_annotations_reads_what_exists_and_reports_broken_files(tmp_path):
    images, notes = tmp_path / "JPEGImages", tmp_path / "Annotations"
    images.mkdir()
    notes.mkdir()
    paths = [str(images / f"{name}.jpg") for name in ("good", "missing", "broken")]
    (notes / "good.xml").write_text(voc_xml([("dog", (1, 1, 10, 10), 0)]))
    (notes / "broken.xml").write_text("<annotation><object>")
    found = find_voc_annotations(paths + ["/elsewhere/photo.jpg"])
    assert list(found.annotations) == [paths[0]]
    assert found.num_images == 4
    assert list(found.problems) == [str(notes / "broken.xml")]
    assert not find_voc_annotations(paths[1:2]).annotations


# --- mean average precision --------------------------------------------------------------


def _predictions(rows: list[tuple[str, list, list, list]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"path": path, "boxes": boxes, "labels": labels, "scores": scores, "error": None}
            for path, boxes, labels, scores in rows
        ]
    )


def test_mean_average_precision_maps_voc_names_and_ignores_other_coco_classes():
    annotations = {
        "a.jpg": parse_voc_xml(voc_xml([("tvmonitor", (11, 11, 100, 100), 0)])),
        "b.jpg": parse_voc_xml(voc_xml([("dog", (51, 61, 300, 200), 0)])),
    }
    perfect = _predictions(
        [
            ("a.jpg", [[10, 10, 100, 100], [0, 0, 5, 5]], ["tv", "cup"], [0.99, 0.98]),
            ("b.jpg", [[50, 60, 300, 200]], ["dog"], [0.95]),
            ("c.jpg", [[0, 0, 9, 9]], ["dog"], [0.9]),  # not annotated: left out
        ]
    )
    result = mean_average_precision(perfect, annotations, COCO)
    assert result["map"] == pytest.approx(1.0)
    assert result["map_50"] == pytest.approx(1.0)
    assert result["images"] == 2
    assert set(result["per_class"]) == {"tv", "dog"}

    wrong_class = perfect.assign(labels=[["cat", "cup"], ["cat"], ["dog"]])
    assert mean_average_precision(wrong_class, annotations, COCO)["map_50"] == pytest.approx(0.0)


def test_mean_average_precision_skips_failed_rows_and_needs_annotations():
    annotations = {"a.jpg": parse_voc_xml(voc_xml([("cat", (1, 1, 10, 10), 0)]))}
    failed = _predictions([("a.jpg", None, None, None)]).assign(error="not an image")
    assert mean_average_precision(failed, annotations, COCO) is None
    assert mean_average_precision(_predictions([]), {}, COCO) is None


def test_evaluate_against_voc_annotations_finds_them_beside_the_images(tmp_path):
    images, notes = tmp_path / "JPEGImages", tmp_path / "Annotations"
    images.mkdir()
    notes.mkdir()
    (notes / "a.xml").write_text(voc_xml([("cat", (11, 21, 100, 200), 0)]))
    predictions = _predictions(
        [
            (str(images / "a.jpg"), [[10, 20, 100, 200]], ["cat"], [0.95]),
            (str(images / "b.jpg"), [], [], []),  # no annotation: not evaluated
        ]
    )
    annotations, evaluation = evaluate_against_voc_annotations(predictions, None, COCO)
    assert list(annotations.annotations) == [str(images / "a.jpg")]
    assert evaluation["images"] == 1 and evaluation["map_50"] == pytest.approx(1.0)
    annotations, evaluation = evaluate_against_voc_annotations(predictions[1:], None, COCO)
    assert evaluation is None and not annotations.annotations


# --- detection parity ------------------------------------------------------------------


def _one(boxes, labels, scores, path="a.jpg") -> pd.DataFrame:
    return _predictions([(path, boxes, labels, scores)])


def test_box_iou():
    iou = box_iou(
        np.array([[0, 0, 10, 10]]), np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
    )
    np.testing.assert_allclose(iou, [[1.0, 1 / 3, 0.0]])


def test_parity_accepts_tiny_differences_and_near_threshold_changes():
    single = _one([[0, 0, 100, 100], [200, 200, 300, 300]], ["dog", "cat"], [0.97, 0.905])
    scaled = _one([[0.2, 0, 100, 100.1]], ["dog"], [0.9702])  # the cat at 0.905 dropped out
    comparison = compare_detections(single, scaled, score_threshold=0.9)
    assert comparison["match"].all()
    assert comparison["min_iou"][0] > 0.99


@pytest.mark.parametrize(
    "boxes, labels, scores",
    [
        ([[0, 0, 100, 100]], ["cat"], [0.97]),  # another class
        ([[60, 60, 160, 160]], ["dog"], [0.97]),  # another place
        ([[0, 0, 100, 100]], ["dog"], [0.93]),  # another score
        ([], [], []),  # missing
        ([[0, 0, 100, 100], [300, 0, 400, 90]], ["dog", "dog"], [0.97, 0.96]),  # an extra one
    ],
)
def test_parity_rejects_real_differences(boxes, labels, scores):
    single = _one([[0, 0, 100, 100]], ["dog"], [0.97])
    comparison = compare_detections(single, _one(boxes, labels, scores), score_threshold=0.9)
    assert not comparison["match"].any()


def test_parity_checks_every_row_of_an_image_listed_twice():
    single = _one([[0, 0, 100, 100]], ["dog"], [0.97])
    same, moved = ([[0, 0, 100, 100]], ["dog"], [0.97]), ([[60, 60, 160, 160]], ["dog"], [0.97])
    both = _predictions([("a.jpg", *same), ("a.jpg", *same)])
    assert compare_detections(single, both, 0.9)["match"].tolist() == [True]
    one_moved = _predictions([("a.jpg", *same), ("a.jpg", *moved)])
    comparison = compare_detections(single, one_moved, 0.9)
    assert comparison["match"].tolist() == [False] and comparison["unmatched"][0] == 2


def test_parity_fails_for_an_image_the_scaled_run_lost():
    single = _one([], [], [])
    assert not compare_detections(single, _one([], [], [], path="b.jpg"), 0.9)["match"].any()
