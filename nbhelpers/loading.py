"""Load models without ever falling back silently: pretrained weights from the cache or the
network with a clear error, or seeded random weights that are the same in every process.

Every model module (``resnet``, ``vit``, ``detection``) builds its model with these.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torchvision.models import Weights

OFFLINE_SEED = 0
"""Seed of the offline weights: the same in the notebook and in every actor."""


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights are neither cached nor downloadable."""


def cached_weights_path(weights: Weights) -> Path:
    """Where torch's hub cache keeps (or will keep) the file of ``weights``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name


@contextmanager
def network_timeout(seconds: float) -> Iterator[None]:
    """Network reads and connections in this block give up after ``seconds``."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def load_pretrained(
    builder: Callable[..., torch.nn.Module], weights: Weights, **kwargs
) -> torch.nn.Module:
    """``builder(weights=weights)``, from torch's cache or downloaded.

    Raises :class:`WeightsUnavailableError`, saying how to run offline or pre-download,
    when the weights are neither cached nor downloadable.
    """
    path = cached_weights_path(weights)
    try:
        with network_timeout(30):
            return builder(weights=weights, **kwargs)
    except (OSError, RuntimeError) as error:
        if path.exists() and "download" not in str(error).lower():
            raise
        raise WeightsUnavailableError(
            f"Pretrained weights {weights} are not available: they are not in the cache "
            f"({path}) and downloading {weights.url} failed ({type(error).__name__}: {error}). "
            "To run without network, set pretrained=False (random weights, meaningless "
            "predictions), or download them once on a machine with network (make prefetch) "
            "and copy the cache folder (TORCH_HOME)."
        ) from error


def seeded(
    builder: Callable[..., torch.nn.Module], seed: int = OFFLINE_SEED, **kwargs
) -> torch.nn.Module:
    """``builder(weights=None, **kwargs)`` with the same random weights in every process."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return builder(weights=None, **kwargs)
