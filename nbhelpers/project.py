"""The project's folders on disk: its root, the notebooks, and where their outputs go."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent  # holds notebooks/ and nbhelpers/
NOTEBOOK_DIR = PROJECT_ROOT / "notebooks"
OUTPUT_ROOT = PROJECT_ROOT / "outputs"
