"""Time the notebooks' pipeline against the Ray tutorial, a tuned DataLoader and the model alone.

    make bench          # notebook 01 (ResNet152) on 200 JPEGs against the baselines
    make bench-vit      # notebook 02: the ViT's image processor in the read tasks or the actor
    .venv/bin/python -m benchmarks.bench --num-images 32 --no-crossover    # a quick try

Each pipeline of :mod:`benchmarks.pipelines` runs in a fresh Python process on the same
JPEGs (500x375, cut from the sample photos), with seeded random weights (nothing is
downloaded) and the notebooks' batch size. The DataLoader does the collection's work
without Ray, with each ``num_workers`` from 0 to the number of CPUs; the best steady rate
is "the tuned DataLoader".

- End to end: from the start of the process (Python and the imports included) to the
  last prediction. First batch: when the first batch's predictions were ready.
- Steady: :func:`benchmarks.metrics.steady_images_per_second`, the project's one definition.
- Start-up: end to end minus images / steady rate, the fixed cost. Start-up plus images /
  steady rate predicts a run of any size, hence the number of images from which the
  collection is faster than the tuned DataLoader end to end
  (:func:`benchmarks.metrics.crossover`), checked with one run of both near it (on four
  times the images where there is no crossover).
- The start-up breakdown (:data:`benchmarks.metrics.PHASES`): timestamps from the driver
  and the model actor, and the first read task from Ray's task timeline.
- Memory: the peak resident memory of the pipeline's processes, and the peak growth of
  the machine's shared memory, where Ray's object store lives.

Prints the tables and writes ``benchmarks/results/latest.json`` (``vit.json`` for the
ViT pipelines alone); each run's output is kept in ``outputs/benchmarks/``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from benchmarks.inputs import make_images, vit_base_folder
from benchmarks.metrics import (
    PHASES,
    crossover,
    figures,
    predicted_seconds,
    ratios,
    steady_gpu_utilization,
)
from benchmarks.pipelines import ROOT, RUNNERS
from benchmarks.sampler import MemorySampler

RESULTS = ROOT / "benchmarks" / "results"
LOGS = ROOT / "outputs" / "benchmarks"
PIPELINES = ("collection", "tutorial", "dataloader", "model_only")
VIT_PIPELINES = ("vit_resize_in_read", "vit_processor_in_actor")


# --------------------------------------------------------------------------- start-up phases


def default_batch_size() -> int:
    """The notebooks' batch size on this machine: 64 with a GPU, 16 without."""
    import torch

    return 64 if torch.cuda.is_available() else 16


# --------------------------------------------------------------------------- running a pipeline


def wait_for_quiet(load: float | None, limit: float = 900) -> None:
    """Wait, at most ``limit`` seconds, until the machine's 1-minute load average is below ``load``."""
    deadline = time.time() + limit
    if load and os.getloadavg()[0] >= load:
        print(f"  waiting for the load average ({os.getloadavg()[0]:.1f}) to drop below {load}")
    while load and os.getloadavg()[0] >= load and time.time() < deadline:
        time.sleep(10)


