"""The benchmarks' figures from a run's times: steady rate, start-up, its phases, and where one
pipeline overtakes another. Pure arithmetic on ``[done_at, rows]`` batches and phases."""

from __future__ import annotations

PHASES = {
    "imports": "Python start and imports",
    "ray_init": "ray.init",
    "setup": "images listed, pool sized, dataset built",
    "first_read_task": "first read task (decode)",
    "actor_worker_wait": "model actor: a new worker process is started",
    "actor_worker_start": "model actor: worker imports, actor class loaded",
    "model_build": "model build",
    "data_wait": "model actor: waiting for its first images",
    "first_batch": "first batch through the model",
}
"""The phases before the first batch, in order; a pipeline reports those it has."""


def steady_images_per_second(batches: list[list[float]]) -> float | None:
    """Images/s once running: the images after the first batch over the time they took.

    The first batch carries the whole start-up (Ray, the workers, the model), so the
    clock starts when it is done and stops when the last one is. ``batches`` holds
    ``[done_at, rows]`` pairs. This is the project's one definition of steady state.
    """
    batches = sorted(batches)
    if len(batches) < 2 or batches[-1][0] <= batches[0][0]:
        return None
    return sum(rows for _, rows in batches[1:]) / (batches[-1][0] - batches[0][0])


def figures(run: dict) -> dict:
    """A run's figures: images/s end to end and steady, first batch, start-up, its phases."""
    images = sum(rows for _, rows in run["batches"])
    seconds = run["end"] - run["launched"]
    steady = steady_images_per_second(run["batches"])
    phases = {name: [a - run["launched"], b - run["launched"]] for name, a, b in run["phases"]}
    return {
        "num_images": images,
        "seconds": seconds,
        "first_batch_seconds": min(at for at, _ in run["batches"]) - run["launched"],
        "images_per_second": images / seconds,
        "steady_images_per_second": steady,
        "startup_seconds": seconds - images / steady if steady else None,
        "phases": phases,
    } | {key: run[key] for key in ("workers", "plan") if key in run}


def steady_gpu_utilization(run: dict, samples: list[tuple[float, float]]) -> float | None:
    """Mean GPU utilisation (%) once running: between the first batch and the last one.

    ``None`` without a GPU (or without a sample in that window: a run too short to tell).
    """
    done = sorted(at for at, _ in run["batches"])
    busy = [value for at, value in samples if done and done[0] <= at <= done[-1]]
    return sum(busy) / len(busy) if busy else None


def crossover(collection: dict, loader: dict) -> float | None:
    """Images from which the collection's end-to-end time is below the DataLoader's.

    Each pipeline takes ``start-up + images / steady rate``. ``None`` when the
    collection's steady rate is not the higher one (it never catches up); 0 when it
    is ahead from the first image.
    """
    rate_c, rate_d = collection["steady_images_per_second"], loader["steady_images_per_second"]
    if not rate_c or not rate_d or rate_c <= rate_d:
        return None
    extra = collection["startup_seconds"] - loader["startup_seconds"]
    return max(0.0, extra / (1 / rate_d - 1 / rate_c))


def predicted_seconds(row: dict, images: int) -> float:
    """End-to-end seconds for ``images``, from a run's start-up and steady rate."""
    return row["startup_seconds"] + images / row["steady_images_per_second"]


def ratios(rows: dict[str, dict], tuned: str | None) -> dict[str, float]:
    """The targets' ratios: first batch against the tutorial, steady against the others."""
    c, out = rows.get("collection"), {}
    if not c or not c["steady_images_per_second"]:
        return out
    if "tutorial" in rows:
        first = c["first_batch_seconds"] / rows["tutorial"]["first_batch_seconds"]
        out["first batch, collection / tutorial (target <= 0.7)"] = first
    for other, target in (
        ("model_only", " (target >= 0.93)"),
        (tuned, ""),
        ("tutorial", ""),
    ):
        if other in rows and rows[other]["steady_images_per_second"]:
            steady = c["steady_images_per_second"] / rows[other]["steady_images_per_second"]
            out[f"steady, collection / {other}{target}"] = steady
    if tuned in rows:
        memory = c["peak_rss_bytes"] / rows[tuned]["peak_rss_bytes"]
        out[f"peak RSS, collection / {tuned} (target <= 1.5)"] = memory
        if c.get("peak_pss_bytes") and rows[tuned].get("peak_pss_bytes"):
            out[f"peak PSS, collection / {tuned}"] = (
                c["peak_pss_bytes"] / rows[tuned]["peak_pss_bytes"]
            )
    return out
