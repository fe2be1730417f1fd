"""Throughput benchmark: the notebooks' pipeline against the tutorial, a DataLoader and the model alone.

Four pipelines run on the same JPEGs with the same model, each in a fresh process:

- ``tutorial``: the Ray tutorial's pipeline: ``ray.data.read_images``, a row-by-row
  ``map`` producing float32 tensors (the original image carried along), the model in
  an actor pool, the original image dropped only at the end;
- ``collection``: exactly what the notebooks run: ``read_images_safely`` +
  ``predict_with_actors`` + ``classify_rows`` (``detect_rows`` for Faster R-CNN);
- ``dataloader``: a plain PyTorch ``DataLoader`` with worker processes;
- ``model_only``: forward passes alone on batches already in memory: the ceiling.

For each: images/s end to end (start-up included: Ray, the model, the workers) and in
steady state (the first batches excluded), and the peak memory of the driver and its
workers (resident set, sampled) and of Ray's object store. ``collection`` also runs on
four times the images, to show that its memory does not grow with the data.

    make bench
    .venv/bin/python benchmarks/bench.py --model resnet152 --num-images 400 --batch-size 32
    .venv/bin/python benchmarks/bench.py --device cuda --autocast bf16 --channels-last

Prints a table and writes ``benchmarks/results/latest.json`` (the four pipelines'
figures) and ``benchmarks/results/latest_details.json`` (ratios, machine, settings,
every run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
IMAGE_CACHE = ROOT / ".cache" / "benchmark_images"
LOGS = ROOT / "outputs" / "benchmarks"
"""Each run's output (Ray's and the progress bars), kept for when a run fails."""
PIPELINES = ("tutorial", "collection", "dataloader", "model_only")
WARMUP_BATCHES = 2
"""Batches left out of the steady-state figure: lazy set-up makes the first ones slow."""
RAY_DAEMONS = ("gcs_server", "raylet", "dashboard", "monitor.py", "runtime_env", "log_monitor")
"""Command-line fragments of Ray's own processes, counted apart from the driver and workers."""


# --------------------------------------------------------------------------- the images


def make_images(count: int, size: tuple[int, int] = (500, 375)) -> Path:
    """A folder of ``count`` JPEGs of ``size`` cut from the sample photos (made once, then reused).

    Each image is a different crop (and sometimes a mirror) of one of the photos that
    ship with scikit-image and matplotlib, so that decoding and the model see real,
    varied content.
    """
    from PIL import Image, ImageOps

    from nbhelpers.sources import sample_photo_paths

    folder = IMAGE_CACHE / f"{size[0]}x{size[1]}"
    folder.mkdir(parents=True, exist_ok=True)
    existing = len(list(folder.glob("*.jpg")))
    if existing >= count:
        return folder
    photos = [Image.open(path).convert("RGB") for path in sample_photo_paths()]
    if not photos:
        raise RuntimeError("No sample photos found: are scikit-image and matplotlib installed?")
    rng = np.random.default_rng(0)
    for index in range(count):
        target = folder / f"img_{index:05d}.jpg"
        draw = rng.random(4)
        if target.exists():
            continue
        photo = photos[index % len(photos)]
        crop_fraction = 0.7 + 0.3 * draw[0]
        width = min(photo.width, round(photo.height * size[0] / size[1])) * crop_fraction
        height = width * size[1] / size[0]
        left = (photo.width - width) * draw[1]
        top = (photo.height - height) * draw[2]
        image = photo.crop((round(left), round(top), round(left + width), round(top + height)))
        image = image.resize(size, Image.Resampling.BILINEAR)
        if draw[3] < 0.5:
            image = ImageOps.mirror(image)
        image.save(target, quality=90)
    return folder


def image_paths(folder: Path, count: int) -> list[str]:
    """The first ``count`` images of ``folder``, in name order."""
    paths = sorted(str(p) for p in folder.glob("*.jpg"))[:count]
    if len(paths) < count:
        raise RuntimeError(f"{folder} holds {len(paths)} images, {count} were asked for.")
    return paths


# --------------------------------------------------------------------------- the models


