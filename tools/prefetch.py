"""Download once what the notebooks need, so that they later run with no network.

``python -m tools.prefetch [--num-images N]`` (``make prefetch``), on a machine
with network, fetches:

- the pretrained weights of the three models: torchvision's ResNet152 and Faster
  R-CNN files into torch's hub cache (``TORCH_HOME``, by default
  ``~/.cache/torch``), and ``google/vit-base-patch16-224`` into the Hugging Face
  cache (``HF_HOME``, by default ``~/.cache/huggingface``);
- the two datasets (every image, or ``N`` per dataset spread over its classes),
  plus the Pascal VOC annotations where they exist, into ``cache/datasets/`` inside
  the project (``NBHELPERS_CACHE`` moves the whole cache folder; see
  :mod:`nbhelpers.lessons`).

Afterwards the notebooks with their default parameters find everything locally:
torchvision and transformers look in their caches first, and
:func:`nbhelpers.sources.find_images` reads the local copy of an ``s3://`` dataset
when there is one (and says so).
"""

from __future__ import annotations

import argparse
import json
import os
import posixpath
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pyarrow.fs as pafs
import torch
from huggingface_hub import snapshot_download, try_to_load_from_cache
from torchvision.models import Weights, get_weight

from nbhelpers import lessons
from nbhelpers.evaluate import annotation_path
from nbhelpers.lessons import CACHE_ENV, dataset_cache_dir, local_copy_path, marker_path
from nbhelpers.models import cached_weights_path
from nbhelpers.sources import is_image_name, pick_evenly, s3_filesystem


class PrefetchError(RuntimeError):
    """Something could not be downloaded."""


def _weights(weights) -> Weights:
    """``weights``, or the weights of that name (``nbhelpers.lessons`` lists names)."""
    return get_weight(weights) if isinstance(weights, str) else weights


def weights_are_cached(weights) -> bool:
    """Whether torch's hub cache already holds the file of ``weights`` (or of that name)."""
    return cached_weights_path(_weights(weights)).is_file()


def downloaded(download: Callable[[], object], what: str, advice: str):
    """``download()``'s result; any failure becomes a :class:`PrefetchError` naming ``what``."""
    try:
        return download()
    except Exception as error:  # noqa: BLE001 - any download failure gets the same advice
        raise PrefetchError(
            f"Could not download {what} ({type(error).__name__}: {error}). {advice}"
        ) from error


def prefetch_torchvision_weights(weights) -> Path:
    """Download ``weights`` (or the weights of that name) into torch's hub cache (kept when
    already there); returns the file."""
    weights = _weights(weights)
    path = cached_weights_path(weights)
    if not path.is_file():
        downloaded(
            lambda: torch.hub.load_state_dict_from_url(weights.url, progress=True, check_hash=True),
            f"{weights.url} into {path.parent}",
            "Check the network, or copy the file from a machine that has it.",
        )
    return path


def hf_model_is_cached(model_id: str) -> bool:
    """Whether the Hugging Face cache holds ``model_id``'s configuration and weights."""

    def cached(name: str) -> bool:
        return isinstance(try_to_load_from_cache(model_id, name), str)

    weights = cached("model.safetensors") or cached("pytorch_model.bin")
    return cached("config.json") and cached("preprocessor_config.json") and weights


def prefetch_hf_model(model_id: str) -> Path:
    """Download ``model_id`` (configuration, preprocessor, PyTorch weights) into the HF cache."""

    def download() -> str:
        folder = snapshot_download(model_id, allow_patterns=["*.json", "*.safetensors"])
        if not any(Path(folder).glob("*.safetensors")):
            folder = snapshot_download(model_id, allow_patterns=["*.json", "pytorch_model.bin"])
        return folder

    advice = "Check the network (and HF_HUB_OFFLINE, which must not be set while prefetching)."
    return Path(downloaded(download, f"{model_id} from the Hugging Face hub", advice))


@dataclass(frozen=True)
class PrefetchedDataset:
    """What :func:`prefetch_dataset` copied."""

    uri: str
    folder: Path
    num_images: int
    num_annotations: int
    num_downloaded: int

    def describe(self) -> str:
        """One line for the terminal."""
        return (
            f"{self.num_images} images and {self.num_annotations} annotations of {self.uri} "
            f"in {self.folder} ({self.num_downloaded} files downloaded now)"
        )


def _list_files(filesystem, path: str) -> list:
    selector = pafs.FileSelector(path, recursive=True, allow_not_found=True)
    return [info for info in filesystem.get_file_info(selector) if info.type == pafs.FileType.File]


