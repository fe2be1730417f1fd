"""The GPU check: on a machine with a GPU and no network, what the GPU path does, in minutes.

    make gpu-wheels                  # here, with network: wheels/ for the GPU machine
    make gpu-check                   # there: python3 -m benchmarks.gpu_check --wheels wheels

It uses the Python packages the GPU machine already has (torch, torchvision, transformers:
a typical GPU image) and installs what is missing (Ray, papermill and what they need) from
the wheels brought along, never from a package index. Then, in this order, so that
something useful comes back even when a later step cannot run:

1. ``models`` (no Ray): the notebooks' own model functions on the GPU, with seeded random
   weights: the precision each computes in, parity between batch sizes and against the
   CPU in float32, and images/s of the forward pass alone against the whole ``classify``;
2. ``notebooks``: each notebook offline on the GPU, through papermill (``make smoke``'s
   runner), on ``--notebook-images`` generated JPEGs;
3. ``bench``: ``make bench`` with the collection and the model alone on ``--bench-images``.

Everything lands in one folder (``outputs/gpu-check/`` by default): ``models.json``,
``notebooks/`` (the executed notebooks and their report), ``bench.txt`` and
``bench.json``, and ``summary.md``, which holds every figure and is printed at the end.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "outputs" / "gpu-check"
GPU_PACKAGES = {
    "ray[data]": "ray",
    "pandas": "pandas",
    "pyarrow": "pyarrow",
    "pillow": "PIL",
    "matplotlib": "matplotlib",
    "scikit-image": "skimage",
    "torchmetrics": "torchmetrics",
    "pycocotools": "pycocotools",
    "papermill": "papermill",
    "ipykernel": "ipykernel",
    "nbformat": "nbformat",
    "nbconvert": "nbconvert",
    "psutil": "psutil",
}
"""What the check, the notebooks and their report import beyond a GPU image's torch,
torchvision and transformers: each package with the module it is imported as."""


def locked(package: str) -> str:
    """``package`` with the version of ``constraints.txt`` (``ray[data]==2.60.0``)."""
    name = package.split("[")[0].lower()
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        pin = line.split(";")[0].strip()
        if pin.lower().startswith(f"{name}=="):
            return package + pin[len(name) :]
    return package


def download_wheels(folder: Path, python_version: str) -> None:
    """Download the wheels of :data:`GPU_PACKAGES` and their dependencies for Linux x86_64."""
    platforms = ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]
    command = [sys.executable, "-m", "pip", "download", "--dest", str(folder)]
    command += ["--only-binary=:all:", "--python-version", python_version]
    command += [arg for name in platforms for arg in ("--platform", name)]
    subprocess.run(command + [locked(p) for p in GPU_PACKAGES], check=True)
    wheels = sorted(folder.glob("*.whl"))
    size = sum(w.stat().st_size for w in wheels) / 2**20
    print(f"{len(wheels)} wheels, {size:,.0f} MiB, in {folder} (Python {python_version}).")


def importable(module: str) -> bool:
    """Whether ``module`` can be imported here, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a dotted name whose package is missing
        return False


def install_missing(wheels: Path | None) -> list[str]:
    """Install the packages of :data:`GPU_PACKAGES` that this Python cannot import, from
    ``wheels`` only (never a package index), before anything imports them; returns them."""
    missing = [p for p, module in GPU_PACKAGES.items() if not importable(module)]
    if missing and wheels is None:
        raise SystemExit(f"Missing {missing}: bring them as wheels (make gpu-wheels; --wheels).")
    if missing:
        print(f"Installing {', '.join(missing)} from {wheels} (no package index).", flush=True)
        command = [sys.executable, "-m", "pip", "install", "--no-index", "--find-links"]
        subprocess.run(command + [str(wheels)] + [locked(p) for p in missing], check=True)
        importlib.invalidate_caches()  # let this process find what was just installed
    return missing


# --------------------------------------------------------------------------- 1. the models


def timed(call, repeats: int) -> float:
    """Seconds per call of ``call()``, after one warm-up, with the GPU's queue drained."""
    import torch

    call()
    torch.cuda.synchronize() if torch.cuda.is_available() else None
    start = time.perf_counter()
    for _ in range(repeats):
        call()
    torch.cuda.synchronize() if torch.cuda.is_available() else None
    return (time.perf_counter() - start) / repeats


def crops(count: int, preprocess) -> list:
    """``count`` generated JPEGs (:func:`benchmarks.inputs.make_images`), decoded as the
    notebooks' read stage does, with ``preprocess``."""
    from benchmarks.inputs import make_images
    from nbhelpers import reading, sources

    paths = sources.find_images(make_images(count), count).paths
    return [reading.prepare_image(path, preprocess, None).image for path in paths]


