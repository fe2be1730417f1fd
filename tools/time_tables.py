"""The time table at the top of each notebook, written from a measured run.

Each row is one of the notebook's ``## `` sections: its reading time (its markdown's words at
200 a minute) and its running time (the sum of its code cells' durations, as papermill
recorded them in the executed notebook). ``make time-tables`` runs every notebook offline
and rewrites the tables; ``tests/tools/test_time_tables.py`` checks that each committed table still
has the notebook's sections and reading times.

    python -m tools.time_tables                      # run the notebooks offline, then write
    python -m tools.time_tables --executed outputs/time-tables   # write from an earlier run
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
from dataclasses import dataclass
from pathlib import Path

from nbhelpers import lessons
from nbhelpers.lessons import PROJECT_ROOT
from tools import papermill_runner

WORDS_PER_MINUTE = 200
OFFLINE_PARAMETERS = {"pretrained": False, "data_uri": "sample"}
"""The lesson's own offline parameters (every sample photo), as the table says."""
BEGIN = "<!-- time table: written by `make time-tables` from a measured run -->"
END = "<!-- end of the time table -->"
RUN_TIMEOUT_S = 1800
LEFT_OUT = ("Next steps",)  # links to read later, not part of the lesson's time


@dataclass(frozen=True)
class Section:
    """One ``## `` section of a notebook: its heading, its words, its cells' running time."""

    heading: str
    words: int
    seconds: float | None  # None: not measured (a notebook without durations)


def markdown_words(text: str) -> int:
    """Words a reader reads in a markdown cell: the time table itself and comments left out."""
    if BEGIN in text:
        text = text.split(BEGIN)[0] + text.split(END)[-1]
    text = re.sub(r"<!--.*?-->", " ", text, flags=re.DOTALL)
    return len(re.findall(r"\S*\w\S*", text))  # not "#", "|" or "---"


def cell_seconds(cell: dict) -> float | None:
    """A code cell's running time from an executed notebook's metadata, or ``None``."""
    duration = cell.get("metadata", {}).get("papermill", {}).get("duration")
    return float(duration) if duration is not None else None


def sections(notebook: dict) -> list[Section]:
    """The notebook's sections in order; what comes before the first ``## `` is "Introduction"."""
    found: list[list] = [["Introduction", 0, None]]
    for cell in notebook["cells"]:
        source = "".join(cell["source"])
        if cell["cell_type"] == "markdown":
            heading = next(
                (line[3:].strip() for line in source.splitlines() if line.startswith("## ")), None
            )
            if heading is not None:
                found.append([heading, 0, None])
            found[-1][1] += markdown_words(source)
        elif cell["cell_type"] == "code":
            seconds = cell_seconds(cell)
            if seconds is not None:
                found[-1][2] = (found[-1][2] or 0.0) + seconds
    return [Section(*row) for row in found if row[0] not in LEFT_OUT]


def reading(words: int) -> str:
    """Reading time to the half minute, never under half a minute."""
    return f"{max(0.5, round(words / WORDS_PER_MINUTE * 2) / 2):g} min"


def running(seconds: float | None) -> str:
    """Running time as a reader would say it."""
    if seconds is None:
        return "not measured"
    if seconds < 1:
        return "under 1 s"
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def machine() -> str:
    """This machine, in words: system, processor kind and cores, and no GPU where torch sees none."""
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    gpu = f"{gpus} GPU ({torch.cuda.get_device_name(0)})" if gpus else "no GPU"
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores, {gpu}"


def table(found: list[Section], measured_on: str) -> str:
    """The markdown of the time table, between its two marker comments."""
    lesson = [section for section in found if section.heading != "Exercises"]
    rows = [
        f"| {section.heading} | {reading(section.words)} | {running(section.seconds)} |"
        for section in found
    ]
    words = sum(section.words for section in lesson)
    seconds = sum(section.seconds or 0.0 for section in lesson)
    return "\n".join(
        [
            BEGIN,
            "| section | reading (200 words a minute) | running offline |",
            "| --- | --- | --- |",
            *rows,
            "",
            f"The lesson before its exercises: {words:,} words, about {reading(words)} of reading,",
            f"and {running(seconds)} of running offline. Measured on {measured_on}.",
            END,
        ]
    )


def rewrite_table(path: Path, executed: Path, measured_on: str) -> list[Section]:
    """Replace the time table in ``path``'s first cell with one from the ``executed`` run."""
    found = sections(json.loads(executed.read_text()))
    notebook = json.loads(path.read_text())
    first = "".join(notebook["cells"][0]["source"])
    if BEGIN not in first or END not in first:
        raise ValueError(f"{path.name}: its first cell has no time table markers ({BEGIN})")
    before, rest = first.split(BEGIN)
    text = before + table(found, measured_on) + rest.split(END)[1]
    notebook["cells"][0]["source"] = text.splitlines(keepends=True)
    path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")
    return found


def main(argv: list[str] | None = None) -> None:
    """Run every notebook offline (or read an earlier run), then rewrite their time tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executed", type=Path, help="a folder of executed notebooks to read")
    parser.add_argument("--output-dir", type=Path, default=PROJECT_ROOT / "outputs" / "time-tables")
    args = parser.parse_args(argv)
    folder = args.executed or args.output_dir
    for entry in lessons.NOTEBOOKS:
        executed = folder / entry.path.name
        if args.executed is None:
            print(f"Running {entry.path.name} offline ({OFFLINE_PARAMETERS})", flush=True)
            run = papermill_runner.execute_notebook(
                entry.path,
                folder / entry.path.stem,
                OFFLINE_PARAMETERS,
                timeout_s=RUN_TIMEOUT_S,
                executed=executed,
            )
            if run.error:
                raise SystemExit(f"{entry.path.name} failed, no table written: {run.error}")
        measured_on = f"{machine()}, {datetime.date.today():%Y-%m-%d}"
        found = rewrite_table(entry.path, executed, measured_on)
        for section in found:
            print(f"  {section.heading}: {section.words} words, {running(section.seconds)}")
        print(f"Wrote the time table of {entry.path.name}")


if __name__ == "__main__":
    main()
