"""Write what a run produced: predictions as Parquet and ``summary.json``."""

from __future__ import annotations

import json
import platform
import posixpath
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from nbhelpers.cache import PROJECT_ROOT
from nbhelpers.cluster import ActorPoolPlan, ClusterResources
from nbhelpers.decode import failure_kind


class LostRowsError(RuntimeError):
    """The results do not hold exactly one row per input image."""


def default_output_dir(notebook: str) -> Path:
    """``outputs/<notebook>`` at the project's root, whatever the working directory."""
    return PROJECT_ROOT / "outputs" / notebook


def failure_report(predictions: pd.DataFrame) -> pd.DataFrame:
    """The rows that could not be predicted, with their reasons (empty when all went well)."""
    failed = predictions[predictions["error"].notna()]
    return failed[["path", "error"]].reset_index(drop=True)


def describe_failures(predictions: pd.DataFrame, limit: int = 20) -> str:
    """A short report for people: how many failed, by kind, then each file and its reason.

    Paths are shown relative to the folder that all the images share. At most
    ``limit`` files are listed; ``predictions.parquet`` has every one.
    """
    failed = failure_report(predictions)
    total = len(predictions)
    if failed.empty:
        return (
            f"All {total} images were predicted; none failed."
            if total != 1
            else ("The image was predicted.")
        )
    kinds = failed["error"].map(failure_kind).value_counts()
    lines = [
        f"{total - len(failed)} of {total} images predicted, {len(failed)} failed: "
        + ", ".join(f"{count} {kind}" for kind, count in kinds.items())
        + ".",
        "",
    ]
    names = _short_paths(predictions["path"].astype(str).tolist())
    shown = failed.head(limit)
    width = min(48, max(len(names[path]) for path in shown["path"]))
    lines += [f"  {names[row.path]:<{width}}  {row.error}" for row in shown.itertuples()]
    if len(failed) > limit:
        lines.append(f"  ... and {len(failed) - limit} more (see the error column of the results)")
    return "\n".join(lines)


def short_names(paths) -> list[str]:
    """Each path relative to the deepest folder that all of them share, for tables people read."""
    paths = [str(path) for path in paths]
    names = _short_paths(paths)
    return [names[path] for path in paths]


def _short_paths(paths: list[str]) -> dict[str, str]:
    """Each path relative to the deepest folder that all of them share."""
    folders = [posixpath.dirname(path.replace("\\", "/")) for path in paths]
    try:
        root = posixpath.commonpath(folders) if folders else ""
    except ValueError:  # relative and absolute paths mixed
        root = ""
    if not root or root == "/":
        return {path: path for path in paths}
    return {path: posixpath.relpath(path.replace("\\", "/"), root) for path in paths}


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
    failed = int(predictions["error"].notna().sum())
    return {
        "notebook": notebook,
        "num_images_in": int(len(predictions)),
        "num_predicted": int(len(predictions) - failed),
        "num_failed": failed,
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
            "actor_nodes": rows_per_node(predictions),
        },
        "failures": failure_report(predictions)["error"].value_counts().to_dict(),
        "python": platform.python_version(),
        **extra,
    }


def rows_per_node(predictions: pd.DataFrame) -> dict[str, int]:
    """How many rows the model actors of each Ray node predicted (``{}`` without ``node_id``)."""
    if "node_id" not in predictions.columns:
        return {}
    counts = predictions["node_id"].dropna().astype(str).value_counts()
    return {node: int(count) for node, count in sorted(counts.items())}


def write_results(output_dir: str | Path, predictions: pd.DataFrame, summary: dict) -> Path:
    """Write ``predictions.parquet`` and ``summary.json`` into ``output_dir``.

    Refuses to write a summary whose counts do not add up.

    Returns:
        The output folder.
    """
    if summary["num_predicted"] + summary["num_failed"] != summary["num_images_in"] or summary[
        "num_images_in"
    ] != len(predictions):
        raise LostRowsError(f"Counts do not add up: {summary}")
    if "image" in predictions.columns:
        raise ValueError("predictions carry image pixels; drop the 'image' column before writing.")
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    predictions.to_parquet(folder / "predictions.parquet", index=False)
    (folder / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return folder


def read_predictions(folder: str | Path, paths: list[str]) -> pd.DataFrame:
    """The Parquet files Ray Data wrote into ``folder``, as one DataFrame in the order of ``paths``.

    The pixels are never written, so this is small. ``error`` is ``None`` where the
    image was predicted.

    Raises:
        LostRowsError: unless every path came back exactly once.
    """
    files = sorted(Path(folder).glob("*.parquet"))
    tables = [pq.read_table(file) for file in files]
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


def write_summary(output_dir: str | Path, summary: dict) -> Path:
    """Write ``summary.json`` into ``output_dir``; refuses counts that do not add up.

    Returns:
        The path of the file written.
    """
    if summary["num_predicted"] + summary["num_failed"] != summary["num_images_in"]:
        raise LostRowsError(f"Counts do not add up: {summary}")
    path = Path(output_dir) / "summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return path
