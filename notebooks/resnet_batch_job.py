"""Classify every image of a folder with ResNet152 and Ray Data: notebook 01's job, in one file.

Copy it into your own project: it needs ray[data], torch, torchvision, pillow and pyarrow.

    python resnet_batch_job.py s3://anonymous@air-example-data-2/imagenette2/val/ out/
    python resnet_batch_job.py my_photos/ out/ --offline   # random weights, nothing downloaded

Each file gets one row in ``out/predictions/*.parquet``: its top class, or, for a file that
cannot be read, the reason in ``error``. A broken file never stops the job.
"""

from __future__ import annotations

import argparse
import io
import os

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import ray
import torch
import torchvision
from PIL import Image
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from torchvision.transforms.v2 import functional as F

WEIGHTS = torchvision.models.ResNet152_Weights.DEFAULT
TRANSFORMS = WEIGHTS.transforms()  # the resize, crop and normalisation these weights expect
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
SCHEMA = pa.schema(  # the output, failed rows included: their label columns are null
    [
        ("path", pa.string()),
        ("error", pa.string()),  # null where the image was classified
        ("label_index", pa.int32()),
        ("label", pa.string()),
        ("score", pa.float32()),
    ]
)


def uri_of(place: str) -> str:
    """``place`` as pyarrow wants it: an ``s3://`` URI as given, a local path made absolute."""
    return place if "://" in place else os.path.abspath(place)


def list_images(data_uri: str) -> tuple[list[str], pafs.FileSystem]:
    """The image files below ``data_uri`` (a local folder or ``s3://bucket/prefix``), sorted."""
    filesystem, root = pafs.FileSystem.from_uri(
        uri_of(data_uri)
    )  # S3: endpoint, keys from AWS_* vars
    infos = filesystem.get_file_info(pafs.FileSelector(root, recursive=True))
    paths = sorted(i.path for i in infos if i.is_file and i.path.lower().endswith(IMAGE_SUFFIXES))
    if not paths:
        raise SystemExit(f"No image files ({', '.join(IMAGE_SUFFIXES)}) below {data_uri!r}.")
    return paths, filesystem


def decode(batch: dict[str, np.ndarray], filesystem: pafs.FileSystem) -> dict[str, np.ndarray]:
    """Read, decode, resize and crop each file: one row per path, the error kept, never raised."""
    size = TRANSFORMS.crop_size[0]
    images, errors = [], []
    for path in batch["path"]:
        try:
            with filesystem.open_input_file(path) as file:
                data = io.BytesIO(file.read())
            if not data.getbuffer().nbytes:
                raise ValueError("empty file (0 bytes)")
            image = Image.open(data).convert("RGB")  # a truncated file raises here
            image = F.center_crop(F.resize(image, TRANSFORMS.resize_size), TRANSFORMS.crop_size)
            images.append(np.asarray(image, dtype=np.uint8))  # uint8: 1/4 of float32's bytes
            errors.append(None)
        except Exception as error:  # empty, truncated, not an image, unreadable...
            images.append(np.zeros((size, size, 3), dtype=np.uint8))
            errors.append(f"{type(error).__name__}: {error}")
    return {"path": batch["path"], "image": np.stack(images), "error": np.array(errors, object)}


class ResNetClassifier:
    """A model actor: builds ResNet152 once, then classifies one batch per call."""

    def __init__(self, pretrained: bool):
        if not pretrained:
            torch.manual_seed(0)  # offline: the same random weights in every actor
        self.model = torchvision.models.resnet152(weights=WEIGHTS if pretrained else None).eval()
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model.to(self.device)
        self.categories = WEIGHTS.meta["categories"]

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        """Every row of ``batch`` with its top class, or nulls and its error where it failed."""
        # A column of nulls only (no file failed) arrives as NaNs: test for text, not None.
        ok = np.array([not isinstance(error, str) for error in batch["error"]], dtype=bool)
        index = np.full(len(ok), -1, dtype=np.int32)
        score = np.full(len(ok), np.nan, dtype=np.float32)
        if ok.any():
            pixels = torch.from_numpy(batch["image"][ok]).to(self.device).permute(0, 3, 1, 2)
            pixels = F.normalize(pixels.float() / 255, TRANSFORMS.mean, TRANSFORMS.std)
            with torch.inference_mode():
                top = self.model(pixels).softmax(dim=1).max(dim=1)
            index[ok], score[ok] = top.indices.cpu().numpy(), top.values.cpu().numpy()
        labels = [self.categories[i] if good else None for i, good in zip(index, ok, strict=True)]
        errors = np.where(ok, None, batch["error"])
        columns = [batch["path"], errors, np.where(ok, index, None), labels, score]
        return pa.Table.from_arrays(
            [pa.array(c, f.type, from_pandas=True) for c, f in zip(columns, SCHEMA, strict=True)],
            schema=SCHEMA,  # typed even where a whole batch failed (an all-null column)
        )


