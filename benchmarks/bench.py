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
- Steady: :func:`steady_images_per_second`, the project's one definition.
- Start-up: end to end minus images / steady rate, the fixed cost. Start-up plus images /
  steady rate predicts a run of any size, hence the number of images from which the
  collection is faster than the tuned DataLoader end to end (:func:`crossover`), checked
  with one run of both near it (on four times the images where there is no crossover).
- The start-up breakdown (:data:`PHASES`): timestamps from the driver and the model
  actor, and the first read task from Ray's task timeline.
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
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from benchmarks.pipelines import ROOT, RUNNERS

RESULTS = ROOT / "benchmarks" / "results"
IMAGES = ROOT / ".cache" / "benchmark_images" / "500x375"
VIT_BASE = ROOT / ".cache" / "vit-base-random"
LOGS = ROOT / "outputs" / "benchmarks"
PIPELINES = ("collection", "tutorial", "dataloader", "model_only")
VIT_PIPELINES = ("vit_resize_in_read", "vit_processor_in_actor")


# --------------------------------------------------------------------------- inputs


def make_images(count: int, size: tuple[int, int] = (500, 375)) -> Path:
    """A folder of at least ``count`` JPEGs of ``size``, cut from the sample photos (made once).

    Image ``i`` is always the same crop (sometimes mirrored) of one of the photos that
    ship with scikit-image and matplotlib, so decoding and the model see real content.
    """
    import numpy as np
    from PIL import Image, ImageOps

    from nbhelpers.sources import sample_photo_paths

    IMAGES.mkdir(parents=True, exist_ok=True)
    photos = [Image.open(path).convert("RGB") for path in sample_photo_paths()]
    for index, draw in enumerate(np.random.default_rng(0).random((count, 4))):
        target = IMAGES / f"img_{index:05d}.jpg"
        if target.exists():
            continue
        photo = photos[index % len(photos)]
        width = min(photo.width, photo.height * size[0] / size[1]) * (0.7 + 0.3 * draw[0])
        height = width * size[1] / size[0]
        left, top = (photo.width - width) * draw[1], (photo.height - height) * draw[2]
        image = photo.crop((round(left), round(top), round(left + width), round(top + height)))
        image = image.resize(size, Image.Resampling.BILINEAR)
        (ImageOps.mirror(image) if draw[3] < 0.5 else image).save(target, quality=90)
    return IMAGES


def vit_base_folder() -> Path:
    """ViT-Base/16 at 224 px with seeded random weights, saved once for ``pipeline(model=...)``.

    The layout is transformers' ``ViTConfig`` default, google/vit-base-patch16-224's; the
    labels and the image processor are those of nbhelpers' offline ViT (the same as google's).
    """
    if (VIT_BASE / "config.json").is_file():
        return VIT_BASE
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    from nbhelpers import vit
    from nbhelpers.loading import OFFLINE_SEED

    tiny = vit.offline_vit_folder()
    labels = ViTConfig.from_pretrained(tiny)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(OFFLINE_SEED)
        model = ViTForImageClassification(
            ViTConfig(id2label=labels.id2label, label2id=labels.label2id)
        )
    model.save_pretrained(VIT_BASE)
    ViTImageProcessor.from_pretrained(tiny).save_pretrained(VIT_BASE)
    return VIT_BASE


# --------------------------------------------------------------------------- start-up phases

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


# --------------------------------------------------------------------------- the figures


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


def default_batch_size() -> int:
    """The notebooks' batch size on this machine: 64 with a GPU, 16 without."""
    import torch

    return 64 if torch.cuda.is_available() else 16


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


# --------------------------------------------------------------------------- running a pipeline


DAEMONS = (
    ("gcs_server", "Ray: GCS (cluster state)"),
    ("raylet", "Ray: raylet (scheduler, object store)"),
    ("log_monitor.py", "Ray: log monitor (worker output to the driver)"),
    ("autoscaler/_private/monitor.py", "Ray: autoscaler monitor"),
    ("dashboard/dashboard.py", "Ray: dashboard head (state API)"),
    ("runtime_env/agent/main.py", "Ray: runtime-env agent"),
    ("dashboard/agent.py", "Ray: dashboard agent (metrics, events)"),
)
"""Ray's processes outside its workers, by a fragment of their command line."""
WORKERS = (
    ("IDLE", "Ray: idle workers"),
    ("MapWorker(", "model actor"),
    ("DashboardAgent", "Ray: dashboard agent (metrics, events)"),
    ("RuntimeEnvAgent", "Ray: runtime-env agent"),
    ("Predictor", "model actor"),
    ("MapBatches(", "read tasks (decode)"),
    ("ReadImage", "read tasks (decode)"),
    ("Map(", "read tasks (decode)"),
    ("Write", "write tasks"),
)
"""Ray's worker processes, by the title Ray gives them (``ray::<task or actor>``)."""


IDLE_CPU = "(no process: the CPUs idle)"
"""The machine's idle CPU time, counted beside the services: what no process used."""


