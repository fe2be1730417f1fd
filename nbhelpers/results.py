"""Write what a run produced: predictions as Parquet and ``summary.json``."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import pandas as pd

import nbhelpers
from nbhelpers.cluster import ActorPoolPlan, ClusterResources

PROJECT_ROOT = Path(nbhelpers.__file__).resolve().parent.parent


class LostRowsError(RuntimeError):
    """The results do not hold exactly one row per input image."""


def default_output_dir(notebook: str) -> Path:
    """``outputs/<notebook>`` at the project's root, whatever the working directory."""
    return PROJECT_ROOT / "outputs" / notebook


def failure_report(predictions: pd.DataFrame) -> pd.DataFrame:
    """The rows that could not be predicted, with their reasons (empty when all went well)."""
    failed = predictions[predictions["error"].notna()]
    return failed[["path", "error"]].reset_index(drop=True)


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
        },
        "failures": failure_report(predictions)["error"].value_counts().to_dict(),
        "python": platform.python_version(),
        **extra,
    }


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
