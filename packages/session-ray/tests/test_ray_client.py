"""Ray Client (``ray.init("ray://…")``): a driver connected through a Ray Client server on a real local head.

Under Ray Client the driver's ``.remote()`` is forwarded over gRPC to a server process on the cluster, which makes
the real Ray call there, so whatever Ray does on "the calling side" happens in that server, not in the driver
where the session is open. These tests check that the session still reaches tasks, actors and the storage.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.util.client.common")  # Ray Client itself: ray[client] (grpcio)
sql = pytest.importorskip("session_storage_sql")

import session_ray  # noqa: E402
from session_core import (  # noqa: E402
    ContextVarSession,
    InMemoryStorage,
    StorageNotAddressable,
    get_active_session_uids,
    get_current_metadata,
    get_current_session_name,
    record_trace,
)

pytestmark = pytest.mark.slow

LOOPBACK = "127.0.0.1"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def ray_client(ship_module: Callable[[str], None]) -> Iterator[str]:
    """A head node (GCS, raylet, Ray Client server on a free loopback port) started by this process; the driver
    connects to it only through ``ray://``. Torn down by the same `Cluster` object, so no other Ray is touched."""
    from ray.cluster_utils import Cluster

    ship_module(__name__)  # the Ray Client pickler honours by-value registration made in the driver
    if ray.is_initialized():
        ray.shutdown()
    port = _free_port()
    with pytest.MonkeyPatch.context() as env:
        # The Ray Client server forks a server process per client while its gRPC threads serve that client's
        # request; gRPC's fork handlers then abort the child now and then ("ev_epoll1_linux.cc: Check failed:
        # next_worker->state == KICKED", grpcio 1.85): "Starting Ray client server failed". The child only
        # execs, so the head's processes (which inherit this environment) can do without those handlers.
        env.setenv("GRPC_ENABLE_FORK_SUPPORT", "false")
        # Should the client server still fail to start, a fresh head is started (the cluster is the test's
        # infrastructure, not the code under test): up to three attempts, then the last error.
        for attempt in range(3):
            head = Cluster(
                initialize_head=True,
                head_node_args={
                    "num_cpus": 2,
                    "include_dashboard": False,
                    "node_ip_address": LOOPBACK,
                    "object_store_memory": 80 * 1024 * 1024,
                    "ray_client_server_port": port,
                },
            )
            address = f"ray://{LOOPBACK}:{port}"
            try:
                ray.init(address, log_to_driver=False)
                break
            except Exception:
                ray.shutdown()
                head.shutdown()
                if attempt == 2:
                    raise
                port = _free_port()
        try:
            assert ray.util.client.ray.is_connected()
            yield address
        finally:
            ray.shutdown()
            head.shutdown()


@pytest.fixture(scope="module")
def probe(ray_client: str) -> Any:
    """One named `Probe`, created by the client driver outside any session (an actor start costs seconds)."""
    return Probe.options(name="probe-by-name").remote()


def _seen(label: str) -> dict[str, Any]:
    trace = record_trace(name=label)
    return {
        "name": get_current_session_name(),
        "uids": get_active_session_uids(),
        "metadata": get_current_metadata(),
        "recorded": trace is not None,
    }


@session_ray.remote(num_cpus=0)
def describe(label: str) -> dict[str, Any]:
    return _seen(label)


@session_ray.remote(num_cpus=0)
def describe_nested(label: str) -> dict[str, Any]:
    """Records, then calls `describe` from inside the worker (a plain Ray call there, not a client call)."""
    record_trace(name=label)
    return ray.get(describe.remote(f"{label}/inner"))  # type: ignore[no-any-return]


@session_ray.remote(num_cpus=0)
def call_through(handle: Any, label: str) -> dict[str, Any]:
    """Calls an actor through a handle the client passed in (a plain Ray handle in the worker)."""
    return ray.get(handle.describe.remote(label))  # type: ignore[no-any-return]


@session_ray.remote(num_cpus=0)
class Probe:
    def __init__(self) -> None:
        self.init_seen = _seen("probe:init")

    def created(self) -> dict[str, Any]:
        return self.init_seen

    def describe(self, label: str) -> dict[str, Any]:
        return _seen(label)

    async def describe_async(self, label: str) -> dict[str, Any]:
        return _seen(label)

    @classmethod
    def describe_class(cls, label: str) -> dict[str, Any]:
        return _seen(label)


