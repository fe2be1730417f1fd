"""Can the pipeline feed a fast accelerator? Each notebook's own cells against a fake one, and
a CPU account of every process per 1,000 images.

    make bench-feed                                    # every notebook, this machine's shape
    .venv/bin/python -m benchmarks.feed --notebooks 01 --cases 2cpu-1gpu-local --repeat 3
    .venv/bin/python -m benchmarks.feed --notebooks 01 --paced 150 --repeat 2   # + the split
    .venv/bin/python -m benchmarks.feed --notebooks 01 --variant reservation-on  # one change

There is no GPU here, so the model call stands in for one: each notebook's actor class runs
as the notebook wrote it (the Ray Data calls, ``map_batches``, ``__call__``, the bookkeeping
of ``batches``), but its model call (``classify`` / ``detect``) copies the images once, as a
copy to the device would, and then holds a *fake device* for ``rows / rate`` seconds: a lock
per fake GPU, so that two calls never use one device at once. Nothing else is changed.

The device's speed is stated, not measured: ResNet152 at :data:`RESNET152_IMAGES_PER_SECOND`
images/s on one H200 in bfloat16 (an assumption: about 12 % of the H200's 989 dense bfloat16
TFLOPS at 2 x 11.5 GFLOP per image), and the other models at the same FLOP rate, from
torchvision's published GFLOPS per image (:data:`GFLOPS`). ``--rate`` overrides them.

By default Ray is told this machine's own CPUs and one GPU (:data:`CASES`: the cases named
after :data:`CORES`), with local files or with every file read delayed by ``--latency``
(50 ms) as an S3 GET would be (:class:`DelayedFiles`, a pyarrow file system over the local
disk: the read stage takes its S3 path). Other cases tell Ray more than the machine has (16
CPUs; two real Ray nodes of 8 CPUs and 1 GPU each): on a small machine they measure the
operating system's scheduling more than the pipeline. Each case runs in a fresh process.

Per case it prints the steady rate (:func:`benchmarks.metrics.steady_images_per_second`), this
machine's decode ceiling (the notebook's read, decode and preprocessing alone, on every core, in
a process pool without Ray, one thread per process) and the CPU seconds it takes per 1,000
images, the fake device's rate, the read tasks at work at once, the share of time the device
was busy, the start-up's share of the run, and the object store's peak. Then the account
(:mod:`benchmarks.account`): every process of the run sampled as ``make bench`` samples them
(:class:`benchmarks.sampler.MemorySampler`), CPU seconds per 1,000 images per kind of process
in the steady part of the run, beside decoding alone's; with ``--paced``, runs at a second
device rate split what grows with images from what is fixed per second, and project it on
paper to bigger machines. Writes ``benchmarks/results/feed.json``.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import math
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pyarrow.fs as pafs

from benchmarks.account import (
    pipeline_cpu,
    print_account,
    print_split,
    projection,
    split_fixed,
    steady_account,
    tasks_at_once,
)
from benchmarks.inputs import make_images
from benchmarks.metrics import steady_images_per_second
from benchmarks.pipelines import ROOT, run_notebook_pipeline, skipped_definitions, stamped
from benchmarks.sampler import MemorySampler

RESULTS = ROOT / "benchmarks" / "results"
LOGS = ROOT / "outputs" / "benchmarks" / "feed"
IMAGES = ROOT / ".cache" / "benchmark_images" / "feed"

RESNET152_IMAGES_PER_SECOND = 5000.0
"""The stated speed of ResNet152 on one H200 in bfloat16 (see the module's docstring)."""

GFLOPS = {"01": 11.51, "02": 17.56, "03": 280.37}
"""GFLOPS per image that torchvision publishes for each notebook's model (ResNet152, ViT-B/16,
Faster R-CNN ResNet50-FPN v2): the fake devices' rates are in their ratio."""

NOTEBOOKS = {
    "01": ("01_resnet_classification", "ResNetPredictor", "classify"),
    "02": ("02_vit_classification", "ViTPredictor", "classify"),
    "03": ("03_fasterrcnn_detection", "FasterRCNNPredictor", "detect"),
}
"""Each notebook's file, its actor class and the actor's model call, which the fake replaces."""

CORES = os.cpu_count() or 1
"""This machine's CPUs: what Ray is told in the default cases."""

CASES = {
    f"{CORES}cpu-1gpu-local": {"nodes": 1, "cpus": CORES, "gpus": 1, "latency": False},
    f"{CORES}cpu-1gpu-50ms": {"nodes": 1, "cpus": CORES, "gpus": 1, "latency": True},
    "16cpu-1gpu-local": {"nodes": 1, "cpus": 16, "gpus": 1, "latency": False},
    "16cpu-1gpu-50ms": {"nodes": 1, "cpus": 16, "gpus": 1, "latency": True},
    "2x8cpu-2gpu-50ms": {"nodes": 2, "cpus": 8, "gpus": 1, "latency": True},
}
"""What Ray is told: nodes, CPUs and GPUs per node, and whether every read is delayed."""

DEFAULT_CASES = list(CASES)[:2]
"""The machine's own shape, with local files and with delayed reads."""

DEFAULT_IMAGES = {"01": 2000, "02": 2000, "03": 2000}
"""Images per run: enough for a steady window of several seconds on two cores."""


def device_rate(notebook: str, rate: float | None = None) -> float:
    """The fake device's images/s for ``notebook``'s model: ``rate``, or the stated default."""
    if rate:
        return rate
    return RESNET152_IMAGES_PER_SECOND * GFLOPS["01"] / GFLOPS[notebook]


# --------------------------------------------------------------------------- the fake parts


class DelayedFiles(pafs.FileSystemHandler):
    """The local disk, with every file opened for reading ``latency`` seconds late, as on S3.

    Wrapped in ``pyarrow.fs.PyFileSystem``, it is the ``filesystem`` of the notebook's image
    source, so the read stage reads the way it reads S3 (``open_input_file``).
    """

    def __init__(self, latency: float):
        self.latency = latency
        self.local = pafs.LocalFileSystem()

    def __eq__(self, other) -> bool:
        return isinstance(other, DelayedFiles) and other.latency == self.latency

    def __ne__(self, other) -> bool:
        return not self == other

    def get_type_name(self) -> str:
        return "delayed-local"

    def normalize_path(self, path):
        return self.local.normalize_path(path)

    def get_file_info(self, paths):
        return self.local.get_file_info(paths)

    def get_file_info_selector(self, selector):
        return self.local.get_file_info(selector)

    def create_dir(self, path, recursive):
        self.local.create_dir(path, recursive=recursive)

    def delete_dir(self, path):
        self.local.delete_dir(path)

    def delete_dir_contents(self, path, missing_dir_ok=False):
        self.local.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self):
        raise OSError("not for a benchmark's files")

    def delete_file(self, path):
        self.local.delete_file(path)

    def move(self, src, dest):
        self.local.move(src, dest)

    def copy_file(self, src, dest):
        self.local.copy_file(src, dest)

    def open_input_stream(self, path):
        time.sleep(self.latency)
        return self.local.open_input_stream(path)

    def open_input_file(self, path):
        time.sleep(self.latency)
        return self.local.open_input_file(path)

    def open_output_stream(self, path, metadata):
        return self.local.open_output_stream(path, metadata=metadata)

    def open_append_stream(self, path, metadata):
        return self.local.open_append_stream(path, metadata=metadata)


