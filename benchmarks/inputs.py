"""The benchmarks' inputs, made here once and kept in ``.cache/``: JPEGs cut from the sample
photos, and a ViT-Base/16 with seeded random weights. Nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / ".cache" / "benchmark_images" / "500x375"
VIT_BASE = ROOT / ".cache" / "vit-base-random"


def make_images(count: int, size: tuple[int, int] = (500, 375)) -> Path:
    """A folder of at least ``count`` JPEGs of ``size``, cut from the sample photos (made once).

    Image ``i`` is always the same crop (sometimes mirrored) of one of the photos that
    ship with scikit-image and matplotlib, so decoding and the model see real content.
    """
    import numpy as np
    from PIL import Image, ImageOps

    from nbhelpers.sources import sample_photo_paths

    IMAGES.mkdir(parents=True, exist_ok=True)
    photos = [Image.open(path).convert("RGB") for path in sample_photo_paths()]
    for index, draw in enumerate(np.random.default_rng(0).random((count, 4))):
        target = IMAGES / f"img_{index:05d}.jpg"
        if target.exists():
            continue
        photo = photos[index % len(photos)]
        width = min(photo.width, photo.height * size[0] / size[1]) * (0.7 + 0.3 * draw[0])
        height = width * size[1] / size[0]
        left, top = (photo.width - width) * draw[1], (photo.height - height) * draw[2]
        image = photo.crop((round(left), round(top), round(left + width), round(top + height)))
        image = image.resize(size, Image.Resampling.BILINEAR)
        (ImageOps.mirror(image) if draw[3] < 0.5 else image).save(target, quality=90)
    return IMAGES


def vit_base_folder() -> Path:
    """ViT-Base/16 at 224 px with seeded random weights, saved once for ``pipeline(model=...)``.

    The layout is transformers' ``ViTConfig`` default, google/vit-base-patch16-224's; the
    labels and the image processor are those of nbhelpers' offline ViT (the same as google's).
    """
    if (VIT_BASE / "config.json").is_file():
        return VIT_BASE
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    from nbhelpers import vit
    from nbhelpers.models import OFFLINE_SEED

    tiny = vit.offline_vit_folder()
    labels = ViTConfig.from_pretrained(tiny)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(OFFLINE_SEED)
        model = ViTForImageClassification(
            ViTConfig(id2label=labels.id2label, label2id=labels.label2id)
        )
    model.save_pretrained(VIT_BASE)
    ViTImageProcessor.from_pretrained(tiny).save_pretrained(VIT_BASE)
    return VIT_BASE