def _assert_in(seen: dict[str, Any], session: ContextVarSession, depth: int = 1) -> None:
    assert seen["name"] == "client-driver"
    assert seen["recorded"] is True
    assert seen["uids"][: len(session.uid_chain)] == session.uid_chain
    assert len(seen["uids"]) == len(session.uid_chain) + depth  # a child session continuing the driver's chain
    assert seen["metadata"] == {"run": 7, "step": 1}  # merged, types kept


def test_tasks_and_actor_methods_see_the_driver_session(ray_client: str, tmp_path: Path) -> None:
    path = tmp_path / "client.db"
    with ContextVarSession("client-driver", storage=sql.SqliteSessionStorage(str(path)), run=7) as outer:
        with ContextVarSession(step=1) as session:
            task = ray.get(describe.remote("task"))
            task_options = ray.get(describe.options(name="renamed").remote("task:options"))
            nested = ray.get(describe_nested.remote("nested"))
            probe = Probe.remote()
            init = ray.get(probe.created.remote())
            method = ray.get(probe.describe.remote("method"))
            method_options = ray.get(probe.describe.options(name="renamed").remote("method:options"))
            method_async = ray.get(probe.describe_async.remote("method:async"))
            through = ray.get(call_through.remote(probe, "through-task"))
    for seen in (task, task_options, init, method, method_options, method_async):
        _assert_in(seen, session)
    for seen in (nested, through):
        _assert_in(seen, session, depth=2)

    tasks = ["task", "task:options", "nested", "nested/inner", "through-task"]
    expected = sorted([*tasks, "probe:init", "method", "method:options", "method:async"])
    assert sorted(t.name for t in session.llm_calls) == expected
    assert sorted(t.name for t in outer.llm_calls) == expected
    # Straight from the shared SQLite file, through a storage object of its own.
    assert sorted(t.name for t in sql.SqliteSessionStorage(str(path)).get_traces(outer.uid)) == expected
    assert all(t.session_name == "client-driver" and t.metadata["run"] == 7 for t in session.llm_calls)


def test_a_function_decorated_after_connecting_follows_the_session(ray_client: str, storage: Any) -> None:
    def late(label: str) -> str | None:
        record_trace(name=label)
        return get_current_session_name()

    late_remote = session_ray.remote(num_cpus=0)(late)
    with ContextVarSession("late", storage=storage) as session:
        assert ray.get(late_remote.remote("late")) == "late"
        assert ray.get(late_remote.options(name="late-options").remote("late:options")) == "late"
    assert sorted(t.name for t in session.llm_calls) == ["late", "late:options"]


def test_calls_outside_a_session_carry_nothing(probe: Any, storage: Any) -> None:
    nothing = {"name": None, "uids": [], "metadata": {}, "recorded": False}
    assert ray.get(probe.created.remote()) == nothing
    assert ray.get(describe.remote("outside")) == nothing
    assert ray.get(probe.describe.remote("outside")) == nothing
    with ContextVarSession("between", storage=storage) as session:
        assert ray.get(probe.describe.remote("inside"))["name"] == "between"
    assert ray.get(probe.describe.remote("after")) == nothing
    assert [t.name for t in session.llm_calls] == ["inside"]


def test_class_methods_follow_the_session(probe: Any, storage: Any) -> None:
    """The client handle adds the context to every method: an unwrapped class method failed on the keyword."""
    with ContextVarSession("client-class", storage=storage) as session:
        seen = ray.get(probe.describe_class.remote("class"))
    assert seen["name"] == "client-class"
    assert [t.name for t in session.llm_calls] == ["class"]


def test_process_local_storage_is_refused_in_the_client(probe: Any) -> None:
    with ContextVarSession("memory-only", storage=InMemoryStorage()):
        with pytest.raises(StorageNotAddressable, match="lives in this process only"):
            describe.remote("never")
        with pytest.raises(StorageNotAddressable):
            probe.describe.remote("never")
        with pytest.raises(StorageNotAddressable):
            Probe.remote()


def test_a_handle_from_get_actor_needs_the_context_passed(probe: Any, storage: Any) -> None:
    """The documented limit: ``ray.get_actor`` in a client driver returns Ray's plain client handle."""
    by_name = ray.get_actor("probe-by-name")
    with ContextVarSession("client-driver", storage=storage) as session:
        implicit = ray.get(by_name.describe.remote("implicit"))
        explicit = ray.get(by_name.describe.remote("explicit", _session_ctx=session_ray.capture_context()))
    assert implicit["name"] is None
    assert explicit["name"] == "client-driver"
    assert [t.name for t in session.llm_calls] == ["explicit"]
