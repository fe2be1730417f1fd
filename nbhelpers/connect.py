"""Join an existing Ray cluster (``RAY_ADDRESS``): token authentication, and clear errors.

Since Ray 2.5x, clusters use token authentication: a driver without the cluster's
token is refused. :func:`join_cluster` prepares it and explains what to provide
when joining fails.
"""

from __future__ import annotations

import os
from pathlib import Path

import ray
from ray._raylet import Config

AUTH_MODE_VARIABLE = "RAY_AUTH_MODE"
TOKEN_VARIABLES = ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
DEFAULT_TOKEN_FILE = Path.home() / ".ray" / "auth_token"


class ClusterConnectionError(ConnectionError):
    """The Ray cluster in ``RAY_ADDRESS`` could not be joined."""


def auth_token_source() -> str | None:
    """Where this process would take a Ray authentication token from, or ``None``.

    ``RAY_AUTH_TOKEN`` (the token itself), ``RAY_AUTH_TOKEN_PATH`` (a file holding
    it), or the default file ``~/.ray/auth_token``, in Ray's order.
    """
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "the environment variable RAY_AUTH_TOKEN"
    token_path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if token_path and Path(token_path).expanduser().is_file():
        return f"the file {token_path} (RAY_AUTH_TOKEN_PATH)"
    if DEFAULT_TOKEN_FILE.is_file():
        return f"the file {DEFAULT_TOKEN_FILE}"
    return None


def use_token_authentication() -> str | None:
    """Turn on Ray's token authentication for this process when a token is at hand.

    Since Ray 2.5x, ``ray start --head`` enables token authentication when a token
    exists (``ray.init()`` on a laptop writes one to ``~/.ray/auth_token``), and a
    driver that joins it with ``RAY_ADDRESS`` but without ``RAY_AUTH_MODE=token`` is
    refused (``InvalidAuthToken``). Ray only switches the mode on by itself for a
    cluster it finds locally, so here: when ``RAY_AUTH_MODE`` is unset and a token
    is available, set ``RAY_AUTH_MODE=token`` (a cluster without authentication
    accepts such a driver too). An explicit ``RAY_AUTH_MODE`` is always respected;
    authentication is never turned off.

    Returns:
        A sentence saying what was done, or ``None`` when nothing changed.
    """
    if os.environ.get(AUTH_MODE_VARIABLE):
        return None
    source = auth_token_source()
    if source is None:
        return None
    os.environ[AUTH_MODE_VARIABLE] = "token"
    Config.initialize("")  # Ray reads the mode from its config, loaded at import
    return f"Ray token authentication on (RAY_AUTH_MODE=token), with the token from {source}."


def join_cluster(address: str, options: dict) -> None:
    """``ray.init(address)`` with token authentication prepared, and a clear error on failure.

    Raises:
        ClusterConnectionError: the cluster could not be joined; the message names
            the address and the usual causes (not running, token authentication).
    """
    note = use_token_authentication()
    if note:
        print(note)
    try:
        ray.init(address=address, **options)
    except (ConnectionError, ray.exceptions.AuthenticationError) as error:
        mode = os.environ.get(AUTH_MODE_VARIABLE, "unset")
        token = auth_token_source() or "none found"
        raise ClusterConnectionError(
            f"Could not join the Ray cluster at RAY_ADDRESS={address!r} ({error}). "
            "Check that the cluster is running (`ray status` on its head node) and that the "
            "address is reachable from here. If the cluster uses token authentication (Ray "
            "2.5x's `ray start --head` turns it on), Ray's log above says InvalidAuthToken: "
            "give this process the cluster's token with RAY_AUTH_TOKEN (or a copy of the "
            "head node's ~/.ray/auth_token, or RAY_AUTH_TOKEN_PATH) and RAY_AUTH_MODE=token. "
            f"Now: RAY_AUTH_MODE={mode}, token: {token}. Do not turn authentication off. "
            "To run on this machine alone, unset RAY_ADDRESS."
        ) from error


def choose_token_authentication() -> None:
    """Keep Ray's token authentication on for a local instance, as a choice rather than a default.

    Ray 2.60 turns it on by default and warns at every start that it did; choosing it
    (``RAY_AUTH_MODE=token``) keeps the same protection without the warning. A mode
    set by the user is respected.
    """
    if not os.environ.get(AUTH_MODE_VARIABLE):
        os.environ[AUTH_MODE_VARIABLE] = "token"
        Config.initialize("")  # Ray reads the mode from its config, loaded at import
