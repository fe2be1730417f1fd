"""A notebook's job as one Python script: its parameters cell, then its cells tagged ``pipeline``.

The job a learner takes home is the lesson's own cells (the imports, Ray's start and the pool's
plan, the images, the model, the read function, the model call, the actor class, the Ray Data
calls, ``write_parquet`` and reading the results back), so there is no second copy to drift
from the notebook. ``tests/tools/test_export_job.py`` runs what this writes, outside Jupyter.

    python -m tools.export_job 01                       # outputs/jobs/01_resnet_classification.py
    python -m tools.export_job 01 -p pretrained False -p data_uri sample --out job.py
"""

from __future__ import annotations

import argparse
import ast
import json
from pathlib import Path

from nbhelpers import lessons
from nbhelpers.lessons import OUTPUT_ROOT
from tools.run_notebooks import parameter_value

PIPELINE_TAG = "pipeline"


def tagged_cells(notebook: Path, tag: str) -> list[str]:
    """The source of ``notebook``'s code cells tagged ``tag``, in order."""
    cells = json.loads(notebook.read_text())["cells"]
    return [
        "".join(cell["source"])
        for cell in cells
        if cell["cell_type"] == "code" and tag in cell["metadata"].get("tags", [])
    ]


def job_script(notebook: Path, parameters: dict | None = None) -> str:
    """The script: a docstring naming the notebook, its parameters cell, ``parameters`` over it
    (as papermill would inject them), and its pipeline cells, each under a comment."""
    parts = [
        f'"""The job of {notebook.name}: its parameters cell and its cells tagged '
        f'"{PIPELINE_TAG}", as written by `make job`."""',
        "# Parameters (edit them, as in the notebook's parameters cell)",
        *tagged_cells(notebook, "parameters"),
    ]
    if parameters:
        parts += [
            "# Parameters given to make job",
            *(f"{k} = {v!r}" for k, v in parameters.items()),
        ]
    parts += tagged_cells(notebook, PIPELINE_TAG)
    script = "\n\n".join(part.strip() for part in parts) + "\n"
    ast.parse(script)  # a cell that is not plain Python (a magic, a display) fails here
    return script


def main() -> None:
    """The command line: see the module's docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook", help="the notebook's number or name, e.g. 01")
    parser.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    parser.add_argument("--out", type=Path, help="default: outputs/jobs/<notebook>.py")
    args = parser.parse_args()
    entry = lessons.entry(args.notebook)
    out = args.out or OUTPUT_ROOT / "jobs" / f"{entry.notebook}.py"
    out.parent.mkdir(parents=True, exist_ok=True)
    parameters = {name: parameter_value(value) for name, value in args.p}
    out.write_text(job_script(entry.path, parameters))
    print(f"Wrote {out}: run it with python {out}")


if __name__ == "__main__":
    main()
