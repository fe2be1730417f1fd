"""Size the pool of model actors from what the cluster offers, so that the job always
progresses; whether torch can use the GPUs Ray counts; each device's precision.

An actor pool that takes every CPU leaves none for the read tasks: the job then waits forever
without an error. :func:`size_actor_pool` always leaves CPU for them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import pandas as pd
import ray
import torch

# The cluster and the plan ---------------------------------------------------------------------


GPU_ACTOR_CPUS = 0.25  # what a GPU actor reserves: it only copies batches and waits on its GPU
# Rows per read task at least, feeding GPUs: notebook 03's 16-photo batches in tasks of 16 left
# its fake GPU 71 % busy on 2 cores, in tasks of 64 87 % (bench-feed, 2026-12-07).
GPU_READ_TASK_ROWS = 64
# Read tasks per CPU left beside GPU actors: while one waits (a file from S3, Ray handing it a
# block), the other decodes. On 2 cores with a fake GPU, two per CPU fed 0.77x of what the cores
# decode with 50 ms reads against 0.52x with one, and 0.86-0.93x against 0.82-0.85x with local
# files (bench-feed, 2026-12-07, docs/performance.md).
READ_TASKS_PER_CPU = 2


class GPUUnavailableError(RuntimeError):
    """GPUs were asked for, and the Ray cluster has none."""


@dataclass(frozen=True)
class ClusterResources:
    """What the Ray cluster offers."""

    cpus: float
    gpus: float
    nodes: int = 1
    node_cpus: tuple[float, ...] = ()  # of each alive node that has any; () if not known
    gpu_problem: str | None = None  # why torch cannot use the GPUs Ray counts; None: it can

    @classmethod
    def from_ray(cls) -> ClusterResources:
        """Read the resources of the running Ray cluster; where it counts GPUs, check in a
        one-GPU task that torch can use them (:func:`torch_can_use_the_gpus`)."""
        total = ray.cluster_resources()
        alive = [node for node in ray.nodes() if node.get("Alive")]
        node_cpus = [node.get("Resources", {}).get("CPU", 0.0) for node in alive]
        gpus = total.get("GPU", 0.0)
        return cls(
            cpus=total.get("CPU", 0.0),
            gpus=gpus,
            nodes=len(alive),
            node_cpus=tuple(sorted(cpus for cpus in node_cpus if cpus > 0)),
            gpu_problem=torch_can_use_the_gpus() if gpus >= 1 else None,
        )

    def describe(self) -> str:
        """One line for the notebook: what the cluster offers."""
        where = f"{self.nodes} node(s)"
        if len(self.node_cpus) > 1:
            where += f" with {', '.join(f'{cpus:g}' for cpus in self.node_cpus)} CPUs"
        text = f"Ray cluster: {self.cpus:g} CPUs, {self.gpus:g} GPUs on {where}."
        return text + (f" {self.gpu_problem}" if self.gpu_problem else "")


@dataclass(frozen=True)
class ActorPoolPlan:
    """How many model actors to run, what each reserves, and what is left for the rest."""

    num_actors: int
    cpus_per_actor: float  # may be fractional
    gpus_per_actor: float  # 0 or 1
    cpus_per_task: float  # what each read-and-preprocess task reserves
    cpus_left_for_tasks: float  # CPUs that no actor can take
    use_gpu: bool
    notes: tuple[str, ...] = ()  # what was adjusted and why, for the notebook to print
    torch_threads: int = 1  # see torch_threads_per_actor

    @property
    def device(self) -> str:
        """``"cuda"`` or ``"cpu"``: where the model actors run their model."""
        return "cuda" if self.use_gpu else "cpu"

    def as_dict(self) -> dict:
        """The plan as plain values, for ``summary.json``."""
        return asdict(self) | {"notes": list(self.notes)}

    def describe(self) -> str:
        """A sentence for the notebook: the pool and what it leaves for preprocessing."""
        where = f"{self.gpus_per_actor:g} GPU + " if self.use_gpu else ""
        text = (
            f"{self.num_actors} model actor(s), each with {where}{self.cpus_per_actor:g} CPU; "
            f"{self.cpus_left_for_tasks:g} CPU kept for reading and preprocessing "
            f"({self.cpus_per_task:g} CPU per task)."
        )
        if not self.use_gpu:
            text += f" Torch runs {self.torch_threads} thread(s) in each actor."
        return " ".join([text, *self.notes])

    def read_tasks(self, num_paths: int, batch_size: int) -> int:
        """How many read tasks for ``num_paths`` files: one model batch each (a block an actor
        takes whole), or smaller ones where a small dataset would leave actors idle. Feeding
        GPUs, whole batches of at least :data:`GPU_READ_TASK_ROWS` rows: each task and block
        costs Ray and the driver the same whatever its rows."""
        per_task = batch_size
        if self.use_gpu:
            per_task *= math.ceil(GPU_READ_TASK_ROWS / batch_size)
        wanted = 2 * self.num_actors if self.num_actors > 1 else 1
        rows = max(1, min(per_task, math.ceil(num_paths / wanted)))
        return max(1, math.ceil(num_paths / rows))

    def numbers(self, batch_size: int) -> pd.DataFrame:
        """The plan number by number, each with the rule that chose it: a table to read."""
        gpu = self.use_gpu
        rows = [
            ("model actors", self.num_actors, "one per GPU; else about 3/4 of the CPUs"),
            (
                "CPUs per actor",
                self.cpus_per_actor,
                "a GPU actor copies batches and waits"
                if gpu
                else "reserved by each actor, for torch",
            ),
            ("GPUs per actor", self.gpus_per_actor, "1 on a GPU cluster, else 0"),
            ("CPUs left for decoding", self.cpus_left_for_tasks, "never 0: decoding must run"),
            (
                "CPUs per decode task",
                self.cpus_per_task,
                "two tasks per CPU left" if gpu else "under an actor's: no fusion",
            ),
            (
                "torch threads per actor",
                self.torch_threads,
                "the GPU computes" if gpu else "CPU actors use every core",
            ),
            ("batch size", batch_size, "rows per model call"),
        ]
        rows = [(number, f"{value:g}", why) for number, value, why in rows]  # 1 and 0.5
        return pd.DataFrame(rows, columns=["number", "value", "why"]).set_index("number")


def torch_threads_per_actor(
    resources: ClusterResources, num_actors: int, use_gpu: bool, cpus_per_actor: float
) -> int:
    """Intra-op threads for torch in each model actor: GPU actors, the CPUs they reserved.

    CPU actors share every core of their node, the one kept for reading too: decoding
    takes milliseconds against hundreds for a forward pass, so that core is mostly idle,
    and torch using it was measured ~1.5x faster on 2 cores.
    """
    if use_gpu:
        return max(1, int(cpus_per_actor))
    nodes = max(1, resources.nodes)
    return max(1, math.floor(resources.cpus / nodes / math.ceil(num_actors / nodes)))


def size_actor_pool(
    resources: ClusterResources, num_actors: int | None = None, use_gpu: bool | None = None
) -> ActorPoolPlan:
    """Size the model actor pool from the cluster's resources.

    GPUs: one actor per GPU. CPU only: about three quarters of the CPUs go to model
    actors; the rest (at least one CPU, or half of a single CPU) stays free for the
    read tasks, so the pipeline never deadlocks. A request for more actors than fit
    is reduced to what fits, with a note that says so. ``use_gpu=None``: GPUs if any;
    ``use_gpu=True`` without GPUs raises :class:`GPUUnavailableError` before any work.
    """
    if use_gpu and resources.gpus < 1:
        raise GPUUnavailableError(
            f"use_gpu=True, but the Ray cluster has no GPU ({resources.cpus:g} CPUs, "
            f"{resources.gpus:g} GPUs). Run with use_gpu=None (use GPUs when present) or "
            "use_gpu=False to run on CPU, or connect to a cluster with GPUs (RAY_ADDRESS)."
        )
    if use_gpu and resources.gpu_problem:
        raise GPUUnavailableError(f"use_gpu=True, but {resources.gpu_problem}")
    usable_gpus = resources.gpus >= 1 and not resources.gpu_problem
    gpu = usable_gpus if use_gpu is None else bool(use_gpu)
    cpus = resources.cpus
    if cpus <= 0:
        raise RuntimeError("The Ray cluster reports no CPU; cannot run any task.")
    if num_actors is not None and num_actors < 1:
        raise ValueError(f"num_actors must be at least 1 or None, got {num_actors}.")
    notes: list[str] = []
    reserve = cpus / 2 if cpus < 2 else max(1.0, math.floor(cpus / 4))
    for_actors = cpus - reserve
    # An actor, and a read task, runs on one node: each must fit on the smallest.
    nodes = len(resources.node_cpus)
    smallest = min(resources.node_cpus) if nodes > 1 else math.inf
    if gpu:
        most = int(resources.gpus)
        actors = most if num_actors is None else min(num_actors, most)
        if num_actors is not None and num_actors > most:
            notes.append(
                f"Asked for {num_actors} actors, the cluster has {most} GPU(s): using {actors}."
            )
        cpus_per_actor = min(GPU_ACTOR_CPUS, for_actors / actors)
        gpus_per_actor = 1.0
    else:
        if num_actors is None:
            cpus_per_actor = max(1.0, math.floor(for_actors / 4)) if for_actors >= 1 else for_actors
            actors = max(1, math.floor(for_actors / cpus_per_actor))
        else:
            actors = num_actors
            cpus_per_actor = min(max(1.0, math.floor(for_actors / actors)), for_actors / actors)
            if for_actors / actors < 1:
                notes.append(
                    f"{actors} actors share {for_actors:g} CPUs ({cpus_per_actor:.2g} each), "
                    f"so that {reserve:g} CPU stays free for reading and preprocessing."
                )
        if cpus_per_actor > smallest:
            notes.append(
                f"Each actor reserves {smallest:g} CPUs, as many as the smallest node has, "
                f"so that it fits on any node (not {cpus_per_actor:g})."
            )
            cpus_per_actor = smallest
        gpus_per_actor = 0.0
    cpus_per_task = min(1.0, reserve)
    if nodes > 1:  # what the actors, spread evenly, leave free on each node
        left = smallest - math.ceil(actors / nodes) * cpus_per_actor
        cpus_per_task = min(cpus_per_task, max(left, smallest / 4))
    if gpu:  # GPU actors leave nearly every CPU: two read tasks per CPU left, rounded up
        left = (smallest if nodes > 1 else cpus) - math.ceil(
            actors / max(1, nodes)
        ) * cpus_per_actor
        slots = READ_TASKS_PER_CPU * math.ceil(left)
        cpus_per_task = round(left / slots, 4) if left > 0 else cpus_per_task
    if cpus_per_task == cpus_per_actor and gpus_per_actor == 0:
        # Equal resources would let Ray Data fuse decoding into the model actor,
        # leaving the reserved CPU idle; half-CPU tasks keep the stages apart.
        cpus_per_task /= 2
    return ActorPoolPlan(
        num_actors=actors,
        cpus_per_actor=round(cpus_per_actor, 4),
        gpus_per_actor=gpus_per_actor,
        cpus_per_task=cpus_per_task,
        cpus_left_for_tasks=round(cpus - actors * cpus_per_actor, 4),
        use_gpu=gpu,
        notes=tuple(notes),
        torch_threads=torch_threads_per_actor(resources, actors, gpu, cpus_per_actor),
    )


def compute_dtype(device: str) -> torch.dtype:
    """The precision a model computes in on ``device`` (``"cuda"`` or ``"cpu"``).

    GPUs: bfloat16 where the GPU has it natively (Ampere and newer: A100, L4, H100,
    RTX 30xx and up), which keeps float32's range, so logits never overflow, at float16's
    speed; float16 on older GPUs (V100, T4), which have no bfloat16 units. CPUs: float32,
    since half precision there is slower, not faster.
    """
    if device != "cuda":
        return torch.float32
    return (
        torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
    )


# Whether torch can use the GPUs that Ray counts -----------------------------------------------


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
