"""Start or join Ray, and size the model actor pool so that the job always progresses.

On a 2-core laptop an actor pool whose actors take every CPU leaves nothing for
the read and preprocessing tasks, and the job waits forever without an error.
:func:`size_actor_pool` always leaves CPU for those tasks.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import ray

import nbhelpers


class GPUUnavailableError(RuntimeError):
    """GPUs were asked for, and the Ray cluster has none."""


@dataclass(frozen=True)
class ClusterResources:
    """What the Ray cluster offers."""

    cpus: float
    gpus: float
    nodes: int = 1

    @classmethod
    def from_ray(cls) -> ClusterResources:
        """Read the resources of the running Ray cluster."""
        total = ray.cluster_resources()
        nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
        return cls(cpus=total.get("CPU", 0.0), gpus=total.get("GPU", 0.0), nodes=nodes)


@dataclass(frozen=True)
class ActorPoolPlan:
    """How many model actors to run, what each reserves, and what is left for the rest.

    Attributes:
        num_actors: size of the model actor pool.
        cpus_per_actor: CPUs each model actor reserves (may be fractional).
        gpus_per_actor: GPUs each model actor reserves (0 or 1).
        cpus_per_task: CPUs each read-and-preprocess task reserves.
        cpus_left_for_tasks: CPUs that no actor can take, kept for those tasks.
        use_gpu: whether the model runs on GPUs.
        notes: what was adjusted and why, for the notebook to print.
    """

    num_actors: int
    cpus_per_actor: float
    gpus_per_actor: float
    cpus_per_task: float
    cpus_left_for_tasks: float
    use_gpu: bool
    notes: tuple[str, ...] = ()

    @property
    def device(self) -> str:
        """``"cuda"`` or ``"cpu"``: where the model actors run their model."""
        return "cuda" if self.use_gpu else "cpu"

    @property
    def torch_threads(self) -> int:
        """Threads each CPU actor gives torch: the whole CPUs it reserved, at least one."""
        return max(1, int(self.cpus_per_actor))

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
        return " ".join([text, *self.notes])


def require_gpus(resources: ClusterResources, use_gpu: bool | None) -> bool:
    """Decide whether to use GPUs; fail before any work if they are asked for but absent.

    Args:
        resources: what the cluster offers.
        use_gpu: ``True`` requires GPUs, ``False`` forbids them, ``None`` uses them
            when there are any.

    Raises:
        GPUUnavailableError: ``use_gpu=True`` and the cluster has no GPU.
    """
    if use_gpu and resources.gpus < 1:
        raise GPUUnavailableError(
            f"use_gpu=True, but the Ray cluster has no GPU ({resources.cpus:g} CPUs, "
            f"{resources.gpus:g} GPUs). Run with use_gpu=None (use GPUs when present) or "
            "use_gpu=False to run on CPU, or connect to a cluster with GPUs (RAY_ADDRESS)."
        )
    return resources.gpus >= 1 if use_gpu is None else bool(use_gpu)


def size_actor_pool(
    resources: ClusterResources, num_actors: int | None = None, use_gpu: bool | None = None
) -> ActorPoolPlan:
    """Size the model actor pool from the cluster's resources.

    GPUs: one actor per GPU. CPU only: about three quarters of the CPUs go to model
    actors, the rest (at least one CPU, or half of a single CPU) stays free for the
    read and preprocessing tasks, so the pipeline never deadlocks. A request for
    more actors than fit is reduced to what fits, with a note that says so.

    Args:
        resources: what the cluster offers (:meth:`ClusterResources.from_ray`).
        num_actors: the pool size asked for (``None``: chosen here).
        use_gpu: see :func:`require_gpus`.
    """
    gpu = require_gpus(resources, use_gpu)
    cpus = resources.cpus
    if cpus <= 0:
        raise RuntimeError("The Ray cluster reports no CPU; cannot run any task.")
    notes: list[str] = []
    reserve = cpus / 2 if cpus < 2 else max(1.0, math.floor(cpus / 4))
    for_actors = cpus - reserve
    if num_actors is not None and num_actors < 1:
        raise ValueError(f"num_actors must be at least 1 or None, got {num_actors}.")
    if gpu:
        most = int(resources.gpus)
        actors = most if num_actors is None else min(num_actors, most)
        if num_actors is not None and num_actors > most:
            notes.append(
                f"Asked for {num_actors} actors, the cluster has {most} GPU(s): using {actors}."
            )
        cpus_per_actor = min(1.0, for_actors / actors)
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
        gpus_per_actor = 0.0
    cpus_per_task = min(1.0, reserve)
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
    )


def default_batch_size(plan: ActorPoolPlan, gpu: int = 64, cpu: int = 16) -> int:
    """Rows per model call: large on a GPU, smaller on CPU to keep memory and latency low."""
    return gpu if plan.use_gpu else cpu


def _runtime_env() -> dict:
    """Ship ``nbhelpers`` to every worker, and pass on the settings workers need."""
    keep = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "TORCH_HOME")
    env_vars = {name: os.environ[name] for name in keep if name in os.environ}
    return {"py_modules": [str(Path(nbhelpers.__file__).parent)], "env_vars": env_vars}


def start_ray(num_cpus: int | None = None) -> ClusterResources:
    """Start a local Ray instance, or join the cluster in ``RAY_ADDRESS``.

    Safe to call again in the same kernel: a running instance is reused. The
    ``nbhelpers`` package is shipped to the workers (``runtime_env``), so a remote
    cluster does not need it installed.

    Args:
        num_cpus: CPUs for a local instance (``None``: all of this machine's).
            Ignored when joining an existing cluster.

    Returns:
        The cluster's resources.
    """
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS") or None
        options = dict(runtime_env=_runtime_env(), log_to_driver=True)
        if address is None:
            options |= dict(num_cpus=num_cpus, include_dashboard=False)
        ray.init(address=address, **options)
    ray.data.DataContext.get_current().enable_progress_bars = True
    return ClusterResources.from_ray()


def stop_ray() -> None:
    """Shut Ray down (safe to call when it is not running)."""
    if ray.is_initialized():
        ray.shutdown()
