"""Where a run's results go: a local folder, a shared file system, or ``s3://``, checked
before any model work.

Ray Data's workers write the predictions on whichever node they run. For a local folder the
write tasks are therefore pinned to the notebook's own node, so that the files come back whole
even when the cluster's nodes each have a disk of their own.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.fs as pafs
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from nbhelpers.lessons import OUTPUT_ROOT
from nbhelpers.runtime import through_ray_client
from nbhelpers.sources import S3SourceError, s3_filesystem


class OutputLocationError(ValueError):
    """``output_dir`` cannot take the results; the message says what to give instead."""


WRITE_TASK_CPUS = 0.25
"""CPUs a write task reserves. It only writes a small Parquet file; and Ray Data, which checks
for a free CPU as the write finishes, would warn that the job "will hang" if the last write
task and the model actors (not yet stopped) held every CPU, as a whole CPU per task does on a
2-core machine."""


@dataclass(frozen=True)
class OutputLocation:
    """Where a run's results go, checked before any model work (see :func:`output_location`)."""

    uri: str
    """``output_dir`` as given."""
    filesystem: pafs.FileSystem
    """The file system that reads and writes :attr:`path`: local, or S3 with its credentials."""
    path: str
    """The folder inside :attr:`filesystem`: an absolute path, or ``bucket/prefix`` on S3."""
    ray_remote_args: dict = field(default_factory=lambda: {"num_cpus": WRITE_TASK_CPUS})
    """For ``write_parquet``'s write tasks: a quarter of a CPU each. A local folder: pinned to
    this notebook's node, with no CPU reserved where that node offers none. S3: anywhere."""

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


def output_location(output_dir: str | os.PathLike | None, notebook: str = "") -> OutputLocation:
    """Check that ``output_dir`` can take the results, before any model work.

    ``output_dir=None``: ``outputs/<notebook>`` at the project's root.

    ``output_dir``: a local folder (created if needed, also on a shared file system) or
    ``s3://bucket/prefix``, with the endpoint and credentials rules of ``data_uri``.
    Raises :class:`OutputLocationError`, naming ``output_dir`` and what to give instead,
    when the folder cannot be written, an ``s3://`` URI is anonymous or refuses a test
    write, or a local folder would land on another machine (a Ray Client connection).
    """
    if output_dir is None:
        output_dir = OUTPUT_ROOT / (notebook or "results")
    uri = os.fspath(output_dir).strip()
    if uri.lower().startswith(("s3://", "s3a://")):
        return _s3_location(uri)
    if "://" in uri and not uri.startswith("file://"):
        raise OutputLocationError(
            f"output_dir {uri!r}: only a local folder or s3://bucket/prefix is supported."
        )
    if through_ray_client():
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
        return {"num_cpus": WRITE_TASK_CPUS}
    here = ray.get_runtime_context().get_node_id()
    cpus = next(
        (node["Resources"].get("CPU", 0) for node in ray.nodes() if node["NodeID"] == here), 0
    )
    pinned = {"scheduling_strategy": NodeAffinitySchedulingStrategy(here, soft=False)}
    return pinned | {"num_cpus": 0 if cpus < 1 else WRITE_TASK_CPUS}


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
