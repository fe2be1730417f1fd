"""The time tables at the top of the notebooks: generated from a measured run, and current."""

from __future__ import annotations

import json

import nbformat
import pytest

from nbhelpers import lessons
from tools import papermill_runner, time_tables


def committed_table(notebook: dict) -> tuple[list[tuple[str, str]], str]:
    """The committed table's rows (section, reading time) and the sentence under it."""
    first = "".join(notebook["cells"][0]["source"])
    assert time_tables.BEGIN in first and time_tables.END in first, "no time table markers"
    lines = first.split(time_tables.BEGIN)[1].split(time_tables.END)[0].strip().splitlines()
    rows = [line.strip("|").split("|") for line in lines[2:] if line.startswith("|")]
    sentence = " ".join(line for line in lines if line and not line.startswith("|"))
    return [(row[0].strip(), row[1].strip()) for row in rows], sentence


@pytest.mark.parametrize("entry", lessons.NOTEBOOKS, ids=lambda entry: entry.path.stem)
def test_each_time_table_has_the_notebooks_sections_and_reading_times(entry):
    notebook = json.loads(entry.path.read_text())
    rows, sentence = committed_table(notebook)
    found = time_tables.sections(notebook)
    expected = [(section.heading, time_tables.reading(section.words)) for section in found]
    assert rows == expected, "the text changed since the table was written: make time-tables"
    assert "Measured on" in sentence and "CPU cores" in sentence, sentence
    words = sum(section.words for section in found if section.heading != "Exercises")
    written = int(sentence.split(" words")[0].split()[-1].replace(",", ""))
    assert abs(written - words) <= 0.05 * words, (written, words)


def test_running_times_come_from_the_executed_cells_metadata(tmp_path):
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "language": "python",
        "display_name": "Python 3",
    }
    notebook.cells = [
        nbformat.v4.new_markdown_cell(
            f"# A title\n\nFour words of introduction.\n\n{time_tables.BEGIN}\n{time_tables.END}"
        ),
        nbformat.v4.new_markdown_cell("## 1. Wait\n\nTwo cells wait."),
        nbformat.v4.new_code_cell("import time\ntime.sleep(0.6)"),
        nbformat.v4.new_code_cell("time.sleep(0.6)"),
        nbformat.v4.new_markdown_cell("## Exercises\n\nNo waiting."),
        nbformat.v4.new_code_cell("1 + 1"),
    ]
    source = tmp_path / "timed.ipynb"
    nbformat.write(notebook, source)
    run = papermill_runner.execute_notebook(
        source, tmp_path / "run", {}, timeout_s=300, executed=tmp_path / "executed.ipynb"
    )
    assert run.error is None, run.error
    found = {s.heading: s for s in time_tables.sections(json.loads(run.executed.read_text()))}
    assert list(found) == ["Introduction", "1. Wait", "Exercises"]
    assert found["Introduction"].words == 6 and found["1. Wait"].words == 5
    assert 1.2 <= found["1. Wait"].seconds < 10, found["1. Wait"]
    assert found["Exercises"].seconds < 1.2
    time_tables.rewrite_table(source, run.executed, "a test machine")
    rows, sentence = committed_table(json.loads(source.read_text()))
    assert rows == [("Introduction", "0.5 min"), ("1. Wait", "0.5 min"), ("Exercises", "0.5 min")]
    assert "11 words" in sentence and "a test machine" in sentence, sentence