@dataclass(frozen=True)
class ModelKit:
    """One model as every pipeline needs it.

    Attributes:
        build: ``() -> (model, spec)``: eval mode, seeded random weights, nothing downloaded.
        spec: ``() -> spec``: the spec alone (preprocessing), without building the model.
        rows: the collection's per-batch function (``classify_rows`` or ``detect_rows``).
        forward: ``(model, uint8 images, spec, device) -> anything``: the model on
            prepared images, as ``model_only`` times it (inputs made in advance).
        to_inputs: ``(uint8 images, spec, device) -> model inputs``.
        tutorial_transform: ``() -> (HWC uint8 array -> float32 CHW tensor)``: the
            tutorial's torchvision transforms.
        tutorial_forward: ``(model, float32 batch, device) -> labels``.
        variable_size: images keep their own sizes (detection): batches are lists.
    """

    build: Callable
    spec: Callable
    rows: Callable
    forward: Callable
    to_inputs: Callable
    tutorial_transform: Callable
    tutorial_forward: Callable
    variable_size: bool = False


def _classifier(builder_name: str, weights_name: str, offline: str) -> ModelKit:
    def build():
        import torchvision.models as tvm

        from nbhelpers.models import classifier_spec, offline_resnet, seeded

        builder, weights = getattr(tvm, builder_name), getattr(tvm, weights_name).DEFAULT
        model = offline_resnet(builder) if offline == "resnet" else seeded(builder)
        return model.eval(), classifier_spec(weights)

    def spec():
        import torchvision.models as tvm

        from nbhelpers.models import classifier_spec

        return classifier_spec(getattr(tvm, weights_name).DEFAULT)

    def to_inputs(images, spec, device):
        from nbhelpers.predict import to_model_input

        return to_model_input(images, spec, device)

    def forward(model, inputs, spec, device):
        return model(inputs).argmax(dim=1).cpu()

    def tutorial_transform():
        import torchvision.models as tvm
        from torchvision import transforms

        weights = getattr(tvm, weights_name).DEFAULT
        return transforms.Compose([transforms.ToTensor(), weights.transforms()])

    def tutorial_forward(model, batch, device):
        import torch

        return model(torch.as_tensor(batch).to(device)).argmax(dim=1).cpu().numpy()

    from nbhelpers.predict import classify_rows

    return ModelKit(
        build, spec, classify_rows, forward, to_inputs, tutorial_transform, tutorial_forward
    )


def _detector() -> ModelKit:
    def build():
        from nbhelpers.detect import build_fasterrcnn

        return build_fasterrcnn(pretrained=False)

    def spec():
        return build()[1]

    def to_inputs(images, spec, device):
        from nbhelpers.detect import to_detector_input

        return [to_detector_input(image, device) for image in images]

    def forward(model, inputs, spec, device):
        return [len(found["boxes"]) for found in model(inputs)]

    def tutorial_transform():
        from torchvision import transforms

        return transforms.ToTensor()

    def tutorial_forward(model, batch, device):
        import torch

        images = [torch.as_tensor(np.asarray(image)).to(device) for image in batch]
        return np.array([len(found["boxes"]) for found in model(images)])

    from nbhelpers.detect import detect_rows

    return ModelKit(
        build, spec, detect_rows, forward, to_inputs, tutorial_transform, tutorial_forward, True
    )


def model_kit(name: str) -> ModelKit:
    """The :class:`ModelKit` of ``name``: resnet50, resnet152, vit (ViT-B/16) or fasterrcnn."""
    kits = {
        "resnet50": lambda: _classifier("resnet50", "ResNet50_Weights", "resnet"),
        "resnet152": lambda: _classifier("resnet152", "ResNet152_Weights", "resnet"),
        "vit": lambda: _classifier("vit_b_16", "ViT_B_16_Weights", "seeded"),
        "fasterrcnn": _detector,
    }
    if name not in kits:
        raise ValueError(f"Unknown model {name!r}; choose one of {', '.join(kits)}.")
    return kits[name]()


