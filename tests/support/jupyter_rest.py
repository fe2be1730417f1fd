"""A call to a running JupyterLab's REST API, for the tests that start one."""

from __future__ import annotations

import json
import urllib.request


def rest_call(
    base: str, token: str, path: str, method: str = "GET", body: dict | None = None
) -> tuple[int, object]:
    """``(HTTP status, the answer)``: JSON decoded, else the text as it came."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        base + path,
        data=data,
        method=method,
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read().decode()
        return response.status, (json.loads(text) if text.startswith(("{", "[")) else text)
