"""nbhelpers.lessons: the notebooks as plain data, what each loads and reads."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest
from torchvision.models import get_weight

from nbhelpers import lessons


def test_each_entry_is_found_by_its_number_or_name():
    for entry in lessons.NOTEBOOKS:
        number = entry.notebook[:2]
        assert lessons.entry(number) is entry and lessons.entry(entry.notebook) is entry
        assert lessons.entries(number) == [entry]
    assert lessons.entries() == list(lessons.NOTEBOOKS)
    with pytest.raises(LookupError):
        lessons.entry("99")
    with pytest.raises(LookupError):
        lessons.entry("classification")  # more than one


def test_each_entry_names_its_notebook_file_and_model_module():
    for entry in lessons.NOTEBOOKS:
        assert entry.path == lessons.NOTEBOOK_DIR / f"{entry.notebook}.ipynb"
        assert entry.path.is_file()
        assert (lessons.PROJECT_ROOT / "nbhelpers" / f"{entry.model_module}.py").is_file()


def test_what_make_prefetch_downloads_is_what_the_lessons_load():
    assert lessons.VIT_MODEL_ID in lessons.hub_models()
    assert lessons.datasets() == [lessons.IMAGENETTE_VAL_URI, lessons.VOC_ANIMALS_URI]
    weights = lessons.torchvision_weights()
    assert len(weights) == len(set(weights)) == 3
    for name in weights:  # each a name torchvision knows
        assert get_weight(name).url.startswith("https://")


def test_the_notebooks_pretrained_weights_are_the_ones_the_lessons_list():
    from nbhelpers import models

    weights = [get_weight(name) for name in lessons.torchvision_weights()]
    assert models.RESNET152_WEIGHTS in weights and models.FASTERRCNN_WEIGHTS in weights


def test_lessons_imports_only_the_standard_library(tmp_path):
    # make doctor imports it to diagnose an environment that may lack numpy, pyarrow or torch.
    script = "import sys, nbhelpers.lessons; print(sorted({m.split('.')[0] for m in sys.modules}))"
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=lessons.PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    loaded = set(ast.literal_eval(out))
    assert not loaded & {"numpy", "pyarrow", "torch", "torchvision", "ray", "pandas", "PIL"}


def test_a_local_copy_counts_only_once_its_marker_is_written(tmp_path, monkeypatch):
    monkeypatch.setenv(lessons.CACHE_ENV, str(tmp_path))
    uri = "s3://anonymous@bucket/some/prefix/"
    folder = lessons.local_copy_path(uri)
    assert folder == tmp_path.resolve() / "datasets" / "bucket" / "some" / "prefix"
    folder.mkdir(parents=True)
    assert lessons.local_copy_of(uri) is None  # a copy under way, or one that stopped
    lessons.marker_path(folder).write_text("{}")
    assert lessons.local_copy_of(uri) == folder
    assert lessons.local_copy_of("/a/local/folder") is None
    with pytest.raises(ValueError):
        lessons.local_copy_path("/a/local/folder")