def prepare_model(model, settings: dict):
    """Move the model to the device, in channels-last layout when asked."""
    import torch

    model = model.to(settings["device"])
    if settings["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    return model


def autocast(settings: dict):
    """The autocast context the settings ask for (none on CPU unless asked)."""
    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(settings["autocast"])
    return torch.autocast(settings["device"], dtype=dtype) if dtype else nullcontext()


# --------------------------------------------------------------------------- the pipelines
# Each returns {"start": t0, "end": t1, "batches": [[done_at, rows], ...]} with wall-clock
# times (time.time(), the same clock in every process of this machine).


def run_model_only(paths: list[str], settings: dict) -> dict:
    """Forward passes alone, on model inputs prepared in memory before the clock starts."""
    import torch

    from nbhelpers.pipeline import prepare_image

    kit = model_kit(settings["model"])
    start = time.time()
    model, spec = kit.build()
    model = prepare_model(model, settings)
    device = torch.device(settings["device"])
    built = time.time()
    prepared = [prepare_image(path, spec.preprocess, None).image for path in paths]
    size = settings["batch_size"]
    chunks = [prepared[i : i + size] for i in range(0, len(prepared), size)]
    inputs = [
        kit.to_inputs(chunk if kit.variable_size else np.stack(chunk), spec, device)
        for chunk in chunks
    ]
    batches = []
    ready = time.time()
    with torch.inference_mode(), autocast(settings):
        for chunk_inputs, chunk in zip(inputs, chunks, strict=True):
            kit.forward(model, chunk_inputs, spec, device)
            if device.type == "cuda":
                torch.cuda.synchronize()
            batches.append([time.time(), len(chunk)])
    # End to end counts building the model, not preparing the inputs (which the
    # other pipelines do while the model runs): the clock is shifted by that time.
    return {"start": start + (ready - built), "end": time.time(), "batches": batches}


class _ImageFiles:
    """A map-style dataset of image files for the DataLoader: what a user would write."""

    def __init__(self, paths: list[str], transform: Callable):
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        from PIL import Image

        with Image.open(self.paths[index]) as image:
            return self.transform(image.convert("RGB"))


def run_dataloader(paths: list[str], settings: dict) -> dict:
    """A ``DataLoader`` with worker processes decoding and transforming, the model in this process."""
    import torch
    from torch.utils.data import DataLoader

    kit = model_kit(settings["model"])
    start = time.time()
    model, spec = kit.build()
    model = prepare_model(model, settings)
    device = torch.device(settings["device"])
    transform = kit.tutorial_transform()
    loader = DataLoader(
        _ImageFiles(paths, transform),
        batch_size=settings["batch_size"],
        num_workers=settings["loader_workers"],
        collate_fn=list if kit.variable_size else None,
        pin_memory=device.type == "cuda",
        prefetch_factor=2 if settings["loader_workers"] else None,
    )
    batches = []
    with torch.inference_mode(), autocast(settings):
        for batch in loader:
            kit.tutorial_forward(model, batch, device)
            batches.append([time.time(), len(batch)])
    return {"start": start, "end": time.time(), "batches": batches}


def run_tutorial(paths: list[str], settings: dict) -> dict:
    """The tutorial's Ray Data pipeline, as written there, on these images and this model."""
    import ray
    import torch

    kit_name = settings["model"]
    start = time.time()
    ray.init()
    transform = model_kit(kit_name).tutorial_transform()

    def preprocess_image(row: dict) -> dict:
        return {"original_image": row["image"], "transformed_image": transform(row["image"])}

    class TutorialModel:
        def __init__(self):
            self.kit = model_kit(kit_name)
            model, _ = self.kit.build()
            self.model = prepare_model(model, settings)
            self.device = torch.device(settings["device"])

        def __call__(self, batch: dict) -> dict:
            with torch.inference_mode(), autocast(settings):
                predicted = self.kit.tutorial_forward(
                    self.model, batch["transformed_image"], self.device
                )
            return {
                "predicted": predicted,
                "original_image": batch["original_image"],
                "done_at": np.full(len(predicted), time.time()),
            }

    use_gpu = settings["device"] == "cuda"
    predictions = (
        ray.data.read_images(paths, mode="RGB")
        .map(preprocess_image)
        .map_batches(
            TutorialModel,
            compute=ray.data.ActorPoolStrategy(size=1),
            batch_size=settings["batch_size"],
            **({"num_gpus": 1} if use_gpu else {}),
        )
    )
    frame = predictions.drop_columns(["original_image"]).to_pandas()
    end = time.time()
    ray.shutdown()
    return {"start": start, "end": end, "batches": _batches(frame)}


def run_collection(paths: list[str], settings: dict) -> dict:
    """The notebooks' pipeline, through nbhelpers, exactly as notebook 01 runs it."""
    import torch

    from nbhelpers.cluster import default_batch_size, size_actor_pool, start_ray, stop_ray
    from nbhelpers.models import pick_device
    from nbhelpers.pipeline import collect_predictions, predict_with_actors, read_images_safely
    from nbhelpers.sources import ImageSource

    kit_name = settings["model"]
    start = time.time()
    resources = start_ray()
    plan = size_actor_pool(resources, use_gpu=settings["device"] == "cuda")
    batch_size = settings["batch_size"] or default_batch_size(plan)
    spec = model_kit(kit_name).spec()
    source = ImageSource(uri=str(Path(paths[0]).parent), kind="local", paths=list(paths))
    dataset = read_images_safely(source, spec.preprocess, plan)

    class Predictor:
        """As in the notebooks: the model built once per actor, one batch per call."""

        def __init__(self, use_gpu: bool):
            self.kit = model_kit(kit_name)
            model, self.spec = self.kit.build()
            self.device = pick_device(use_gpu)
            self.model = prepare_model(model, settings | {"device": self.device.type})

        def __call__(self, batch: dict) -> dict:
            with autocast(settings) if settings["autocast_collection"] else nullcontext():
                out = self.kit.rows(self.model, batch, self.spec, self.device)
            rows = len(batch["path"])
            return out | {
                "done_at": np.full(rows, time.time()),
                "torch_threads": np.full(rows, torch.get_num_threads()),
            }

    predicted = predict_with_actors(dataset, Predictor, plan, batch_size, use_gpu=plan.use_gpu)
    frame, _ = collect_predictions(predicted, source.paths)
    end = time.time()
    stop_ray()
    failed = int(frame["error"].notna().sum())
    if failed:
        raise RuntimeError(
            f"{failed} benchmark images failed to decode: {frame['error'].dropna().iloc[0]}"
        )
    threads = sorted(set(frame["torch_threads"]))
    return {
        "start": start,
        "end": end,
        "batches": _batches(frame),
        "plan": f"{plan.describe()} Torch threads in the actors: {threads}.",
    }


def _batches(frame) -> list[list[float]]:
    counts = frame.groupby("done_at").size()
    return [[float(t), int(n)] for t, n in counts.items()]


RUNNERS = {
    "tutorial": run_tutorial,
    "collection": run_collection,
    "dataloader": run_dataloader,
    "model_only": run_model_only,
}


# --------------------------------------------------------------------------- measuring


def shared_memory_bytes() -> int:
    """The machine's shared memory in use (``Shmem`` in /proc/meminfo), 0 where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("Shmem:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class MemorySampler:
    """Peak memory of a process tree: the driver and its workers, Ray's daemons, shared memory.

    Ray's object store lives in shared memory (/dev/shm) whose pages count once
    touched and stay counted when objects are freed: the growth of the machine's
    ``Shmem`` over the run is the object store's high-water mark (and, for the
    DataLoader, the tensors its workers pass through shared memory).
    """

    def __init__(self, pid: int, interval: float = 0.25):
        self.pid, self.interval = pid, interval
        self.peak_workers = 0  # the driver and every worker process
        self.peak_daemons = 0  # gcs_server, raylet, dashboard, agents, monitors
        self.peak_shared = 0  # growth of shared memory since the start
        self._shared_at_start = shared_memory_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        """Add up the tree's resident memory once."""
        try:
            root = psutil.Process(self.pid)
            processes = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        workers = daemons = 0
        for process in processes:
            try:
                rss = process.memory_info().rss
                command = " ".join(process.cmdline())
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            if process.pid != self.pid and any(name in command for name in RAY_DAEMONS):
                daemons += rss
            else:
                workers += rss
        self.peak_workers = max(self.peak_workers, workers)
        self.peak_daemons = max(self.peak_daemons, daemons)
        self.peak_shared = max(self.peak_shared, shared_memory_bytes() - self._shared_at_start)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def throughput(run: dict) -> dict:
    """Images/s end to end and in steady state (after :data:`WARMUP_BATCHES` batches)."""
    batches = sorted(run["batches"])
    images = sum(rows for _, rows in batches)
    seconds = run["end"] - run["start"]
    steady = None
    if len(batches) > WARMUP_BATCHES:
        after = batches[WARMUP_BATCHES - 1 :]
        span = after[-1][0] - after[0][0]
        steady = sum(rows for _, rows in after[1:]) / span if span > 0 else None
    return {
        "num_images": images,
        "seconds": round(seconds, 2),
        "first_batch_seconds": round(batches[0][0] - run["start"], 2) if batches else None,
        "images_per_second": round(images / seconds, 2),
        "steady_images_per_second": round(steady, 2) if steady else None,
    }


