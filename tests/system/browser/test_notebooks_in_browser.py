"""Each notebook opened in JupyterLab in a real headless Chromium, run offline, as a learner would.

A copy of the notebook, with papermill's cell of offline parameters after its
``parameters`` cell, is opened in JupyterLab; Run > Run All Cells runs it with the
project's kernel. Once the kernel is idle, the page must show no error, every code cell
run, the progress bars drawn as bars (not log lines), the plots as images, and no
error-level log line. The
whole page is saved as ``outputs/browser/<notebook>.png``, the window while a bar was
still filling as ``<notebook>.running.png``, what the page showed at a failure as
``<notebook>.failed.png``, and what was measured in ``<notebook>.json``.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

import pytest

from .jupyterlab_page import NotebookPage

ROOT = Path(__file__).resolve().parents[3]
NOTEBOOKS = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9]*.ipynb"))
SCREENSHOTS = ROOT / "outputs" / "browser"
KERNEL = "batch-inference"
KERNELSPEC = {"name": KERNEL, "display_name": "Python (batch inference)", "language": "python"}
NUM_IMAGES = 6
# The figures come as JPEG (nbhelpers.visualize.as_jpeg); PNG is accepted too.
PLOT_SOURCES = ("data:image/jpeg", "data:image/png")
# Offline: random weights, the sample photos bundled with the environment, a few images.
OFFLINE_PARAMETERS = {"pretrained": False, "data_uri": "sample", "num_images": NUM_IMAGES}
RUN_TIMEOUT_S = int(os.environ.get("BROWSER_NOTEBOOK_TIMEOUT_S", "900"))
VIEWPORT = {"width": 1280, "height": 900}

# A progress bar drawn in text: tqdm's ``42%|████      |`` or rich's ``━━━━``.
TEXT_BAR = re.compile(r"\d{1,3}%\s*\|[^|\n]{3,}\||━{4,}")
# Ray Data's progress written as log lines (what it does when it thinks nobody watches).
PROGRESS_LOG = "logging_progress.py"
# An error-level log line: Python's logging (``ERROR``), or Ray's C++ core (``[<time> E <pid> <tid>]``).
ERROR_LOG = re.compile(r"\sERROR\s|\[[\d:,. -]+ E \d+ \d+\]")


def offline_copy(name: str, folder: Path, output_dir: Path) -> Path:
    """``notebooks/<name>.ipynb`` with offline parameters, written to ``folder``.

    The parameters are injected as papermill does (a cell after the one tagged
    ``parameters``); only parameters that the notebook declares are set.
    """
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    notebook = load_notebook_node(str(ROOT / "notebooks" / f"{name}.ipynb"))
    tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert tagged, f"{name} has no cell tagged 'parameters'"
    declared = set(re.findall(r"^(\w+)\s*=", tagged[0].source, flags=re.MULTILINE))
    parameters = OFFLINE_PARAMETERS | {"output_dir": str(output_dir)}
    parameters = {key: value for key, value in parameters.items() if key in declared}
    notebook = parameterize_notebook(notebook, parameters)
    notebook.metadata["kernelspec"] = KERNELSPEC
    path = folder / f"{name}.ipynb"
    path.write_text(json.dumps(notebook, indent=1))
    return path


class ProgressWatch:
    """What the progress bars showed while the notebook ran (the page is polled about once a second)."""

    def __init__(self, page: NotebookPage, screenshot: Path):
        self.page, self.screenshot = page, screenshot
        self.percents: set[int] = set()
        self.first_bar_s: float | None = None
        self.start = time.monotonic()

    def __call__(self, state: dict) -> None:
        bars = progress_bars(state)
        if bars and self.first_bar_s is None:
            self.first_bar_s = round(time.monotonic() - self.start, 1)
        for bar in bars:
            percent = re.search(r"(\d{1,3})%", bar)
            if percent:
                self.percents.add(int(percent[1]))
                if int(percent[1]) < 100 and not self.screenshot.exists():
                    self.page.scroll_to_output(bar)  # a bar not yet full, in view
                    self.page.page.screenshot(path=str(self.screenshot))

    @property
    def moved(self) -> bool:
        """Whether a bar was seen part-way (neither empty nor full) while the cells ran."""
        return any(0 < percent < 100 for percent in self.percents)


def progress_bars(state: dict) -> list[str]:
    """The progress bars on the page, each as its text: widgets, ``<progress>`` or text bars."""
    bars = [f"{bar['text']} [{bar['width']}]" for bar in state["progressWidgets"]]
    for output in state["outputs"]:
        if not output.get("nested"):
            bars += [line.strip() for line in output["text"].splitlines() if TEXT_BAR.search(line)]
    return bars


def error_outputs(notebook: dict) -> list[str]:
    """The error outputs of the notebook as saved by JupyterLab."""
    errors = []
    for index, cell in enumerate(notebook["cells"]):
        for output in cell.get("outputs", []):
            if output["output_type"] == "error":
                trace = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(output.get("traceback", [])))
                errors.append(
                    f"cell {index}: {output['ename']}: {output['evalue']}\n{trace[-3000:]}"
                )
    return errors


def stderr_lines(notebook: dict) -> dict[int, int]:
    """Lines written to stderr, per code cell that wrote any (index among all cells)."""
    counts = {}
    for index, cell in enumerate(notebook["cells"]):
        lines = sum(
            "".join(o.get("text", "")).count("\n")
            for o in cell.get("outputs", [])
            if o.get("name") == "stderr"
        )
        if lines:
            counts[index] = lines
    return counts


def test_the_projects_kernel_is_offered(lab):
    """The notebooks' kernel runs the Python of this environment, where ``nbhelpers`` is."""
    specs = lab.request("/api/kernelspecs")["kernelspecs"]
    assert KERNEL in specs, f"no kernel {KERNEL!r} (make setup registers it): {sorted(specs)}"
    assert Path(specs[KERNEL]["spec"]["argv"][0]).parent == Path(sys.executable).parent


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_in_jupyterlab(name, lab, browser, tmp_path):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for stale in SCREENSHOTS.glob(f"{name}.*"):
        stale.unlink()
    copy = offline_copy(name, lab.root, tmp_path / "results")
    page = browser.new_page(viewport=VIEWPORT)
    console_errors = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    notebook = NotebookPage(page, lab, copy.name)
    watch = ProgressWatch(notebook, SCREENSHOTS / f"{name}.running.png")
    try:
        start = time.monotonic()
        notebook.open()
        opened_s = time.monotonic() - start
        assert notebook.kernel_name() == KERNEL
        notebook.hide_left_sidebar()
        run_s = notebook.run_all(RUN_TIMEOUT_S, on_poll=watch)
        saved = notebook.save()
        state = notebook.state()
        notebook.screenshot(SCREENSHOTS / f"{name}.png")
        bars = progress_bars(state)
        plots = [i for i in state["images"] if i["src"].startswith(PLOT_SOURCES) and i["width"]]
        report = {
            "notebook": name,
            "parameters": OFFLINE_PARAMETERS,
            "open_s": round(opened_s, 1),
            "run_all_s": round(run_s, 1),
            "code_cells": len(state["prompts"]),
            "prompts": state["prompts"],
            "stderr_lines_per_cell": stderr_lines(saved),
            "progress_bars": bars,
            "progress_percents_seen_while_running": sorted(watch.percents),
            "first_progress_bar_after_s": watch.first_bar_s,
            "progress_bar_moved": watch.moved,
            "plots": plots,
            "browser_console_errors": console_errors[:20],
            "screenshot": str((SCREENSHOTS / f"{name}.png").relative_to(ROOT)),
        }
        (SCREENSHOTS / f"{name}.json").write_text(json.dumps(report, indent=2))

        errors = error_outputs(saved)
        assert not errors, "\n\n".join(errors)
        not_run = [
            index
            for index, cell in enumerate(saved["cells"])
            if cell["cell_type"] == "code"
            and cell["source"].strip()
            and not cell["execution_count"]
        ]
        assert not not_run, f"code cells not run: {not_run} (prompts {state['prompts']})"
        assert plots, "no plot (image/jpeg or image/png output) rendered"
        progress_logs = [o["text"][:300] for o in state["outputs"] if PROGRESS_LOG in o["text"]]
        assert bars, f"no progress bar rendered; Ray Data logged its progress: {progress_logs[:2]}"
        assert any("100%" in bar for bar in bars), f"no progress bar reached 100%: {bars}"
        assert not progress_logs, f"Ray Data logged its progress as well: {progress_logs[:2]}"
        error_lines = [
            line
            for o in state["outputs"]
            for line in o["text"].splitlines()
            if ERROR_LOG.search(line)
        ]
        assert not error_lines, f"error-level log lines in a healthy run: {error_lines[:5]}"
    except BaseException:
        try:
            page.screenshot(path=str(SCREENSHOTS / f"{name}.failed.png"), full_page=True)
        except Exception:
            pass  # the failure itself matters more than its picture
        raise
    finally:
        lab.shut_down_kernels()  # each kernel stops the Ray it started
        page.close()
