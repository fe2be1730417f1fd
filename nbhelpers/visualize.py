"""Look at images and results: image grids with titles, boxes, and the confusion matrix."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pyarrow.fs as pafs
import torch
from IPython.display import Image as JpegImage
from matplotlib import font_manager
from PIL import Image
from torchvision.utils import draw_bounding_boxes

from nbhelpers.decode import DecodeError
from nbhelpers.reading import load_image
from nbhelpers.rows import as_boxes, as_list

JPEG_QUALITY = 80
"""Photo grids are shown as JPEG: notebook 01's grid of ten photos weighed 755 KB as PNG and
112 KB as JPEG (2026-12-03); the notebook tests check every figure under 150 KB."""


def _load_small(path: str, filesystem: pafs.FileSystem | None) -> Image.Image | None:
    """Read an image again, small, for display (the model stage never carries the originals)."""
    try:
        image = load_image(path, filesystem, min_side=384).image
    except DecodeError:
        return None
    image.thumbnail((384, 384))
    return image


def show_images(
    images: Sequence[Image.Image | np.ndarray | None],
    titles: Sequence[str],
    ncols: int = 5,
    size: float = 2.6,
) -> JpegImage:
    """A grid of images with a title above each; a missing image shows as an empty cell.

    Returned as a JPEG, which a notebook shows when it is a cell's last expression (or given
    to ``display``); ``.data`` holds its bytes.
    """
    nrows = max(1, math.ceil(len(images) / ncols))
    figure, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, image, title in zip(axes.flat, images, titles, strict=False):
        if image is not None:
            axis.imshow(image)
        axis.set_title(title, fontsize=8)
    figure.tight_layout()
    return as_jpeg(figure)


def as_jpeg(figure: plt.Figure, dpi: int = 100) -> JpegImage:
    """``figure`` rendered as a JPEG and closed, so that a notebook shows it once, as JPEG."""
    buffer = io.BytesIO()
    figure.savefig(
        buffer, format="jpeg", dpi=dpi, bbox_inches="tight", pil_kwargs={"quality": JPEG_QUALITY}
    )
    plt.close(figure)
    return JpegImage(data=buffer.getvalue(), format="jpeg")


def plot_predictions(
    predictions: pd.DataFrame,
    filesystem: pafs.FileSystem | None = None,
    limit: int = 10,
    ncols: int = 5,
) -> JpegImage:
    """Grid of the first ``limit`` photos with predicted label and score (or the error); a
    photo listed several times (the sample's) is shown once."""
    rows = predictions.drop_duplicates("path").head(limit)
    images = [_load_small(path, filesystem) for path in rows["path"]]
    titles = [
        f"{_file_name(row.path)}\n"
        + (f"failed: {row.error[:30]}" if pd.notna(row.error) else f"{row.label}, {row.score:.1%}")
        for row in rows.itertuples()
    ]
    return show_images(images, titles, ncols=ncols)


def _file_name(path: str, width: int = 24) -> str:
    """The file's name, shortened to ``width`` characters, for a tile's title."""
    name = str(path).replace("\\", "/").rsplit("/", 1)[-1]
    return name if len(name) <= width else name[: width - 3] + "..."


def plot_rates(rates: dict[str, float], unit: str = "images/s") -> JpegImage:
    """Horizontal bars of ``rates`` (name: value) on a log scale, each labelled with its value:
    stages of very different speeds side by side."""
    figure, axis = plt.subplots(figsize=(7, 0.5 + 0.45 * len(rates)))
    names, values = list(rates), [max(float(v), 1e-3) for v in rates.values()]
    axis.barh(names, values, color="#4c72b0")
    axis.set_xscale("log")
    axis.invert_yaxis()  # the first rate on top
    axis.set_xlabel(f"{unit} (log scale)")
    for row, value in enumerate(values):
        axis.text(value, row, f" {value:,.0f}", va="center")
    axis.set_xlim(right=max(values) * 8)
    return as_jpeg(figure)


def plot_confusion_matrix(matrix: pd.DataFrame) -> plt.Figure:
    """Heat map of a confusion matrix from :func:`nbhelpers.evaluate.confusion_matrix`."""
    figure, axis = plt.subplots(figsize=(1 + 0.6 * matrix.shape[1], 1 + 0.5 * matrix.shape[0]))
    axis.imshow(matrix.to_numpy(), cmap="Blues")
    axis.set_xticks(range(matrix.shape[1]), matrix.columns, rotation=45, ha="right")
    axis.set_yticks(range(matrix.shape[0]), matrix.index)
    axis.set(xlabel="predicted", ylabel="true")
    for (i, j), count in np.ndenumerate(matrix.to_numpy()):
        if count:
            axis.text(j, i, str(count), ha="center", va="center", fontsize=8)
    figure.tight_layout()
    return figure


def _color(label: str) -> tuple[int, int, int]:
    """A colour for a class name, the same in every image and every run."""
    red, green, blue, _ = plt.get_cmap("tab20")(sum(map(ord, label)) % 20)
    return round(red * 255), round(green * 255), round(blue * 255)


def draw_detections(
    image: Image.Image | np.ndarray,
    boxes: np.ndarray,
    labels: Sequence[str],
    scores: Sequence[float] | None = None,
    max_boxes: int | None = None,
    width: int = 2,
) -> np.ndarray:
    """The RGB image as uint8 ``(H, W, 3)``, its first (most confident) ``max_boxes`` drawn."""
    pixels = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)[:max_boxes]
    labels = list(labels)[: len(boxes)]
    if len(boxes) == 0:
        return pixels.permute(1, 2, 0).numpy()
    colors = [_color(label) for label in labels]
    if scores is not None:
        labels = [f"{label} {score:.2f}" for label, score in zip(labels, scores, strict=False)]
    drawn = draw_bounding_boxes(
        pixels,
        torch.from_numpy(boxes),
        labels=labels,
        colors=colors,
        width=width,
        font=font_manager.findfont("DejaVu Sans"),
        font_size=max(10, pixels.shape[1] // 32),
        label_colors="white",
        label_background_colors=colors,
        fill_labels=True,
    )
    return drawn.permute(1, 2, 0).numpy()


def plot_detections(
    predictions: pd.DataFrame,
    filesystem: pafs.FileSystem | None = None,
    limit: int = 6,
    ncols: int = 3,
    max_boxes: int = 10,
) -> JpegImage:
    """Grid of the first ``limit`` images with their boxes, labels and scores (or the error)."""
    images, titles = [], []
    for row in predictions.head(limit).itertuples():
        name = _file_name(row.path)
        shown = _load_small(row.path, filesystem)
        if pd.notna(row.error) or shown is None:
            images.append(None)
            titles.append(f"{name}\nfailed: {str(row.error)[:40]}")
            continue
        factors = np.array([shown.width / row.width, shown.height / row.height] * 2)
        boxes, labels, scores = as_boxes(row.boxes), as_list(row.labels), as_list(row.scores)
        images.append(draw_detections(shown, boxes * factors, labels, scores, max_boxes=max_boxes))
        note = f" (top {max_boxes} drawn)" if len(labels) > max_boxes else ""
        titles.append(f"{name}\n{len(labels)} detections{note}")
    return show_images(images, titles, ncols=ncols, size=4.0)
