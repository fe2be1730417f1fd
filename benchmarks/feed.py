"""Can the pipeline feed a fast accelerator? Each notebook's own cells against a fake one.

    make bench-feed                               # every notebook, every case (about 20 minutes)
    .venv/bin/python -m benchmarks.feed --notebooks 01 --cases 16cpu-1gpu-50ms --images 4000

There is no GPU here, so the model call stands in for one: each notebook's actor class runs
as the notebook wrote it (the Ray Data calls, ``map_batches``, ``__call__``, the bookkeeping
of ``batches``), but its model call (``classify`` / ``detect``) copies the images once, as a
copy to the device would, and then holds a *fake device* for ``rows / rate`` seconds: a lock
per fake GPU, so that two calls never use one device at once. Nothing else is changed.

The device's speed is stated, not measured: ResNet152 at :data:`RESNET152_IMAGES_PER_SECOND`
images/s on one H200 in bfloat16 (an assumption: about 12 % of the H200's 989 dense bfloat16
TFLOPS at 2 x 11.5 GFLOP per image), and the other models at the same FLOP rate, from
torchvision's published GFLOPS per image (:data:`GFLOPS`). ``--rate`` overrides them.

Ray is told more than this machine has (:data:`CASES`): 16 CPUs and 1 GPU on one node, and a
cluster of two real Ray nodes (``ray start``) with 8 CPUs and 1 GPU each, with every file read
delayed by ``--latency`` (50 ms) as an S3 GET would be (:class:`DelayedFiles`, a pyarrow file
system over the local disk: the read stage takes its S3 path). Each case runs in a fresh process.

Per case it prints the steady rate (:func:`benchmarks.metrics.steady_images_per_second`), this
machine's decode ceiling (the notebook's decode and preprocessing alone, on every core, in a
process pool without Ray), the fake device's rate, the share of time the device was busy, the
CPU the model actor used, the start-up's share of the run (it must stay under 10 %), the rows
each node predicted, and the object store: Ray Data's limit and the peak of shared memory.
Writes ``benchmarks/results/feed.json``.
"""

from __future__ import annotations

import argparse
import fcntl
import json
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

from benchmarks.inputs import make_images
from benchmarks.metrics import steady_images_per_second
from benchmarks.pipelines import ROOT, run_notebook_pipeline, skipped_definitions, stamped

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

CASES = {
    "2cpu-1gpu-local": {"nodes": 1, "cpus": 2, "gpus": 1, "latency": False},
    "16cpu-1gpu-local": {"nodes": 1, "cpus": 16, "gpus": 1, "latency": False},
    "16cpu-1gpu-50ms": {"nodes": 1, "cpus": 16, "gpus": 1, "latency": True},
    "2x8cpu-2gpu-50ms": {"nodes": 2, "cpus": 8, "gpus": 1, "latency": True},
}
"""What Ray is told: nodes, CPUs and GPUs per node, and whether every read is delayed."""

DEFAULT_IMAGES = {"01": 24000, "02": 24000, "03": 6000}


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
        ray.init(
            num_cpus=run["cpus"],
            num_gpus=run["gpus"],
            include_dashboard=False,
            logging_level="WARNING",
            runtime_env={"env_vars": env},
        )
    from nbhelpers import pool, results, sources

    pool.torch_can_use_the_gpus = lambda: None  # no problem: the fake GPUs are usable
    filesystem = pafs.PyFileSystem(DelayedFiles(run["latency"])) if run["latency"] else None
    seen = {}

    def fake(namespace: dict) -> None:
        seen["namespace"] = namespace
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


def _prepare(path: str) -> None:
    from nbhelpers import reading

    reading.prepare_image(path, _PREPROCESS, None)


def _init_pool(preprocess) -> None:
    global _PREPROCESS
    _PREPROCESS = preprocess


def preprocess_of(notebook: str):
    """The read stage's ``preprocess`` of ``notebook``, as its cells make it (offline)."""
    if notebook == "02":
        from transformers import pipeline

        from nbhelpers import vit

        with vit.model_loading(vit.model_source(False)):
            classifier = pipeline("image-classification", model=vit.model_source(False))
        return vit.read_preprocessing(classifier)
    return skipped_definitions(notebook)["spec"].preprocess


