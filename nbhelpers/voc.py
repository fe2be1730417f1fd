"""Pascal VOC annotations: read them, map VOC class names to COCO's, and compute mAP.

In the VOC layout the images sit in ``JPEGImages/`` and, beside it, ``Annotations/``
holds one XML file per image (``2007_000063.jpg`` -> ``2007_000063.xml``) with the
image's size and one ``<object>`` per annotated object: its class name, its box
and whether it is ``difficult``.
"""

from __future__ import annotations

import posixpath
import xml.etree.ElementTree as ElementTree
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow.fs as pafs
import torch

from nbhelpers.decode import DecodeError, read_bytes
from nbhelpers.detection import as_boxes, as_list

IMAGES_FOLDER = "JPEGImages"
ANNOTATIONS_FOLDER = "Annotations"

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

    ``box`` is ``(x1, y1, x2, y2)`` in continuous pixel coordinates: VOC's
    1-based inclusive pixel indices ``xmin..xmax`` become ``xmin - 1 .. xmax``, the
    convention of the boxes that torchvision's detectors return.
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
    """The COCO name of a VOC class (``"tvmonitor"`` -> ``"tv"``).

    Raises:
        KeyError: the name is not one of the 20 VOC classes.
    """
    key = voc_name.strip().lower()
    if key not in VOC_TO_COCO:
        raise KeyError(
            f"{voc_name!r} is not a Pascal VOC class; expected one of {sorted(VOC_TO_COCO)}."
        )
    return VOC_TO_COCO[key]


def _text(element: ElementTree.Element, tag: str, source: str) -> str:
    found = element.find(tag)
    if found is None or found.text is None:
        raise AnnotationError(f"{source}: <{element.tag}> has no <{tag}>.")
    return found.text.strip()


def parse_voc_xml(data: str | bytes, source: str = "annotation") -> VocAnnotation:
    """Parse the text of one VOC annotation file.

    Args:
        data: the XML.
        source: the file's name, for error messages.

    Raises:
        AnnotationError: not XML, or a required element is missing or not a number.
    """
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError as error:
        raise AnnotationError(f"{source}: not valid XML ({error}).") from None
    if root.tag != "annotation":
        raise AnnotationError(f"{source}: the root element is <{root.tag}>, not <annotation>.")
    try:
        size = root.find("size")
        width = int(float(_text(size, "width", source))) if size is not None else 0
        height = int(float(_text(size, "height", source))) if size is not None else 0
        objects = []
        for item in root.findall("object"):
            box = item.find("bndbox")
            if box is None:
                raise AnnotationError(f"{source}: an <object> has no <bndbox>.")
            xmin, ymin, xmax, ymax = (
                float(_text(box, tag, source)) for tag in ("xmin", "ymin", "xmax", "ymax")
            )
            difficult = item.findtext("difficult", default="0").strip() in ("1", "true")
            objects.append(
                VocObject(
                    name=_text(item, "name", source).lower(),
                    box=(xmin - 1, ymin - 1, xmax, ymax),
                    difficult=difficult,
                )
            )
    except ValueError as error:
        if isinstance(error, AnnotationError):
            raise
        raise AnnotationError(f"{source}: a size or box value is not a number ({error}).") from None
    filename = root.findtext("filename", default="").strip()
    return VocAnnotation(filename, width, height, tuple(objects))


def annotation_path(image_path: str) -> str | None:
    """Where the VOC layout keeps the annotation of ``image_path``; ``None`` outside that layout.

    ``.../JPEGImages/2007_000063.jpg`` -> ``.../Annotations/2007_000063.xml``.
    """
    normalised = str(image_path).replace("\\", "/")
    folder, name = posixpath.split(normalised)
    parent, last = posixpath.split(folder)
    if last != IMAGES_FOLDER:
        return None
    stem = posixpath.splitext(name)[0]
    return posixpath.join(parent, ANNOTATIONS_FOLDER, f"{stem}.xml")


