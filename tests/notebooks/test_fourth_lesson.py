"""A new classifier lesson costs four files: its notebook, its model module, one catalog entry
and its test. Built here in a throwaway copy of the project, from those four pieces only, and
run through ``make smoke``'s runner, its report, the package's and lessons' shape tests, and
the benchmark's loader (``benchmarks.pipelines.run_notebook_pipeline``).

Cost on 2 CPU cores: about two minutes (one notebook run offline on 4 sample photos with
ResNet18, its solutions left out; one run of the loader on the same 4 photos; each starts Ray).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT

NAME = "05_resnet18_classification"
MODULE = "small_resnet"

MODEL_MODULE = '''"""ResNet18 for notebook 05, pretrained or offline (seeded random weights)."""

from __future__ import annotations

import torch
from torchvision.models import ResNet18_Weights, resnet18

from nbhelpers.models import ClassifierSpec, classifier_spec, load_pretrained, offline_resnet

PRETRAINED_WEIGHTS = ResNet18_Weights.DEFAULT


def build_resnet18(pretrained: bool) -> tuple[torch.nn.Module, ClassifierSpec]:
    """ResNet18 in eval mode and its spec; ImageNet weights, or seeded random ones offline."""
    model = load_pretrained(resnet18, PRETRAINED_WEIGHTS) if pretrained else offline_resnet(resnet18)
    return model.eval(), classifier_spec(PRETRAINED_WEIGHTS)
'''

FIELDS = {
    "model_module": MODULE,
    "model_call": "torch.inference_mode()",
    "predictor": "ResNetPredictor",
}
CATALOG_ENTRY = (  # one more NotebookEntry, then the list's closing parenthesis
    f'    NotebookEntry({NAME!r}, dataset=IMAGENETTE_VAL_URI, weights=("ResNet18_Weights.IMAGENET1K_V1",), '
    + ", ".join(f"{field}={value!r}" for field, value in FIELDS.items())
    + "),\n)\n"
)

LESSON_TEST = f'''"""Notebook 05, offline, through make smoke's runner: the contract's counts and its report."""

import json

from tools import run_notebooks


def test_notebook_05_offline(tmp_path):
    args = ["--smoke", "--only", "05", "--skip-solutions", "--output-root", str(tmp_path)]
    assert run_notebooks.main([*args, "-p", "num_images", "4"]) == 0
    summary = json.loads((tmp_path / "{NAME}" / "summary.json").read_text())
    assert summary["notebook"] == "{NAME}" and summary["num_images_in"] == 4
    assert summary["num_predicted"] + summary["num_failed"] == 4
    assert "{NAME}" in (tmp_path / "index.md").read_text()
'''

LOADER = """
import json, sys, time
launched = time.time()
from torchvision.models import ResNet18_Weights
from benchmarks.pipelines import notebook_entry, run_notebook_pipeline
from nbhelpers.models import classifier_spec
entry = notebook_entry("05")
run = {"launched": launched, "folder": "sample", "num_images": 4, "batch_size": 2,
       "output_dir": sys.argv[1]}
timings = run_notebook_pipeline(
    run, entry.path, entry.predictor, {"spec": classifier_spec(ResNet18_Weights.DEFAULT)}
)
print(json.dumps({"notebook": entry.notebook, "rows": sum(n for _, n in timings["batches"])}))
"""


def build_fourth_lesson(copy) -> list[str]:
    """The four pieces, written into ``copy``; returns their paths, relative to it."""
    notebook = json.loads((ROOT / "notebooks" / "01_resnet_classification.ipynb").read_text())
    for cell in notebook["cells"]:
        source = "".join(cell["source"])
        source = source.replace("models.build_resnet152(", f"{MODULE}.build_resnet18(")
        if "NOTEBOOK = " in source:  # the imports cell: its model module too
            source = source.replace(
                "from nbhelpers import ",
                f"from nbhelpers import {MODULE}\nfrom nbhelpers import ",
                1,
            )
        source = source.replace("01_resnet_classification", NAME)
        cell["source"] = source.splitlines(keepends=True)
    pieces = {
        f"notebooks/{NAME}.ipynb": json.dumps(notebook, indent=1, ensure_ascii=False) + "\n",
        f"nbhelpers/{MODULE}.py": MODEL_MODULE,
        "tests/notebooks/test_notebook_05.py": LESSON_TEST,
    }
    for path, text in pieces.items():
        (copy / path).write_text(text)
    catalog = copy / "nbhelpers" / "lessons.py"
    text = catalog.read_text()
    end = text.index("\n)\n", text.index("NOTEBOOKS = ("))  # the list's closing parenthesis
    catalog.write_text(text[: end + 1] + CATALOG_ENTRY + text[end + 3 :])
    return [*pieces, "nbhelpers/lessons.py"]


@pytest.mark.long
def test_a_fourth_lesson_is_four_files(tmp_path):
    copy = tmp_path / "project"
    for folder in ["nbhelpers", "tools", "benchmarks", "notebooks", "tests", "docs"]:
        shutil.copytree(ROOT / folder, copy / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ["pyproject.toml", "environment.yml", "constraints.txt", "Makefile", "README.md"]:
        shutil.copy(ROOT / name, copy / name)
    written = build_fourth_lesson(copy)
    print("The fourth lesson's files:", *written, sep="\n  ")
    assert len(written) == 4
    # The copy's package first: the editable install points at this checkout.
    env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}

    def python(*args: str, timeout: int) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [sys.executable, *args],
            cwd=copy,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
        return result

    # The lesson's own test (make smoke's runner and its report), and the shape tests that
    # read the catalog: the package's module list, the lesson's shape, the parameters cell.
    shape = "catalog or lesson or parameters_cell or without_outputs or lists_every_module"
    python(
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "tests/notebooks/test_notebook_05.py",
        "tests/unit/test_package.py",
        "tests/notebooks/test_lesson_shape.py",
        "-k",
        f"05 or {shape}",
        timeout=600,
    )
    # The benchmark's loader, on the notebook's own pipeline cells.
    out = python("-c", LOADER, str(tmp_path / "bench"), timeout=300)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded == {"notebook": NAME, "rows": 4}
