"""The lessons, as plain data: each notebook's file, model call, actor class, default dataset,
and the weights and hub models it loads; the project's folders, the local copies of the
datasets among them.

The one list of the notebooks: ``make run`` / ``make smoke`` run these, ``make prefetch``
downloads what they load, ``make doctor`` checks that it is cached, the benchmarks and the GPU
check find their notebooks here, and the tests check each notebook against its entry. A new
notebook adds one entry here. Only the standard library is imported: ``make doctor`` runs where nothing else is installed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

PROJECT_ROOT = Path(__file__).resolve().parent.parent  # holds notebooks/ and nbhelpers/
NOTEBOOK_DIR = PROJECT_ROOT / "notebooks"
OUTPUT_ROOT = PROJECT_ROOT / "outputs"

# The Imagenette validation split and the Pascal VOC cats and dogs, on the Ray docs' buckets.
IMAGENETTE_VAL_URI = "s3://anonymous@air-example-data-2/imagenette2/val/"
VOC_ANIMALS_URI = "s3://anonymous@air-example-data/AnimalDetection/JPEGImages/"
VIT_MODEL_ID = "google/vit-base-patch16-224"
"""The pretrained ViT of notebook 02 on the Hugging Face hub (ImageNet-1k classes)."""


@dataclass(frozen=True)
class NotebookEntry:
    """What one notebook loads and teaches."""

    notebook: str
    """The notebook's file name in ``notebooks/``, without ``.ipynb``."""
    model_module: str
    """The ``nbhelpers`` module that builds its model, pretrained or offline, and that the
    notebook imports."""
    model_call: str
    """The model call that the notebook's own cells make (its lesson), as it is written."""
    dataset: str
    """Its default ``data_uri``."""
    weights: tuple[str, ...] = ()
    """The torchvision weights it loads with ``pretrained=True`` (its exercises included), by
    the names ``torchvision.models.get_weight`` takes."""
    predictor: str = ""
    """The notebook's actor class, the one ``map_batches`` runs (the benchmarks time it)."""
    hub_models: tuple[str, ...] = ()
    """The Hugging Face hub ids it loads with ``pretrained=True``."""

    @property
    def path(self) -> Path:
        """The notebook's file."""
        return NOTEBOOK_DIR / f"{self.notebook}.ipynb"


NOTEBOOKS = (
    NotebookEntry(
        "01_resnet_classification",
        model_module="models",
        model_call="torch.inference_mode()",
        dataset=IMAGENETTE_VAL_URI,
        weights=("ResNet152_Weights.IMAGENET1K_V2", "ResNet18_Weights.IMAGENET1K_V1"),
        predictor="ResNetPredictor",
    ),
    NotebookEntry(
        "02_vit_classification",
        model_module="vit",
        model_call='pipeline("image-classification"',
        dataset=IMAGENETTE_VAL_URI,
        hub_models=(VIT_MODEL_ID,),
        predictor="ViTPredictor",
    ),
    NotebookEntry(
        "03_fasterrcnn_detection",
        model_module="models",
        model_call="torch.inference_mode()",
        dataset=VOC_ANIMALS_URI,
        weights=("FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1",),
        predictor="FasterRCNNPredictor",
    ),
    NotebookEntry(
        "04_what_makes_it_fast",
        model_module="models",
        model_call="torch.inference_mode()",
        dataset=IMAGENETTE_VAL_URI,
        weights=("ResNet152_Weights.IMAGENET1K_V2",),
        predictor="ResNetPredictor",
    ),
)


def entries(only: str | None = None) -> list[NotebookEntry]:
    """The notebooks, or those whose name contains ``only`` (``"01"``, ``"vit"``)."""
    return [entry for entry in NOTEBOOKS if not only or only in entry.notebook]


def entry(only: str) -> NotebookEntry:
    """The one notebook whose name contains ``only``; a LookupError if not exactly one."""
    found = entries(only)
    if len(found) != 1:
        names = [e.notebook for e in found] or [e.notebook for e in NOTEBOOKS]
        raise LookupError(f"{len(found)} notebooks match {only!r} among the lessons: {names}")
    return found[0]


def torchvision_weights() -> list[str]:
    """Every torchvision weight the notebooks load, each once, by name
    (``torchvision.models.get_weight(name)`` gives the weights)."""
    return list(dict.fromkeys(w for entry in NOTEBOOKS for w in entry.weights))


def hub_models() -> list[str]:
    """Every Hugging Face hub model the notebooks load, each once."""
    return list(dict.fromkeys(m for entry in NOTEBOOKS for m in entry.hub_models))


def datasets() -> list[str]:
    """Every ``s3://`` dataset the notebooks read by default, each once."""
    return list(dict.fromkeys(entry.dataset for entry in NOTEBOOKS))


# The local copies of s3:// datasets that make prefetch made ----------------------------------------


CACHE_ENV = "NBHELPERS_CACHE"


def dataset_cache_dir() -> Path:
    """Where local copies of ``s3://`` datasets go: ``<$NBHELPERS_CACHE or cache/>/datasets``."""
    cache = Path(os.environ.get(CACHE_ENV) or PROJECT_ROOT / "cache")
    return cache.expanduser().resolve() / "datasets"


def local_copy_path(uri: str) -> Path:
    """Where the local copy of an ``s3://`` URI lives (``<cache>/datasets/<bucket>/<prefix>``)."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.hostname:
        raise ValueError(f"Only s3:// URIs have a local copy; got {uri!r}.")
    return dataset_cache_dir() / parsed.hostname / parsed.path.strip("/")


def marker_path(folder: Path) -> Path:
    """The file that marks ``folder`` as a complete copy (beside it, not among the images)."""
    return folder.with_name(folder.name + ".prefetched.json")


def local_copy_of(uri: str) -> Path | None:
    """The complete local copy of ``uri`` made by ``make prefetch`` (with its marker), or ``None``."""
    if not str(uri).startswith("s3://") or not urlparse(str(uri)).hostname:
        return None  # not S3, or no bucket: find_images explains what is wrong
    folder = local_copy_path(str(uri))
    return folder if marker_path(folder).is_file() and folder.is_dir() else None