def decode_ceiling(notebook: str, paths: list[str]) -> float:
    """Images/s of the read stage's work alone (read, decode, preprocess), on every core of
    this machine, in a process pool without Ray: what the cores can feed at most."""
    preprocess = preprocess_of(notebook)
    cores = os.cpu_count() or 1
    context = multiprocessing.get_context("spawn")
    with context.Pool(cores, initializer=_init_pool, initargs=(preprocess,)) as pool:
        pool.map(_prepare, paths[: 8 * cores])  # the workers' imports, not timed
        start = time.perf_counter()
        pool.map(_prepare, paths, chunksize=16)
        return len(paths) / (time.perf_counter() - start)


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
    log = LOGS / f"{run['notebook']}-{run['case']}.log"
    with tempfile.TemporaryDirectory() as scratch:
        run = run | {"output_dir": scratch, "launched": time.time()}
        command = [sys.executable, "-m", "benchmarks.feed", "--one", json.dumps(run)]
        with open(log, "w") as stream:
            try:
                subprocess.run(
                    command,
                    stdout=stream,
                    stderr=subprocess.STDOUT,
                    cwd=ROOT,
                    env=env,
                    timeout=timeout,
                    check=True,
                )
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
                tail = "\n".join(log.read_text().splitlines()[-15:])
                return {"failed": f"{error}", "log_tail": tail}
        return json.loads((Path(scratch) / "feed.json").read_text())


def figures(run: dict, out: dict, ceiling: float) -> dict:
    """The table's figures for one case."""
    steady = steady_images_per_second(out["batches"])
    first = min(at for at, _ in out["batches"])
    start = dict((name, began) for name, began, _ in out["phases"]).get("actor_worker_wait")
    gpus = run["gpus"] * run["nodes"]
    limit = min(ceiling, run["rate"] * gpus)
    return {
        "steady": steady,
        "ceiling": ceiling,
        "device": run["rate"] * gpus,
        "of_target": steady / limit if steady else None,
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
    }


def print_table(rows: list[dict]) -> None:
    """The results, one line per notebook and case."""
    head = (
        f"{'nb':<3}{'case':<19}{'steady':>8}{'ceiling':>9}{'device':>8}{'of min':>8}"
        f"{'busy':>6}{'in call':>8}{'actor CPU':>10}{'start-up':>9}{'store MiB':>10}{'limit MiB':>10}  rows/node"
    )
    print(head)
    print("-" * len(head))
    for row in rows:
        f = row.get("figures")
        if not f:
            print(f"{row['notebook']:<3}{row['case']:<19} failed: {row['failed']}")
            continue

        def pct(value):
            return "-" if value is None else f"{value:.0%}"

        def num(value, digits=0):
            return "-" if value is None else f"{value:,.{digits}f}"

        print(
            f"{row['notebook']:<3}{row['case']:<19}{num(f['steady']):>8}{num(f['ceiling']):>9}"
            f"{num(f['device']):>8}{num(f['of_target'], 2):>8}{pct(f['busy']):>6}"
            f"{num(f['actor_cpu'], 2):>10}{pct(f['startup_share']):>9}"
            f"{num(f['object_store_peak_mib']):>10}{num(f['ray_data_limit_mib']):>10}  "
            f"{'/'.join(str(n) for n in f['rows_per_node'])}"
        )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.feed", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--notebooks", default="01,02,03", help="which notebooks (01,02,03)")
    parser.add_argument("--cases", default=",".join(CASES), help=f"which of {', '.join(CASES)}")
    parser.add_argument("--images", type=int, help="images per run (default: 24,000; 6,000 for 03)")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per delayed read")
    parser.add_argument("--rate", type=float, help="the fake device's images/s (default: stated)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per case at most")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.one:
        run = json.loads(args.one)
        out = run_case(run)
        (Path(run["output_dir"]) / "feed.json").write_text(json.dumps(out, default=str))
        return
    rows = []
    base_env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    for notebook in args.notebooks.split(","):
        count = args.images or DEFAULT_IMAGES[notebook]
        folder = image_folder(count)
        paths = [str(path) for path in sorted(folder.glob("*.jpg"))][:2000]
        ceiling = decode_ceiling(notebook, paths)
        print(
            f"Notebook {notebook}: decode ceiling {ceiling:,.0f} images/s on {os.cpu_count()} cores"
        )
        for case in args.cases.split(","):
            shape = CASES[case]
            run = shape | {
                "notebook": notebook,
                "case": case,
                "folder": str(folder),
                "num_images": count,
                "rate": device_rate(notebook, args.rate),
                "latency": args.latency if shape["latency"] else 0,
            }
            print(f"  {case}: {count} images ...", flush=True)
            if shape["nodes"] > 1:
                with TwoNodeCluster(shape["cpus"], shape["gpus"]) as cluster:
                    env = cluster.env | {"RAY_ADDRESS": cluster.address}
                    out = run_in_process(run, env, args.timeout)
            else:
                out = run_in_process(run, base_env, args.timeout)
            row = {"notebook": notebook, "case": case}
            if "failed" in out:
                print(out["log_tail"])
                rows.append(row | {"failed": out["failed"]})
            else:
                rows.append(row | {"figures": figures(run, out, ceiling)})
    print()
    print_table(rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "feed.json").write_text(json.dumps(rows, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
