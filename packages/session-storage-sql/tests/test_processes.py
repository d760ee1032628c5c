"""Many processes, killed processes, killed connections, fork and spawn: nothing lost, nothing doubled."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import sql_workers

from session_core import ContextVarSession, Trace, bind_session, record_trace
from session_storage_sql import RetryPolicy, SqliteSessionStorage, SqlSessionStorage

WRITERS = 8
PER_WRITER = 500

pytestmark = pytest.mark.slow


def writer_context() -> Any:
    """Fresh single-threaded processes, started quickly: forked from a server that imported the workers once."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["sql_workers"])
    return ctx


def run_writers(url: str, chain: list[str]) -> list[int]:
    ctx = writer_context()
    with ProcessPoolExecutor(WRITERS, mp_context=ctx) as pool:
        futures = [pool.submit(sql_workers.write_traces, url, chain, w, PER_WRITER) for w in range(WRITERS)]
        return [f.result(timeout=300) for f in futures]


def assert_exactly_all_written(storage: SqlSessionStorage, root: str) -> None:
    traces = storage.get_traces(root)
    expected = {f"w{w:02d}-{i:05d}" for w in range(WRITERS) for i in range(PER_WRITER)}
    got = [t.trace_id for t in traces]
    assert len(got) == WRITERS * PER_WRITER == 4000
    assert set(got) == expected  # every one there, none twice
    assert len(storage) == 4000
    for w in (0, WRITERS - 1):
        mine = storage.get_traces(f"worker{w:02d}")
        assert [t.input for t in mine] == list(range(PER_WRITER))  # each writer's own order kept
    tree = storage.session_tree(root)
    assert tree is not None and tree.trace_count == 4000 and len(tree.children) == WRITERS


def test_eight_processes_write_one_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    assert run_writers(url, ["root"]) == [PER_WRITER] * WRITERS
    storage = SqlSessionStorage(url)
    assert_exactly_all_written(storage, "root")
    with sqlite3.connect(tmp_path / "shared.db") as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


@contextlib.contextmanager
def connections_killed(postgres_url: str) -> Iterator[list[int]]:
    """Terminate every connection of `postgres_url`'s application_name several times a second, for the block."""
    import psycopg

    app = dict(part.split("=", 1) for part in postgres_url.split("?", 1)[1].split("&"))["application_name"]
    plain = os.environ["SESSION_TEST_POSTGRES_URL"].replace("postgresql+psycopg://", "postgresql://", 1)
    stop = threading.Event()
    killed: list[int] = []

    def killer() -> None:
        with psycopg.connect(plain, autocommit=True) as conn:
            while not stop.is_set():
                rows = conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = %s AND pid <> pg_backend_pid()",
                    (app,),
                ).fetchall()
                killed.extend(1 for (ok,) in rows if ok)
                stop.wait(0.15)

    thread = threading.Thread(target=killer)
    thread.start()
    try:
        yield killed
    finally:
        stop.set()
        thread.join()


def test_eight_processes_write_postgresql_while_their_connections_are_killed(postgres_url: str) -> None:
    SqlSessionStorage(postgres_url).get_traces("create the schema first")
    with connections_killed(postgres_url) as killed:
        assert run_writers(postgres_url, ["root"]) == [PER_WRITER] * WRITERS
    assert len(killed) >= 3, "the killer should have terminated writer connections mid-run"
    storage = SqlSessionStorage(postgres_url)
    try:
        assert_exactly_all_written(storage, "root")
        with storage.engine.connect() as conn:
            from sqlalchemy import text

            links = conn.execute(text("SELECT count(*), count(DISTINCT (session_uid, trace_id)) FROM trace_sessions"))
            assert tuple(links.one()) == (8000, 8000)  # root + worker uid per trace, no duplicate link
    finally:
        storage.close()