class FakeDevice:
    """One fake GPU: a lock file per node and GPU id, held ``rows / rate`` seconds per call."""

    def __init__(self, rate: float):
        import ray

        ids = ray.get_gpu_ids() or [0]
        node = ray.get_runtime_context().get_node_id()[:12]
        self.rate = rate
        self.lock = open(Path(tempfile.gettempdir()) / f"fake-gpu-{node}-{ids[0]}.lock", "w")

    def run(self, rows: int) -> None:
        """Hold the device for ``rows`` images' worth of time."""
        fcntl.flock(self.lock, fcntl.LOCK_EX)
        try:
            time.sleep(rows / self.rate)
        finally:
            fcntl.flock(self.lock, fcntl.LOCK_UN)


def fake_outputs(method: str, rows: int) -> dict:
    """Columns of the right names and types for ``rows`` images: what the model call returns."""
    import numpy as np

    if method == "detect":
        return {  # as detect returns them: one array of boxes and of scores per photo
            "boxes": [np.array([[1.0, 1.0, 2.0, 2.0]], dtype=np.float32)] * rows,
            "labels": [["cat"]] * rows,
            "scores": [np.array([0.99], dtype=np.float32)] * rows,
        }
    return {
        "label_index": np.zeros(rows, dtype=np.int64),
        "label": np.full(rows, "tench", dtype=object),
        "score": np.ones(rows, dtype=np.float32),
        "margin": np.ones(rows, dtype=np.float32),
    }


