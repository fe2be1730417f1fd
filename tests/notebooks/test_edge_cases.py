"""Sources a learner will try where no image can be read: each notebook stops with a clear message.

When not one image decodes, there is nothing to run the model on, and the single
batch is where the notebook finds out (``reading.rows_read``). It must stop there with
:class:`nbhelpers.reading.NoReadableImagesError`: the count, the kinds of failure
with an example file each, and what to do; never a numpy or pandas error further on.
"""

from __future__ import annotations

import nbformat
import pytest

from nbhelpers import lessons, reading
from tests.conftest import NOTEBOOK_TIMEOUT_S
from tools.papermill_runner import execute_notebook

pytestmark = pytest.mark.notebook

# Notebook 01 in make test; the others, which stop in the same function, in make test-long.
NOTEBOOKS = [
    entry.notebook if index == 0 else pytest.param(entry.notebook, marks=pytest.mark.long)
    for index, entry in enumerate(lessons.NOTEBOOKS)
]


@pytest.fixture(scope="module")
def unreadable_folder(tmp_path_factory):
    """Files named like photos that hold nothing a decoder can use."""
    root = tmp_path_factory.mktemp("unreadable")
    (root / "IMG_0001.jpg").write_bytes(b"")
    (root / "IMG_0002.jpg").write_bytes(b"<!doctype html><title>404 Not Found</title>")
    (root / "IMG_0003.heic").write_bytes(b"\x00\x00\x00\x18ftypheic" + b"\x00" * 64)
    (root / "IMG_0004.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 10)
    return root


def stopped_at_the_single_batch(run) -> str:
    """The error papermill reported; fails unless the notebook stopped at ``rows_read``."""
    assert run.returncode not in (0, None), f"expected a clean failure, got {run.error}"
    assert "NoReadableImagesError" in run.output, run.output[-3000:]
    assert "need at least one array" not in run.output
    executed = nbformat.read(run.executed, as_version=4)
    failed = [
        cell
        for cell in executed.cells
        if cell.cell_type == "code" and any(o.output_type == "error" for o in cell.outputs)
    ]
    assert len(failed) == 1 and "reading.rows_read(" in failed[0].source
    return run.output


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_a_folder_with_nothing_readable(notebook, unreadable_folder, tmp_path):
    run = execute_notebook(
        notebook,
        tmp_path,
        {"pretrained": False, "data_uri": str(unreadable_folder)},
        timeout_s=NOTEBOOK_TIMEOUT_S,
        env={"RAY_ADDRESS": ""},
    )
    output = stopped_at_the_single_batch(run)
    # The failure kinds (reading.failure_kind's values) with an example file, and the advice
    # for each kind that has one (reading.ADVICE), as the error carries them.
    assert "IMG_0001.jpg" in output
    for kind in ("empty file", "unsupported format"):
        assert kind in output
    assert reading.ADVICE["unsupported format"] in output


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_a_bucket_whose_objects_are_private_read_anonymously(notebook, public_s3, tmp_path):
    """The bucket lists for anyone, but its objects are not public: every read is denied."""
    run = execute_notebook(
        notebook,
        tmp_path,
        {"pretrained": False, "data_uri": "s3://anonymous@private-photos/imagenette/val"},
        timeout_s=NOTEBOOK_TIMEOUT_S,
        env={"RAY_ADDRESS": ""} | public_s3.env(credentials=False),
    )
    output = stopped_at_the_single_batch(run)
    assert "unreadable file" in output and "ACCESS_DENIED" in output.upper()
    assert reading.ADVICE["unreadable file"] in " ".join(output.split())