def check_resnet(device: str, count: int, batch: int) -> dict:
    """Notebook 01's ``classify`` (float32): parity across batch sizes and devices, its speed,
    and the forward pass alone in the precision notebook 04 teaches (``compute_dtype``)."""
    import numpy as np
    import torch
    from torchvision.transforms.v2.functional import normalize

    from benchmarks.pipelines import notebook_definitions, notebook_entry
    from nbhelpers import models, pool

    classify = notebook_definitions(notebook_entry("01").path, ["classify"])["classify"]
    model, spec = models.build_resnet152(pretrained=False)
    images = np.stack(crops(count, spec.preprocess))
    cpu = classify(model, images[:8], spec)
    model = model.to(device)
    small = classify(model, images[:8], spec)  # the single batch's size
    whole = classify(model, images, spec)
    dtype = pool.compute_dtype(device)
    pixels = torch.from_numpy(images[:batch]).to(device).permute(0, 3, 1, 2)
    pixels = normalize(pixels.float() / 255, spec.mean, spec.std)

    def forward():
        with torch.inference_mode(), torch.autocast(device, dtype=dtype, enabled=device == "cuda"):
            model(pixels)

    repeats = 20 if device == "cuda" else 2
    return {
        "model": "ResNet152",
        "dtype": "float32",  # classify asks for no other precision
        "forward_only_dtype": str(dtype).removeprefix("torch."),  # notebook 04's precision
        "same_label_across_batch_sizes": float(np.mean(small["label"] == whole["label"][:8])),
        "max_score_difference_across_batch_sizes": float(
            np.abs(small["score"] - whole["score"][:8]).max()
        ),
        "same_label_gpu_vs_cpu": float(np.mean(small["label"] == cpu["label"])),
        "max_score_difference_gpu_vs_cpu": float(np.abs(small["score"] - cpu["score"]).max()),
        "images_per_second_forward_only": batch / timed(forward, repeats),
        "images_per_second_classify": batch
        / timed(lambda: classify(model, images[:batch], spec), repeats),
        "batch_size": batch,
    }


def check_vit(device: str, count: int, batch: int) -> dict:
    """Notebook 02's pipeline on a ViT-Base with random weights: its dtype, parity, speed."""
    import numpy as np

    from benchmarks.inputs import vit_base_folder
    from benchmarks.pipelines import notebook_definitions, notebook_entry
    from nbhelpers import vit

    names = ["load_vit_pipeline", "classify"]
    notebook = notebook_definitions(notebook_entry("02").path, names)
    vit_pipeline = notebook["load_vit_pipeline"](True, str(vit_base_folder()), device)
    images = np.stack(crops(count, vit.read_preprocessing(vit_pipeline)))
    small = notebook["classify"](vit_pipeline, images[:8])
    whole = notebook["classify"](vit_pipeline, images)
    seconds = timed(lambda: notebook["classify"](vit_pipeline, images[:batch]), 3)
    return {
        "model": "ViT-Base/16",
        "dtype": str(vit_pipeline.model.dtype).removeprefix("torch."),
        "same_label_across_batch_sizes": float(np.mean(small["label"] == whole["label"][:8])),
        "max_score_difference_across_batch_sizes": float(
            np.abs(small["score"] - whole["score"][:8]).max()
        ),
        "images_per_second_classify": batch / seconds,
        "batch_size": batch,
    }


def check_detector(device: str, count: int, batch: int) -> dict:
    """Notebook 03's ``detect``: one call per batch against one photo per call, and speed."""
    import torch

    from benchmarks.pipelines import notebook_definitions, notebook_entry
    from nbhelpers import evaluate, models
    from nbhelpers.rows import image_rows

    notebook = notebook_definitions(notebook_entry("03").path, ["detect"])
    model, spec = models.build_fasterrcnn(pretrained=False)
    model = model.to(device)
    photos = crops(count, spec.preprocess)[:batch]
    rows = {"path": [str(i) for i in range(len(photos))]}
    rows |= {"width": [p.shape[1] for p in photos], "height": [p.shape[0] for p in photos]}
    rows |= {"image": photos, "error": [None] * len(photos)}
    together = notebook["detect"](model, photos, spec)
    alone = [notebook["detect"](model, [photo], spec) for photo in photos]
    alone = {key: [found[key][0] for found in alone] for key in together}
    frames = [image_rows(rows, found).to_pandas() for found in (alone, together)]
    comparison = evaluate.compare_detections(*frames, spec.score_threshold)
    seconds = timed(lambda: notebook["detect"](model, photos, spec), 3)
    return {
        "model": "Faster R-CNN ResNet50-FPN v2",
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),  # detect's
        "parity_one_call_vs_one_photo_per_call": evaluate.parity_summary(comparison),
        "detections": sum(len(scores) for scores in together["scores"]),
        "images_per_second_detect": len(photos) / seconds,
        "batch_size": len(photos),
        "gpu_memory_peak_gib": torch.cuda.max_memory_allocated() / 2**30
        if device == "cuda"
        else None,
    }


MODEL_CHECKS = {"resnet": check_resnet, "vit": check_vit, "detector": check_detector}


