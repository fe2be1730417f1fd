"""What a run produced and where it goes: the predictions Ray Data writes as Parquet, and
``summary.json``, in a local folder, on a shared file system, or under ``s3://``.

Ray Data's workers write the predictions on whichever node they run. For a local folder the
write tasks are therefore pinned to the notebook's own node, so that the files come back whole
even when the cluster's nodes each have a disk of their own.
"""

from __future__ import annotations

import json
import os
import platform
import posixpath
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from nbhelpers.cache import PROJECT_ROOT
from nbhelpers.cluster import ActorPoolPlan, ClusterResources
from nbhelpers.decode import failure_kind
from nbhelpers.s3 import S3SourceError, s3_filesystem


class LostRowsError(RuntimeError):
    """The results do not hold exactly one row per input image."""


class OutputLocationError(ValueError):
    """``output_dir`` cannot take the results; the message says what to give instead."""


def default_output_dir(notebook: str) -> Path:
    """``outputs/<notebook>`` at the project's root, whatever the working directory."""
    return PROJECT_ROOT / "outputs" / notebook


@dataclass(frozen=True)
class OutputLocation:
    """Where a run's results go, checked before any model work (see :func:`output_location`)."""

    uri: str
    """``output_dir`` as given."""
    filesystem: pafs.FileSystem
    """The file system that reads and writes :attr:`path`: local, or S3 with its credentials."""
    path: str
    """The folder inside :attr:`filesystem`: an absolute path, or ``bucket/prefix`` on S3."""
    ray_remote_args: dict = field(default_factory=dict)
    """For ``write_parquet``'s write tasks. A local folder: pinned to this notebook's node,
    with no CPU reserved where that node offers none. S3: none (they run anywhere)."""

    @property
    def is_local(self) -> bool:
        """Whether the results go to a folder of this machine (or a shared file system)."""
        return isinstance(self.filesystem, pafs.LocalFileSystem)

    @property
    def predictions(self) -> str:
        """The folder ``write_parquet`` writes the predictions into (inside :attr:`filesystem`)."""
        return f"{self.path}/predictions"

    def describe(self) -> str:
        """One sentence for the notebook: where the results go and who writes them."""
        if not self.is_local:
            return f"Results go to {self.uri}, written by the Ray workers wherever they run."
        text = f"Results go to {self.path}, written by Ray tasks on this notebook's node"
        if self.ray_remote_args.get("num_cpus") == 0:
            text += " (which offers no CPU: the write tasks reserve none)"
        return text + "."


def output_location(output_dir: str | os.PathLike) -> OutputLocation:
    """Check that ``output_dir`` can take the results, before any model work.

    ``output_dir``: a local folder (created if needed, also on a shared file system) or
    ``s3://bucket/prefix``, with the endpoint and credentials rules of ``data_uri``.
    Raises :class:`OutputLocationError`, naming ``output_dir`` and what to give instead,
    when the folder cannot be written, an ``s3://`` URI is anonymous or refuses a test
    write, or a local folder would land on another machine (a Ray Client connection).
    """
    uri = os.fspath(output_dir).strip()
    if uri.lower().startswith(("s3://", "s3a://")):
        return _s3_location(uri)
    if "://" in uri and not uri.startswith(("file://", "local://")):
        raise OutputLocationError(
            f"output_dir {uri!r}: only a local folder or s3://bucket/prefix is supported."
        )
    if ray.is_initialized() and ray.util.client.ray.is_connected():
        raise OutputLocationError(
            f"output_dir {uri!r} is a local folder, but this notebook reaches the cluster "
            "through Ray Client (ray://), so the workers cannot write to this machine. Give "
            "an s3://bucket/prefix output_dir, or run the notebook on the cluster's head node."
        )
    folder = Path(os.path.abspath(Path(uri.split("://", 1)[-1]).expanduser()))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise OutputLocationError(
            f"output_dir {uri!r} cannot be written ({error}). Give a folder you may write "
            "to, or an s3://bucket/prefix URI."
        ) from error
    return OutputLocation(uri, pafs.LocalFileSystem(), str(folder), _pinned_to_this_node())


