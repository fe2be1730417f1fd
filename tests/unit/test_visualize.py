"""nbhelpers.visualize: boxes drawn on photos, grids and charts as small JPEG images."""

from __future__ import annotations

import io

import matplotlib
import numpy as np
import pandas as pd
from PIL import Image

from nbhelpers.visualize import (
    JPEG_QUALITY,
    as_jpeg,
    draw_detections,
    plot_confusion_matrix,
    plot_rates,
)

matplotlib.use("Agg")


def test_draw_detections_draws_boxes_and_leaves_images_without_boxes_alone():
    image = np.full((120, 160, 3), 255, np.uint8)
    drawn = draw_detections(image, np.array([[10, 10, 100, 80]]), ["dog"], [0.9])
    assert drawn.shape == image.shape and drawn.dtype == np.uint8
    assert (drawn != 255).any()
    assert (drawn[110:, 120:] == 255).all()  # far from the box: untouched
    unchanged = draw_detections(image, np.zeros((0, 4)), [], [])
    np.testing.assert_array_equal(unchanged, image)


def test_figures_become_jpeg_images():
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(2, 1))
    axes.plot([0, 1], [0, 1])
    jpeg = as_jpeg(figure, dpi=50)
    assert Image.open(io.BytesIO(jpeg.data)).format == "JPEG"
    assert JPEG_QUALITY < 100
    rates = plot_rates({"read": 40.0, "model": 8.0})
    assert Image.open(io.BytesIO(rates.data)).size[0] > 0


def test_the_confusion_matrix_is_drawn_with_its_labels():
    matrix = pd.DataFrame([[2, 1], [0, 3]], index=["cat", "dog"], columns=["cat", "dog"])
    figure = plot_confusion_matrix(matrix)
    labels = [label.get_text() for label in figure.axes[0].get_xticklabels()]
    assert labels == ["cat", "dog"]
