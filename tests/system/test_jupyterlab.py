"""JupyterLab from the project's environment, started by ``make lab``, on 127.0.0.1.

It opens at the project's root, so that ``notebooks/`` and ``outputs/`` (where the
notebooks and ``make run`` write) are both one click away.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from nbhelpers import lessons
from tests.support.jupyter_rest import rest_call

ROOT = Path(__file__).resolve().parents[2]
KERNEL = "batch-inference"
NOTEBOOKS = [entry.path.name for entry in lessons.NOTEBOOKS]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Lab:
    """A running JupyterLab server and a small client for its REST API."""

    def __init__(self, port: int, token: str):
        self.base = f"http://127.0.0.1:{port}"
        self.token = token

    def request(self, path: str, method: str = "GET", body: dict | None = None):
        return rest_call(self.base, self.token, path, method, body)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    port, token = _free_port(), secrets.token_hex(16)
    home = tmp_path_factory.mktemp("lab-home")
    lab_args = f"--no-browser --ip=127.0.0.1 --port={port} --IdentityProvider.token={token}"
    log = (home / "lab.log").open("w")
    env = os.environ | {"JUPYTER_RUNTIME_DIR": str(home / "runtime")}
    server = subprocess.Popen(
        ["make", "-s", "lab", f"LAB_ARGS={lab_args}"],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,  # make and JupyterLab in one process group, stopped together
    )
    client = Lab(port, token)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                client.request("/api/status")
                break
            except (urllib.error.URLError, ConnectionError):
                if server.poll() is not None or time.monotonic() > deadline:
                    os.killpg(server.pid, signal.SIGKILL)
                    log_text = (home / "lab.log").read_text()[-3000:]
                    raise RuntimeError(f"JupyterLab did not start:\n{log_text}") from None
                time.sleep(0.5)
        yield client
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


def test_lab_opens_at_the_project_root_with_notebooks_and_outputs(lab):
    status, page = lab.request("/lab")
    assert status == 200 and "JupyterLab" in page
    _, root = lab.request("/api/contents")
    folders = {item["name"] for item in root["content"] if item["type"] == "directory"}
    assert {"notebooks", "outputs"} <= folders, sorted(folders)
    _, listing = lab.request("/api/contents/notebooks")
    names = {item["name"] for item in listing["content"] if item["type"] == "notebook"}
    assert NOTEBOOKS and set(NOTEBOOKS) <= names
    _, notebook = lab.request(f"/api/contents/notebooks/{NOTEBOOKS[0]}")
    assert notebook["content"]["cells"], "the notebook opened empty"


def test_the_projects_kernel_is_listed_and_starts(lab):
    _, specs = lab.request("/api/kernelspecs")
    assert KERNEL in specs["kernelspecs"], sorted(specs["kernelspecs"])
    argv = specs["kernelspecs"][KERNEL]["spec"]["argv"]
    environment_bin = Path(sys.executable).parent  # .venv/bin, or the active conda environment's
    assert Path(argv[0]).parent == environment_bin
    status, kernel = lab.request("/api/kernels", "POST", {"name": KERNEL})
    assert status == 201 and kernel["name"] == KERNEL
    try:
        code = "import sys, nbhelpers.runtime; print(sys.executable)"
        stdout, stderr = asyncio.run(execute_in_kernel(lab, kernel["id"], code))
    finally:
        lab.request(f"/api/kernels/{kernel['id']}", "DELETE")
    assert Path(stdout.strip()).parent == environment_bin
    # Ray Data's progress bars are widgets in JupyterLab: no "IProgress not found" warning.
    assert "IProgress" not in stderr, stderr


async def execute_in_kernel(
    lab: Lab, kernel_id: str, code: str, timeout_s: float = 90
) -> tuple[str, str]:
    """Run ``code`` in a kernel over JupyterLab's websocket, as the browser does.

    Returns what the code printed to stdout and to stderr.
    """
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    url = lab.base.replace("http", "ws") + f"/api/kernels/{kernel_id}/channels"
    headers = {"Authorization": f"token {lab.token}"}
    connection = await websocket_connect(HTTPRequest(url, headers=headers))
    msg_id = uuid.uuid4().hex
    header = {"msg_id": msg_id, "msg_type": "execute_request", "version": "5.3"}
    header |= {"session": uuid.uuid4().hex, "username": "test", "date": ""}
    content = {"code": code, "silent": False, "store_history": False}
    content |= {"user_expressions": {}, "allow_stdin": False}
    message = {"header": header, "parent_header": {}, "metadata": {}, "content": content}
    await connection.write_message(json.dumps(message | {"channel": "shell"}))
    output, deadline = {"stdout": [], "stderr": []}, time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        raw = await asyncio.wait_for(connection.read_message(), deadline - time.monotonic())
        reply = json.loads(raw)
        if reply.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        if reply["msg_type"] == "stream":
            output[reply["content"]["name"]].append(reply["content"]["text"])
        elif reply["msg_type"] == "error":
            raise AssertionError(f"the kernel failed: {reply['content']['evalue']}")
        elif reply["msg_type"] == "execute_reply":
            assert reply["content"]["status"] == "ok", reply["content"]
            connection.close()
            return "".join(output["stdout"]), "".join(output["stderr"])
    raise AssertionError(f"no reply from the kernel within {timeout_s}s")