def on_fake_device(predictor: type, method: str, rate: float) -> type:
    """``predictor`` with a fake device instead of its model: no model is built, and its model
    call ``method`` copies the images and holds the device; everything else is the notebook's.
    Each batch also records the actor's process and its CPU time, to measure what it uses."""
    import numpy as np
    import pyarrow as pa

    class OnFakeDevice(predictor):
        def __init__(self, **kwargs):
            # The lessons' __call__ hands its model to the module-level model call (which
            # fake_model_call replaces): the fake device is that model, under each name.
            self.device = self.model = self.vit_pipeline = FakeDevice(rate)
            self.spec = None

        def __call__(self, batch: dict):
            out = super().__call__(batch)
            rows = out.num_rows if isinstance(out, pa.Table) else len(out["path"])
            extra = {"actor_pid": os.getpid(), "actor_cpu_s": time.process_time()}
            if isinstance(out, dict):
                return out | {key: np.full(rows, value) for key, value in extra.items()}
            for key, value in extra.items():
                out = out.append_column(key, pa.array(np.full(rows, value)))
            return out

    def model_call(self, images) -> dict:
        staged = [np.array(image) for image in images]  # the copy to the device
        self.device.run(len(staged))
        return fake_outputs(method, len(staged))

    setattr(OnFakeDevice, method, model_call)
    return OnFakeDevice


def fake_model_call(method: str):
    """The notebook's module-level model call (``classify``, ``detect``) on a fake device: the
    actor passes its model, here a :class:`FakeDevice`, as the first argument."""
    import numpy as np

    def model_call(device, images, *rest) -> dict:
        staged = [np.array(image) for image in images]  # the copy to the device
        device.run(len(staged))
        return fake_outputs(method, len(staged))

    return model_call


# --------------------------------------------------------------------------- the changes tried


def _no_reservation(namespace: dict) -> None:
    import ray

    ray.data.DataContext.get_current().op_resource_reservation_enabled = False


def _reservation_ratio(ratio: float):
    def change(namespace: dict) -> None:
        import ray

        ray.data.DataContext.get_current().op_resource_reservation_ratio = ratio

    return change


def _plan(**numbers):
    """The notebook's plan with some of its numbers changed (``cpus_per_task=0.5``...)."""

    def change(namespace: dict) -> None:
        import dataclasses

        if not getattr(namespace["plan"], "changed", False):
            namespace["plan"] = dataclasses.replace(namespace["plan"], **numbers)
            object.__setattr__(namespace["plan"], "changed", True)

    return change


