"""Evaluate what a run predicted: accuracy and the confusion matrix against labels in the
paths, Pascal VOC annotations and mean average precision, and the parity of the scaled-up run
with the single batch.
"""

from __future__ import annotations

import posixpath
import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import numpy as np
import pandas as pd
import pyarrow.fs as pafs
import torch
import torchvision
from torchvision.datasets import VOCDetection

from nbhelpers.decode import DecodeError
from nbhelpers.models import synset_index
from nbhelpers.reading import read_bytes
from nbhelpers.rows import as_boxes, as_list

# Classification: accuracy and the confusion matrix --------------------------------------------


OTHER = "(other)"


def _labelled(true: Sequence[int | None], predicted: Sequence[int]) -> list[tuple[int, int]]:
    """The (true, predicted) pairs of the rows that have both a label and a prediction."""
    return [
        (int(t), int(p))
        for t, p in zip(true, predicted, strict=True)
        if t is not None and not pd.isna(t) and p >= 0
    ]


def accuracy(true: Sequence[int | None], predicted: Sequence[int]) -> float | None:
    """Top-1 accuracy over the rows that have a label; ``None`` when no row has one."""
    pairs = _labelled(true, predicted)
    return float(np.mean([t == p for t, p in pairs])) if pairs else None


def confusion_matrix(
    true: Sequence[int | None], predicted: Sequence[int], categories: Sequence[str]
) -> pd.DataFrame:
    """Counts of (true, predicted) class; ``(other)``: predictions outside the true classes."""
    pairs = _labelled(true, predicted)
    names = list(dict.fromkeys(categories[t] for t in sorted({t for t, _ in pairs})))
    truth = pd.Series([categories[t] for t, _ in pairs], name="true", dtype=object)
    guesses = [categories[p] if categories[p] in names else OTHER for _, p in pairs]
    guessed = pd.Series(guesses, name="predicted", dtype=object)
    return pd.crosstab(truth, guessed).reindex(index=names, columns=[*names, OTHER], fill_value=0)


# Parity: the scaled-up run against the single batch -------------------------------------------


HALF_PRECISION_TOLERANCE = 0.02
"""Score tolerance where either side computed in half precision (a GPU): bfloat16 keeps about
3 significant digits, and batches of other sizes run other GPU kernels, so probabilities move
in the second or third decimal."""


def parity_tolerance(
    single_device: str, actors_device: str, same_device: float
) -> tuple[float, str]:
    """The score tolerance for comparing the single batch with the actors, and why.

    ``same_device`` where both ran on the CPU in float32; wider
    (:data:`HALF_PRECISION_TOLERANCE`) where either ran on a GPU (TF32 or half precision).
    """
    if single_device == actors_device == "cpu":
        return same_device, f"Both on the CPU in float32: scores within {same_device:g}."
    tolerance = max(same_device, HALF_PRECISION_TOLERANCE)
    if single_device == actors_device:
        where = f"Both on {actors_device}, with batches of other sizes"
    else:
        where = f"The single batch on {single_device}, the actors on {actors_device}"
    return tolerance, (
        f"{where}: scores within {tolerance:g}, since a GPU computes in fewer digits "
        "(TF32 or half precision)."
    )


def compare_classifications(
    single: pd.DataFrame, scaled: pd.DataFrame, score_tolerance: float = 1e-3
) -> pd.DataFrame:
    """Compare the single-batch predictions with the scaled-up ones, image by image (``match``).

    The same image needs the same top-1 label and a score within ``score_tolerance``;
    floats differ in the last digits, so after a near-tie (``margin``) either label counts.
    An image listed several times (the sample's photos) is compared with each of its rows,
    and shown by the one that differs most.
    """
    merged = single[["path", "label", "score", "margin"]].merge(
        scaled[["path", "label", "score"]], on="path", how="left", suffixes=("_single", "_scaled")
    )
    merged["score_difference"] = (merged["score_single"] - merged["score_scaled"]).abs()
    same_label = merged["label_single"] == merged["label_scaled"]
    near_tie = merged["margin"] < score_tolerance
    merged["match"] = (same_label | near_tie) & (merged["score_difference"] <= score_tolerance)
    worst = merged.sort_values(["match", "score_difference"], ascending=[True, False])
    worst = worst.drop_duplicates("path").sort_index()  # one row per image, in single's order
    return worst.drop(columns=["margin"]).reset_index(drop=True)


