"""Unit tests of the detection stages: VOC annotations, class mapping, boxes, rows, parity, mAP."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from torchvision.models.detection import FasterRCNN_ResNet50_FPN_V2_Weights

from nbhelpers.destination import output_location
from nbhelpers.evaluate import (
    VOC_TO_COCO,
    AnnotationError,
    annotation_path,
    box_iou,
    coco_name,
    compare_detections,
    evaluate_against_voc_annotations,
    find_voc_annotations,
    mean_average_precision,
    parse_voc_xml,
)
from nbhelpers.models import (
    OFFLINE_SCORE_THRESHOLD,
    PRETRAINED_SCORE_THRESHOLD,
    BackboneInHalfPrecision,
    WeightsUnavailableError,
    build_fasterrcnn,
    choose_score_threshold,
    with_backbone_in,
)
from nbhelpers.reading import decode_batch
from nbhelpers.results import read_predictions
from nbhelpers.rows import (
    CALL_COLUMN,
    NODE_COLUMN,
    as_boxes,
    detections_per_class,
    image_rows,
    object_array,
    predicted_columns,
    scale_boxes,
)
from nbhelpers.rows import DETECTOR_SCHEMA as PREDICTION_SCHEMA
from nbhelpers.visualize import draw_detections

COCO = tuple(FasterRCNN_ResNet50_FPN_V2_Weights.DEFAULT.meta["categories"])


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
    "text, message",
    [
        ("not xml at all", "not valid XML"),
        ("<html></html>", "not <annotation>"),
        ("<annotation><object><name>dog</name></object></annotation>", "no <bndbox>"),
        (voc_xml([("dog", ("a", 1, 2, 3), 0)]), "not a number"),
    ],
)
def test_parse_voc_xml_rejects_broken_files_with_the_reason(text, message):
    with pytest.raises(AnnotationError, match=message):
        parse_voc_xml(text, "broken.xml")


def test_every_voc_class_maps_to_a_coco_category():
    assert len(VOC_TO_COCO) == 20
    assert set(VOC_TO_COCO.values()) <= set(COCO)
    assert coco_name("tvmonitor") == "tv"
    assert coco_name("Sofa") == "couch"
    assert coco_name("aeroplane") == "airplane"
    assert coco_name("cat") == "cat"
    with pytest.raises(KeyError, match="not a Pascal VOC class"):
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
    assert "Annotations for 1 of 4 images" in found.describe()
    assert "no pascal voc annotations" in find_voc_annotations(paths[1:2]).describe().lower()


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


# --- boxes, grouping, detection ----------------------------------------------------------


def test_choose_score_threshold():
    assert choose_score_threshold(None, pretrained=True) == PRETRAINED_SCORE_THRESHOLD
    assert choose_score_threshold(None, pretrained=False) == OFFLINE_SCORE_THRESHOLD
    assert choose_score_threshold(0.3, pretrained=True) == 0.3
    with pytest.raises(ValueError, match="score_threshold"):
        choose_score_threshold(1.5, pretrained=True)


def test_scale_boxes_maps_array_pixels_to_the_original_image_and_clips():
    boxes = np.array([[10, 20, 50, 40], [0, 0, 200, 100]], dtype=np.float32)
    scaled = scale_boxes(boxes, array_size=(100, 200), original_size=(400, 200))
    np.testing.assert_allclose(scaled, [[20, 40, 100, 80], [0, 0, 400, 200]])
    beyond = scale_boxes(np.array([[-5, -5, 250, 120]]), (100, 200), (400, 200))
    np.testing.assert_allclose(beyond, [[0, 0, 400, 200]])
    assert scale_boxes(np.zeros((0, 4)), (100, 200), (400, 200)).shape == (0, 4)


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


@pytest.fixture(scope="module")
def decoded_batch(offline_detector, sample_photos, tmp_path_factory):
    """A read-stage batch: a large photo (shrunk before batching) and an empty file."""
    _, spec = offline_detector
    folder = tmp_path_factory.mktemp("photos")
    Image.open(sample_photos[0]).convert("RGB").resize((1000, 700)).save(folder / "big.png")
    (folder / "empty.jpg").write_bytes(b"")
    paths = np.array([str(folder / "big.png"), str(folder / "empty.jpg")], dtype=object)
    return decode_batch({"path": paths}, spec.preprocess, None)


def test_image_rows_keep_failed_rows_and_give_boxes_in_original_pixels(
    offline_detector, decoded_batch
):
    model, spec = offline_detector
    assert decoded_batch["image"][0].shape[:2] == (224, 320)  # shrunk before batching
    found = predicted_columns(
        decoded_batch, lambda images: detect(model, images, spec), PREDICTION_SCHEMA
    )
    rows = image_rows(decoded_batch, found)
    assert rows.schema == PREDICTION_SCHEMA
    out = rows.to_pylist()
    assert [(row["width"], row["height"]) for row in out] == [(1000, 700), (0, 0)]
    assert out[1]["num_detections"] == -1 and out[1]["boxes"] is None
    assert "empty file" in out[1]["error"] and out[0]["error"] is None
    boxes = as_boxes(out[0]["boxes"])
    assert len(boxes) == out[0]["num_detections"] == len(out[0]["labels"]) > 0
    assert (boxes[:, 2] <= 1000).all() and (boxes[:, 3] <= 700).all() and (boxes >= 0).all()
    assert boxes[:, 2].max() > 320, "boxes should be in original pixels, not the shrunk array's"
    assert all(label in COCO for label in out[0]["labels"])
    # The single batch, without predicted_columns: the same row for the photo that decoded.
    alone = image_rows(
        {key: value[:1] for key, value in decoded_batch.items()},
        detect(model, decoded_batch["image"][:1], spec),
    )
    per_call = [NODE_COLUMN, CALL_COLUMN]  # who predicted it, and in which call
    assert alone.drop_columns(per_call).to_pylist()[0] == {
        key: value for key, value in out[0].items() if key not in per_call
    }


def test_rows_of_failed_images_and_of_images_without_boxes_read_back_with_the_rest(tmp_path):
    """Blocks holding only a failed image, or only images without detections, are written by
    Ray as separate Parquet files; all of them must share the schema and read back together."""
    batch = {
        "path": np.array(["bad.jpg", "blank.jpg", "a.jpg"], dtype=object),
        "image": object_array(
            [np.zeros((1, 1, 3), np.uint8)] + [np.zeros((10, 20, 3), np.uint8)] * 2
        ),
        "width": np.array([0, 40, 40], dtype=np.int32),
        "height": np.array([0, 20, 20], dtype=np.int32),
        "error": np.array(["empty file (0 bytes)", None, None], dtype=object),
    }
    found = {
        "boxes": [None, [], [[1.0, 2.0, 3.0, 4.0]]],
        "labels": [None, [], ["cat"]],
        "scores": [None, [], [0.9]],
    }
    for i in range(3):  # one file per block, as Ray Data writes them
        block = {key: value[i : i + 1] for key, value in batch.items()}
        rows = image_rows(block, {key: value[i : i + 1] for key, value in found.items()})
        (tmp_path / "predictions").mkdir(exist_ok=True)
        pq.write_table(rows, tmp_path / "predictions" / f"{i}.parquet")
    paths = ["bad.jpg", "blank.jpg", "a.jpg"]
    for frame in (
        read_predictions(output_location(tmp_path), paths),
        pd.read_parquet(tmp_path / "predictions").sort_values(
            "path", key=lambda p: p.map(paths.index)
        ),
    ):
        assert list(frame["path"]) == paths
        assert frame["boxes"].iloc[0] is None and frame["labels"].iloc[0] is None
        assert [as_boxes(cell).shape for cell in frame["boxes"]] == [(0, 4), (0, 4), (1, 4)]
        np.testing.assert_allclose(as_boxes(frame["boxes"].iloc[2]), [[2, 4, 6, 8]])
        assert list(frame["num_detections"]) == [-1, 0, 1]
        assert detections_per_class(frame).to_dict() == {"cat": 1}


# --- parity and drawing ------------------------------------------------------------------


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


def test_draw_detections_draws_boxes_and_leaves_images_without_boxes_alone():
    image = np.full((120, 160, 3), 255, np.uint8)
    drawn = draw_detections(image, np.array([[10, 10, 100, 80]]), ["dog"], [0.9])
    assert drawn.shape == image.shape and drawn.dtype == np.uint8
    assert (drawn != 255).any()
    unchanged = draw_detections(image, np.zeros((0, 4)), [], [])
    np.testing.assert_array_equal(unchanged, image)


def test_bfloat16_would_move_box_corners_by_pixels():
    """Why notebook 03 keeps the heads in float32: bfloat16 rounds a box corner at 613.7 px
    to 612 (8 bits of mantissa: steps of 4 px from 512 to 1024)."""
    corners = torch.tensor([613.7, 402.2, 1187.4, 799.6])
    assert corners.bfloat16().tolist() == [612.0, 402.0, 1184.0, 800.0]


class RecordsAutocast(torch.nn.Module):
    """A stand-in backbone: one convolution, noting whether autocast was on while it ran."""

    out_channels = 4

    def __init__(self):
        super().__init__()
        self.conv, self.seen = torch.nn.Conv2d(3, 4, 3), []

    def forward(self, images):
        self.seen.append(
            torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None
        )
        return {"0": self.conv(images)}


def test_the_backbone_computes_in_half_precision_and_hands_float32_to_the_heads():
    backbone = RecordsAutocast()
    model = torch.nn.Module()
    model.backbone = backbone
    wrapped = with_backbone_in(model, torch.bfloat16).backbone
    assert wrapped.out_channels == 4
    features = wrapped(torch.rand(1, 3, 16, 16))
    assert backbone.seen == [torch.bfloat16] and features["0"].dtype == torch.float32
    assert with_backbone_in(model, torch.bfloat16).backbone is wrapped  # wrapped once
    plain = torch.nn.Module()
    plain.backbone = RecordsAutocast()
    assert with_backbone_in(plain, torch.float32).backbone is plain.backbone


def test_anchors_follow_the_features_dtype_so_float32_features_keep_boxes_exact():
    """Faster R-CNN makes its anchors in the dtype of the features: under autocast everywhere
    (bfloat16 features) the anchors at 800 px are rounded by pixels; on the float32 features
    that the wrapped backbone hands over, they are exact, and the boxes decoded from them stay in float32."""
    from torchvision.models.detection import fasterrcnn_resnet50_fpn_v2
    from torchvision.models.detection.image_list import ImageList

    generator = fasterrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None).rpn.anchor_generator
    images = ImageList(torch.zeros(1, 3, 800, 1088), [(800, 1066)])
    features = [torch.zeros(1, 256, 800 // s, 1088 // s) for s in (4, 8, 16, 32, 64)]
    exact = generator(images, features)[0]
    rounded = generator(images, [f.bfloat16() for f in features])[0]
    assert exact.dtype == torch.float32 and rounded.dtype == torch.bfloat16
    assert (rounded.float() - exact).abs().max() >= 2  # whole pixels off
    backbone = RecordsAutocast()
    handed_over = BackboneInHalfPrecision(backbone, torch.bfloat16)(torch.rand(1, 3, 16, 16))
    assert all(value.dtype == torch.float32 for value in handed_over.values())
