"""A real JupyterLab server and a real headless Chromium page driving it.

The server runs the project's kernel from ``.venv`` and serves a temporary folder, with
user settings of its own: every cell of a notebook stays in the page (no windowing), so
every output can be checked, and nothing is fetched from the internet.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tests.support.jupyter_rest import rest_call

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
# Headless Chromium as root, with nothing started in the background: no sandbox (root),
# no GPU, and no network of its own (otherwise its background connections are refused en masse).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
# JupyterLab user settings (one file per plugin).
LAB_SETTINGS = {
    # Every cell in the DOM, so that outputs far down the notebook can be found.
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
    # No news feed nor update check: no request leaves the machine, no toast covers the page.
    "@jupyterlab/apputils-extension/notification": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}

# What the page reports about one notebook: prompts, outputs and what renders them.
NOTEBOOK_STATE_JS = """
() => {
  const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  if (!panel) return null;
  const cells = [...panel.querySelectorAll('.jp-Cell.jp-CodeCell')];
  const outputs = [...panel.querySelectorAll('.jp-OutputArea-output')];
  const text = el => (el.innerText || '').slice(0, 4000);
  return {
    prompts: cells.map(c => {
      const p = c.querySelector('.jp-InputArea-prompt');
      return p ? p.textContent.trim() : '';
    }),
    outputs: outputs.map(o => ({
      mime: o.getAttribute('data-mime-type') || '',
      classes: o.className,
      text: text(o),
      // an output widget holding outputs of its own: its text is theirs
      nested: o.querySelector('.jp-OutputArea-output') !== null,
    })),
    images: [...panel.querySelectorAll('.jp-OutputArea-output img')].map(img => ({
      src: img.getAttribute('src').slice(0, 30),
      width: img.naturalWidth,
      height: img.naturalHeight,
    })),
    progressWidgets: [...panel.querySelectorAll(
      '.jupyter-widget-hprogress, .widget-hprogress, .jp-OutputArea-output progress'
    )].map(el => {
      const box = el.closest('.jupyter-widget-hbox, .widget-hbox') || el;
      const bar = el.querySelector('.progress-bar');
      return {text: (box.innerText || '').trim(), width: bar ? bar.style.width : null};
    }),
    kernel: (document.querySelector('.jp-Notebook-ExecutionIndicator') || {})
      .getAttribute?.('data-status') || null,
  };
}
"""

BUSY_PROMPT = "[*]:"
QUIET_S = 3  # seconds without change after which a run is over


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Lab:
    """JupyterLab, from the environment of ``python``, on 127.0.0.1, serving ``root``."""

    def __init__(self, root: Path, state_dir: Path, python: str = sys.executable):
        self.root, self.state_dir, self.python = root, state_dir, python
        self.token = secrets.token_hex(16)
        self.port = 0
        self.process: subprocess.Popen | None = None
        self.log_path = state_dir / "lab.log"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 120) -> Lab:
        settings = self.state_dir / "user-settings"
        for plugin, values in LAB_SETTINGS.items():
            path = settings / f"{plugin}.jupyterlab-settings"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        # Its own config, data and runtime folders: nobody's personal Jupyter set-up (or a
        # kernel of the same name installed for the user) changes what the test sees.
        env = os.environ | {
            "JUPYTER_CONFIG_DIR": str(self.state_dir / "config"),
            "JUPYTER_DATA_DIR": str(self.state_dir / "data"),
            "JUPYTER_RUNTIME_DIR": str(self.state_dir / "runtime"),
            "PYTHONUNBUFFERED": "1",
        }
        for variable in ("RAY_ADDRESS", "JUPYTER_PATH"):  # a local Ray, the project's kernel
            env.pop(variable, None)
        for attempt in range(5):  # another process may take the free port first
            self.port = free_port()
            command = [self.python, "-m", "jupyterlab", "--no-browser"]
            command += ["--ip=127.0.0.1", f"--port={self.port}", "--ServerApp.port_retries=0"]
            command += [f"--IdentityProvider.token={self.token}"]
            command += [f"--ServerApp.root_dir={self.root}"]
            command += [f"--LabApp.user_settings_dir={settings}"]
            command += [f"--LabApp.workspaces_dir={self.state_dir / 'workspaces'}"]
            if os.getuid() == 0:
                command.append("--allow-root")
            with self.log_path.open("a") as log:
                log.write(f"--- attempt {attempt + 1}: {' '.join(command)}\n")
                self.process = subprocess.Popen(
                    command,
                    cwd=self.root,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,  # the server and its kernels, stopped together
                )
            if self._wait_until_up(timeout_s):
                return self
        raise RuntimeError(f"JupyterLab did not start:\n{self.log_text()[-4000:]}")

    def _wait_until_up(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                self.request("/api/status")
                return True
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.5)
        self.stop()
        return False

    def log_text(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def request(self, path: str, method: str = "GET", body: dict | None = None):
        return rest_call(self.base, self.token, path, method, body)[1]

    def shut_down_kernels(self) -> None:
        """Shut every kernel down through JupyterLab (each stops the Ray it started)."""
        paths = [f"/api/sessions/{s['id']}" for s in self.request("/api/sessions")]
        for path in paths + [f"/api/kernels/{k['id']}" for k in self.request("/api/kernels")]:
            try:
                self.request(path, "DELETE")
            except urllib.error.HTTPError:
                pass  # gone already (its session's kernel, or a kernel that died)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            self.shut_down_kernels()
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def launch_chromium(playwright):
    """Debian's Chromium, headless, driven by Playwright (no browser is downloaded)."""
    if not CHROMIUM.exists():
        raise RuntimeError(f"{CHROMIUM} is missing: `apt-get install chromium` (make test-browser)")
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
    )