def _read_tasks_of(batches: int):
    """Read tasks of ``batches`` times the rows the plan gives them."""

    def change(namespace: dict) -> None:
        plan = namespace["plan"]
        if not getattr(plan, "read_tasks_changed", False):
            one_batch = plan.read_tasks

            def read_tasks(num_paths: int, batch_size: int) -> int:
                return max(1, one_batch(num_paths, batch_size) // batches)

            object.__setattr__(plan, "read_tasks", read_tasks)
            object.__setattr__(plan, "read_tasks_changed", True)

    return change


def _map_batches_option(**options):
    """Every ``map_batches`` of the actor stage called with ``options`` too."""

    def change(namespace: dict) -> None:
        import ray

        original = ray.data.Dataset.map_batches
        if getattr(original, "changed", False):
            return

        def map_batches(self, fn, *args, **kwargs):
            if isinstance(fn, type):
                kwargs |= options
            return original(self, fn, *args, **kwargs)

        map_batches.changed = True
        ray.data.Dataset.map_batches = map_batches

    return change


def _context(**settings):
    """Ray Data's ``DataContext`` with ``settings``."""

    def change(namespace: dict) -> None:
        import ray

        context = ray.data.DataContext.get_current()
        for name, value in settings.items():
            setattr(context, name, value)

    return change


def wide_thread_pool(max_workers: int | None = None, **kwargs):
    """A ``ThreadPoolExecutor`` of 64 threads where the read function asks for more than one:
    a 64-row read task waits for all its delayed files at once, not in four rounds of 16."""
    from concurrent.futures import ThreadPoolExecutor

    return ThreadPoolExecutor(64 if (max_workers or 1) > 1 else max_workers, **kwargs)


def _wide_reads(namespace: dict) -> None:
    namespace["ThreadPoolExecutor"] = wide_thread_pool  # pickled by reference: importable


VARIANTS = {
    "none": ("the notebook's cells as they are", None),
    "no-reservation": (
        "Ray Data's per-operator reservation off (runtime.start_ray's own setting since 2026-12-07)",
        _no_reservation,
    ),
    "reservation-0": (
        "Ray Data reserves only each operator's minimum (op_resource_reservation_ratio=0)",
        _reservation_ratio(0.0),
    ),
    "one-read-per-cpu": (
        "read tasks reserve twice the CPUs: one per CPU left, the plan before 2026-12-07",
        None,
    ),
    "read-4-batches": ("read tasks of 4 times the plan's rows", _read_tasks_of(4)),
    "zero-copy": ("the actor's map_batches with zero_copy_batch=True", None),
    "no-progress": (
        "no progress output, no per-operator metrics",
        _context(enable_progress_bars=False, enable_get_object_locations_for_metrics=False),
    ),
    "actor-0.1-cpu": ("the GPU actor reserves 0.1 CPU, not 0.25", None),
    "threads-64": (
        "the read function fetches up to 64 delayed files at once, not 16",
        _wide_reads,
    ),
    "runtime-env": (
        "Ray started with a runtime_env (env_vars), as this benchmark did before 2026-12-07; "
        "the notebooks start it without one",
        None,
    ),
    "reservation-on": (
        "Ray Data's per-operator reservation on (its default; runtime.start_ray turns it off)",
        _context(op_resource_reservation_enabled=True),
    ),
}
"""Changes tried one at a time (``--variant``): a description, and what it does to the
notebook's namespace after each cell (``None``: see :func:`variant_change`)."""


def variant_change(name: str):
    """What ``--variant name`` does to the notebook's namespace after each cell (or ``None``)."""
    from nbhelpers.pool import READ_TASKS_PER_CPU  # imports Ray: only in the case's process

    if name == "one-read-per-cpu":

        def double(namespace: dict) -> None:
            plan = namespace["plan"]
            _plan(cpus_per_task=plan.cpus_per_task * READ_TASKS_PER_CPU)(namespace)

        return double
    if name == "zero-copy":
        return _map_batches_option(zero_copy_batch=True)
    if name == "actor-0.1-cpu":

        def less(namespace: dict) -> None:
            plan = namespace["plan"]
            left = plan.cpus_left_for_tasks + plan.num_actors * (plan.cpus_per_actor - 0.1)
            per_task = round(left / (READ_TASKS_PER_CPU * math.ceil(left)), 4)
            _plan(cpus_per_actor=0.1, cpus_left_for_tasks=left, cpus_per_task=per_task)(namespace)

        return less
    return VARIANTS[name][1]  # runtime-env: in run_case


# --------------------------------------------------------------------------- one case


class SharedMemorySampler(threading.Thread):
    """The peak growth of ``/dev/shm`` (where Ray's object store lives), sampled every 0.2 s."""

    def __init__(self):
        super().__init__(daemon=True)
        self.base = self.used()
        self.peak = 0
        self.running = True

    @staticmethod
    def used() -> int:
        return shutil.disk_usage("/dev/shm").used if os.path.isdir("/dev/shm") else 0

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.used() - self.base)
            time.sleep(0.2)