def run(
    data_uri: str, output_dir: str, offline: bool, num_actors: int, batch_size: int
) -> pa.Table:
    """Classify every image below ``data_uri`` into ``output_dir``/predictions; return the rows."""
    paths, filesystem = list_images(data_uri)
    ray.init(ignore_reinit_error=True)  # or joins the cluster named in RAY_ADDRESS
    context = ray.data.DataContext.get_current()
    context.wait_for_min_actors_s = 600  # actors that cannot be placed: an error, not a hang
    context.execution_no_progress_timeout_s = 600  # a job stuck this long fails and says why
    # The actors share at most all CPUs but one, so the decode tasks always get a CPU: an
    # actor pool holding every CPU leaves the decoding none, and the job waits forever.
    cpus = ray.cluster_resources()["CPU"]
    cpus_per_actor = min(1.0, max(cpus - 1, cpus / 2) / num_actors)
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= num_actors else 0
    predictions = ray.data.from_items([{"path": path} for path in paths]).map_batches(
        decode,
        fn_kwargs={"filesystem": filesystem},
        batch_size=16,
        num_cpus=0.5,  # less than an actor asks for: Ray Data keeps the two stages apart
    )
    predictions = predictions.map_batches(
        ResNetClassifier,
        fn_constructor_kwargs={"pretrained": not offline},
        compute=ray.data.ActorPoolStrategy(size=num_actors),
        num_cpus=cpus_per_actor,
        num_gpus=gpus,
        batch_size=batch_size,
    )
    out_fs, out_path = pafs.FileSystem.from_uri(uri_of(output_dir))
    write_args: dict = {"num_cpus": 0.25}  # a write task needs little CPU
    if isinstance(out_fs, pafs.LocalFileSystem):  # a local folder: every file lands on this node
        here = ray.get_runtime_context().get_node_id()
        write_args["scheduling_strategy"] = NodeAffinitySchedulingStrategy(here, soft=False)
    folder = f"{out_path.rstrip('/')}/predictions"
    predictions.write_parquet(
        folder, filesystem=out_fs, ray_remote_args=write_args, mode="overwrite"
    )
    table = pq.read_table(folder, filesystem=out_fs, schema=SCHEMA)
    if len(table) != len(paths) or set(table["path"].to_pylist()) != set(paths):
        raise RuntimeError(f"Expected one row per image ({len(paths)}), found {len(table)}.")
    return table


def main() -> None:
    """The command line: see the module's docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_uri", help="a local folder or s3://bucket/prefix")
    parser.add_argument("output_dir", help="a local folder or s3://bucket/prefix")
    parser.add_argument("--offline", action="store_true", help="seeded random weights")
    parser.add_argument("--num-actors", type=int, default=1, help="model actors (GPUs: one each)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per model call")
    args = parser.parse_args()
    table = run(args.data_uri, args.output_dir, args.offline, args.num_actors, args.batch_size)
    failed = table.filter(table["error"].is_valid())
    print(f"{len(table)} images: {len(table) - len(failed)} classified, {len(failed)} failed.")
    for path, error in zip(failed["path"].to_pylist(), failed["error"].to_pylist(), strict=True):
        print(f"  {path}: {error}")
    ray.shutdown()


if __name__ == "__main__":
    main()
