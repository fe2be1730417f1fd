"""Turn decoded images into what the model stage needs, before batching.

Classification: resize the shorter side, center-crop, keep uint8 (a quarter of the
bytes of float32). Normalisation happens where the model runs (``predict``).
Detection: keep the image size (detectors take any size) but cap the longest side.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class CenterCrop:
    """Resize the shorter side to ``resize_size``, then crop ``crop_size`` from the center.

    The steps of torchvision's ImageNet evaluation transforms, stopping at uint8: the
    model stage converts to float and normalises.
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
        """The cropped image as a ``(crop_size, crop_size, 3)`` uint8 array.

        Sizes and offsets are computed as torchvision's ``Resize`` and ``CenterCrop``
        compute them (the long side truncated, the offsets rounded), so the pixels are
        those of the weights' own transforms; ``tests/test_decode.py`` compares them.
        """
        width, height = image.size
        short, long = sorted((width, height))
        new_long = int(self.resize_size * long / short)
        size = (self.resize_size, new_long) if width <= height else (new_long, self.resize_size)
        image = image.resize(size, Image.Resampling.BILINEAR)
        left = int(round((size[0] - self.crop_size) / 2.0))
        top = int(round((size[1] - self.crop_size) / 2.0))
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


@dataclass(frozen=True)
class KeepDecoded:
    """Keep the decoded image as it is, for a model whose own processor resizes it later.

    JPEGs are still decoded at a reduced scale when their shorter side stays at least
    ``min_side`` (see :func:`nbhelpers.decode.decode_image`), so give the same
    ``min_side`` as the preprocessing this is compared with, and both see the same pixels.
    """

    min_side: int = 256
    fixed_size = False  # outputs keep their own sizes: batches hold a list of arrays

    @property
    def empty(self) -> np.ndarray:
        """The placeholder array carried for a row whose image failed to decode."""
        return np.zeros((1, 1, 3), dtype=np.uint8)

    def __call__(self, image: Image.Image) -> np.ndarray:
        """The decoded image as an ``(H, W, 3)`` uint8 array."""
        return np.asarray(image, dtype=np.uint8)


@dataclass(frozen=True)
class ProcessorResize:
    """Resize and crop with a Hugging Face image processor's own steps, and stop there: uint8 out.

    The processor of an image-classification model resizes (and for some models
    crops), rescales to [0, 1] and normalises, producing float32. Run here, in the
    CPU tasks that decode the images, only its resize and crop run, so what travels
    to the model is a quarter of the bytes; the model stage rescales and normalises
    with the processor's ``rescale_factor``, ``image_mean`` and ``image_std``. The
    pixels are exactly those the processor itself would produce.

    Args:
        processor: the image processor (``pipeline.image_processor``).
    """

    processor: object

    @cached_property
    def output_shape(self) -> tuple[int, int, int]:
        """``(height, width, 3)`` of every output (the processor's fixed output size)."""
        return self(Image.new("RGB", (self.min_side * 2, self.min_side))).shape

    @cached_property
    def fixed_size(self) -> bool:
        """Whether every output has the same shape, whatever the input's aspect ratio."""
        wide = Image.new("RGB", (self.min_side * 2, self.min_side))
        tall = Image.new("RGB", (self.min_side, self.min_side * 2))
        return self(wide).shape == self(tall).shape

    @cached_property
    def min_side(self) -> int:
        """The largest side the processor resizes or crops to: decoders must keep at least this."""
        sizes = [
            _size_values(getattr(self.processor, name, None)) for name in ("size", "crop_size")
        ]
        return max([value for values in sizes for value in values] or [256])

    @property
    def empty(self) -> np.ndarray:
        """The placeholder array carried for a row whose image failed to decode."""
        return np.zeros(self.output_shape, dtype=np.uint8)

    def __call__(self, image: Image.Image) -> np.ndarray:
        """The resized (and cropped) image as an ``(H, W, 3)`` uint8 array."""
        pixels = self.processor(
            images=image, do_rescale=False, do_normalize=False, return_tensors="np"
        )["pixel_values"][0]
        pixels = np.asarray(pixels)
        if pixels.dtype != np.uint8:  # processors that compute in float: values are integral
            pixels = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(pixels.transpose(1, 2, 0))


def _size_values(size: object) -> list[int]:
    """The integer sizes in a processor's ``size`` or ``crop_size`` (a dict or a SizeDict)."""
    if size is None:
        return []
    if isinstance(size, int):
        return [size]
    items = size.items() if isinstance(size, dict) else vars(size).items()
    keys = ("height", "width", "shortest_edge")
    return [int(value) for key, value in items if key in keys and isinstance(value, int)]