def run_pipeline(name: str, settings: dict, timeout: float, retries: int = 1) -> dict:
    """Run one pipeline in a fresh process (again on failure, ``retries`` times); its figures."""
    LOGS.mkdir(parents=True, exist_ok=True)
    log = LOGS / f"{name}{settings.get('loader_workers', '')}-{settings['num_images']}.log"
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    for attempt in range(retries + 1):
        wait_for_quiet(settings["wait_for_load"])
        with tempfile.TemporaryDirectory() as scratch:
            run = settings | {"pipeline": name, "output_dir": scratch, "launched": time.time()}
            command = [sys.executable, "-m", "benchmarks.pipelines", json.dumps(run)]
            load = os.getloadavg()[0]
            with open(log, "w") as stream, MemorySampler() as memory:
                process = subprocess.Popen(
                    command, stdout=stream, stderr=subprocess.STDOUT, cwd=ROOT, env=env
                )
                memory.pipeline_pid = process.pid
                try:
                    code = process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    code = "timed out"
            if code == 0:
                timings = json.loads((Path(scratch) / "run.json").read_text())
                done = sorted(at for at, _ in timings["batches"])
                steady = (done[0], done[-1]) if len(done) > 1 else None
                return figures(timings) | {
                    "load_average": [load, os.getloadavg()[0]],
                    "peak_rss_bytes": memory.peak_rss,
                    "peak_pss_bytes": memory.peak_pss,
                    "peak_shared_bytes": memory.peak_shared,
                    "gpu_utilization": steady_gpu_utilization(timings, memory.gpu_busy),
                    "services": memory.services(steady),
                    "steady_window_seconds": steady[1] - steady[0] if steady else None,
                }
        tail = "\n".join(log.read_text().splitlines()[-12:])
        print(f"  {name} failed ({code}) on attempt {attempt + 1}; the end of {log}:\n{tail}")
    raise RuntimeError(f"{name} failed {retries + 1} times; see {log}")


# --------------------------------------------------------------------------- reporting


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def print_results(rows: dict[str, dict]) -> None:
    """The pipelines' figures, as a Markdown table."""
    alone = rows.get("model_only", {}).get("steady_images_per_second")
    print(
        "| pipeline | first batch after (s) | end to end (s) | images/s end to end "
        "| images/s steady | steady / model alone | GPU busy (%) | start-up (s) "
        "| peak RSS (MiB) | peak shared memory (MiB) | load |"
    )
    print("| --- |" + " ---: |" * 10)
    for name, row in rows.items():
        rate = row["steady_images_per_second"]
        steady = fmt(rate, 2)
        if row["repeats"] > 1 and row["steady_range"]:
            steady += " ({:.2f}-{:.2f})".format(*row["steady_range"])
        share = fmt(rate / alone, 2) if rate and alone else "-"
        print(
            f"| {name} | {fmt(row['first_batch_seconds'])} | {fmt(row['seconds'])} "
            f"| {row['images_per_second']:.2f} | {steady} | {share} "
            f"| {fmt(row.get('gpu_utilization'), 0)} | {fmt(row['startup_seconds'])} "
            f"| {row['peak_rss_bytes'] / 2**20:,.0f} | {row['peak_shared_bytes'] / 2**20:,.0f} "
            f"| {max(row['load_average']):.1f} |"
        )


def print_breakdown(rows: dict[str, dict]) -> None:
    """Where the time to the first batch goes: each phase's seconds, and when it ended."""
    print("| phase: seconds (ended at) | " + " | ".join(rows) + " |")
    print("| --- |" + " ---: |" * len(rows))
    for key, label in PHASES.items():
        spans = [row["phases"].get(key) for row in rows.values()]
        if any(spans):
            cells = [f"{s[1] - s[0]:.1f} ({s[1]:.1f})" if s else "" for s in spans]
            print(f"| {label} | " + " | ".join(cells) + " |")
    firsts = [f"**{row['first_batch_seconds']:.1f}**" for row in rows.values()]
    print("| **first batch ready after** | " + " | ".join(firsts) + " |")
    for name, row in rows.items():
        if "workers" in row:
            print(
                f"{name}: Ray worker processes: {row['workers'][0]} started with Ray (pre-started), "
                f"{row['workers'][1]} while the pipeline ran."
            )


def shown_services(rows: dict[str, dict], tuned: str | None) -> list[str]:
    """The pipelines whose services are printed: all but the DataLoaders not chosen."""
    return [k for k in rows if not k.startswith("dataloader") or k == tuned]


