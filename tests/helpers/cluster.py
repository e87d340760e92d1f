"""A real local Ray cluster for the tests, one per session, and the handshakes that let a
test kill a worker while it is inside a task (no sleeps: the task tells the test its pid
and then waits to be released).

``ray`` is imported lazily: the tests that need it skip, with the reason, where it is not
installed.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

OBJECT_STORE_BYTES = 200 * (1 << 20)  # small: CI machines have 2 cores and little memory


def ray_or_skip() -> Any:
    """The ray module, or a skip saying that the [ray] extra is not installed."""
    try:
        import ray
    except ImportError:
        pytest.skip("the ray package (extra layerscope[ray]) is not installed")
    return ray


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[str]:
    """A local Ray cluster of 2 CPUs for the whole session; yields its address, which a
    server process attaches to with ``--ray ADDRESS``."""
    ray = ray_or_skip()
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers lack tests/
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=OBJECT_STORE_BYTES,
             log_to_driver=False, configure_logging=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


class Latch:
    """A one-shot event with a value, shared by a task and the test (a Ray actor)."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.value: Any = None

    async def set(self, value: Any = None) -> None:
        self.value = value
        self.event.set()

    async def wait(self) -> Any:
        await self.event.wait()
        return self.value


def latch() -> Any:
    ray = ray_or_skip()
    return ray.remote(num_cpus=0)(Latch).remote()


def worker_pid(_: Any = None) -> int:
    return os.getpid()


def nearest_sums(item: tuple[np.ndarray, int, Any, Any]) -> np.ndarray:
    """Squared distances of each row of a block to its nearest other row, summed in float64
    by a plain loop; the task of ``block`` 0 first tells ``started`` its pid and waits for
    ``release`` (the test kills it meanwhile)."""
    import ray

    x, block, started, release = item
    if block == 0:
        ray.get(started.set.remote(os.getpid()))
        ray.get(release.wait.remote())
    out = np.empty(len(x))
    for i in range(len(x)):
        d = ((x - x[i]) ** 2).sum(axis=1)
        d[i] = np.inf
        out[i] = d.min()
    return out