def run_pipeline(pipeline: str, num_images: int, settings: dict, timeout: float) -> dict:
    """Run one pipeline in a fresh process, sampling its memory; its figures."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "run.json"
        LOGS.mkdir(parents=True, exist_ok=True)
        log = LOGS / f"{pipeline}-{num_images}.log"
        command = [sys.executable, __file__, "--child", pipeline, "--child-out", str(out)]
        command += ["--child-settings", json.dumps(settings | {"num_images": num_images})]
        env = os.environ | {"RAY_ADDRESS": "", "PYTHONUNBUFFERED": "1"}
        env.pop("RAY_ADDRESS")
        with open(log, "w") as stream:
            process = subprocess.Popen(command, stdout=stream, stderr=subprocess.STDOUT, env=env)
            with MemorySampler(process.pid) as memory:
                try:
                    code = process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    subprocess.run(
                        [sys.executable, "-m", "ray.scripts.scripts", "stop", "--force"],
                        capture_output=True,
                    )
                    raise RuntimeError(
                        f"{pipeline} did not finish in {timeout:.0f} s; see {log}"
                    ) from None
        if code != 0:
            tail = log.read_text()[-3000:]
            raise RuntimeError(f"{pipeline} failed (exit {code}); the end of {log}:\n{tail}")
        run = json.loads(out.read_text())
    return throughput(run) | {
        "peak_rss_bytes": memory.peak_workers,
        "peak_ray_daemons_rss_bytes": memory.peak_daemons,
        "peak_object_store_bytes": memory.peak_shared,
        "plan": run.get("plan"),
    }


def child(pipeline: str, out: Path, settings: dict) -> None:
    """Inside the fresh process: make the images' list, run the pipeline, write its timings."""
    folder = IMAGE_CACHE / "500x375"
    paths = image_paths(folder, settings["num_images"])
    run = RUNNERS[pipeline](paths, settings)
    out.write_text(json.dumps(run))


