"""Run a classifier on a batch: the same code for the single batch and for the Ray actors."""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch

from nbhelpers.models import ClassifierSpec
from nbhelpers.pipeline import decoded_rows


def to_model_input(images: np.ndarray, spec: ClassifierSpec, device: torch.device) -> torch.Tensor:
    """uint8 ``(N, H, W, 3)`` images to a normalised float ``(N, 3, H, W)`` tensor on ``device``.

    The uint8 array travels to the device (a quarter of the bytes of float32) and
    is converted and normalised there.
    """
    batch = torch.from_numpy(np.ascontiguousarray(images)).to(device, non_blocking=True)
    batch = batch.permute(0, 3, 1, 2).float().div_(255)
    mean = torch.tensor(spec.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=device).view(1, 3, 1, 1)
    batch = (batch - mean) / std
    if device.type == "cuda":
        batch = batch.contiguous(memory_format=torch.channels_last)
    return batch


def autocast_for(device: torch.device):
    """bf16 autocast on a GPU, nothing on CPU (where it would only slow things down)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


@torch.inference_mode()
def classify(
    model: torch.nn.Module, images: np.ndarray, spec: ClassifierSpec, device: torch.device
) -> dict[str, np.ndarray]:
    """Top-1 and runner-up classes for a batch of uint8 images.

    Returns:
        ``label_index``, ``label``, ``score`` (softmax probability of the top class)
        and ``margin`` (top score minus the runner-up's): parity checks use the
        margin to recognise near-ties, where the top class may legitimately differ
        between batch sizes.
    """
    if len(images) == 0:
        return no_predictions()
    with autocast_for(device):
        logits = model(to_model_input(images, spec, device))
    indices, scores, margins = top_two(logits)
    return {
        "label_index": indices,
        "label": np.array([spec.categories[i] for i in indices], dtype=object),
        "score": scores,
        "margin": margins,
    }


def no_predictions() -> dict[str, np.ndarray]:
    """The columns of :func:`classify` for an empty batch."""
    empty = np.array([], dtype=np.float32)
    return {
        "label_index": np.array([], dtype=np.int64),
        "label": np.array([], dtype=object),
        "score": empty,
        "margin": empty.copy(),
    }


def top_two(logits: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top class of each row of ``logits``, its softmax probability, and its lead on the runner-up.

    Returns:
        ``(indices int64, scores float32, margins float32)``, one entry per row.
    """
    probabilities = logits.float().softmax(dim=1)
    top = probabilities.topk(2, dim=1)
    indices = top.indices[:, 0].cpu().numpy()
    scores = top.values.cpu().numpy()
    return (
        indices.astype(np.int64),
        scores[:, 0].astype(np.float32),
        (scores[:, 0] - scores[:, 1]).astype(np.float32),
    )


def classify_rows(
    model: torch.nn.Module, batch: dict[str, np.ndarray], spec: ClassifierSpec, device: torch.device
) -> dict[str, np.ndarray]:
    """Classify the rows of a prepared batch that decoded; failed rows keep their error.

    ``batch`` comes from :func:`nbhelpers.pipeline.prepare_batch`. The result has
    every input row (``path``, ``error``, predictions as nulls where the image
    failed) and no pixels, so nothing heavy leaves the model stage.
    """
    ok = decoded_rows(batch)
    return rows_with_predictions(batch, ok, classify(model, batch["image"][ok], spec, device))


def rows_with_predictions(
    batch: dict[str, np.ndarray], ok: np.ndarray, predicted: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Every row of ``batch`` with its prediction, or nulls and its error where ``ok`` is False.

    Args:
        batch: a prepared batch (``path``, ``error``, ...).
        ok: which rows were predicted (:func:`nbhelpers.pipeline.decoded_rows`).
        predicted: ``label_index``, ``label``, ``score``, ``margin`` of the ``ok`` rows.

    Returns:
        ``path``, ``error``, ``label_index`` (-1 where none), ``label``, ``score``,
        ``margin``: no pixels, so nothing heavy leaves the model stage.
    """
    rows = len(ok)
    out = {
        "path": batch["path"],
        "error": np.array(
            [None if good else error for good, error in zip(ok, batch["error"], strict=True)],
            dtype=object,
        ),
        "label_index": np.full(rows, -1, dtype=np.int64),
        "label": np.full(rows, None, dtype=object),
        "score": np.full(rows, np.nan, dtype=np.float32),
        "margin": np.full(rows, np.nan, dtype=np.float32),
    }
    for key, values in predicted.items():
        out[key][ok] = values
    return out