@dataclass
class AnnotationSet:
    """The annotations found for a list of images.

    Attributes:
        annotations: image path -> its annotation, for the images that have one.
        num_images: how many images were looked up.
        problems: annotation path -> why it could not be read or parsed.
    """

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
        objects = sum(len(a.objects) for a in self.annotations.values())
        text = (
            f"Annotations for {len(self.annotations)} of {self.num_images} images "
            f"({objects} objects)."
        )
        if self.problems:
            text += f" {len(self.problems)} annotation files could not be read, e.g. " + next(
                iter(self.problems.values())
            )
        return text


def _existing_files(folders: set[str], filesystem: pafs.FileSystem | None) -> set[str]:
    """The files in ``folders`` (one listing per folder instead of one request per image)."""
    filesystem = filesystem or pafs.LocalFileSystem()
    found = set()
    for folder in folders:
        try:
            infos = filesystem.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
        except OSError:
            continue
        found.update(info.path for info in infos if info.type == pafs.FileType.File)
    return found


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

    Images outside the VOC layout, or without an annotation file, are simply not
    in the result; an unreadable or malformed file is recorded in ``problems``.

    Args:
        image_paths: the images (``ImageSource.paths``).
        filesystem: the pyarrow filesystem of the images (``None``: local files).
        threads: files read at once (S3 answers each request slowly, but in parallel).
    """
    wanted = {path: annotation_path(path) for path in image_paths}
    wanted = {image: xml for image, xml in wanted.items() if xml is not None}
    existing = _existing_files({posixpath.dirname(xml) for xml in wanted.values()}, filesystem)
    wanted = {image: xml for image, xml in wanted.items() if xml in existing}

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        read = pool.map(_read_annotation, wanted.values(), [filesystem] * len(wanted))
        parsed = dict(zip(wanted, read, strict=True))
    annotations = {image: a for image, a in parsed.items() if isinstance(a, VocAnnotation)}
    problems = {wanted[image]: a for image, a in parsed.items() if isinstance(a, str)}
    return AnnotationSet(annotations, len(image_paths), problems)


def voc_evaluation_classes(categories: Sequence[str]) -> dict[str, int]:
    """COCO name -> COCO label index, for the COCO classes that VOC also has."""
    index = {name: i for i, name in enumerate(categories)}
    missing = [name for name in VOC_TO_COCO.values() if name not in index]
    if missing:
        raise ValueError(f"COCO categories lack the VOC classes {missing}.")
    return {name: index[name] for name in VOC_TO_COCO.values()}


def mean_average_precision(
    predictions: pd.DataFrame,
    annotations: Mapping[str, VocAnnotation],
    categories: Sequence[str],
) -> dict | None:
    """COCO-style mean average precision of the detections, over the VOC classes.

    Only images that have an annotation and were predicted count. Detections of
    COCO classes that VOC does not have (a "cup", say) are left out: VOC never
    annotated them, so they would count as false positives. VOC's ``difficult``
    objects are neither required nor held against the model (COCO's ``iscrowd``).
    Computed with torchmetrics' ``MeanAveragePrecision`` (pycocotools underneath)
    on the detections above the score threshold only, so it reads lower than a
    model's published figure, which counts every detection.

    Args:
        predictions: rows with ``path``, ``boxes`` (original-image pixels),
            ``labels`` (COCO names), ``scores`` and ``error``.
        annotations: image path -> :class:`VocAnnotation`.
        categories: the model's COCO category names by label index.

    Returns:
        ``map`` (IoU 0.5 to 0.95), ``map_50`` (VOC's own criterion), ``map_75``,
        ``per_class`` AP (IoU 0.5 to 0.95, classes with ground truth only) and
        ``images``; ``None`` when no predicted image has an annotation.
    """
    classes = voc_evaluation_classes(categories)
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
    result = {key: value.numpy() for key, value in metric.compute().items()}
    names = {index: name for name, index in classes.items()}
    per_class = {
        names[int(label)]: round(float(ap), 4)
        for label, ap in zip(
            np.atleast_1d(result["classes"]), np.atleast_1d(result["map_per_class"]), strict=True
        )
        if int(label) in names and ap >= 0
    }
    rounded = {key: round(float(result[key]), 4) for key in ("map", "map_50", "map_75")}
    return rounded | {"per_class": per_class, "images": len(predicted)}