def _pinned_to_this_node() -> dict:
    """``ray_remote_args`` that run the write tasks on this process's node, so that a local
    folder receives every file even when each node of the cluster has a disk of its own.

    This is what Ray Data does for the ``local://`` scheme, which Ray 2.60 deprecates.
    Where this node offers no CPU (a head node started with ``--num-cpus 0``), the tasks
    reserve none: they only write small Parquet files.
    """
    if not ray.is_initialized():
        return {}
    here = ray.get_runtime_context().get_node_id()
    cpus = next(
        (node["Resources"].get("CPU", 0) for node in ray.nodes() if node["NodeID"] == here), 0
    )
    pinned = {"scheduling_strategy": NodeAffinitySchedulingStrategy(here, soft=False)}
    return pinned | ({"num_cpus": 0} if cpus < 1 else {})


def _s3_location(uri: str) -> OutputLocation:
    """An ``s3://`` output, refused unless it has credentials and takes a test write."""
    if "anonymous@" in uri.split("/", 3)[2]:
        raise OutputLocationError(
            f"output_dir {uri!r} is anonymous: anonymous@ reads public buckets but cannot "
            "write. Give s3://bucket/prefix with credentials in the environment "
            "(AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)."
        )
    try:
        filesystem, path = s3_filesystem("s3://" + uri.split("://", 1)[1])
    except S3SourceError as error:
        raise OutputLocationError(f"output_dir {uri!r}: {error}") from error
    probe = f"{path}/.write-test-{uuid.uuid4().hex}"
    try:
        with filesystem.open_output_stream(probe) as stream:
            stream.write(b"")
        filesystem.delete_file(probe)
    except OSError as error:
        raise OutputLocationError(
            f"output_dir {uri!r} refused a test write ({error}). Check that the bucket "
            "exists and that the credentials in the environment may write to it "
            "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY; AWS_ENDPOINT_URL_S3 for an "
            "S3-compatible server), or give a local output_dir."
        ) from error
    return OutputLocation(uri, filesystem, path)


def describe_failures(predictions: pd.DataFrame, limit: int = 20) -> str:
    """A short report for people: how many failed, by kind, then (at most ``limit``) each
    file, relative to the folder all the images share, and its reason."""
    failed = predictions[predictions["error"].notna()]
    total = len(predictions)
    if failed.empty and total == 1:
        return "The image was predicted."
    if failed.empty:
        return f"All {total} images were predicted; none failed."
    kinds = failed["error"].map(failure_kind).value_counts()
    counts = ", ".join(f"{count} {kind}" for kind, count in kinds.items())
    lines = [f"{total - len(failed)} of {total} images predicted, {len(failed)} failed: {counts}."]
    paths = predictions["path"].astype(str).tolist()
    names = dict(zip(paths, short_names(paths), strict=True))
    shown = failed.head(limit)
    width = min(48, max(len(names[path]) for path in shown["path"]))
    lines += ["", *(f"  {names[row.path]:<{width}}  {row.error}" for row in shown.itertuples())]
    if len(failed) > limit:
        lines.append(f"  ... and {len(failed) - limit} more (see the error column of the results)")
    return "\n".join(lines)


def short_names(paths) -> list[str]:
    """Each path relative to the deepest folder that all of them share, for tables people read."""
    paths = [str(path) for path in paths]
    slashed = [path.replace("\\", "/") for path in paths]
    try:
        root = posixpath.commonpath([posixpath.dirname(path) for path in slashed]) if paths else ""
    except ValueError:  # relative and absolute paths mixed
        root = ""
    if not root or root == "/":
        return paths
    return [posixpath.relpath(path, root) for path in slashed]


