"""Whether torch can use the GPUs that Ray counts, asked where they are: in a one-GPU Ray task."""

from __future__ import annotations

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