def run_case(run: dict) -> dict:
    """One notebook's pipeline cells on one case, in this process; its figures."""
    import ray

    name, actor, method = NOTEBOOKS[run["notebook"]]
    rate = run["rate"]
    if not os.environ.get("RAY_ADDRESS"):
        env = {"PYTHONPATH": str(ROOT), "OMP_WAIT_POLICY": "PASSIVE"}
        if "runtime-env" in run.get("variant", "none").split("+"):
            options = {"runtime_env": {"env_vars": env}}  # the benchmark's start until 2026-12-07
        else:
            # As the notebooks start Ray (runtime.start_ray): no runtime_env, so that the
            # workers Ray starts with the driver serve the job (they inherit this env).
            os.environ.update(env)
            options = {}
        ray.init(
            num_cpus=run["cpus"],
            num_gpus=run["gpus"],
            include_dashboard=False,
            logging_level="WARNING",
            **options,
        )
    from nbhelpers import pool, results, sources

    pool.torch_can_use_the_gpus = lambda: None  # no problem: the fake GPUs are usable
    filesystem = pafs.PyFileSystem(DelayedFiles(run["latency"])) if run["latency"] else None
    seen = {}

    changes = [variant_change(name) for name in run.get("variant", "none").split("+")]
    changes = [change for change in changes if change]

    def change(namespace: dict) -> None:
        for one in changes:
            one(namespace)

    def fake(namespace: dict) -> None:
        seen["namespace"] = namespace
        if "plan" in namespace:
            change(namespace)
        if "source" in namespace and filesystem and not seen.get("delayed"):
            found = namespace["source"]
            namespace["source"] = sources.ImageSource(
                found.uri, "s3", found.paths, filesystem, found.num_found
            )
            seen["delayed"] = True
        if "plan" in namespace and "object_store_bytes" not in seen:
            seen["object_store_bytes"] = ray.cluster_resources().get("object_store_memory", 0)
        if method in namespace and not seen.get("call_faked"):
            namespace[method] = fake_model_call(method)  # before the actor class is pickled
            seen["call_faked"] = True
        if actor in namespace and not seen.get("faked"):
            original = namespace[actor].__bases__[0]  # the notebook's class, under the stamps
            namespace[actor] = stamped(on_fake_device(original, method, rate))
            seen["faked"] = True

    settings = {
        "folder": run["folder"],
        "num_images": run["num_images"],
        "batch_size": None,
        "output_dir": run["output_dir"],
        "launched": run["launched"],
    }
    notebook = ROOT / "notebooks" / f"{name}.ipynb"
    given = skipped_definitions(run["notebook"]) | (
        {"pretrained": False} if run["notebook"] == "02" else {}
    )
    sampler = SharedMemorySampler()
    sampler.start()
    timings = run_notebook_pipeline(settings, notebook, actor, given, fake)
    sampler.running = False
    namespace = seen["namespace"]
    table = results.read_predictions(namespace["output"], namespace["source"].paths)
    return timings | {
        "object_store_peak_bytes": sampler.peak,
        "object_store_bytes": seen["object_store_bytes"],
        "ray_data_limit_bytes": ray_data_limit(seen["object_store_bytes"]),
        "rows_per_node": table["node_id"].value_counts().to_dict(),
        "actor_cpu": actor_cpu_share(table),
        "actor_in_call": actor_in_call_share(table),
        "batch_size": namespace["batch_size"],
        "plan_numbers": namespace["plan"].as_dict(),
    }


def ray_data_limit(object_store_bytes: float) -> float:
    """The object-store limit Ray Data's operators run under: the smaller of the user's
    ``resource_limits.object_store_memory`` and half the object store (Ray Data's default
    fraction, ``ResourceManager.get_global_limits``)."""
    import ray

    context = ray.data.DataContext.get_current()
    fraction = context.override_object_store_memory_limit_fraction or 0.5
    return min(
        context.execution_options.resource_limits.object_store_memory, fraction * object_store_bytes
    )


def actor_cpu_share(table) -> float | None:
    """CPU the model actors used, in cores per actor, between each one's first and last batch."""
    shares = []
    for _, rows in table.groupby("actor_pid"):
        calls = rows.groupby("done_at")["actor_cpu_s"].first().sort_index()
        if len(calls) > 1 and calls.index[-1] > calls.index[0]:
            shares.append((calls.iloc[-1] - calls.iloc[0]) / (calls.index[-1] - calls.index[0]))
    return sum(shares) / len(shares) if shares else None


def actor_in_call_share(table) -> float | None:
    """The share of time the model actors spent inside ``__call__`` (the rest: waiting for a
    batch), between each one's first and last call."""
    shares = []
    for _, rows in table.groupby("actor_pid"):
        calls = rows.groupby("done_at")["called_at"].first().sort_index()
        if len(calls) > 1:
            inside = (calls.index - calls.values).to_numpy().sum()
            shares.append(inside / (calls.index[-1] - calls.iloc[0]))
    return sum(shares) / len(shares) if shares else None


# --------------------------------------------------------------------------- the ceiling


def _prepare(path: str) -> float:
    """Read, decode and preprocess one file; the CPU seconds it took this process."""
    from nbhelpers import reading

    began = time.process_time()
    reading.prepare_image(path, _PREPROCESS, None)
    return time.process_time() - began


def _init_pool(preprocess) -> None:
    import torch

    global _PREPROCESS
    _PREPROCESS = preprocess
    torch.set_num_threads(1)  # one thread per process, as in a Ray task of one CPU or less