# --------------------------------------------------------------------------- reporting


def summarise(runs: list[dict]) -> dict:
    """Median of repeated runs, with the spread (min, max) of the throughputs."""
    keys = ("images_per_second", "steady_images_per_second", "seconds", "first_batch_seconds")
    summary = dict(runs[len(runs) // 2])
    for key in keys:
        values = [r[key] for r in runs if r.get(key) is not None]
        if values:
            summary[key] = round(statistics.median(values), 2)
            summary[f"{key}_range"] = [min(values), max(values)]
    for key in ("peak_rss_bytes", "peak_ray_daemons_rss_bytes", "peak_object_store_bytes"):
        values = [r[key] for r in runs if r.get(key) is not None]
        summary[key] = max(values) if values else None
    summary["repeats"] = len(runs)
    return summary


def ratios(results: dict) -> dict:
    """collection / tutorial, / dataloader and / model_only, end to end and steady."""
    out = {}
    for other in ("tutorial", "dataloader", "model_only"):
        if "collection" not in results or other not in results:
            continue
        for key in ("images_per_second", "steady_images_per_second"):
            a, b = results["collection"].get(key), results[other].get(key)
            if a and b:
                out[
                    f"collection/{other} ({'steady' if key.startswith('steady') else 'end to end'})"
                ] = round(a / b, 2)
    return out


def mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:,.0f}"


def print_table(results: dict, scaled: dict | None, settings: dict) -> None:
    """The figures as a Markdown table (ready for the README), ratios and memory at 4N below."""

    def spread(row: dict, key: str) -> str:
        low_high = row.get(f"{key}_range")
        value = row.get(key)
        if value is None:
            return "-"
        if low_high and row.get("repeats", 1) > 1:
            return f"{value:.1f} ({low_high[0]:.1f}-{low_high[1]:.1f})"
        return f"{value:.1f}"

    print(
        f"\n{settings['model']}, {settings['num_images']} images of 500x375, batch "
        f"{settings['batch_size'] or 'default'}, device {settings['device']}, autocast "
        f"{settings['autocast'] or 'none'}, channels_last {settings['channels_last']}\n"
    )
    print(
        "| pipeline | images/s end to end | images/s steady | seconds | peak RSS driver+workers (MiB) | peak object store (MiB) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, row in results.items():
        print(
            f"| {name} | {spread(row, 'images_per_second')} | {spread(row, 'steady_images_per_second')} "
            f"| {row['seconds']:.1f} | {mib(row['peak_rss_bytes'])} | {mib(row['peak_object_store_bytes'])} |"
        )
    print()
    for name, value in ratios(results).items():
        print(f"{name}: {value:.2f}")
    if scaled:
        base = results["collection"]
        print(
            f"collection memory at {base['num_images']} vs {scaled['num_images']} images: RSS "
            f"{mib(base['peak_rss_bytes'])} vs {mib(scaled['peak_rss_bytes'])} MiB, object store "
            f"{mib(base['peak_object_store_bytes'])} vs {mib(scaled['peak_object_store_bytes'])} MiB; "
            f"steady {base['steady_images_per_second']} vs {scaled['steady_images_per_second']} images/s"
        )
    if results["collection"].get("plan"):
        print(f"collection's actor pool: {results['collection']['plan']}")


def machine() -> dict:
    """What the figures were measured on."""
    import ray
    import torch

    return {
        "cpu": platform.processor() or platform.machine(),
        "cpu_model": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "memory_bytes": psutil.virtual_memory().total,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ray": ray.__version__,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", default="resnet50", choices=["resnet50", "resnet152", "vit", "fasterrcnn"]
    )
    parser.add_argument(
        "--num-images", type=int, default=200, help="N: images per run (default 200)"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="rows per model call (default: nbhelpers' choice for the device)",
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--autocast",
        default=None,
        choices=["bf16", "fp16"],
        help="autocast dtype (default: bf16 on cuda, none on cpu)",
    )
    parser.add_argument(
        "--channels-last", action="store_true", help="the model's weights in channels-last layout"
    )
    parser.add_argument(
        "--loader-workers",
        type=int,
        default=None,
        help="DataLoader worker processes (default: one per CPU)",
    )
    parser.add_argument(
        "--pipelines", default=",".join(PIPELINES), help="comma-separated subset to run"
    )
    parser.add_argument(
        "--scale", type=int, default=4, help="also run collection on this many times N (0: skip)"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs of each pipeline; the median is reported with the spread",
    )
    parser.add_argument("--timeout", type=float, default=900, help="seconds allowed per run")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    parser.add_argument("--child-settings", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark, print the table, write the JSON files."""
    args = parse_args(argv)
    if args.child:
        child(args.child, Path(args.child_out), json.loads(args.child_settings))
        return
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("--device cuda, but torch sees no GPU; run with --device cpu.")
    pipelines = [name.strip() for name in args.pipelines.split(",") if name.strip()]
    unknown = set(pipelines) - set(PIPELINES)
    if unknown:
        raise SystemExit(
            f"Unknown pipelines {sorted(unknown)}; choose from {', '.join(PIPELINES)}."
        )
    batch_size = args.batch_size or (64 if args.device == "cuda" else 16)
    settings = {
        "model": args.model,
        "num_images": args.num_images,
        "batch_size": batch_size,
        "device": args.device,
        "autocast": args.autocast or ("bf16" if args.device == "cuda" else None),
        # nbhelpers' classify already autocasts to bf16 on a GPU; only an explicit
        # different choice is layered on top of the collection's own.
        "autocast_collection": args.autocast not in (None, "bf16") and args.device == "cuda",
        "channels_last": args.channels_last,
        "loader_workers": os.cpu_count() if args.loader_workers is None else args.loader_workers,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    needed = args.num_images * max(1, args.scale if "collection" in pipelines else 1)
    make_images(needed)
    results: dict[str, dict] = {}
    for name in pipelines:
        runs = []
        for attempt in range(args.repeat):
            print(
                f"{name}: run {attempt + 1} of {args.repeat} on {args.num_images} images ...",
                flush=True,
            )
            runs.append(run_pipeline(name, args.num_images, settings, args.timeout))
        results[name] = summarise(runs)
    scaled = None
    if "collection" in pipelines and args.scale > 1:
        count = args.num_images * args.scale
        print(f"collection: {count} images, to compare memory ...", flush=True)
        scaled = run_pipeline("collection", count, settings, args.timeout)
    print_table(results, scaled, settings | {"batch_size": batch_size})
    latest = {
        name: {
            key: row[key]
            for key in ("images_per_second", "steady_images_per_second", "peak_rss_bytes")
        }
        | {
            k: v
            for k, v in row.items()
            if k not in ("images_per_second", "steady_images_per_second", "peak_rss_bytes")
        }
        for name, row in results.items()
    }
    (RESULTS / "latest.json").write_text(json.dumps(latest, indent=2) + "\n")
    details = {
        "machine": machine(),
        "settings": settings,
        "ratios": ratios(results),
        "results": results,
        "collection_scaled": scaled,
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    (RESULTS / "latest_details.json").write_text(json.dumps(details, indent=2) + "\n")
    print(f"\nWrote {RESULTS / 'latest.json'} and {RESULTS / 'latest_details.json'}")


if __name__ == "__main__":
    main()