def service_of(process: psutil.Process, pipeline_pid: int) -> str:
    """The service a process of the run belongs to (see :data:`DAEMONS` and :data:`WORKERS`);
    another Ray worker by its own title (Ray Data's helper actors: ``ray::_StatsActor``)."""
    if process.pid == pipeline_pid:
        return "the pipeline's own process (driver)"
    try:
        command = process.cmdline()
    except psutil.Error:
        return "other"
    if command and command[0].startswith("ray::"):
        title = command[0].split()[0].split(".")[0]  # ray::_StatsActor.get: ray::_StatsActor
        return next((s for fragment, s in WORKERS if fragment in title), f"Ray: {title[5:]}")
    line = " ".join(command)
    if "benchmarks.pipelines" in line:
        return "DataLoader workers"
    if "default_worker.py" in line:
        return "Ray: workers starting (before they take a task)"
    script = next((Path(part).name for part in command if part.endswith(".py")), line[:60])
    return next((service for fragment, service in DAEMONS if fragment in line), f"other: {script}")


class MemorySampler:
    """Peak resident memory of this process and all it starts, and peak growth of shared memory;
    per service (:func:`service_of`), CPU seconds and peak resident memory.

    Ray's object store lives in shared memory (``/dev/shm``): the growth of the
    machine's ``Shmem`` is its high-water mark (for the DataLoader, the tensors its
    workers pass on). Other programs on the machine count too. Resident memory counts
    pages shared between processes (torch's libraries) once per process, as ``ps`` does;
    the proportional share (PSS, each shared page split among its users) is sampled too,
    once a second: what the processes together take from the machine.
    """

    def __init__(self):
        self.peak_rss = self.peak_shared = self.peak_pss = 0
        self.shared_at_start = self.shared()
        self.idle_at_start = self.idle_cpu()
        self.gpu_busy: list[tuple[float, float]] = []  # (time, % busy), where there is a GPU
        self.pipeline_pid = 0  # the pipeline's process, once started
        self.cpu_seen: dict[int, float] = {}  # pid: its CPU seconds at the last sample
        self.service_cpu: dict[str, float] = {}  # service: CPU seconds, sample by sample
        self.cpu_ticks: list[tuple[float, dict[str, float]]] = []  # (time, CPU s per service)
        self.service_rss: dict[str, int] = {}  # service: peak resident memory
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.sample, daemon=True)

    @staticmethod
    def gpu_utilization() -> float | None:
        """The busiest GPU's utilisation in % (``nvidia-smi``), or ``None`` without a GPU."""
        if not shutil.which("nvidia-smi"):
            return None
        query = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]
        result = subprocess.run(query, capture_output=True, text=True, timeout=10)
        values = [float(v) for v in result.stdout.split() if v.replace(".", "").isdigit()]
        return max(values) if result.returncode == 0 and values else None

    @staticmethod
    def idle_cpu() -> float:
        """The machine's idle CPU seconds since it booted (waiting for I/O included)."""
        machine = psutil.cpu_times()
        return machine.idle + getattr(machine, "iowait", 0.0)

    @staticmethod
    def shared() -> int:
        meminfo = Path("/proc/meminfo").read_text().splitlines()
        return next(
            (int(line.split()[1]) * 1024 for line in meminfo if line.startswith("Shmem:")), 0
        )

    def sample(self) -> None:
        ticks = 0
        while not self.stop.wait(0.25):
            ticks += 1
            if ticks % 4 == 0 and (busy := self.gpu_utilization()) is not None:
                self.gpu_busy.append((time.time(), busy))
            rss = pss = 0
            per_service: dict[str, int] = {}
            for process in psutil.Process().children(recursive=True):
                try:
                    memory = process.memory_info().rss
                    times = process.cpu_times()
                    if ticks % 4 == 0:
                        pss += process.memory_full_info().pss
                except psutil.Error:
                    continue
                # Asked each time: a worker's title changes with its task, and a process
                # shows Ray's title only once it has set it. The CPU time since the last
                # sample goes to what the process is now.
                service = service_of(process, self.pipeline_pid)
                used = times.user + times.system
                spent = used - self.cpu_seen.get(process.pid, 0.0)
                self.cpu_seen[process.pid] = used
                self.service_cpu[service] = self.service_cpu.get(service, 0.0) + spent
                per_service[service] = per_service.get(service, 0) + memory
                rss += memory
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_pss = max(self.peak_pss, pss)
            self.peak_shared = max(self.peak_shared, self.shared() - self.shared_at_start)
            for service, memory in per_service.items():
                self.service_rss[service] = max(self.service_rss.get(service, 0), memory)
            totals = dict(self.service_cpu)
            totals[IDLE_CPU] = self.idle_cpu() - self.idle_at_start
            self.cpu_ticks.append((time.time(), totals))

    def services(self, steady: tuple[float, float] | None) -> dict[str, dict]:
        """Per service: CPU seconds over the run and between ``steady``'s two times (the first
        and the last batch), and peak resident memory (MiB)."""
        if not self.cpu_ticks:
            return {}
        last = self.cpu_ticks[-1][1]
        window: dict[str, float] = {}
        if steady:
            inside = [totals for at, totals in self.cpu_ticks if steady[0] <= at <= steady[1]]
            if len(inside) >= 2:
                window = {k: v - inside[0].get(k, 0.0) for k, v in inside[-1].items()}
        return {
            service: {
                "cpu_seconds": last.get(service, 0.0),
                "steady_cpu_seconds": window.get(service),
                "peak_rss_mib": self.service_rss.get(service, 0) / 2**20,
            }
            for service in sorted(set(last) | set(self.service_rss))
        }

    def __enter__(self) -> MemorySampler:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


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