class NotebookPage:
    """One notebook opened in JupyterLab in a browser page."""

    def __init__(self, page, lab: Lab, path: str):
        self.page, self.lab, self.path = page, lab, path

    def open(self, timeout_s: float = 120) -> NotebookPage:
        url = f"{self.lab.base}/lab/tree/{urllib.parse.quote(self.path)}"
        self.page.goto(f"{url}?reset&token={self.lab.token}")
        self.page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for(timeout=timeout_s * 1000)
        self.wait_for_kernel("idle", timeout_s)
        return self

    def state(self) -> dict:
        return self.page.evaluate(NOTEBOOK_STATE_JS)

    def wait_for_kernel(self, status: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.kernel_status() != status:
            if time.monotonic() > deadline:
                raise AssertionError(f"the kernel was not {status} within {timeout_s}s")
            time.sleep(0.5)

    def kernel_status(self) -> str | None:
        """The kernel's status as the server knows it (``idle``, ``busy``, ``starting``)."""
        for session in self.lab.request("/api/sessions"):
            if session["path"] == self.path and session.get("kernel"):
                return session["kernel"]["execution_state"]
        return None

    def kernel_name(self) -> str | None:
        for session in self.lab.request("/api/sessions"):
            if session["path"] == self.path and session.get("kernel"):
                return session["kernel"]["name"]
        return None

    def hide_left_sidebar(self) -> None:
        """Collapse the file browser (its open tab, clicked again): the notebook gets the width."""
        tab = self.page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current")
        if tab.count():
            tab.first.click()

    def scroll_to_output(self, text: str) -> None:
        """Scroll the first output that shows ``text`` (its first 40 characters) into view."""
        self.page.evaluate(
            """text => {
              const output = [...document.querySelectorAll('.jp-OutputArea-output')]
                .find(o => (o.innerText || '').includes(text));
              if (output) output.scrollIntoView({block: 'center'});
            }""",
            text[:40],
        )

    def menu(self, *names: str) -> None:
        """Click through the menu bar, e.g. ``menu("Run", "Run All Cells")``."""
        self.page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(f"^{names[0]}$")).click()
        for name in names[1:]:
            item = self.page.locator(".lm-Menu-itemLabel", has_text=re.compile(f"^{name}$"))
            item.first.click()

    def run_all(self, timeout_s: float, on_poll=None) -> float:
        """Run > Run All Cells, then wait until no cell is running and the page is still.

        Returns the seconds it took. Execution stops at the first error, as in
        JupyterLab; the remaining cells then keep an empty prompt. The kernel's status
        alone does not tell: it reads "idle" whenever the kernel has answered a widget's
        message, even while a cell still runs. So the run is over when no prompt shows
        ``[*]``, the kernel is idle, and the page has not changed for a few seconds
        (a cell whose input is collapsed shows no prompt, but its output moves).
        """
        start = time.monotonic()
        self.menu("Run", "Run All Cells")
        deadline = start + timeout_s
        still_since, last_look = None, None
        while True:
            state = self.state() or {"prompts": [], "outputs": []}
            if on_poll is not None:
                on_poll(state)
            running = any(p == BUSY_PROMPT for p in state["prompts"])
            started = any(re.fullmatch(r"\[\d+\]:", p) for p in state["prompts"])
            look = (state["prompts"], [o["text"] for o in state["outputs"]])
            if started and not running and look == last_look and self.kernel_status() == "idle":
                still_since = still_since or time.monotonic()
                if time.monotonic() - still_since >= QUIET_S:
                    return time.monotonic() - start - QUIET_S
            else:
                still_since = None
            last_look = look
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.path} still running after {timeout_s}s: prompts {state['prompts']}"
                )
            time.sleep(1)

    def save(self) -> dict:
        """File > Save Notebook; returns the notebook as saved by the browser.

        The server writes the file in place: read half-way, it is "Unreadable" (HTTP 400),
        so it is read again until the page shows the notebook saved and the file parses.
        """
        url = f"/api/contents/{urllib.parse.quote(self.path)}"
        before = self.lab.request(f"{url}?content=0")["last_modified"]
        self.menu("File", "Save Notebook")
        dirty = self.page.locator(".lm-DockPanel .lm-TabBar-tab.lm-mod-current.jp-mod-dirty")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            time.sleep(0.5)
            if dirty.count():
                continue
            try:
                if self.lab.request(f"{url}?content=0")["last_modified"] != before:
                    return self.lab.request(url)["content"]
            except urllib.error.HTTPError as error:
                if error.code != 400:
                    raise
        raise AssertionError(f"{self.path} was not saved")

    def screenshot(self, path: Path, max_height: int = 16000) -> None:
        """The whole notebook in one picture: the page grows to the notebook's height."""
        path.parent.mkdir(parents=True, exist_ok=True)
        height = self.page.evaluate(
            """() => {
              const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
              const scroller = panel && panel.querySelector('.jp-WindowedPanel-outer');
              if (!scroller) return document.body.scrollHeight;
              return scroller.scrollHeight + (window.innerHeight - scroller.clientHeight);
            }"""
        )
        viewport = self.page.viewport_size
        self.page.set_viewport_size(
            {"width": viewport["width"], "height": int(min(max(height, 600), max_height))}
        )
        time.sleep(1)  # a layout pass at the new size
        self.page.evaluate(
            """() => document.querySelectorAll('.jp-NotebookPanel .jp-WindowedPanel-outer')
                .forEach(scroller => { scroller.scrollTop = 0; })"""
        )
        time.sleep(0.5)
        self.page.screenshot(path=str(path), full_page=True)
        self.page.set_viewport_size(viewport)
