"""nbhelpers.lessons: the notebooks as plain data, what each loads and reads."""

from __future__ import annotations

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
