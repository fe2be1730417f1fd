"""Where the CPU goes per image: the account that ``make bench-feed`` prints.

Pure arithmetic on what :class:`benchmarks.sampler.MemorySampler` records (CPU seconds per
service, sample by sample) and on a run's batches (``[done_at, rows]``):

- :func:`steady_account`: CPU seconds per kind of process between the first and the last
  batch (the steady part of the run), the images done in that window, and the machine's CPU
  that no process of the run used: idle, or taken by other programs on the machine;
- :func:`split_fixed`: across runs of one notebook at different rates, what grows with the
  images (CPU seconds per 1,000 images) and what grows with time (cores, whatever the rate),
  by least squares on ``cpu = a * images + b * seconds``;
- :func:`projection`: the images/s a bigger machine would reach on paper from that split.
"""

from __future__ import annotations

from benchmarks.sampler import IDLE_CPU

WORKERS_STARTING = "Ray: workers starting (before they take a task)"
"""The sampler's name for a Ray worker process that has not yet set its title."""

OTHER_PROGRAMS = "(other programs on the machine)"
"""The machine's CPU time that neither the run's processes nor idle account for."""

KINDS = {
    "read tasks (decode)": "read tasks (read, decode, preprocess)",
    "model actor": "model actor (fake device)",
    "the pipeline's own process (driver)": "driver (notebook cells, Ray Data's executor)",
    "write tasks": "write tasks (Parquet)",
}
"""The sampler's service names that the account prints under another name."""

NOT_THE_PIPELINE = (IDLE_CPU, OTHER_PROGRAMS)
"""Kinds in the account that no process of the run used."""
NOT_ONCE_RUNNING = (*NOT_THE_PIPELINE, WORKERS_STARTING)
"""Kinds left out of "once running": those, and worker processes still starting (start-up)."""


def kind_of(service: str) -> str:
    """The account's name for one of the sampler's services."""
    return KINDS.get(service, service)


def steady_account(
    ticks: list[tuple[float, dict[str, float]]], batches: list[list[float]], cores: int
) -> dict:
    """CPU seconds per kind of process in the steady part of a run, and what it delivered.

    ``ticks`` are the sampler's ``(time, CPU seconds so far per service)``; the window runs
    from the first sample after the first batch to the last sample before the last batch, and
    ``images`` counts the rows finished inside it; it opens later (``opened`` seconds after
    the first batch) where worker processes were still starting. ``cpu`` holds every kind, idle included,
    and :data:`OTHER_PROGRAMS`: the cores' time in the window that the rest leaves over.
    """
    done = sorted(batches)
    if len(done) < 2:
        return {}
    inside = [(at, totals) for at, totals in ticks if done[0][0] <= at <= done[-1][0]]
    if len(inside) < 2:
        return {}
    # Worker processes still starting after the first batch are the run's start-up, paid once:
    # the window opens once none is, if that leaves it at least half its length.
    starting = [
        at
        for (at, totals), (_, before) in zip(inside[1:], inside, strict=False)
        if totals.get(WORKERS_STARTING, 0.0) > before.get(WORKERS_STARTING, 0.0) + 0.01
    ]
    if starting and starting[-1] - inside[0][0] <= (inside[-1][0] - inside[0][0]) / 2:
        inside = [(at, totals) for at, totals in inside if at >= starting[-1]]
    (start, first), (end, last) = inside[0], inside[-1]
    cpu: dict[str, float] = {}
    for service, seconds in last.items():
        kind = kind_of(service)
        cpu[kind] = cpu.get(kind, 0.0) + seconds - first.get(service, 0.0)
    window = end - start
    cpu[OTHER_PROGRAMS] = max(0.0, cores * window - sum(cpu.values()))
    images = sum(rows for at, rows in done if start < at <= end)
    opened = start - done[0][0]
    return {"seconds": window, "images": images, "cores": cores, "cpu": cpu, "opened": opened}


def tasks_at_once(tasks: list[list], operator: str, window: tuple[float, float]) -> float | None:
    """How many of ``operator``'s tasks ran at once on average in ``window`` (start, end), from
    Ray's timeline (``[operator, task id, start, seconds]``; a task's longest span counts)."""
    spans: dict[str, tuple[float, float]] = {}
    for name, task, start, seconds in tasks:
        if (
            operator in name
            and seconds > spans.get(task, (0.0, 0.0))[1] - spans.get(task, (0.0, 0.0))[0]
        ):
            spans[task] = (start, start + seconds)
    begin, end = window
    if end <= begin or not spans:
        return None
    inside = sum(max(0.0, min(b, end) - max(a, begin)) for a, b in spans.values())
    return inside / (end - begin)


def per_thousand(account: dict) -> dict[str, float]:
    """CPU seconds per 1,000 images for each kind of an account (:func:`steady_account`)."""
    if not account or not account["images"]:
        return {}
    return {kind: 1000 * seconds / account["images"] for kind, seconds in account["cpu"].items()}


def pipeline_cpu(account: dict) -> float:
    """CPU seconds per 1,000 images that the run's own processes used once running: idle,
    other programs and worker processes still starting (the run's start-up) left out."""
    return sum(v for k, v in per_thousand(account).items() if k not in NOT_ONCE_RUNNING)


