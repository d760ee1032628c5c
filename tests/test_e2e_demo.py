"""The demo scenario end to end, as tests: real servers, real Ray, real storage, real OpenTelemetry.

The demo checks itself (every expected trace in its rollout's root session, no trace of another rollout) and
exits non-zero otherwise; these tests run it as a real process and read the database it wrote.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "docs" / "examples" / "demo.py"


def run_demo(*args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RAY_DISABLE_USAGE_STATS": "1"}
    env.pop("SESSION_STORAGE_URL", None)
    proc = subprocess.run(
        [sys.executable, str(DEMO), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"demo failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


def test_small_demo_every_trace_in_its_rollout(tmp_path: Path) -> None:
    from session_storage_sql import SqliteSessionStorage

    proc = run_demo("--rollouts", "6", "--tools", "2", cwd=tmp_path)
    assert "all traces accounted for" in proc.stdout
    assert "30 traces in 6 rollouts; expected 30" in proc.stdout
    storage = SqliteSessionStorage(tmp_path / "session-demo.db")
    roots = storage.list_sessions(name="rollout", roots_only=True)
    assert sorted(r.metadata["rollout_idx"] for r in roots) == list(range(6))
    for root in roots:
        traces = storage.get_traces(root.uid)
        assert len(traces) == 5
        assert {t.metadata["rollout_idx"] for t in traces} == {root.metadata["rollout_idx"]}  # no cross-talk
        tree = storage.session_tree(root.uid)
        assert tree is not None and tree.trace_count == 5
        assert max(node.session.depth for node in tree.walk()) >= 5  # root → agent → ray task → tool → model


@pytest.fixture
def postgres_database() -> str:
    base = os.environ.get("SESSION_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("SESSION_TEST_POSTGRES_URL is not set: the PostgreSQL end-to-end test needs a server")
    import sqlalchemy as sa

    name = f"e2e_{uuid.uuid4().hex[:10]}"
    admin_url = sa.make_url(base).set(drivername="postgresql+psycopg")
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


@pytest.mark.slow
def test_demo_on_two_node_cluster_with_postgres_and_otel(tmp_path: Path, postgres_database: str) -> None:
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    from session_storage_sql import SqlSessionStorage

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False, "object_store_memory": 80 * 1024**2},
    )
    cluster.add_node(num_cpus=1, object_store_memory=80 * 1024**2)
    try:
        cluster.wait_for_nodes()
        proc = run_demo(
            "--rollouts", "4", "--tools", "3", "--otel",
            "--storage-url", postgres_database, "--ray-address", cluster.address,
            cwd=tmp_path,
        )  # fmt: skip
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert "all traces accounted for" in proc.stdout
    assert "one OTel trace" in proc.stdout  # the demo checked: each rollout's spans share one trace id
    storage = SqlSessionStorage(postgres_database)
    roots = storage.list_sessions(name="rollout", roots_only=True)
    assert len(roots) == 4
    assert all(len(storage.get_traces(r.uid)) == 6 for r in roots)
    nodes = {t.metadata["node"] for r in roots for t in storage.get_traces(r.uid) if "node" in t.metadata}
    assert len(nodes) == 2  # tool traces came from Ray workers on both nodes
