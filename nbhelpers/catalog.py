"""What the notebooks use, in one list: for each notebook, the module that builds its model,
the pretrained weights and hub models it loads, its default dataset, and its model call.

``make prefetch`` downloads what this lists, ``make doctor`` checks that it is cached, and
the tests check each notebook against its entry. A new notebook adds one entry here.
"""

from __future__ import annotations

from dataclasses import dataclass

from torchvision.models import ResNet18_Weights, Weights

from nbhelpers import detection, resnet, vit

# The Imagenette validation split and the Pascal VOC cats and dogs, on the Ray docs' buckets.
IMAGENETTE_VAL_URI = "s3://anonymous@air-example-data-2/imagenette2/val/"
VOC_ANIMALS_URI = "s3://anonymous@air-example-data/AnimalDetection/JPEGImages/"


@dataclass(frozen=True)
class NotebookEntry:
    """What one notebook loads and teaches."""

    notebook: str
    """The notebook's file name in ``notebooks/``, without ``.ipynb``."""
    model_module: str
    """The ``nbhelpers`` module that builds its model, pretrained or offline."""
    model_call: str
    """The model call that the notebook's own cells make (its lesson), as it is written."""
    dataset: str
    """Its default ``data_uri``."""
    weights: tuple[Weights, ...] = ()
    """The torchvision weights it loads with ``pretrained=True`` (its exercises included)."""
    hub_models: tuple[str, ...] = ()
    """The Hugging Face hub ids it loads with ``pretrained=True``."""


NOTEBOOKS = (
    NotebookEntry(
        "01_resnet_classification",
        model_module="resnet",
        model_call="torch.inference_mode()",
        dataset=IMAGENETTE_VAL_URI,
        weights=(resnet.PRETRAINED_WEIGHTS, ResNet18_Weights.DEFAULT),
    ),
    NotebookEntry(
        "02_vit_classification",
        model_module="vit",
        model_call='pipeline("image-classification"',
        dataset=IMAGENETTE_VAL_URI,
        hub_models=(vit.VIT_MODEL_ID,),
    ),
    NotebookEntry(
        "03_fasterrcnn_detection",
        model_module="detection",
        model_call="torch.inference_mode()",
        dataset=VOC_ANIMALS_URI,
        weights=(detection.PRETRAINED_WEIGHTS,),
    ),
)


def torchvision_weights() -> list[Weights]:
    """Every torchvision weight the notebooks load, each once."""
    return list(dict.fromkeys(w for entry in NOTEBOOKS for w in entry.weights))


def hub_models() -> list[str]:
    """Every Hugging Face hub model the notebooks load, each once."""
    return list(dict.fromkeys(m for entry in NOTEBOOKS for m in entry.hub_models))


def datasets() -> list[str]:
    """Every ``s3://`` dataset the notebooks read by default, each once."""
    return list(dict.fromkeys(entry.dataset for entry in NOTEBOOKS))
