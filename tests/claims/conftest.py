"""A small local Ray for the claims that run Ray Data, started once and stopped at the end."""

from __future__ import annotations

import pytest
import ray

RAY_REMOTE_ARGS_DEPRECATION = (
    "ignore:`ray_remote_args` is deprecated and will be removed in Ray 2.64:DeprecationWarning"
)
"""Ray 2.60's warning for ``max_restarts`` passed through ``map_batches(**ray_remote_args)``,
which ``nbhelpers.runtime.STOP_ON_ACTOR_CRASH`` relies on (its table): filtered, by this exact
message, in the tests that pass it; ``test_runtime.py`` checks that Ray still warns."""


@pytest.fixture(scope="package")
def local_ray():
    """A local Ray of two CPUs for the claims of this folder."""
    if ray.is_initialized():  # a test module started its own: leave it to that module
        yield
        return
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
