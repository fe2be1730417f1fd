"""Where should the ViT's image processor run? Notebook 02's two scale-up variants, timed.

``python benchmarks/vit_variants.py [--num-images 64] [--repeat 2]`` (``make bench-vit``)
executes ``notebooks/02_vit_classification.ipynb`` through papermill on JPEGs of
500x375 made from the sample photos, with a ViT-Base model of the real size
(``google/vit-base-patch16-224``'s layout and image processor, seeded random
weights, built locally: nothing is downloaded). The notebook times both variants
on the same images and the same actor pool:

- ``separate_preprocessing_stage``: the read tasks resize with the processor's own
  steps and ship uint8; the actor normalises and runs the model (the notebook's path);
- ``processor_in_actor``: the actor receives whole decoded photos and the pipeline's
  image processor resizes and normalises them there.

Prints a table and writes ``benchmarks/results/vit_variants.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "02_vit_classification.ipynb"
RESULTS = ROOT / "benchmarks" / "results" / "vit_variants.json"
MODEL_CACHE = ROOT / ".cache" / "vit-base-random"
VARIANTS = ("separate_preprocessing_stage", "processor_in_actor")


def save_vit_base(folder: Path = MODEL_CACHE) -> Path:
    """ViT-Base/16 at 224 px with seeded random weights and ImageNet labels (made once)."""
    if (folder / "config.json").is_file():
        return folder
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    from nbhelpers.models import OFFLINE_SEED, imagenet_categories

    categories = imagenet_categories()
    config = ViTConfig(  # the defaults are ViT-Base/16 at 224 px, as google/vit-base-patch16-224
        num_labels=len(categories),
        id2label=dict(enumerate(categories)),
        label2id={name: index for index, name in enumerate(categories)},
    )
    torch.manual_seed(OFFLINE_SEED)
    model = ViTForImageClassification(config).eval()
    processor = ViTImageProcessor(  # google/vit-base-patch16-224's settings
        size={"height": 224, "width": 224}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def run_notebook(images: Path, model: Path, num_images: int, batch_size: int | None) -> dict:
    """Execute notebook 02 once on ``images``; its ``summary.json``."""
    with tempfile.TemporaryDirectory() as scratch:
        output = Path(scratch)
        command = [sys.executable, "-m", "papermill", str(NOTEBOOK), str(output / "02.ipynb")]
        command += ["-k", "python3", "--cwd", str(NOTEBOOK.parent), "--no-progress-bar"]
        command += ["-r", "data_uri", str(images), "-r", "model_id", str(model)]
        command += ["-p", "pretrained", "True", "-p", "num_images", str(num_images)]
        command += ["-p", "compare_variants", "True", "-r", "output_dir", str(output)]
        if batch_size:
            command += ["-p", "batch_size", str(batch_size)]
        env = os.environ | {"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)
        if result.returncode != 0:
            raise RuntimeError(f"notebook 02 failed:\n{result.stderr[-4000:]}")
        return json.loads((output / "summary.json").read_text())


def main(argv: list[str] | None = None) -> int:
    """Run the notebook ``--repeat`` times; print and save both variants' images/s."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--batch-size", type=int, help="default: the notebook's choice")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench import machine, make_images

    images = make_images(args.num_images)
    model = save_vit_base()
    runs = []
    for number in range(1, args.repeat + 1):
        start = time.perf_counter()
        summary = run_notebook(images, model, args.num_images, args.batch_size)
        print(f"run {number}: {time.perf_counter() - start:.0f}s", flush=True)
        runs.append({name: summary["variants"][name] for name in VARIANTS})
    where = machine()
    print(
        f"\nViT-Base/16 (random weights), {args.num_images} JPEGs of 500x375, "
        f"{where['cpu_model']} ({where['logical_cpus']} CPUs), GPU: {where['gpu'] or 'none'}"
    )
    print(f"{'variant':<30} {'images/s end to end':>22} {'images/s steady':>18}")
    for name in VARIANTS:
        end_to_end = " / ".join(f"{run[name]['images_per_second']:.2f}" for run in runs)
        steady = " / ".join(f"{run[name]['steady_images_per_second'] or 0:.2f}" for run in runs)
        print(f"{name:<30} {end_to_end:>22} {steady:>18}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    report = {"settings": vars(args), "machine": where, "runs": runs}
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nWrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