def split_fixed(accounts: list[dict]) -> dict[str, tuple[float, float]]:
    """Per kind, across runs at different rates: CPU seconds per 1,000 images, and cores taken
    whatever the rate (``cpu = a * images + b * seconds``, least squares, no intercept).

    Worker processes that start inside the window are the run's start-up, left out here.
    The two are told apart only by runs whose images/s differ (a slowed fake device, or
    delayed reads); with one rate, or fewer than two runs, the answer is empty.
    """
    import numpy as np

    runs = [a for a in accounts if a and a["images"] and a["seconds"]]
    rates = {round(a["images"] / a["seconds"]) for a in runs}
    if len(runs) < 2 or len(rates) < 2:
        return {}
    design = np.array([[a["images"], a["seconds"]] for a in runs])
    kinds = sorted({kind for a in runs for kind in a["cpu"]} - set(NOT_ONCE_RUNNING))
    out = {}
    for kind in kinds:
        used = np.array([a["cpu"].get(kind, 0.0) for a in runs])
        (per_image, per_second), *_ = np.linalg.lstsq(design, used, rcond=None)
        out[kind] = (1000 * float(per_image), float(per_second))
    return out


def projection(
    split: dict[str, tuple[float, float]], cpus: float, device_rate: float, nodes: int = 1
) -> dict:
    """Images/s on ``nodes`` nodes with ``cpus`` CPUs in all, on paper, from :func:`split_fixed`.

    Every per-image cost is taken to stay per image on the bigger machine, and every fixed
    cost to be paid once per node (the driver's and the GCS's once in all, which this counts
    per node too: the bound is pessimistic there). The answer is the smaller of what the CPUs
    left can process and the devices' ``device_rate``; a projection, not a measurement.
    """
    per_image = sum(max(0.0, a) for a, _ in split.values()) / 1000
    fixed = nodes * sum(max(0.0, b) for _, b in split.values())
    cpu_rate = (cpus - fixed) / per_image if per_image else float("inf")
    return {
        "cpu_s_per_image": per_image,
        "fixed_cores": fixed,
        "cpu_bound": cpu_rate,
        "device_bound": device_rate,
        "images_per_second": min(cpu_rate, device_rate),
    }


def print_account(title: str, accounts: list[dict], decode_per_thousand: float) -> None:
    """One markdown table: per kind, the median CPU seconds per 1,000 images over ``accounts``
    (repeats of one notebook and case) and their range; decoding alone's figure beside."""
    tables = [per_thousand(a) for a in accounts if a]
    if not tables:
        print(f"\n{title}: no steady window (too few batches)")
        return
    kinds = sorted(
        {k for t in tables for k in t}, key=lambda k: -median([t.get(k, 0) for t in tables])
    )
    rates = [a["images"] / a["seconds"] for a in accounts if a and a["seconds"]]
    opened = [a.get("opened", 0.0) for a in accounts if a]
    print(
        f"\n{title}: {len(tables)} run(s), {fmt_range(rates)} images/s in the window, which "
        f"opens {fmt_range(opened, 1)} s after the first batch\n"
    )
    print("| process kind | CPU s per 1,000 images (median) | range |")
    print("| --- | ---: | ---: |")
    for kind in kinds:
        values = [t.get(kind, 0.0) for t in tables]
        print(f"| {kind} | {median(values):.2f} | {fmt_range(values, 2)} |")
    pipeline = [pipeline_cpu(a) for a in accounts if a]
    print(
        f"| **the run's processes once running** | {median(pipeline):.2f} | "
        f"{fmt_range(pipeline, 2)} |"
    )
    print(f"| decoding alone (process pool, no Ray) | {decode_per_thousand:.2f} | |")


def print_split(title: str, split: dict[str, tuple[float, float]], rate: float) -> None:
    """The split of :func:`split_fixed`, with the fixed part per 1,000 images at ``rate``."""
    if not split:
        return
    print(f"\n{title}\n")
    print(
        "| process kind | per image: CPU s per 1,000 | fixed: cores | "
        f"fixed, per 1,000 at {rate:,.0f} images/s |"
    )
    print("| --- | ---: | ---: | ---: |")
    for kind, (per_image, per_second) in sorted(split.items(), key=lambda item: -item[1][0]):
        print(f"| {kind} | {per_image:.2f} | {per_second:.3f} | {1000 * per_second / rate:.2f} |")
    per_image = sum(a for a, _ in split.values())
    fixed = sum(b for _, b in split.values())
    print(f"| **together** | {per_image:.2f} | {fixed:.3f} | {1000 * fixed / rate:.2f} |")


def median(values: list[float]) -> float:
    """The median of ``values`` (0 for none)."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def fmt_range(values: list[float], digits: int = 0) -> str:
    """``low–high`` of ``values``, or the one value."""
    if not values:
        return "-"
    low, high = min(values), max(values)
    return f"{low:,.{digits}f}" if low == high else f"{low:,.{digits}f}–{high:,.{digits}f}"
