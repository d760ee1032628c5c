"""Shared fixtures: an addressable storage every process can open, and a light local Ray.

Traces cross processes through SQLite files (session-storage-sql). Ray is started once per test module (a module
fixture) with the dashboard, usage stats and driver log forwarding off, a small object store, and every address
on loopback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

for _key, _value in {
    "RAY_DISABLE_USAGE_STATS": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
    # Ray's switch for "no multi-host clusters": every node, GCS and driver address stays on 127.0.0.1.
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
}.items():
    os.environ.setdefault(_key, _value)
# Workers inherit the driver's environment: no test may get its storage from a stray $SESSION_STORAGE_URL.
os.environ.pop("SESSION_STORAGE_URL", None)

OBJECT_STORE_BYTES = 100 * 1024 * 1024
LOOPBACK = "127.0.0.1"


@pytest.fixture
def storage_at() -> Callable[[Path], Any]:
    """Make a SQLite storage at a path; its URL travels in contexts and workers open it by that URL."""
    sql = pytest.importorskip("session_storage_sql")

    def make(path: Path) -> Any:
        return sql.SqliteSessionStorage(str(path))

    return make


@pytest.fixture
def storage(tmp_path: Path, storage_at: Callable[[Path], Any]) -> Any:
    return storage_at(tmp_path / "traces.db")


@pytest.fixture(scope="session")
def ray_init_kwargs() -> Callable[..., dict[str, Any]]:
    """The keyword arguments of a light ``ray.init`` (overrides by keyword)."""

    def kwargs(**overrides: Any) -> dict[str, Any]:
        base: dict[str, Any] = {
            "address": "local",  # a new local cluster, never one a `ray start` elsewhere on the machine left up
            "num_cpus": 2,
            "include_dashboard": False,
            "log_to_driver": False,
            "object_store_memory": OBJECT_STORE_BYTES,
            "_node_ip_address": LOOPBACK,
        }
        base.update(overrides)
        return base

    return kwargs


@pytest.fixture(scope="session")
def ship_module() -> Callable[[str], None]:
    """Let Ray workers load a test module's functions by value (pytest's importlib mode makes it unimportable)."""

    def ship(module_name: str) -> None:
        import ray.cloudpickle

        ray.cloudpickle.register_pickle_by_value(sys.modules[module_name])

    return ship


@pytest.fixture(scope="module")
def local_ray(
    request: pytest.FixtureRequest,
    ray_init_kwargs: Callable[..., dict[str, Any]],
    ship_module: Callable[[str], None],
) -> Iterator[Any]:
    """A local Ray for this test module, shut down after it."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("session_storage_sql")
    ship_module(request.module.__name__)
    if ray.is_initialized():
        ray.shutdown()
    ray.init(**ray_init_kwargs())
    yield ray
    ray.shutdown()