def preprocess_of(notebook: str):
    """The read stage's ``preprocess`` of ``notebook``, as its cells make it (offline)."""
    if notebook == "02":
        from transformers import pipeline

        from nbhelpers import vit

        with vit.model_loading(vit.model_source(False)):
            classifier = pipeline("image-classification", model=vit.model_source(False))
        return vit.read_preprocessing(classifier)
    return skipped_definitions(notebook)["spec"].preprocess


def decode_ceiling(notebook: str, paths: list[str]) -> tuple[float, float]:
    """The read stage's work alone (read, decode, preprocess), on every core of this machine,
    in a process pool without Ray: the images/s the cores feed at most, and the CPU seconds
    per 1,000 images that work takes (each file's own CPU time, whatever else runs)."""
    preprocess = preprocess_of(notebook)
    cores = os.cpu_count() or 1
    context = multiprocessing.get_context("spawn")
    # As Ray starts a task's worker: one OpenMP thread (the ViT processor's resize runs torch
    # ops), waiting passively. Without it, torch's threads of two processes spin against each
    # other on two cores, and the ceiling came out at a third of what the cores decode.
    threads = {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    saved = {name: os.environ.get(name) for name in threads}
    os.environ.update(threads)
    try:
        with context.Pool(cores, initializer=_init_pool, initargs=(preprocess,)) as pool:
            pool.map(_prepare, paths[: 8 * cores])  # the workers' imports, not timed
            start = time.perf_counter()
            cpu = sum(pool.map(_prepare, paths, chunksize=16))
            return len(paths) / (time.perf_counter() - start), 1000 * cpu / len(paths)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# --------------------------------------------------------------------------- the cluster


class TwoNodeCluster:
    """Two real Ray nodes on this machine (``ray start``), with ``cpus`` and ``gpus`` each."""

    def __init__(self, cpus: int, gpus: int):
        import secrets
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.address = f"127.0.0.1:{port}"
        self.home = Path(tempfile.mkdtemp(prefix="feed-cluster-"))
        token = secrets.token_hex(32)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        self.env |= {
            "HOME": str(self.home),
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": token,
            "PYTHONPATH": str(ROOT),
            "OMP_WAIT_POLICY": "PASSIVE",
        }
        self.nodes = [
            ["--head", f"--port={port}", "--include-dashboard=false"],
            [f"--address={self.address}"],
        ]
        self.resources = [f"--num-cpus={cpus}", f"--num-gpus={gpus}"]

    def __enter__(self) -> TwoNodeCluster:
        ray = str(Path(sys.executable).with_name("ray"))
        for node in self.nodes:
            command = [ray, "start", *node, *self.resources, "--node-ip-address=127.0.0.1"]
            command.append("--disable-usage-stats")
            subprocess.run(command, env=self.env, check=True, capture_output=True, timeout=180)
        return self

    def __exit__(self, *exc) -> None:
        ray = str(Path(sys.executable).with_name("ray"))
        subprocess.run([ray, "stop", "--force"], env=self.env, capture_output=True, timeout=180)
        shutil.rmtree(self.home, ignore_errors=True)


# --------------------------------------------------------------------------- the runs


def image_folder(count: int) -> Path:
    """A folder of ``count`` JPEGs of 500x375: hard links to 2,000 distinct ones (made once)."""
    distinct = sorted(make_images(2000).glob("*.jpg"))
    folder = IMAGES / str(count)
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        link = folder / f"img_{index:06d}.jpg"
        if not link.exists():
            os.link(distinct[index % len(distinct)], link)
    return folder


def run_in_process(run: dict, env: dict, timeout: float) -> dict:
    """:func:`run_case` in a fresh Python process; its figures, or the end of its log."""
    LOGS.mkdir(parents=True, exist_ok=True)
    name = f"{run['notebook']}-{run['case']}-{run.get('variant', 'none')}-{run['rate']:.0f}"
    log = LOGS / f"{name}-{run.get('repeat', 0)}.log"
    with tempfile.TemporaryDirectory() as scratch:
        run = run | {"output_dir": scratch, "launched": time.time()}
        command = [sys.executable, "-m", "benchmarks.feed", "--one", json.dumps(run)]
        load = os.getloadavg()[0]
        with open(log, "w") as stream, MemorySampler() as sampler:
            process = subprocess.Popen(
                command, stdout=stream, stderr=subprocess.STDOUT, cwd=ROOT, env=env
            )
            sampler.pipeline_pid = process.pid
            try:
                code = process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                code = "timed out"
        if code != 0:
            tail = "\n".join(log.read_text().splitlines()[-15:])
            return {"failed": f"exit {code}", "log_tail": tail}
        out = json.loads((Path(scratch) / "feed.json").read_text())
        return out | {
            "account": steady_account(sampler.cpu_ticks, out["batches"], os.cpu_count() or 1),
            "load_average": [load, os.getloadavg()[0]],
        }


def figures(run: dict, out: dict, ceiling: float, decode_per_thousand: float) -> dict:
    """The table's figures for one case; ``decode_per_thousand``: decoding alone's CPU seconds
    per 1,000 images (the ceiling's)."""
    steady = steady_images_per_second(out["batches"])
    first = min(at for at, _ in out["batches"])
    start = dict((name, began) for name, began, _ in out["phases"]).get("actor_worker_wait")
    gpus = run["gpus"] * run["nodes"]
    limit = min(ceiling, run["rate"] * gpus)
    used = pipeline_cpu(out["account"])
    return {
        "steady": steady,
        "ceiling": ceiling,
        "device": run["rate"] * gpus,
        "of_target": steady / limit if steady else None,
        "cpu_efficiency": decode_per_thousand / used if used else None,
        "decode_cpu_per_thousand": decode_per_thousand,
        "busy": steady / (run["rate"] * gpus) if steady else None,
        "actor_cpu": out["actor_cpu"],
        "actor_in_call": out.get("actor_in_call"),
        "startup_share": (first - start) / (out["end"] - start) if start else None,
        "seconds": out["end"] - start if start else None,
        "object_store_peak_mib": out["object_store_peak_bytes"] / 2**20,
        "ray_data_limit_mib": out["ray_data_limit_bytes"] / 2**20,
        "rows_per_node": sorted(out["rows_per_node"].values(), reverse=True),
        "batch_size": out["batch_size"],
        "plan": out["plan"],
        "account": out["account"],
        "load_average": out["load_average"],
        "reads_at_once": tasks_at_once(
            out.get("map_tasks", []), "read_images", (first, max(at for at, _ in out["batches"]))
        ),
    }


def print_table(rows: list[dict]) -> None:
    """The results, one line per notebook, case, device rate and repeat (markdown).

    "of min": the steady rate over the smaller of the decode ceiling and the device; "CPU
    eff.": decoding alone's CPU per image over the CPU per image of all the run's processes
    (what "of min" would be on otherwise idle cores with no idle time).
    """

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{value:.0%}"

    def num(value: float | None, digits: int = 0) -> str:
        return "-" if value is None else f"{value:,.{digits}f}"

    print(
        "| nb | case | device | steady | ceiling | of min | CPU eff. | reads at once | busy | in call "
        "| actor CPU | start-up | store MiB | load | rows/node |"
    )
    print("| --- | --- |" + " ---: |" * 12 + " --- |")
    for row in rows:
        f = row.get("figures")
        if not f:
            print(f"| {row['notebook']} | {row['case']} | failed: {row['failed']} |")
            continue
        print(
            f"| {row['notebook']} | {row['case']} | {num(f['device'])} | {num(f['steady'])} "
            f"| {num(f['ceiling'])} | {num(f['of_target'], 2)} | {num(f['cpu_efficiency'], 2)} "
            f"| {num(f.get('reads_at_once'), 2)} "
            f"| {pct(f['busy'])} | {pct(f['actor_in_call'])} | {num(f['actor_cpu'], 2)} "
            f"| {pct(f['startup_share'])} | {num(f['object_store_peak_mib'])} "
            f"| {'–'.join(f'{v:.1f}' for v in f['load_average'])} "
            f"| {'/'.join(str(n) for n in f['rows_per_node'])} |"
        )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.feed", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--notebooks", default="01,02,03", help="which notebooks (01,02,03)")
    parser.add_argument(
        "--cases", default=",".join(DEFAULT_CASES), help=f"which of {', '.join(CASES)}"
    )
    parser.add_argument("--images", type=int, help="images per run (default: 2,000)")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per delayed read")
    parser.add_argument("--rate", type=float, help="the fake device's images/s (default: stated)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per case at most")
    parser.add_argument(
        "--variant",
        default="none",
        help=f"the changes to try, joined by '+': {', '.join(VARIANTS)}",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs of each case (medians)")
    parser.add_argument(
        "--paced",
        type=float,
        help="also run each case with the fake device at this images/s, below the decode "
        "ceiling: the account's split into per-image and fixed CPU needs two rates",
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def run_one(run: dict, timeout: float) -> dict:
    """One notebook, case and device rate, in a fresh process (on a fresh two-node cluster
    where the case has two nodes); its figures or why it failed."""
    if run["nodes"] > 1:
        with TwoNodeCluster(run["cpus"], run["gpus"]) as cluster:
            return run_in_process(run, cluster.env | {"RAY_ADDRESS": cluster.address}, timeout)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return run_in_process(run, env, timeout)


def print_accounts(rows: list[dict], decode: dict[str, float]) -> None:
    """The CPU account of each notebook and case (the repeats' medians), and where runs at two
    device rates allow it, its split into what grows with images and what is fixed."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        if "figures" in row:
            groups.setdefault((row["notebook"], row["case"], row["rate"]), []).append(row)
    for (notebook, case, rate), runs in groups.items():
        accounts = [row["figures"]["account"] for row in runs]
        title = f"Notebook {notebook}, {case}, fake device at {rate:,.0f} images/s"
        print_account(title, accounts, decode[notebook])
    for notebook, case in dict.fromkeys((n, c) for n, c, _ in groups):
        runs = [
            r for r in rows if "figures" in r and (r["notebook"], r["case"]) == (notebook, case)
        ]
        if len({row["rate"] for row in runs}) < 2:
            continue  # the split needs runs at two device rates (--paced)
        split = split_fixed([row["figures"]["account"] for row in runs])
        if not split:
            continue
        fast = max(runs, key=lambda r: r["rate"])["figures"]["steady"] or 1.0
        title = f"Notebook {notebook}, {case}: per image and fixed, {len(runs)} runs at two rates"
        print_split(title, split, fast)
        device = device_rate(notebook)
        print("\nProjection on paper (not a measurement) from that split:\n")
        print("| shape | CPU-bound images/s | device-bound | projected images/s |")
        print("| --- | ---: | ---: | ---: |")
        for shape, cpus, gpus, nodes in (
            (f"this machine ({CORES} CPUs, 1 GPU)", CORES, 1, 1),
            ("16 CPUs, 1 GPU", 16, 1, 1),
            ("2 x 8 CPUs, 2 GPUs", 16, 2, 2),
        ):
            p = projection(split, cpus, device * gpus, nodes)
            print(
                f"| {shape} | {p['cpu_bound']:,.0f} | {p['device_bound']:,.0f} "
                f"| {p['images_per_second']:,.0f} |"
            )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.one:
        run = json.loads(args.one)
        out = run_case(run)
        (Path(run["output_dir"]) / "feed.json").write_text(json.dumps(out, default=str))
        return
    print(f"Load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    rows, decode = [], {}
    for notebook in args.notebooks.split(","):
        count = args.images or DEFAULT_IMAGES[notebook]
        folder = image_folder(count)
        paths = [str(path) for path in sorted(folder.glob("*.jpg"))][:2000]
        ceiling, decode[notebook] = decode_ceiling(notebook, paths)
        print(
            f"Notebook {notebook}: decode ceiling {ceiling:,.0f} images/s on {os.cpu_count()} "
            f"cores, {decode[notebook]:.2f} CPU s per 1,000 images"
        )
        rates = [device_rate(notebook, args.rate)] + ([args.paced] if args.paced else [])
        for case in args.cases.split(","):
            for rate in rates:
                for repeat in range(args.repeat):
                    shape = CASES[case]
                    run = shape | {
                        "notebook": notebook,
                        "case": case,
                        "folder": str(folder),
                        "num_images": count,
                        "rate": rate,
                        "latency": args.latency if shape["latency"] else 0,
                        "repeat": repeat,
                        "variant": args.variant,
                    }
                    print(
                        f"  {case} at {rate:,.0f}/s, run {repeat + 1}: {count} images ...",
                        flush=True,
                    )
                    out = run_one(run, args.timeout)
                    row = {"notebook": notebook, "case": case, "rate": rate, "repeat": repeat}
                    if "failed" in out:
                        print(out["log_tail"])
                        rows.append(row | {"failed": out["failed"]})
                    else:
                        rows.append(row | {"figures": figures(run, out, ceiling, decode[notebook])})
    print(f"Load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}\n")
    print_table(rows)
    print_accounts(rows, decode)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "feed.json").write_text(json.dumps(rows, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
