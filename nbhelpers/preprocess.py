"""Turn decoded images into what the model stage needs, before batching.

Classification: resize the shorter side, center-crop, keep uint8 (a quarter of the
bytes of float32). Normalisation happens where the model runs (``predict``).
Detection: keep the image size (detectors take any size) but cap the longest side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class CenterCrop:
    """Resize the shorter side to ``resize_size``, then crop ``crop_size`` from the center.

    The same steps as torchvision's ImageNet evaluation transforms, on uint8.
    """

    resize_size: int = 256
    crop_size: int = 224
    fixed_size = True  # every output has the same shape: batches stack into one array

    @property
    def min_side(self) -> int:
        """The smallest shorter side a decoder may produce without losing detail."""
        return self.resize_size

    @property
    def empty(self) -> np.ndarray:
        """The placeholder array carried for a row whose image failed to decode."""
        return np.zeros((self.crop_size, self.crop_size, 3), dtype=np.uint8)

    def __call__(self, image: Image.Image) -> np.ndarray:
        """The cropped image as a ``(crop_size, crop_size, 3)`` uint8 array."""
        width, height = image.size
        scale = self.resize_size / min(width, height)
        size = (
            max(self.crop_size, round(width * scale)),
            max(self.crop_size, round(height * scale)),
        )
        image = image.resize(size, Image.Resampling.BILINEAR)
        left = (size[0] - self.crop_size) // 2
        top = (size[1] - self.crop_size) // 2
        image = image.crop((left, top, left + self.crop_size, top + self.crop_size))
        return np.asarray(image, dtype=np.uint8)


@dataclass(frozen=True)
class LimitSize:
    """Keep the aspect ratio, shrinking so that the longest side is at most ``max_side``.

    For detectors, which take images of any size: boxes are later scaled back to
    the original image with the factor this returns.
    """

    max_side: int = 1333
    fixed_size = False  # outputs keep their own sizes: batches hold a list of arrays

    @property
    def min_side(self) -> int:
        """The smallest shorter side a decoder may produce (a safe lower bound)."""
        return self.max_side // 2

    @property
    def empty(self) -> np.ndarray:
        """The placeholder array carried for a row whose image failed to decode."""
        return np.zeros((1, 1, 3), dtype=np.uint8)

    def __call__(self, image: Image.Image) -> np.ndarray:
        """The image as an ``(H, W, 3)`` uint8 array, longest side at most ``max_side``."""
        scale = self.max_side / max(image.size)
        if scale < 1:
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            image = image.resize(size, Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.uint8)
