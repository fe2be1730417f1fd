"""Look at images and results: image grids with titles, and the confusion matrix."""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pyarrow.fs as pafs
from PIL import Image

from nbhelpers.decode import DecodeError, load_image


def load_for_display(
    path: str, filesystem: pafs.FileSystem | None = None, size: int = 384
) -> Image.Image | None:
    """Re-read an image for display, small; ``None`` when it cannot be decoded.

    The pipeline never carries original images through the model stage; the few
    shown in a grid are read again here.
    """
    try:
        image = load_image(path, filesystem, min_side=size)
    except DecodeError:
        return None
    image.thumbnail((size, size))
    return image


def show_images(
    images: Sequence[Image.Image | np.ndarray | None],
    titles: Sequence[str],
    ncols: int = 5,
    size: float = 2.6,
) -> plt.Figure:
    """A grid of images with a title above each; a missing image shows as an empty cell."""
    nrows = max(1, math.ceil(len(images) / ncols))
    figure, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, image, title in zip(axes.flat, images, titles, strict=False):
        if image is not None:
            axis.imshow(image)
        axis.set_title(title, fontsize=8)
    figure.tight_layout()
    return figure


def plot_predictions(
    predictions: pd.DataFrame,
    filesystem: pafs.FileSystem | None = None,
    limit: int = 10,
    ncols: int = 5,
) -> plt.Figure:
    """Grid of the first ``limit`` images with predicted label and score (or the error)."""
    rows = predictions.head(limit)
    images = [load_for_display(path, filesystem) for path in rows["path"]]
    titles = [
        f"{row.label}\n{row.score:.1%}"
        if row.error is None or pd.isna(row.error)
        else f"failed:\n{row.error[:40]}"
        for row in rows.itertuples()
    ]
    return show_images(images, titles, ncols=ncols)


def plot_confusion_matrix(matrix: pd.DataFrame) -> plt.Figure:
    """Heat map of a confusion matrix from :func:`nbhelpers.evaluate.confusion_matrix`."""
    figure, axis = plt.subplots(figsize=(1 + 0.6 * matrix.shape[1], 1 + 0.5 * matrix.shape[0]))
    axis.imshow(matrix.to_numpy(), cmap="Blues")
    axis.set_xticks(range(matrix.shape[1]), matrix.columns, rotation=45, ha="right")
    axis.set_yticks(range(matrix.shape[0]), matrix.index)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    for (i, j), count in np.ndenumerate(matrix.to_numpy()):
        if count:
            axis.text(j, i, str(count), ha="center", va="center", fontsize=8)
    figure.tight_layout()
    return figure
