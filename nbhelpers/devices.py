"""What the model actors need of their device: whether torch can use the GPUs Ray counts (asked
in a one-GPU Ray task), normalisation constants made once on it, and cuDNN's autotuner."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import ray
import torch

GPU_CHECK_TIMEOUT_S = 120  # how long the check may wait for a free GPU
_ANSWERS: dict[str, str | None] = {}  # by cluster: a notebook run again asks only once


def _cuda_in_this_worker() -> tuple[bool, str]:
    """Whether torch can use CUDA in this process, and its build (``torch.__version__``)."""
    return torch.cuda.is_available(), f"torch {torch.__version__} (CUDA {torch.version.cuda})"


def torch_can_use_the_gpus() -> str | None:
    """``None`` when torch, in a Ray task that holds one GPU, can use it; else what is wrong.

    Ray counts GPUs from the driver (NVML), whether or not the torch installed can use
    them: a CPU-only build of torch, or one built for a newer CUDA than the driver, sees no
    GPU, and a pool planned on GPUs would crash at ``.to("cuda")``.
    """
    cluster = ray.get_runtime_context().gcs_address
    if cluster not in _ANSWERS:
        _ANSWERS[cluster] = _ask_a_gpu_task()
    return _ANSWERS[cluster]


def _ask_a_gpu_task() -> str | None:
    """What :func:`torch_can_use_the_gpus` says, asked of a new one-GPU Ray task."""
    probe = ray.remote(num_gpus=1, num_cpus=0)(_cuda_in_this_worker).remote()
    try:
        usable, build = ray.get(probe, timeout=GPU_CHECK_TIMEOUT_S)
    except ray.exceptions.GetTimeoutError:
        ray.cancel(probe, force=True)
        return None  # every GPU is busy: nothing to tell, the actors will wait for theirs
    if usable:
        return None
    return (
        f"Ray counts GPUs, but {build} in a Ray worker cannot use them: install a CUDA build "
        "of torch that the GPU driver supports (https://pytorch.org/get-started/locally/, "
        "`nvidia-smi` shows the driver's CUDA version); until then the pool runs on CPUs."
    )


def mean_and_std_on(
    device: str | torch.device, mean: Sequence[float], std: Sequence[float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``mean`` and ``std`` as float32 tensors on ``device``, made once per device and values.

    torchvision's ``normalize`` turns lists into new tensors on the image's device at every
    call (a blocking copy to a GPU); tensors already there, of the image's dtype, are used as
    they are.
    """
    return _constants(str(torch.device(device)), tuple(mean), tuple(std))


@cache
def _constants(device: str, mean: tuple, std: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """The tensors of :func:`mean_and_std_on`, kept for the life of the process."""
    return (
        torch.tensor(mean, dtype=torch.float32, device=device),
        torch.tensor(std, dtype=torch.float32, device=device),
    )


def tune_convolutions(device: str) -> None:
    """On a GPU, let cuDNN time its convolution algorithms once per input shape and keep the
    fastest (``torch.backends.cudnn.benchmark``): worth it where every batch has one shape.

    A function of its own: an actor class that touches ``torch.backends.cudnn`` itself
    cannot be sent to Ray's workers (cloudpickle: "cannot pickle 'CudnnModule'").
    """
    torch.backends.cudnn.benchmark = torch.device(device).type == "cuda"