def check_one_row_per_image(predictions: pd.DataFrame, paths: list[str]) -> None:
    """Raise :class:`LostRowsError` unless every input path has exactly one row."""
    counts = predictions["path"].value_counts()
    missing = sorted(set(paths) - set(counts.index))
    duplicated = sorted(counts[counts > 1].index)
    extra = sorted(set(counts.index) - set(paths))
    if missing or duplicated or extra or len(predictions) != len(paths):
        raise LostRowsError(
            f"Expected one row for each of {len(paths)} images, got {len(predictions)} rows: "
            f"missing {missing[:5]}, duplicated {duplicated[:5]}, unexpected {extra[:5]}."
        )


def build_summary(
    notebook: str,
    predictions: pd.DataFrame,
    images_per_second: float,
    parameters: dict,
    resources: ClusterResources,
    plan: ActorPoolPlan,
    accuracy: float | None = None,
    **extra,
) -> dict:
    """The ``summary.json`` contents of DESIGN.md, plus anything in ``extra``."""
    errors = predictions["error"].dropna()
    nodes = predictions.get("node_id", pd.Series(dtype=object)).dropna().astype(str)
    return {
        "notebook": notebook,
        "num_images_in": int(len(predictions)),
        "num_predicted": int(len(predictions) - len(errors)),
        "num_failed": len(errors),
        "images_per_second": round(float(images_per_second), 3),
        "accuracy": accuracy,
        "parameters": parameters,
        "resources": {
            "cpus": resources.cpus,
            "gpus": resources.gpus,
            "nodes": resources.nodes,
            "actors": plan.num_actors,
            "device": plan.device,
            "actor_pool": plan.as_dict(),
            "actor_nodes": {node: int(n) for node, n in sorted(nodes.value_counts().items())},
        },
        "failures": errors.value_counts().to_dict(),
        "python": platform.python_version(),
        **extra,
    }


def read_predictions(
    output: OutputLocation, paths: list[str], columns: list[str] | None = None
) -> pd.DataFrame:
    """The Parquet files Ray Data wrote into ``output.predictions``, read back through the same
    file system (local or S3), as one DataFrame in the order of ``paths``.

    ``columns``: only these (``path`` and ``error`` are always read). Raises
    :class:`LostRowsError` unless every path came back exactly once.
    """
    if columns is not None:
        columns = list(dict.fromkeys(["path", "error", *columns]))
    folder = f"{output.path}/predictions"
    try:
        infos = output.filesystem.get_file_info(pafs.FileSelector(folder))
    except FileNotFoundError:
        infos = []
    files = sorted(info.path for info in infos if info.path.endswith(".parquet"))
    tables = [pq.read_table(file, filesystem=output.filesystem, columns=columns) for file in files]
    if tables:
        # Joined in Arrow: pandas would try to turn list columns (a detector's boxes)
        # into tensors, which fails on the null of a failed image.
        frame = pa.concat_tables(tables, promote_options="default").to_pandas()
    else:
        frame = pd.DataFrame(columns=["path", "error"])
    check_one_row_per_image(frame, paths)
    order = {path: i for i, path in enumerate(paths)}
    frame = frame.sort_values("path", key=lambda column: column.map(order)).reset_index(drop=True)
    frame["error"] = frame["error"].astype(object).where(frame["error"].notna(), None)
    return frame


def write_summary(output: OutputLocation, summary: dict) -> str:
    """Write ``summary.json`` beside the predictions and return where (``s3://...`` on S3).

    Raises :class:`LostRowsError` when the counts do not add up.
    """
    if summary["num_predicted"] + summary["num_failed"] != summary["num_images_in"]:
        raise LostRowsError(f"Counts do not add up: {summary}")
    path = f"{output.path}/summary.json"
    text = json.dumps(summary, indent=2, default=str) + "\n"
    with output.filesystem.open_output_stream(path) as stream:
        stream.write(text.encode())
    return path if output.is_local else f"s3://{path}"
