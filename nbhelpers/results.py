"""What a run produced: the predictions Ray Data wrote as Parquet, read back through the file
system they went to (see :mod:`nbhelpers.destination`), and ``summary.json`` beside them.
"""

from __future__ import annotations

import json
import platform
from collections import Counter
from typing import TypedDict

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from nbhelpers.destination import OutputLocation
from nbhelpers.pool import ActorPoolPlan, ClusterResources
from nbhelpers.rows import NODE_COLUMN


class LostRowsError(RuntimeError):
    """The results do not hold exactly one row per input image."""


def check_one_row_per_image(predictions: pd.DataFrame, paths: list[str]) -> None:
    """Raise :class:`LostRowsError` unless every input path has one row (a path listed
    several times, as the sample's photos are, one row each time)."""
    wanted, got = Counter(paths), Counter(predictions["path"])
    missing = sorted(path for path in wanted if got[path] < wanted[path])
    duplicated = sorted(path for path in got if path in wanted and got[path] > wanted[path])
    extra = sorted(set(got) - set(wanted))
    if missing or duplicated or extra or len(predictions) != len(paths):
        raise LostRowsError(
            f"Expected one row for each of {len(paths)} images, got {len(predictions)} rows: "
            f"missing {missing[:5]}, duplicated {duplicated[:5]}, unexpected {extra[:5]}."
        )


class SummaryResources(TypedDict):
    """``summary["resources"]``: what the run used."""

    cpus: float
    gpus: float
    nodes: int
    actors: int
    device: str  # where the actors ran their model: "cuda" or "cpu"
    actor_pool: dict  # the whole ActorPoolPlan
    actor_nodes: dict[str, int]  # rows predicted by the actors of each Ray node


class _RequiredSummary(TypedDict):
    notebook: str
    num_images_in: int
    num_predicted: int
    num_failed: int  # num_predicted + num_failed == num_images_in, always
    images_per_second: float  # the scaled-up stage
    accuracy: float | None  # top-1; None without labels (and for detection)
    parameters: dict  # the notebook's parameters, as run
    resources: SummaryResources
    failures: dict[str, int]  # failed images by reason
    python: str


class Summary(_RequiredSummary, total=False):
    """``summary.json``: the fields every notebook writes, then those some add.

    docs/jobs.md ("What lands in outputs/") and ``tools/report.py`` read these names.
    """

    batch_size: int
    parity: dict  # evaluate.parity_summary: checked, matching, ok
    model: str  # notebook 02: the model's hub id or folder
    score_threshold: float  # notebook 03
    num_detections: int  # notebook 03
    detections_per_class: dict[str, int]  # notebook 03, the 20 most frequent classes
    mean_average_precision: dict | None  # notebook 03: evaluate.mean_average_precision's result
    annotated_images: int  # notebook 03: images with a VOC annotation


def build_summary(
    notebook: str,
    predictions: pd.DataFrame,
    images_per_second: float,
    parameters: dict,
    resources: ClusterResources,
    plan: ActorPoolPlan,
    accuracy: float | None = None,
    **extra,
) -> Summary:
    """The :class:`Summary` of a run; ``extra`` holds the optional fields a notebook adds
    (a name that :class:`Summary` does not list raises ``TypeError``)."""
    if unknown := set(extra) - set(Summary.__annotations__):
        raise TypeError(f"summary.json has no field {sorted(unknown)}; see results.Summary.")
    errors = predictions["error"].dropna()
    nodes = predictions.get(NODE_COLUMN, pd.Series(dtype=object)).dropna().astype(str)
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
    try:
        infos = output.filesystem.get_file_info(pafs.FileSelector(output.predictions))
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


def write_summary(output: OutputLocation, summary: Summary) -> str:
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
