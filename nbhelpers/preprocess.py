"""Turn decoded images into what the model stage needs, as uint8 (a quarter of float32's bytes).

Every class here is a :class:`Preprocess`: the contract the read stage relies on.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

import numpy as np
from PIL import Image


class Preprocess(Protocol):
    """What the read stage (``reading.prepare_image``) asks of a preprocessing step."""

    @property
    def min_side(self) -> int:
        """The shortest side a decoder may reduce a large image to without losing detail."""

    @property
    def max_side(self) -> int | None:
        """The longest side the model uses (``None``: any): larger images decode smaller."""

    @property
    def fixed_size(self) -> bool:
        """Whether every output has one shape, so that a batch stacks into one array."""

    @property
    def empty(self) -> np.ndarray:
        """The placeholder image of a row that failed to decode."""

    def __call__(self, image: Image.Image) -> np.ndarray:
        """The decoded RGB image as the model stage wants it: uint8, ``(H, W, 3)``."""


@dataclass(frozen=True)
class CenterCrop:
    """Resize the shorter side to ``resize_size``, then crop ``crop_size`` from the center.

    Sizes and offsets as torchvision's ``Resize`` and ``CenterCrop`` compute them, so
    the pixels are those of the weights' own transforms (``tests/test_decode.py``).
    """

    resize_size: int = 256
    crop_size: int = 224
    fixed_size = True
    max_side = None

    @property
    def min_side(self) -> int:
        """The ``resize_size``."""
        return self.resize_size

    @property
    def empty(self) -> np.ndarray:
        """The placeholder for a failed row: a black crop."""
        return np.zeros((self.crop_size, self.crop_size, 3), dtype=np.uint8)

    def __call__(self, image: Image.Image) -> np.ndarray:
        """The cropped image as a ``(crop_size, crop_size, 3)`` uint8 array."""
        width, height = image.size
        new_long = int(self.resize_size * max(width, height) / min(width, height))  # truncated
        size = (self.resize_size, new_long) if width <= height else (new_long, self.resize_size)
        image = image.resize(size, Image.Resampling.BILINEAR)
        left = int(round((size[0] - self.crop_size) / 2.0))
        top = int(round((size[1] - self.crop_size) / 2.0))
        image = image.crop((left, top, left + self.crop_size, top + self.crop_size))
        return np.asarray(image, dtype=np.uint8)


@dataclass(frozen=True)
class LimitSize:
    """Shrink so that the longest side is at most ``max_side``, for detectors (any size)."""

    max_side: int = 1333
    fixed_size = False

    @property
    def min_side(self) -> int:
        """Half of ``max_side`` (a safe lower bound)."""
        return self.max_side // 2

    @property
    def empty(self) -> np.ndarray:
        """The placeholder for a failed row: one black pixel."""
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

    Give the ``min_side`` of the preprocessing it is compared with: the same pixels.
    """

    min_side: int = 256
    fixed_size = False
    max_side = None

    @property
    def empty(self) -> np.ndarray:
        """The placeholder for a failed row: one black pixel."""
        return np.zeros((1, 1, 3), dtype=np.uint8)

    def __call__(self, image: Image.Image) -> np.ndarray:
        """The decoded image as an ``(H, W, 3)`` uint8 array."""
        return np.asarray(image, dtype=np.uint8)


@dataclass(frozen=True)
class ProcessorResize:
    """Resize and crop with a Hugging Face image processor's own steps, and stop there: uint8 out.

    The model stage rescales and normalises into float32 instead, so what travels from
    the read tasks to the model is a quarter of the bytes.
    """

    processor: object  # the image processor (``pipeline.image_processor``)
    max_side = None

    @cached_property
    def output_shape(self) -> tuple[int, int, int]:
        """``(height, width, 3)`` of every output (the processor's fixed output size)."""
        return self(Image.new("RGB", (self.min_side * 2, self.min_side))).shape

    @cached_property
    def fixed_size(self) -> bool:
        """Whether every output has the same shape, whatever the input's aspect ratio."""
        tall = Image.new("RGB", (self.min_side, self.min_side * 2))
        return self(tall).shape == self.output_shape

    @cached_property
    def min_side(self) -> int:
        """The largest side the processor resizes or crops to."""
        values: list[int] = []
        keys = ("height", "width", "shortest_edge")
        for name in ("size", "crop_size"):
            size = getattr(self.processor, name, None)
            if isinstance(size, int):
                values.append(size)
            elif size is not None:  # a dict, or a SizeDict
                items = size.items() if isinstance(size, dict) else vars(size).items()
                values += [int(v) for k, v in items if k in keys and isinstance(v, int)]
        return max(values or [256])

    @property
    def empty(self) -> np.ndarray:
        """The placeholder for a failed row: a black image of the output's shape."""
        return np.zeros(self.output_shape, dtype=np.uint8)

    def __call__(self, image: Image.Image) -> np.ndarray:
        """The resized (and cropped) image as an ``(H, W, 3)`` uint8 array."""
        out = self.processor(
            images=image, do_rescale=False, do_normalize=False, return_tensors="np"
        )
        pixels = np.asarray(out["pixel_values"][0])
        if pixels.dtype != np.uint8:  # processors that compute in float: values are integral
            pixels = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(pixels.transpose(1, 2, 0))