def print_services(rows: dict[str, dict]) -> None:
    """Per service of each pipeline: its share of the machine's CPUs once running, its CPU
    seconds over the whole run, and its peak resident memory."""
    cpus = os.cpu_count() or 1
    for name, row in rows.items():
        services, window = row.get("services") or {}, row.get("steady_window_seconds")
        if not services:
            continue
        print(
            f"\n{name}: {row['peak_rss_bytes'] / 2**20:,.0f} MiB resident at the peak "
            f"({row.get('peak_pss_bytes', 0) / 2**20:,.0f} MiB proportional), {cpus} CPUs\n"
        )
        print(
            "| service | CPU share once running (% of the machine) | CPU s, whole run "
            "| peak RSS (MiB) |"
        )
        print("| --- | ---: | ---: | ---: |")
        by_cpu = sorted(services.items(), key=lambda item: -item[1]["cpu_seconds"])
        for service, figures_ in by_cpu:
            steady = figures_["steady_cpu_seconds"]
            share = (
                f"{100 * steady / (window * cpus):.1f}" if steady is not None and window else "-"
            )
            print(
                f"| {service} | {share} | {figures_['cpu_seconds']:.1f} "
                f"| {figures_['peak_rss_mib']:,.0f} |"
            )


def machine() -> str:
    """What the figures were measured on, in a few words."""
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line), "")
    memory = psutil.virtual_memory().total / 2**30
    return f"{model or platform.processor()}, {os.cpu_count()} CPUs, {memory:.0f} GiB, Python {platform.python_version()}"


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--num-images", type=int, default=200, help="images per run (default 200)")
    add(
        "--batch-size",
        type=int,
        help="rows per model call, for every pipeline (default: the notebooks', 64 on a GPU, "
        "16 on CPU)",
    )
    add(
        "--pipelines",
        default=",".join(PIPELINES),
        help=f"a comma-separated subset of {', '.join(RUNNERS)}",
    )
    add("--loader-workers", help="DataLoader num_workers to try, e.g. 0,2 (default: 0 to the CPUs)")
    add("--repeat", type=int, default=1, help="runs of each pipeline; the median is reported")
    add("--no-crossover", action="store_true", help="skip the run that checks the crossover")
    add("--max-check-images", type=int, default=2000, help="largest crossover check (2000)")
    add(
        "--vit-model",
        help="the ViT for the vit_ pipelines: a local folder or a cached hub id "
        "(default: a ViT-Base/16 with random weights, made here)",
    )
    add("--timeout", type=float, default=1800, help="seconds allowed per run")
    add(
        "--wait-for-load",
        type=float,
        help="before each run, wait until the load average is below this",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run the pipelines, print the tables, write ``benchmarks/results/``."""
    args = parse_args(argv)
    from nbhelpers.sources import find_images

    pipelines = [name for name in args.pipelines.split(",") if name]
    if unknown := set(pipelines) - set(RUNNERS):
        raise SystemExit(f"Unknown pipelines {sorted(unknown)}; choose from {', '.join(RUNNERS)}.")
    everything = ",".join(str(n) for n in range(os.cpu_count() + 1))
    loader_workers = [int(n) for n in (args.loader_workers or everything).split(",")]
    vit_model = args.vit_model or (
        str(vit_base_folder()) if set(pipelines) & set(VIT_PIPELINES) else None
    )

    batch_size = args.batch_size or default_batch_size()  # the same for every pipeline

    def measure(name: str, images: int, workers: int | None = None) -> dict:
        folder = make_images(images)
        settings = {"folder": str(folder), "num_images": images, "batch_size": batch_size}
        settings |= {"wait_for_load": args.wait_for_load}
        settings |= {"paths": find_images(folder, images).paths, "vit_model": vit_model}
        settings |= {"loader_workers": workers} if name == "dataloader" else {}
        runs = []
        for attempt in range(args.repeat):
            what = name + (f" (num_workers={workers})" if name == "dataloader" else "")
            print(f"{what}: run {attempt + 1} of {args.repeat} on {images} images ...", flush=True)
            runs.append(run_pipeline(name, settings, args.timeout))
        # The median run by end-to-end time (of two, the faster: the other one met more load).
        middle = dict(sorted(runs, key=lambda r: r["seconds"])[(len(runs) - 1) // 2])
        steady = [r["steady_images_per_second"] for r in runs if r["steady_images_per_second"]]
        return middle | {
            "repeats": len(runs),
            "steady_range": [min(steady), max(steady)] if steady else None,
        }

    rows: dict[str, dict] = {}
    for name in pipelines:
        for workers in loader_workers if name == "dataloader" else [None]:
            label = f"dataloader, num_workers={workers}" if name == "dataloader" else name
            rows[label] = measure(name, args.num_images, workers) | {"loader_workers": workers}
    loaders = [label for label in rows if label.startswith("dataloader")]
    tuned = max(loaders, key=lambda k: rows[k]["steady_images_per_second"] or 0, default=None)

    model = f"ViT ({vit_model})" if set(pipelines) <= set(VIT_PIPELINES) else "ResNet152"
    print(
        f"\n{model}, seeded random weights; {args.num_images} JPEGs of 500x375; batch size "
        f"{batch_size} for every pipeline; {machine()}\n"
    )
    print_results(rows)
    if tuned:
        print(f"\nThe tuned DataLoader: {tuned} (the best steady rate of {', '.join(loaders)}).")
    print("\nWhere the CPUs and the memory went, service by service:")
    print_services({k: rows[k] for k in shown_services(rows, tuned)})
    print("\nStart-up, seconds since the process started:\n")
    shown = [k for k in rows if not k.startswith("dataloader") or k == tuned]
    print_breakdown({k: rows[k] for k in shown})
    report = {
        "machine": machine(),
        "settings": vars(args),
        "pipelines": rows,
        "tuned_dataloader": tuned,
    }
    report["ratios"] = ratios(rows, tuned)
    print("\n" + "\n".join(f"{label}: {value:.2f}" for label, value in report["ratios"].items()))
    if "collection" in rows and tuned:
        report["crossover"] = check_crossover(rows, tuned, args, measure)
    RESULTS.mkdir(parents=True, exist_ok=True)
    report["measured_at"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    out = RESULTS / ("vit.json" if set(pipelines) <= set(VIT_PIPELINES) else "latest.json")
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nWrote {out}")


def check_crossover(rows: dict, tuned: str, args, measure) -> dict:
    """Where the collection overtakes the tuned DataLoader end to end; one run of each to check.

    The check runs near the crossover, or on four times the images where there is none.
    """
    collection, loader = rows["collection"], rows[tuned]
    images = crossover(collection, loader)
    print(
        f"\nStart-up: collection {collection['startup_seconds']:.1f} s, tuned DataLoader "
        f"{loader['startup_seconds']:.1f} s; steady: {collection['steady_images_per_second']:.2f} "
        f"and {loader['steady_images_per_second']:.2f} images/s."
    )
    if images is None:
        print("Crossover: none. The collection is not faster once running, so it never catches up.")
    else:
        print(f"Crossover: the collection is faster end to end from about {images:,.0f} images.")
    print(
        "More cores, GPUs or nodes: a DataLoader still feeds one model in one process, while the "
        "collection adds model actors (one per GPU, on any node) for about the same start-up; "
        "on this machine there is one model actor."
    )
    target = 4 * args.num_images if images is None else 50 * math.ceil(images / 50)
    check = min(args.max_check_images, max(args.num_images, target))
    if args.no_crossover:
        return {"images": images}
    measured = {
        "collection": measure("collection", check),
        tuned: measure("dataloader", check, loader["loader_workers"]),
    }
    print(f"\nCheck on {check} images: end to end, measured (predicted):")
    for name, base in (("collection", collection), (tuned, loader)):
        row = measured[name]
        print(
            f"  {name}: {row['seconds']:.1f} s ({predicted_seconds(base, check):.1f} s), steady "
            f"{fmt(row['steady_images_per_second'], 2)} images/s, peak shared memory "
            f"{row['peak_shared_bytes'] / 2**20:,.0f} MiB, load {max(row['load_average']):.1f}"
        )
    print(f"  faster on {check} images: {min(measured, key=lambda k: measured[k]['seconds'])}.")
    return {"images": images, "check_images": check, "check": measured}


if __name__ == "__main__":
    main()