def check_models(device: str, count: int, batch: int, names: list[str]) -> dict:
    """The model checks ``names``; one that fails is recorded with its error, the others run."""
    import torch

    found: dict = {"device": device, "torch": torch.__version__}
    if device == "cuda":
        found["gpu"] = torch.cuda.get_device_name(0)
    for name, check in ((name, MODEL_CHECKS[name]) for name in names):
        start = time.perf_counter()
        try:
            found[name] = check(device, count, batch)
        except Exception as error:  # noqa: BLE001 - report it, go on with the next model
            found[name] = {"error": f"{type(error).__name__}: {error}"}
        found[name]["seconds"] = round(time.perf_counter() - start, 1)
        print(f"models: {name}: {json.dumps(found[name])}", flush=True)
    return found


# --------------------------------------------------------------------------- 2. and 3.


def run_notebooks(out: Path, images: int, timeout: int) -> str:
    """Each notebook offline on ``images`` generated JPEGs; returns its report (Markdown)."""
    from benchmarks.inputs import make_images

    folder = make_images(images)
    command = [sys.executable, "-m", "tools.run_notebooks", "--smoke", "--output-root", str(out)]
    command += ["-p", "data_uri", str(folder), "-p", "num_images", str(images)]
    subprocess.run(command + ["--timeout", str(timeout)], cwd=ROOT)
    index = out / "index.md"
    return index.read_text() if index.is_file() else "(no report: the notebooks did not run)"


def run_bench(out: Path, images: int, timeout: int) -> str:
    """``make bench`` with the collection and the model alone; returns what it printed."""
    command = [sys.executable, "-m", "benchmarks.bench", "--pipelines", "collection,model_only"]
    command += ["--num-images", str(images), "--no-crossover", "--timeout", str(timeout)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    (out / "bench.txt").write_text(result.stdout + result.stderr)
    latest = ROOT / "benchmarks" / "results" / "latest.json"
    if result.returncode == 0 and latest.is_file():
        shutil.copy(latest, out / "bench.json")
    return result.stdout if result.returncode == 0 else result.stdout + result.stderr[-3000:]


def models_table(found: dict) -> str:
    """The model checks as a Markdown table, one row per model and figure."""
    lines = ["| model | figure | value |", "| --- | --- | ---: |"]
    for name in ("resnet", "vit", "detector"):
        for key, value in found.get(name, {}).items():
            if key != "model":
                shown = f"{value:,.3g}" if isinstance(value, float) else value
                lines.append(f"| {found[name].get('model', name)} | {key} | {shown} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--out", type=Path, default=OUT, help=f"where everything goes (default {OUT})")
    add("--wheels", type=Path, help="a folder of wheels for what the machine lacks")
    add("--download-wheels", type=Path, help="only download the wheels into this folder")
    add("--python-version", default="3.12", help="of the GPU machine, for --download-wheels")
    add("--steps", default="models,notebooks,bench", help="a subset of models,notebooks,bench")
    add("--models", default=",".join(MODEL_CHECKS), help="a subset of resnet,vit,detector")
    add("--model-images", type=int, default=256, help="images for the model checks (256)")
    add("--batch-size", type=int, default=256, help="batch of the throughput checks (256)")
    add("--notebook-images", type=int, default=1000, help="images per notebook (1000)")
    add("--bench-images", type=int, default=3000, help="images for make bench (3000)")
    add("--allow-cpu", action="store_true", help="run without a GPU (to try the script)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the steps, write everything under ``--out``, print the summary."""
    args = parse_args(argv)
    if args.download_wheels:
        download_wheels(args.download_wheels, args.python_version)
        return 0
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])
    )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    steps = args.steps.split(",")
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    installed = install_missing(args.wheels)  # first: every later step imports them
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not args.allow_cpu:
        raise SystemExit("No GPU here (torch.cuda.is_available() is False); --allow-cpu to try.")
    sections = [
        f"# GPU check\n\n{platform.node()}, Python {platform.python_version()}, torch "
        f"{torch.__version__}, device {device}"
        + (f" ({torch.cuda.get_device_name(0)})" if device == "cuda" else "")
    ]
    if "models" in steps:
        found = check_models(device, args.model_images, args.batch_size, args.models.split(","))
        (args.out / "models.json").write_text(json.dumps(found, indent=2) + "\n")
        sections.append("## 1. The model functions, without Ray\n\n" + models_table(found))
    sections.append(f"Installed from wheels: {', '.join(installed) or 'nothing (all there)'}.")
    if "notebooks" in steps:
        report = run_notebooks(args.out / "notebooks", args.notebook_images, timeout=240)
        sections.append("## 2. The notebooks, offline\n\n" + report.split("\n", 2)[-1].strip())
    if "bench" in steps:
        sections.append("## 3. make bench\n\n" + run_bench(args.out, args.bench_images, 300))
    sections.append(f"The whole check took {time.perf_counter() - start:.0f} s.")
    summary = "\n\n".join(sections) + "\n"
    (args.out / "summary.md").write_text(summary)
    print(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
