"""Join an existing Ray cluster (``RAY_ADDRESS``): token authentication, clear errors, and what
every worker gets (its environment variables; on a remote cluster, the ``nbhelpers`` package)."""

from __future__ import annotations

import os
from pathlib import Path

import ray
from ray._raylet import Config  # private in Ray 2.60: used by _reload_ray_config alone

import nbhelpers

AUTH_MODE_VARIABLE = "RAY_AUTH_MODE"
DEFAULT_TOKEN_FILE = Path.home() / ".ray" / "auth_token"


def worker_runtime_env(remote: bool) -> dict:
    """The settings every worker needs; on a remote cluster, also the ``nbhelpers`` package
    (a local Ray's workers import it from here: shipping it would slow their start)."""
    keep = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "TORCH_HOME")
    env = {"env_vars": {name: os.environ[name] for name in keep if name in os.environ}}
    if remote:
        env["py_modules"] = [str(Path(nbhelpers.__file__).parent)]
    return env if remote or env["env_vars"] else {}


class ClusterConnectionError(ConnectionError):
    """The Ray cluster in ``RAY_ADDRESS`` could not be joined."""


def auth_token_source() -> str | None:
    """Where this process would take a Ray authentication token from, in Ray's order, or ``None``."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "the environment variable RAY_AUTH_TOKEN"
    token_path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if token_path and Path(token_path).expanduser().is_file():
        return f"the file {token_path} (RAY_AUTH_TOKEN_PATH)"
    if DEFAULT_TOKEN_FILE.is_file():
        return f"the file {DEFAULT_TOKEN_FILE}"
    return None


def choose_token_authentication() -> None:
    """Turn Ray's token authentication on (``RAY_AUTH_MODE=token``) unless the user set a mode.

    Ray 2.60 turns it on by default for a local instance, and warns at every start that
    it did: choosing it keeps the same protection without the warning.
    """
    if not os.environ.get(AUTH_MODE_VARIABLE):
        os.environ[AUTH_MODE_VARIABLE] = "token"
        _reload_ray_config()


def _reload_ray_config() -> None:
    """Make this process's Ray read its settings (``RAY_AUTH_MODE``) from the environment again.

    No public call does this. Ray 2.60 reads its settings once, when ``ray`` is imported, so
    a mode set later (as here, in a notebook that imported ray first) would reach the Ray
    processes this one starts but not this driver, which then has no token. Ray turns token
    mode on itself the same way: ``ray/_private/authentication/authentication_token_setup.py``,
    ``_enable_token_auth``, sets the variable and calls ``ray._raylet.Config.initialize("")``.
    """
    Config.initialize("")


def join_cluster(address: str, options: dict) -> None:
    """``ray.init(address)`` with token authentication prepared; ClusterConnectionError if not.

    Since Ray 2.5x, ``ray start --head`` turns token authentication on and refuses a
    driver without the token; Ray turns the driver's token mode on only for a local
    cluster, so it is turned on here when a token is at hand.
    """
    source = auth_token_source()
    if source and not os.environ.get(AUTH_MODE_VARIABLE):
        choose_token_authentication()
        print(f"Ray token authentication on (RAY_AUTH_MODE=token), with the token from {source}.")
    try:
        ray.init(address=address, **options)
    except (ConnectionError, ray.exceptions.AuthenticationError) as error:
        mode = os.environ.get(AUTH_MODE_VARIABLE, "unset")
        raise ClusterConnectionError(
            f"Could not join the Ray cluster at RAY_ADDRESS={address!r} ({error}). "
            "Check that the cluster is running (`ray status` on its head node) and that the "
            "address is reachable from here. If the cluster uses token authentication (Ray "
            "2.5x's `ray start --head` turns it on), Ray's log above says InvalidAuthToken: "
            "give this process the cluster's token with RAY_AUTH_TOKEN (or a copy of the "
            "head node's ~/.ray/auth_token, or RAY_AUTH_TOKEN_PATH) and RAY_AUTH_MODE=token. "
            f"Now: RAY_AUTH_MODE={mode}, token: {source or 'none found'}. Do not turn "
            "authentication off. To run on this machine alone, unset RAY_ADDRESS."
        ) from error