def _annotations_for(filesystem, image_paths: list[str]) -> dict[str, int]:
    """The Pascal VOC annotation files (``bucket/key`` -> size) of ``image_paths`` that exist."""
    wanted = {annotation_path(path) for path in image_paths} - {None}
    folders = {posixpath.dirname(path) for path in wanted}
    existing = {}
    for folder in folders:
        existing |= {info.path: info.size for info in _list_files(filesystem, folder)}
    return {path: existing[path] for path in sorted(wanted) if path in existing}


def _download(filesystem, source: str, size: int, target: Path) -> bool:
    """Copy one object to ``target`` unless a file of that size is already there."""
    if target.is_file() and target.stat().st_size == size:
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    with filesystem.open_input_stream(source) as stream, open(partial, "wb") as out:
        while chunk := stream.read(1 << 20):
            out.write(chunk)
    partial.replace(target)
    return True


def prefetch_dataset(
    uri: str, num_images: int | None = None, threads: int = 8, progress: bool = True
) -> PrefetchedDataset:
    """Copy the images of an ``s3://`` dataset (and VOC annotations) into the local cache.

    Args:
        uri: the dataset, e.g. :data:`nbhelpers.lessons.IMAGENETTE_VAL_URI`.
        num_images: copy at most this many images, spread evenly over the sorted
            keys so that every class folder is represented (``None``: all).
        threads: parallel downloads.
        progress: print a line every few hundred files.

    Raises:
        PrefetchError: the bucket cannot be listed, holds no image, or a file failed.
    """
    filesystem, root = s3_filesystem(uri)
    try:
        infos = _list_files(filesystem, root)
    except OSError as error:
        raise PrefetchError(f"Cannot list {uri!r} ({error}). Check the network.") from error
    sizes = {info.path: info.size for info in infos if is_image_name(info.base_name)}
    if not sizes:
        raise PrefetchError(f"No images found under {uri!r}; nothing to prefetch.")
    images = pick_evenly(sorted(sizes), num_images)
    annotations = _annotations_for(filesystem, images)
    files = {path: sizes[path] for path in images} | annotations
    folder = local_copy_path(uri)
    bucket_root = dataset_cache_dir() / urlparse(uri).hostname
    bucket = root.split("/", 1)[0]

    def fetch(item: tuple[str, int]) -> bool:
        path, size = item
        return _download(filesystem, path, size, bucket_root / path[len(bucket) + 1 :])

    downloaded = 0
    try:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            for done, fresh in enumerate(pool.map(fetch, files.items()), start=1):
                downloaded += fresh
                if progress and (done % 200 == 0 or done == len(files)):
                    print(f"    {uri}: {done}/{len(files)} files", flush=True)
    except OSError as error:
        raise PrefetchError(
            f"Downloading from {uri!r} failed ({error}); run it again to resume."
        ) from error
    marker = {
        "uri": uri,
        "num_images": len(images),
        "num_images_in_bucket": len(sizes),
        "num_annotations": len(annotations),
        "prefetched_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    marker_path(folder).write_text(json.dumps(marker, indent=2) + "\n")
    return PrefetchedDataset(uri, folder, len(images), len(annotations), downloaded)


def _steps(args: argparse.Namespace) -> Iterable[tuple[str, Callable[[], object]]]:
    if not args.skip_weights:
        for weights in lessons.torchvision_weights():
            yield (
                f"torchvision weights {weights}",
                lambda w=weights: prefetch_torchvision_weights(w),
            )
        for model_id in lessons.hub_models():
            yield f"Hugging Face model {model_id}", lambda m=model_id: prefetch_hf_model(m)
    if not args.skip_data:
        for uri in args.dataset or lessons.datasets():
            yield f"dataset {uri}", lambda u=uri: prefetch_dataset(u, args.num_images).describe()


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point used by ``make prefetch``; non-zero when something failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, help="images per dataset (default: all)")
    parser.add_argument("--dataset", action="append", help="an s3:// URI (repeatable)")
    parser.add_argument(
        "--cache", type=Path, help=f"cache folder (default: ${CACHE_ENV} or ./cache)"
    )
    parser.add_argument("--skip-weights", action="store_true", help="only the datasets")
    parser.add_argument("--skip-data", action="store_true", help="only the model weights")
    args = parser.parse_args(argv)
    if args.cache:
        os.environ[CACHE_ENV] = str(args.cache.resolve())
    failures = []
    for name, step in _steps(args):
        print(f"==> {name}", flush=True)
        start = time.perf_counter()
        try:
            result = step()
            print(f"    ok in {time.perf_counter() - start:.0f}s: {result}", flush=True)
        except PrefetchError as error:
            print(f"    FAILED: {error}", file=sys.stderr, flush=True)
            failures.append(name)
    if failures:
        print(f"{len(failures)} step(s) failed: {', '.join(failures)}", file=sys.stderr)
        return 1
    print("Everything is cached: the notebooks now run with their defaults and no network.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