def check_parity(
    single: pd.DataFrame,
    scaled: pd.DataFrame,
    single_device: str,
    actors_device: str,
    same_device: float = 1e-3,
) -> tuple[pd.DataFrame, dict]:
    """Compare the single batch with the scaled-up run (:func:`compare_classifications`), at
    the tolerance the two devices allow (:func:`parity_tolerance`), which it prints.

    Returns the comparison, one row per image of the single batch, and its
    :func:`parity_summary` (``ok`` is False where any image differs).
    """
    tolerance, why = parity_tolerance(single_device, actors_device, same_device)
    print(why)
    comparison = compare_classifications(single, scaled, tolerance)
    return comparison, parity_summary(comparison)


def parity_summary(comparison: pd.DataFrame) -> dict:
    """``{"checked", "matching", "ok"}`` for ``summary.json``."""
    checked = len(comparison)
    matching = int(comparison["match"].sum())
    return {"checked": checked, "matching": matching, "ok": bool(checked and checked == matching)}


# Detection: parity and the evaluation against VOC annotations ---------------------------------


def box_iou(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Intersection over union of every box of ``first`` with every box of ``second`` (n, m)."""
    a, b = (torch.as_tensor(x, dtype=torch.float64).reshape(-1, 4) for x in (first, second))
    return torchvision.ops.box_iou(a, b).nan_to_num(0.0).numpy()


def _detections(row) -> tuple[np.ndarray, list, list]:
    return as_boxes(row.get("boxes")), as_list(row.get("labels")), as_list(row.get("scores"))


def _unmatched(own: tuple, other: tuple, confident_from: float, tolerance: float, iou: float):
    """Confident detections of ``own`` without a counterpart in ``other``; IoUs, score gaps."""
    overlaps = box_iou(own[0], other[0])
    unmatched = 0
    ious: list[float] = []
    gaps: list[float] = []
    for i, (label, score) in enumerate(zip(own[1], own[2], strict=True)):
        candidates = [
            j
            for j, (other_label, other_score) in enumerate(zip(other[1], other[2], strict=True))
            if other_label == label
            and overlaps[i, j] >= iou
            and abs(other_score - score) <= tolerance
        ]
        if candidates:
            best = max(candidates, key=lambda j: overlaps[i, j])
            ious.append(float(overlaps[i, best]))
            gaps.append(abs(float(other[2][best]) - float(score)))
        elif score >= confident_from:
            unmatched += 1
    return unmatched, ious, gaps


def compare_detections(
    single: pd.DataFrame,
    scaled: pd.DataFrame,
    score_threshold: float,
    score_tolerance: float = 0.01,
    iou_threshold: float = 0.5,
) -> pd.DataFrame:
    """Compare the single-image detections with the scaled-up ones, image by image (``match``).

    A counterpart has the same label, a box overlapping by ``iou_threshold`` (VOC's "same
    object") and a score within ``score_tolerance``. Detections from ``score_threshold +
    score_tolerance`` need one, both ways; nearer the threshold, floats may tip either way.
    An image listed several times is compared with each of its rows, shown by the worst.
    """
    settings = (score_threshold + score_tolerance, score_tolerance, iou_threshold)
    scaled_rows: dict[str, list[dict]] = {}  # a path listed several times has several rows
    for row in scaled.to_dict("records"):
        scaled_rows.setdefault(row["path"], []).append(row)
    rows = []
    for row in single.to_dict("records"):
        own, compared = _detections(row), []
        for copy in scaled_rows.get(row["path"], [{}]):
            other = _detections(copy)
            missing_there, ious, gaps = _unmatched(own, other, *settings)
            unmatched = missing_there + _unmatched(other, own, *settings)[0]
            compared.append(
                {
                    "path": row["path"],
                    "detections_single": len(own[1]),
                    "detections_scaled": len(other[1]),
                    "unmatched": unmatched,
                    "min_iou": min(ious) if ious else None,
                    "max_score_difference": max(gaps) if gaps else None,
                    "match": bool(copy) and unmatched == 0,
                }
            )
        rows.append(min(compared, key=lambda result: (result["match"], -result["unmatched"])))
    return pd.DataFrame(rows)


def evaluate_against_path_labels(
    predictions: pd.DataFrame, categories: Sequence[str]
) -> tuple[float | None, pd.DataFrame | None, int]:
    """Accuracy and confusion matrix against the classes the paths name, and how many images
    had one (``None, None, 0`` when none had). ``predictions`` is left as it is."""
    true = labels_from_paths(predictions["path"], categories)
    predicted = predictions["label_index"].tolist()
    top1 = accuracy(true, predicted)
    if top1 is None:
        return None, None, 0
    labelled = len(_labelled(true, predicted))
    return top1, confusion_matrix(true, predicted, categories), labelled


def evaluate_against_voc_annotations(
    predictions: pd.DataFrame, filesystem: pafs.FileSystem | None, categories: Sequence[str]
) -> tuple[AnnotationSet, dict | None]:
    """The Pascal VOC annotations beside the images, and the mAP against them (or ``None``)."""
    annotations = find_voc_annotations(predictions["path"].tolist(), filesystem)
    evaluation = mean_average_precision(predictions, annotations.annotations, categories)
    return annotations, evaluation


def check_detection_parity(
    single: pd.DataFrame,
    scaled: pd.DataFrame,
    score_threshold: float,
    single_device: str,
    actors_device: str,
    same_device: float = 0.01,
) -> tuple[pd.DataFrame, dict]:
    """Compare the single batch's detections with the scaled-up run's
    (:func:`compare_detections`), at the score tolerance the two devices allow
    (:func:`parity_tolerance`), which it prints.

    Both need ``path``, ``boxes`` (in the same pixels: the original photo's), ``labels`` and
    ``scores``. Returns the comparison, one row per image of the single batch, and its
    :func:`parity_summary` (``ok`` is False where any image differs).
    """
    tolerance, why = parity_tolerance(single_device, actors_device, same_device)
    print(why)
    comparison = compare_detections(single, scaled, score_threshold, tolerance)
    return comparison, parity_summary(comparison)


# True classes from the paths ------------------------------------------------------------------


_SYNSET_PREFIX = re.compile(r"(n\d{8})_")


def labels_from_paths(paths: Sequence[str], categories: Sequence[str]) -> list[int | None]:
    """The ImageNet-1k class index that each path names, or ``None``.

    In order: the nearest folder named after a synset (``n01440764/``); a file name that
    starts with one (``n01440764_10026.JPEG``); the image's own folder named after a
    category (``golf_ball/``, any case), never a folder higher up (``/data/library/``).
    """
    by_name: dict[str, int] = {}  # lower case, "_" as space; the first of duplicates wins
    for index, name in enumerate(categories):
        by_name.setdefault(_normal_name(name), index)
    return [_label(path, by_name) for path in paths]


def _normal_name(name: str) -> str:
    return " ".join(name.replace("_", " ").lower().split())


def _label(path: str, by_name: dict[str, int]) -> int | None:
    parts = PurePosixPath(str(path).replace("\\", "/")).parts
    folders = parts[:-1]
    file_name = parts[-1] if parts else ""
    indices = synset_index()
    for folder in reversed(folders):
        if folder in indices:
            return indices[folder]
    prefix = _SYNSET_PREFIX.match(file_name)
    if prefix and prefix.group(1) in indices:
        return indices[prefix.group(1)]
    return by_name.get(_normal_name(folders[-1])) if folders else None


# Pascal VOC annotations and mean average precision --------------------------------------------


IMAGES_FOLDER, ANNOTATIONS_FOLDER = "JPEGImages", "Annotations"


_SAME_NAMES = "bicycle bird boat bottle bus car cat chair cow dog horse person sheep train"


VOC_TO_COCO: dict[str, str] = {name: name for name in _SAME_NAMES.split()} | {
    "aeroplane": "airplane",
    "diningtable": "dining table",
    "motorbike": "motorcycle",
    "pottedplant": "potted plant",
    "sofa": "couch",
    "tvmonitor": "tv",
}
"""The 20 Pascal VOC classes and the names of the same classes among COCO's 80."""


class AnnotationError(ValueError):
    """An annotation file is not a Pascal VOC annotation."""


@dataclass(frozen=True)
class VocObject:
    """One annotated object: VOC class name, box and the ``difficult`` flag.

    ``box`` is ``(x1, y1, x2, y2)`` in continuous pixels, like torchvision's detectors'
    boxes: VOC's 1-based inclusive ``xmin..xmax`` becomes ``xmin - 1 .. xmax``.
    """

    name: str
    box: tuple[float, float, float, float]
    difficult: bool = False


@dataclass(frozen=True)
class VocAnnotation:
    """The annotation of one image."""

    filename: str
    width: int
    height: int
    objects: tuple[VocObject, ...]


def coco_name(voc_name: str) -> str:
    """The COCO name of a VOC class (``"tvmonitor"`` -> ``"tv"``); ``KeyError`` for others."""
    key = voc_name.strip().lower()
    if key not in VOC_TO_COCO:
        raise KeyError(
            f"{voc_name!r} is not a Pascal VOC class; expected one of {sorted(VOC_TO_COCO)}."
        )
    return VOC_TO_COCO[key]


def parse_voc_xml(data: str | bytes, source: str = "annotation") -> VocAnnotation:
    """Parse one VOC annotation file's text; ``AnnotationError`` names ``source`` and the fault."""
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError as error:
        raise AnnotationError(f"{source}: not valid XML ({error}).") from None
    if root.tag != "annotation":
        raise AnnotationError(f"{source}: the root element is <{root.tag}>, not <annotation>.")
    tree = VOCDetection.parse_voc_xml(root).get("annotation") or {}  # nested dicts of text
    try:
        size = tree.get("size", {"width": 0, "height": 0})
        width, height = int(float(size["width"])), int(float(size["height"]))
        objects = tuple(_voc_object(item) for item in tree.get("object", []))
    except KeyError as missing:
        raise AnnotationError(f"{source}: no <{missing.args[0]}> where VOC requires one.") from None
    except (ValueError, TypeError, AttributeError) as error:
        raise AnnotationError(f"{source}: a size or box value is not a number ({error}).") from None
    return VocAnnotation(str(tree.get("filename", "")), width, height, objects)


def _voc_object(item: dict) -> VocObject:
    xmin, ymin, xmax, ymax = (float(item["bndbox"][t]) for t in ("xmin", "ymin", "xmax", "ymax"))
    difficult = str(item.get("difficult", "0")) in ("1", "true")
    return VocObject(item["name"].lower(), (xmin - 1, ymin - 1, xmax, ymax), difficult)


def annotation_path(image_path: str) -> str | None:
    """Where VOC keeps an image's annotation (``JPEGImages/a.jpg`` -> ``Annotations/a.xml``)."""
    folder, name = posixpath.split(str(image_path).replace("\\", "/"))
    parent, last = posixpath.split(folder)
    if last != IMAGES_FOLDER:
        return None
    return posixpath.join(parent, ANNOTATIONS_FOLDER, posixpath.splitext(name)[0] + ".xml")


@dataclass
class AnnotationSet:
    """Image path -> annotation for ``num_images`` images; annotation path -> ``problems``."""

    annotations: dict[str, VocAnnotation]
    num_images: int
    problems: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        """One sentence for the notebook."""
        if not self.annotations:
            return (
                f"No Pascal VOC annotations for these {self.num_images} images (looked for "
                f"an {ANNOTATIONS_FOLDER}/ folder of XML files beside {IMAGES_FOLDER}/): "
                "the detections are not evaluated."
            )
        found = len(self.annotations)
        objects = sum(len(a.objects) for a in self.annotations.values())
        text = f"Annotations for {found} of {self.num_images} images ({objects} objects)."
        if self.problems:
            example = next(iter(self.problems.values()))
            text += f" {len(self.problems)} annotation files could not be read, e.g. {example}"
        return text


def _read_annotation(xml: str, filesystem: pafs.FileSystem | None) -> VocAnnotation | str:
    """The parsed annotation file, or why it could not be read."""
    try:
        return parse_voc_xml(read_bytes(xml, filesystem), source=xml)
    except (DecodeError, AnnotationError) as error:
        return str(error)


def find_voc_annotations(
    image_paths: Sequence[str], filesystem: pafs.FileSystem | None = None, threads: int = 16
) -> AnnotationSet:
    """Read the VOC annotations that sit beside ``image_paths``, where there are any.

    Lists each folder once, and reads ``threads`` files at once: S3 is slow but parallel.
    """
    wanted = {path: xml for path in image_paths if (xml := annotation_path(path)) is not None}
    listing = pafs.LocalFileSystem() if filesystem is None else filesystem
    existing = set()
    for folder in {posixpath.dirname(xml) for xml in wanted.values()}:
        try:
            infos = listing.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
        except OSError:
            continue
        existing.update(info.path for info in infos if info.type == pafs.FileType.File)
    wanted = {image: xml for image, xml in wanted.items() if xml in existing}
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        read = pool.map(_read_annotation, wanted.values(), [filesystem] * len(wanted))
        parsed = dict(zip(wanted, read, strict=True))
    annotations = {image: a for image, a in parsed.items() if isinstance(a, VocAnnotation)}
    problems = {wanted[image]: a for image, a in parsed.items() if isinstance(a, str)}
    return AnnotationSet(annotations, len(image_paths), problems)


def mean_average_precision(
    predictions: pd.DataFrame,
    annotations: Mapping[str, VocAnnotation],
    categories: Sequence[str],
) -> dict | None:
    """COCO-style mean average precision (torchmetrics) over the VOC classes, or ``None``.

    ``map`` (IoU 0.5 to 0.95), ``map_50`` (VOC's criterion), ``map_75``, ``per_class``.
    Detections of classes VOC lacks (a "cup") are left out: VOC never annotated them.
    ``difficult`` objects are COCO's ``iscrowd``: neither required nor held against the
    model. Only detections above the score threshold count, so it reads lower than a
    published figure.
    """
    if missing := [name for name in VOC_TO_COCO.values() if name not in categories]:
        raise ValueError(f"COCO categories lack the VOC classes {missing}.")
    classes = {name: list(categories).index(name) for name in VOC_TO_COCO.values()}
    if predictions.empty or not annotations:
        return None
    predicted = predictions[predictions["error"].isna() & predictions["path"].isin(annotations)]
    if predicted.empty:
        return None
    from torchmetrics.detection import MeanAveragePrecision  # slow to import: only when needed

    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", class_metrics=True)
    for row in predicted.itertuples():
        names, scores, boxes = as_list(row.labels), as_list(row.scores), as_boxes(row.boxes)
        keep = [i for i, name in enumerate(names) if name in classes]
        found = {
            "boxes": torch.as_tensor(boxes[keep]).reshape(-1, 4),
            "scores": torch.tensor([scores[i] for i in keep], dtype=torch.float32),
            "labels": torch.tensor([classes[names[i]] for i in keep], dtype=torch.int64),
        }
        objects = [o for o in annotations[row.path].objects if o.name in VOC_TO_COCO]
        truth = {
            "boxes": torch.tensor([o.box for o in objects], dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor([classes[coco_name(o.name)] for o in objects]).long(),
            "iscrowd": torch.tensor([int(o.difficult) for o in objects]).long(),
        }
        metric.update([found], [truth])
    result = metric.compute()
    coco_names = {label: name for name, label in classes.items()}
    labels, aps = result["classes"].flatten().tolist(), result["map_per_class"].flatten().tolist()
    per_class = {coco_names[c]: round(ap, 4) for c, ap in zip(labels, aps, strict=True) if ap >= 0}
    rounded = {key: round(float(result[key]), 4) for key in ("map", "map_50", "map_75")}
    return rounded | {"per_class": per_class, "images": len(predicted)}
