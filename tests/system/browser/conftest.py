"""Fixtures of the browser test: a JupyterLab server and a headless Chromium.

The browser test runs only when asked for by path (``make test-browser``, or
``pytest tests/system/browser``): plain ``pytest`` (``make test``) leaves this folder out.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .jupyterlab_page import Lab, launch_chromium

HERE = Path(__file__).resolve().parent


def _asked_for(config) -> bool:
    """Whether the command line names this folder or something inside it."""
    for arg in config.args:
        path = (config.invocation_params.dir / arg.split("::")[0]).resolve()
        if path == HERE or HERE in path.parents:
            return True
    return False


def pytest_ignore_collect(collection_path, config):
    path = Path(collection_path).resolve()
    if HERE in path.parents and not _asked_for(config):
        return True
    return None


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    """JupyterLab from this environment (the project's), serving a temporary folder."""
    root = tmp_path_factory.mktemp("served")
    server = Lab(root, tmp_path_factory.mktemp("lab-state")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium, headless, driven by Playwright."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        try:
            yield chromium
        finally:
            chromium.close()