def test_bulk_writes_through_copy_survive_killed_connections(postgres_url: str) -> None:
    """Batches large enough for PostgreSQL's COPY path, retried after their connection is killed mid-batch."""
    from session_storage_sql.storage import _COPY_MIN

    storage = SqlSessionStorage(postgres_url, retry=RetryPolicy(attempts=50, max_delay=0.2))
    batches = 0
    try:
        with connections_killed(postgres_url) as killed:
            while batches < 40 and not (len(killed) >= 3 and batches >= 10):
                batch = [Trace(trace_id=f"b{batches:03d}-{i:05d}", name="bulk", input=i) for i in range(_COPY_MIN)]
                storage.add_traces(["root", f"batch{batches % 4}"], "bulk", batch)
                batches += 1
        assert len(killed) >= 3, "the killer should have terminated the writer's connections mid-run"
        got = storage.get_traces("root")
        assert len(got) == len({t.trace_id for t in got}) == batches * _COPY_MIN
        with storage.engine.connect() as conn:
            from sqlalchemy import text

            links = conn.execute(text("SELECT count(*), count(DISTINCT (session_uid, trace_id)) FROM trace_sessions"))
            assert tuple(links.one()) == (2 * batches * _COPY_MIN,) * 2  # root + batch uid per trace, no duplicate
    finally:
        storage.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_killed_worker_loses_nothing_it_committed(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = f"sqlite:///{tmp_path / 'killed.db'}" if backend == "sqlite" else request.getfixturevalue("postgres_url")
    progress = tmp_path / "committed.txt"
    progress.touch()
    ctx = multiprocessing.get_context("spawn")
    worker = ctx.Process(target=sql_workers.write_until_killed, args=(url, ["root", "worker"], str(progress)))
    worker.start()
    try:
        deadline = time.monotonic() + 120
        while len(progress.read_text().splitlines()) < 150:
            assert worker.is_alive(), "the worker died on its own"
            assert time.monotonic() < deadline, "the worker never got going"
            time.sleep(0.02)
    finally:
        os.kill(worker.pid, signal.SIGKILL)  # type: ignore[arg-type]
        worker.join()
    assert worker.exitcode == -signal.SIGKILL
    committed = [line for line in progress.read_text().splitlines() if line]
    storage = SqlSessionStorage(url)
    try:
        stored = {t.trace_id for t in storage.get_traces("root")}
        assert set(committed) <= stored  # every add that returned is durable and queryable
        assert len(stored) - len(committed) <= 1  # at most the one committed just before its id was written
        assert {t.trace_id for t in storage.get_traces("worker")} == stored
        storage.add_trace(["root"], "after", Trace(name="the database is still writable"))
        assert len(storage.get_traces("root")) == len(stored) + 1
    finally:
        storage.close()


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_bind_session_continues_in_a_process_pool(method: str, tmp_path: Path) -> None:
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"{method} is not available on this platform")
    storage = SqliteSessionStorage(tmp_path / "pool.db")
    with ContextVarSession("parent", storage=storage, experiment="e1") as parent:
        record_trace(name="in the parent")
        ctx = multiprocessing.get_context(method)
        with ProcessPoolExecutor(2, mp_context=ctx) as pool:
            results = list(pool.map(bind_session(sql_workers.record_call), range(6)))
    assert {r["pid"] for r in results}.isdisjoint({os.getpid()})
    for r in results:
        assert r["uids"][0] == parent.uid and len(r["uids"]) == 2  # a child of the parent session
        assert r["metadata"] == {"experiment": "e1"}
    names = sorted(t.name for t in parent.llm_calls)
    assert names == sorted(["in the parent", *(f"call-{i}" for i in range(6))])
    child_uid = results[0]["uids"][1]
    child = storage.get_session(child_uid)
    assert child is not None and child.parent_uid == parent.uid and child.name == "parent"
    assert child.metadata == {"experiment": "e1"}


def test_a_worker_process_with_an_older_context_leaves_its_parents_row_as_the_parent_wrote_it(
    storage_url: str,
) -> None:
    """The context a worker process gets is a snapshot of its parent; the parent's row keeps what the parent's own
    process wrote since (the worker's snapshot used to overwrite it, for good: the parent never rewrites a row it
    wrote)."""
    storage = SqlSessionStorage(storage_url)
    try:
        with ContextVarSession("parent", storage=storage, step=1) as parent:
            record_trace(name="step 1")
            call = bind_session(sql_workers.record_call)  # the context as it is now: step 1
            parent.metadata["step"] = 2
            record_trace(name="step 2")
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                result = pool.submit(call, 0).result(timeout=120)
            record_trace(name="step 2 again")
        assert result["pid"] != os.getpid() and result["metadata"] == {"step": 1}
        record = storage.get_session(parent.uid)
        assert (record.name, record.metadata) == ("parent", {"step": 2})
        assert storage.get_session(result["uids"][1]).metadata == {"step": 1}
        assert sorted(t.name for t in parent.llm_calls) == ["call-0", "step 1", "step 2", "step 2 again"]
    finally:
        storage.close()


def test_postgresql_session_continues_in_spawned_processes(postgres_url: str) -> None:
    storage = SqlSessionStorage(postgres_url)
    try:
        with ContextVarSession("pg-parent", storage=storage) as parent:
            with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
                results = list(pool.map(bind_session(sql_workers.record_call), range(4)))
        assert sorted(t.name for t in parent.llm_calls) == [f"call-{i}" for i in range(4)]
        assert all(r["uids"][0] == parent.uid for r in results)
        tree = storage.session_tree(parent.uid)
        assert tree is not None and tree.trace_count == 4 and tree.name == "pg-parent"
    finally:
        storage.close()


def backend_pid(storage: SqlSessionStorage) -> Any:
    """The server process behind the pooled connection (PostgreSQL), or the connection object (SQLite)."""
    from sqlalchemy import text

    with storage.engine.connect() as conn:
        if storage.dialect == "postgresql":
            return conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        return id(conn.connection.dbapi_connection)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_storage_inherited_through_fork_opens_its_own_connections(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("fork is not available on this platform")
    url = f"sqlite:///{tmp_path / 'forked.db'}" if backend == "sqlite" else request.getfixturevalue("postgres_url")
    storage: Any = SqlSessionStorage(url, retry=RetryPolicy(attempts=1))
    try:
        storage.add_trace(["parent"], "p", Trace(name="before fork"))  # the pool now holds a live connection
        before = backend_pid(storage)
        child = multiprocessing.get_context("fork").Process(
            target=sql_workers.add_with_inherited, args=(storage, ["parent", "forked-child"], "from-child")
        )
        child.start()
        child.join(60)
        assert child.exitcode == 0
        # The parent's pooled connection survived the child (which must neither use nor close it).
        assert backend_pid(storage) == before
        storage.add_trace(["parent"], "p", Trace(name="after fork"))
        assert [t.name for t in storage.get_traces("parent")] == [
            "before fork",
            "from the forked child",
            "after fork",
        ]
    finally:
        storage.close()
