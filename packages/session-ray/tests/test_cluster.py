"""A two-node Ray cluster on this machine: traces from tasks and actors on both nodes reach the driver's session."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")
sql = pytest.importorskip("session_storage_sql")

import session_ray  # noqa: E402
from session_core import ContextVarSession, get_active_session_uids, get_current_session_name, record_trace  # noqa: E402

pytestmark = pytest.mark.slow

POSTGRES_URL = os.environ.get("SESSION_TEST_POSTGRES_URL")
NODE_ARGS = {"node_ip_address": "127.0.0.1", "object_store_memory": 80 * 1024 * 1024, "include_dashboard": False}


@pytest.fixture(scope="module")
def cluster(ship_module: Callable[[str], None]) -> Iterator[Any]:
    """Head node with resource ``node_a``, a second node with ``node_b``; the driver connects to the head."""
    from ray.cluster_utils import Cluster

    ship_module(__name__)
    if ray.is_initialized():
        ray.shutdown()
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {"node_a": 2}, **NODE_ARGS})
    try:
        nodes.add_node(num_cpus=1, resources={"node_b": 2}, **NODE_ARGS)
        nodes.wait_for_nodes()
        ray.init(address=nodes.address, log_to_driver=False, _node_ip_address="127.0.0.1")
        yield nodes
    finally:
        ray.shutdown()
        nodes.shutdown()


@session_ray.remote(num_cpus=0)
def where(label: str) -> dict[str, Any]:
    record_trace(name=label)
    return {
        "node": ray.get_runtime_context().get_node_id(),
        "name": get_current_session_name(),
        "depth": len(get_active_session_uids()),
    }


@session_ray.remote(num_cpus=0)
def hop(label: str) -> dict[str, Any]:
    """Runs on one node and calls `where` pinned to the other."""
    record_trace(name=label)
    return ray.get(where.options(resources={"node_b": 1}).remote(f"{label}->b"))  # type: ignore[no-any-return]


@session_ray.remote(num_cpus=0)
class NodeActor:
    def work(self, label: str) -> str:
        record_trace(name=label)
        return ray.get_runtime_context().get_node_id()  # type: ignore[no-any-return]


def _exercise(storage: Any) -> None:
    with ContextVarSession("cluster-driver", storage=storage, cluster=True) as session:
        on_a = ray.get(where.options(resources={"node_a": 1}).remote("on-a"))
        on_b = ray.get(where.options(resources={"node_b": 1}).remote("on-b"))
        hopped = ray.get(hop.options(resources={"node_a": 1}).remote("hop"))
        actor = NodeActor.options(resources={"node_b": 1}).remote()
        actor_node = ray.get(actor.work.remote("actor-on-b"))
    assert on_a["node"] != on_b["node"]
    assert hopped["node"] == on_b["node"] == actor_node
    assert {on_a["name"], on_b["name"], hopped["name"]} == {"cluster-driver"}
    assert hopped["depth"] == len(session.uid_chain) + 2
    traces = session.llm_calls
    assert sorted(t.name for t in traces) == ["actor-on-b", "hop", "hop->b", "on-a", "on-b"]
    assert all(t.metadata["cluster"] is True for t in traces)


def test_traces_from_both_nodes_reach_the_driver_session_sqlite(cluster: Any, tmp_path: Path) -> None:
    _exercise(sql.SqliteSessionStorage(str(tmp_path / "cluster.db")))


@pytest.mark.postgres
@pytest.mark.skipif(POSTGRES_URL is None, reason="set SESSION_TEST_POSTGRES_URL to run against PostgreSQL")
def test_traces_from_both_nodes_reach_the_driver_session_postgres(cluster: Any) -> None:
    pytest.importorskip("psycopg")
    _exercise(sql.SqlSessionStorage(POSTGRES_URL))
