"""Read Ray Data's ``Dataset.stats()`` report as a table: one row per stage, how busy it was."""

from __future__ import annotations

import re

import pandas as pd

# One stage of the report (Ray 2.60, ``ray/data/_internal/stats.py``): its header line, then
# its lines up to the next stage or the dataset's own lines.
_STAGE = re.compile(
    r"^Operator \d+ (?P<stage>.+?): (?P<tasks>\d+) tasks executed, \d+ blocks "
    r"produced in (?P<seconds>[\d.]+)s$(?P<body>.*?)(?=^Operator |^Dataset |\Z)",
    re.M | re.S,
)
_ROWS = re.compile(r"Total output num rows: (\d+) rows")
_RATE = re.compile(r"Ray Data throughput: ([\d.e+-]+) rows/s")
_TASK_RATE = re.compile(r"Estimated single task throughput: ([\d.e+-]+) rows/s")


def stage_table(report: str) -> pd.DataFrame:
    """The stages of a ``stats()`` report, with the numbers that say which one held the run.

    Ray Data computes, per stage, ``rows_per_s`` ("Ray Data throughput": its rows over its
    window, from its first task's start to its last task's end) and ``rows_per_s_one_task``
    ("Estimated single task throughput": its rows over the sum of its tasks' times). Their
    ratio, ``at_work``, is how many of its tasks ran at once on average over that window: as
    many as it can run (its actors, or the CPUs it may take) for the stage that held the
    run; less for a stage that waited. A stage fused into another has no line of its own.
    """
    rows = []
    for match in _STAGE.finditer(report):
        body = match["body"]
        rate, task_rate, out = _RATE.search(body), _TASK_RATE.search(body), _ROWS.search(body)
        if not (rate and task_rate):
            continue
        rows.append(
            {
                "stage": match["stage"],
                "tasks": int(match["tasks"]),
                "rows": int(out[1]) if out else None,
                "seconds": float(match["seconds"]),
                "rows_per_s": float(rate[1]),
                "rows_per_s_one_task": float(task_rate[1]),
            }
        )
    if not rows:
        raise ValueError("No stage found in this stats() report: was the dataset executed?")
    table = pd.DataFrame(rows).set_index("stage")
    busy = table["rows_per_s"] / table["rows_per_s_one_task"].where(
        table["rows_per_s_one_task"] > 0
    )
    table["at_work"] = busy.round(2)
    return table.round({"rows_per_s": 1, "rows_per_s_one_task": 1})
