"""Pascal VOC annotations: read them, map VOC class names to COCO's, and compute mAP.

In the VOC layout, ``Annotations/`` beside ``JPEGImages/`` holds one XML file per image
(``2007_000063.jpg`` -> ``2007_000063.xml``): its size, and each object's class and box.
"""

from __future__ import annotations

import posixpath
import xml.etree.ElementTree as ElementTree
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pandas as pd
import pyarrow.fs as pafs
import torch
from torchvision.datasets import VOCDetection

from nbhelpers.columns import as_boxes, as_list
from nbhelpers.decode import DecodeError
from nbhelpers.reading import read_bytes

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
