"""Reports people can share: each executed notebook as HTML, and an index of the run.

``make run`` and ``make smoke`` (:mod:`tools.run_notebooks`) call these after each
notebook: the executed copy becomes a standalone HTML page, and ``index.md`` and
``index.html`` list every notebook of the run with its figures, read from the
``summary.json`` it wrote.
"""

from __future__ import annotations

import html
import json
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbconvert import HTMLExporter

COLUMNS = (
    "notebook",
    "status",
    "images in",
    "predicted",
    "failed",
    "images/s",
    "accuracy / mAP",
    "duration",
    "device",
)


@dataclass(frozen=True)
class NotebookReport:
    """One notebook of a run: where its files are, how it went, and its summary."""

    notebook: str
    folder: Path
    executed: Path
    seconds: float
    error: str | None = None
    summary: dict | None = None
    html: Path | None = None

    @property
    def page_link(self) -> str | None:
        """The HTML page, relative to the run's folder where the index lives."""
        return str(self.html.relative_to(self.folder.parent)) if self.html else None

    @property
    def status(self) -> str:
        """``"ok"``, or ``"failed"`` when the notebook stopped or wrote no summary."""
        return "ok" if self.error is None and self.summary is not None else "failed"

    def cells(self) -> dict[str, str]:
        """The row of the index, as text, keyed by :data:`COLUMNS`."""
        summary = self.summary or {}
        resources = summary.get("resources", {})
        speed = summary.get("images_per_second")
        return {
            "notebook": self.notebook,
            "status": self.status,
            "images in": _text(summary.get("num_images_in")),
            "predicted": _text(summary.get("num_predicted")),
            "failed": _text(summary.get("num_failed")),
            "images/s": "" if speed is None else f"{speed:.2f}",
            "accuracy / mAP": quality(summary),
            "duration": f"{self.seconds:.0f} s",
            "device": describe_device(resources),
        }


def _text(value) -> str:
    return "" if value is None else str(value)


def quality(summary: dict) -> str:
    """Top-1 accuracy, or mAP for detection, or why there is none."""
    if summary.get("accuracy") is not None:
        return f"accuracy {summary['accuracy']:.1%}"
    evaluation = summary.get("mean_average_precision")
    if evaluation:
        return f"mAP {evaluation['map']:.3f} (mAP@0.5 {evaluation['map_50']:.3f})"
    return "no labels" if summary else ""


def describe_device(resources: dict) -> str:
    """``"cpu: 1 actor, 2 CPUs"`` or ``"cuda: 4 actors, 4 GPUs"``, from ``summary.json``."""
    if not resources:
        return ""
    actors = resources.get("actors", 0)
    text = f"{resources.get('device', '?')}: {actors} actor{'s' if actors != 1 else ''}, "
    text += f"{resources.get('cpus', 0):g} CPUs"
    if resources.get("gpus"):
        text += f", {resources['gpus']:g} GPUs"
    if resources.get("nodes", 1) > 1:
        text += f" on {resources['nodes']} nodes"
    return text


def read_summary(folder: Path) -> dict | None:
    """The ``summary.json`` in ``folder``, or ``None`` when the notebook wrote none."""
    path = folder / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else None


def render_html(executed: Path) -> Path:
    """Write ``executed`` (an executed notebook) as a standalone HTML page beside it."""
    notebook = nbformat.read(executed, as_version=4)
    body, _ = HTMLExporter(embed_images=True).from_notebook_node(notebook)
    target = executed.with_suffix(".html")
    target.write_text(body, encoding="utf-8")
    return target


def format_markdown(reports: list[NotebookReport], title: str) -> str:
    """The index as Markdown: a title, when, and one table row per notebook."""
    lines = [f"# {title}", "", f"Run at {time.strftime('%Y-%m-%d %H:%M:%S')}.", ""]
    lines.append("| " + " | ".join(COLUMNS) + " |")
    lines.append("| " + " | ".join("---" for _ in COLUMNS) + " |")
    for report in reports:
        cells = report.cells()
        link = report.page_link
        cells["notebook"] = f"[{report.notebook}]({link})" if link else report.notebook
        lines.append("| " + " | ".join(cells[c] for c in COLUMNS) + " |")
    failed = [r for r in reports if r.status == "failed"]
    for report in failed:
        lines += ["", f"**{report.notebook} failed:** {report.error or 'no summary.json'}"]
    return "\n".join(lines) + "\n"


def format_html(reports: list[NotebookReport], title: str) -> str:
    """The index as a small standalone HTML page with the same table."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    rows = []
    for report in reports:
        cells = {k: html.escape(v) for k, v in report.cells().items()}
        if report.page_link:
            link = html.escape(report.page_link)
            cells["notebook"] = f'<a href="{link}">{cells["notebook"]}</a>'
        style = ' class="failed"' if report.status == "failed" else ""
        rows.append(f"<tr{style}>" + "".join(f"<td>{cells[c]}</td>" for c in COLUMNS) + "</tr>")
    errors = "".join(
        f"<p><b>{html.escape(r.notebook)} failed:</b> {html.escape(r.error or 'no summary.json')}</p>"
        for r in reports
        if r.status == "failed"
    )
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}"
        "tr.failed td{background:#fdd}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p>Run at {time.strftime('%Y-%m-%d %H:%M:%S')}.</p>"
        f"<table><tr>{head}</tr>{''.join(rows)}</table>{errors}</body></html>\n"
    )


def write_index(reports: list[NotebookReport], output_root: Path, title: str) -> Path:
    """Write ``index.md`` and ``index.html`` into ``output_root``; returns the Markdown file."""
    output_root.mkdir(parents=True, exist_ok=True)
    (output_root / "index.html").write_text(format_html(reports, title), encoding="utf-8")
    markdown = output_root / "index.md"
    markdown.write_text(format_markdown(reports, title), encoding="utf-8")
    return markdown
