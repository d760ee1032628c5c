"""The SessionStorage protocol, against a real SQLite file and (when configured) a real PostgreSQL schema."""

from __future__ import annotations

import asyncio
import importlib.util
import math
import os
import pickle
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from session_core import (
    ContextStore,
    ContextVarSession,
    InMemoryStorage,
    SessionStorage,
    StorageError,
    Trace,
    open_storage,
    record_trace,
)
from session_storage_sql import SqliteSessionStorage, SqlSessionStorage, codec
from session_storage_sql.codec import decode_traces, encode_trace


def ids(traces: list[Trace]) -> list[str]:
    return [t.trace_id for t in traces]


def test_satisfies_the_core_protocols(storage: Any) -> None:
    assert isinstance(storage, SessionStorage)
    assert isinstance(storage, ContextStore)
    assert storage.url is not None and "://" in storage.url


def test_traces_visible_from_every_uid_of_the_chain_oldest_first(storage: Any) -> None:
    t1 = Trace(name="first", timestamp=100.0, input={"q": "hi"}, tokens={"prompt": 3, "completion": 5, "total": 8})
    t2 = Trace(name="second", timestamp=50.0, output=["a", 1, None], metadata={"k": 1})
    storage.add_trace(["root", "child"], "child-name", t1)
    storage.add_trace(["root", "child", "leaf"], "leaf-name", t2)
    assert ids(storage.get_traces("root")) == [t2.trace_id, t1.trace_id]  # by timestamp, not insertion
    assert ids(storage.get_traces("child")) == [t2.trace_id, t1.trace_id]
    assert ids(storage.get_traces("leaf")) == [t2.trace_id]
    assert storage.get_traces("nobody") == []
    back = storage.get_traces("leaf")[0]
    assert back == t2
    assert back.session_name == "leaf-name"  # filled in on add, like InMemoryStorage
    assert storage.get_traces("root")[1] == t1


def test_equal_timestamps_keep_the_order_added(storage: Any) -> None:
    traces = [Trace(name=str(i), timestamp=1.0) for i in range(30)]
    for trace in traces[:10]:
        storage.add_trace(["r"], "n", trace)
    storage.add_traces(["r"], "n", traces[10:])
    assert [t.name for t in storage.get_traces("r")] == [str(i) for i in range(30)]


def test_a_nan_timestamp_costs_no_trace(storage: Any, caplog: pytest.LogCaptureFixture) -> None:
    """SQLite stores a NaN REAL as NULL, so a trace whose timestamp was NaN failed its NOT NULL constraint and was
    lost (StorageError). It is kept, with its timestamp as recorded, ordered by when it was stored (a warning
    says so); infinities are ordinary sortable values."""
    storage.add_trace(["r"], "n", Trace(name="early", timestamp=1.0))
    storage.add_trace(["r"], "n", Trace(name="nan", timestamp=float("nan")))
    storage.add_traces(["r"], "n", [Trace(name="inf", timestamp=float("inf")), Trace(name="-inf", timestamp=-math.inf)])
    got = storage.get_traces("r")
    assert [t.name for t in got] == ["-inf", "early", "nan", "inf"]
    assert math.isnan(got[2].timestamp)
    assert "Trace.timestamp is NaN" in caplog.text
    storage.add_trace(["r"], "n", got[2])  # idempotent still
    assert len(storage.get_traces("r")) == 4


def test_session_name_filter(storage: Any) -> None:
    storage.add_trace(["r", "a"], "alpha", Trace(name="x"))
    storage.add_trace(["r", "b"], "beta", Trace(name="y"))
    storage.add_trace(["r", "b"], "beta", Trace(name="z", session_name="explicit"))
    assert [t.name for t in storage.get_traces("r", "beta")] == ["y"]
    assert [t.name for t in storage.get_traces("r", "explicit")] == ["z"]
    assert [t.name for t in storage.get_traces("r")] == ["x", "y", "z"]


@pytest.mark.parametrize("batch_size", [1, 2, 3, 7, 1000])
def test_iter_traces_reads_what_get_traces_reads_a_batch_at_a_time(storage: Any, batch_size: int) -> None:
    """Equal timestamps, the same trace under two chains, a name filter: the same traces in the same order,
    in one read per batch (and one more that finds the last batch was the end)."""
    from sqlalchemy import event

    storage.add_traces(["r", "a"], "alpha", [Trace(name=f"a{i}", timestamp=float(i // 3)) for i in range(7)])
    storage.add_traces(["r", "b"], "beta", [Trace(name=f"b{i}", timestamp=1.0) for i in range(3)])
    shared = storage.get_traces("a")[4]
    storage.add_trace(["r", "b"], "beta", shared)  # linked under b too, with its stored position
    reads: list[str] = []

    def note(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        reads.append(statement)

    event.listen(storage.engine, "before_cursor_execute", note)
    try:
        for uid, name in [("r", None), ("a", None), ("b", None), ("r", "beta"), ("r", "alpha")]:
            expected = storage.get_traces(uid, name)
            reads.clear()
            assert ids(list(storage.iter_traces(uid, name, batch_size=batch_size))) == ids(expected)
            assert len([sql for sql in reads if "LIMIT" in sql]) == len(expected) // batch_size + 1, (uid, name)
    finally:
        event.remove(storage.engine, "before_cursor_execute", note)


def test_iter_traces_sees_later_traces_once_and_skips_unreadable_rows(storage: Any) -> None:
    from sqlalchemy import text

    storage.add_traces(["r"], "n", [Trace(name=str(i), timestamp=float(i)) for i in range(6)])
    with storage.engine.begin() as conn:  # a row another writer left unreadable, in the first batch
        conn.execute(
            text("UPDATE traces SET data = '{' WHERE trace_id = :id"), {"id": storage.get_traces("r")[1].trace_id}
        )
    seen = []
    for trace in storage.iter_traces("r", batch_size=2):
        seen.append(trace.name)
        if trace.name == "2":  # added meanwhile: one before the position reached, one after
            storage.add_traces(["r"], "n", [Trace(name="early", timestamp=0.5), Trace(name="late", timestamp=9.0)])
    assert seen == ["0", "2", "3", "4", "5", "late"]


def test_rows_another_writer_left_unreadable_are_skipped_whatever_batch_they_share(storage: Any) -> None:
    """Rows that are JSON but no object (``null``, a list) made `get_traces` and `iter_traces` raise TypeError;
    a row holding two objects (``{...},{...}``) was read as two traces when its batch parsed at once (and
    skipped when a bad neighbour made each row parse alone), and two fragments of one object in one batch as
    one trace: each is skipped, in every batch size."""
    from sqlalchemy import text

    storage.add_traces(["r", "a"], "n", [Trace(name=str(i), timestamp=float(i)) for i in range(5)])
    storage.add_traces(["f"], "n", [Trace(name=str(i), timestamp=float(i)) for i in range(4)])
    stored, split = storage.get_traces("r"), storage.get_traces("f")
    rows = [
        (stored[1], "null"),
        (stored[2], "[1]"),
        (stored[3], f"{encode_trace(stored[3])},{encode_trace(stored[3])}"),
        (split[1], '{"trace_id":"frag","name":"frag","timestamp":4.0,"metadata":{"a":[1'),
        (split[2], "2]}}"),
    ]
    with storage.engine.begin() as conn:
        for trace, data in rows:
            conn.execute(text("UPDATE traces SET data = :d WHERE trace_id = :id"), {"d": data, "id": trace.trace_id})
    assert [t.name for t in storage.get_traces("r")] == ["0", "4"]
    assert [t.name for t in storage.get_traces("f")] == ["0", "3"]
    for batch_size in (1, 2, 3, 4, 1000):
        for uid, name, wanted in (("r", None, ["0", "4"]), ("a", "n", ["0", "4"]), ("f", None, ["0", "3"])):
            assert [t.name for t in storage.iter_traces(uid, name, batch_size=batch_size)] == wanted, batch_size


def test_each_iter_traces_batch_reads_its_own_rows_not_the_rest_of_the_session(storage: Any) -> None:
    """A batch is a range of the junction's primary key, read in its order up to the LIMIT: the plan of a
    batch in the middle reads about `batch_size` junction rows. On PostgreSQL, joining traces on trace_id and
    seq made the planner take the join for one row and sort the whole rest of the session for every batch
    (a read of all of it per batch: quadratic in the session's size)."""
    import json

    from sqlalchemy import event

    storage.add_traces(["r", "a"], "n", [Trace(name=str(i), timestamp=float(i // 2)) for i in range(4000)])
    storage.add_traces(["q"], "n", [Trace(name=str(i), timestamp=float(i)) for i in range(2000)])
    with storage.engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
    pages: list[tuple[str, Any]] = []

    def note(conn: Any, cursor: Any, statement: str, parameters: Any, *rest: Any) -> None:
        if "LIMIT" in statement:
            pages.append((statement, parameters))

    event.listen(storage.engine, "before_cursor_execute", note)
    try:
        for name in (None, "n"):
            pages.clear()
            assert len(list(storage.iter_traces("r", name, batch_size=100))) == 4000
            statement, parameters = pages[len(pages) // 2]
            with storage.engine.connect() as conn:
                if storage.dialect == "sqlite":
                    plan = " / ".join(
                        row[-1] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
                    )
                    assert "SEARCH trace_sessions USING PRIMARY KEY" in plan and "TEMP B-TREE" not in plan, plan
                    continue
                explained = conn.exec_driver_sql(f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}", parameters).scalar()
            document = json.loads(explained) if isinstance(explained, str) else explained
            nodes, junction_rows = [document[0]["Plan"]], 0
            while nodes:
                node = nodes.pop()
                nodes.extend(node.get("Plans", []))
                if node.get("Relation Name") == "trace_sessions":
                    junction_rows += node["Actual Rows"] * node["Actual Loops"]
            assert 100 <= junction_rows <= 101, (name, junction_rows)
    finally:
        event.remove(storage.engine, "before_cursor_execute", note)


def test_iter_traces_passes_over_links_that_outlived_their_trace(storage: Any) -> None:
    """A trace linked under a second chain and cleared from the first leaves that link behind; its trace_id
    added again (a new seq) is no trace of that session: `iter_traces` reads what `get_traces` does, in any
    batch size, a stale link ending a batch included."""
    traces = [Trace(name=str(i), timestamp=float(i)) for i in range(6)]
    storage.add_traces(["r", "a"], "n", traces)
    storage.add_traces(["s"], "n", traces)
    storage.clear("r")
    storage.add_traces(["t"], "n", traces[::2])
    storage.add_traces(["s"], "n", [Trace(name="late", timestamp=9.0)])
    assert [t.name for t in storage.get_traces("s")] == ["late"]
    for batch_size in (1, 2, 3, 4, 1000):
        assert [t.name for t in storage.iter_traces("s", batch_size=batch_size)] == ["late"]
        assert [t.name for t in storage.iter_traces("s", "n", batch_size=batch_size)] == ["late"]


@pytest.mark.parametrize("batch_size", [2**63 - 1, 2**63, 10**30])
def test_iter_traces_with_a_batch_size_beyond_64_bits_reads_everything_at_once(storage: Any, batch_size: int) -> None:
    """Any int of at least 1 is a batch size: one beyond what a LIMIT takes (SQLite raised OverflowError,
    PostgreSQL "bigint out of range") reads the whole session in one batch."""
    storage.add_traces(["r", "a"], "n", [Trace(name=str(i), timestamp=float(i % 3)) for i in range(5)])
    expected = ids(storage.get_traces("r"))
    assert ids(list(storage.iter_traces("r", batch_size=batch_size))) == expected
    assert ids(list(storage.iter_traces("a", "n", batch_size=batch_size))) == expected


@pytest.mark.parametrize(
    ("batch_size", "error"), [(0, ValueError), (-1, ValueError), (True, TypeError), (2.0, TypeError), ("9", TypeError)]
)
def test_iter_traces_checks_batch_size_when_called(storage: Any, batch_size: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="batch_size"):
        storage.iter_traces("r", batch_size=batch_size)  # not at the first next()


def test_iter_traces_of_unknown_or_unstorable_uids_is_empty(storage: Any) -> None:
    storage.add_trace(["r"], "n", Trace(name="x"))
    assert list(storage.iter_traces("nobody")) == []
    assert list(storage.iter_traces("nul\x00uid")) == [] and list(storage.iter_traces("\ud800")) == []
    with pytest.raises(TypeError):
        storage.iter_traces(b"r")


def test_idempotent_by_trace_id(storage: Any) -> None:
    trace = Trace(name="once")
    for _ in range(3):  # a retried write, or the same trace recorded twice
        storage.add_trace(["r", "c"], "n", trace)
    batch = [Trace(name=str(i)) for i in range(20)]
    storage.add_traces(["r", "c"], "n", batch)
    storage.add_traces(["r", "c"], "n", batch + batch[:5])  # the whole batch again, with duplicates inside
    assert len(storage.get_traces("r")) == 21
    assert len(storage.get_traces("c")) == 21
    assert len(storage) == 21


def test_large_batches_keep_order_idempotence_links_and_odd_text(storage: Any) -> None:
    """Batches of hundreds go through PostgreSQL's COPY path: the same results as row by row."""
    from session_storage_sql.storage import _COPY_MIN

    size = _COPY_MIN + 100
    odd = 'tab\tnew\nline\\back \u00fcn\u00ef\u2603 "q" ,;='
    batch = [Trace(name=f"{i} {odd}", timestamp=1.0, metadata={"i": i, "s": odd}) for i in range(size)]
    storage.add_traces(["r", "c"], f"name {odd}", batch[:100])  # below the threshold: row by row
    storage.add_traces(["r", "c"], f"name {odd}", batch + batch[:50])  # the rest, duplicates inside
    storage.add_traces(["other", "x"], "two", [*batch[-_COPY_MIN:], Trace(name="new", timestamp=0.5)])
    back = storage.get_traces("r")
    assert [t.trace_id for t in back] == [t.trace_id for t in batch]  # equal timestamps: the order added
    assert back[7].name == f"7 {odd}" and back[7].metadata == {"i": 7, "s": odd}
    assert back[7].session_name == f"name {odd}"
    assert len(storage.get_traces("c")) == size
    linked = storage.get_traces("x")  # re-added traces linked under the new chain with their stored values
    assert [t.name for t in linked] == ["new", *[t.name for t in batch[-_COPY_MIN:]]]
    assert all(t.session_name == f"name {odd}" for t in linked[1:])  # the first stored version wins
    assert len(storage) == size + 1


def test_readding_under_another_chain_links_without_duplicating(storage: Any) -> None:
    trace = Trace(name="shared", timestamp=5.0)
    storage.add_trace(["r1"], "one", trace)
    storage.add_trace(["r2", "x"], "two", Trace(trace_id=trace.trace_id, name="ignored", timestamp=9.0))
    storage.add_trace(["r2", "x"], "two", trace)
    assert ids(storage.get_traces("r1")) == [trace.trace_id]
    assert ids(storage.get_traces("r2")) == [trace.trace_id]  # linked once, the first stored version wins
    assert storage.get_traces("x")[0].name == "shared"


def test_clear_removes_traces_from_every_session_that_saw_them(storage: Any) -> None:
    keep = Trace(name="keep")
    storage.add_trace(["r"], "root", keep)
    storage.add_trace(["r", "c"], "child", Trace(name="gone"))
    storage.add_trace(["r", "c", "g"], "grandchild", Trace(name="gone too"))
    storage.clear("c")
    assert [t.name for t in storage.get_traces("r")] == ["keep"]
    assert storage.get_traces("c") == [] and storage.get_traces("g") == []
    storage.add_trace(["r", "c"], "child", Trace(name="a"))
    storage.add_trace(["r", "c"], "other", Trace(name="b"))
    storage.clear("r", "other")
    assert [t.name for t in storage.get_traces("r")] == ["keep", "a"]
    assert len(storage) == 2


def test_clear_of_a_trace_added_under_several_chains_leaves_nothing_visible(storage: Any) -> None:
    """A trace re-added under a second chain is linked there too. Cleared from the first chain, it is gone from
    both (lists and counts), and adding the same trace_id again later shows it only where it was added then."""
    shared = Trace(name="shared", trace_id="t-shared")
    storage.add_trace(["a", "a1"], "first", shared)
    storage.add_trace(["b", "b1"], "second", shared)
    assert ids(storage.get_traces("b1")) == ["t-shared"]
    storage.clear("a1")
    assert storage.get_traces("a") == [] and storage.get_traces("b") == [] and storage.get_traces("b1") == []
    node = storage.session_tree("b")
    assert node is not None and node.trace_count == 0 and node.children[0].trace_count == 0
    storage.add_trace(["c"], "third", shared)
    assert ids(storage.get_traces("c")) == ["t-shared"]
    assert storage.get_traces("b") == [] and storage.get_traces("a") == []
    node = storage.session_tree("b")
    assert node is not None and node.trace_count == 0


def test_same_behaviour_as_in_memory_storage(storage: Any) -> None:
    """The SQL storage and the core's InMemoryStorage agree on one scripted sequence of operations."""
    memory = InMemoryStorage()
    script: list[tuple[str, Any]] = []
    for i in range(12):
        chain = ["root", f"c{i % 3}"] + ([f"g{i % 2}"] if i % 4 == 0 else [])
        timestamp = float(i if i % 5 else 20 - i)  # some recorded late with an earlier time, some tied
        script.append(("add", (chain, f"n{i % 2}", Trace(name=f"t{i}", timestamp=timestamp))))
    script.append(("clear", ("c1", None)))
    script.append(("clear", ("root", "n0")))
    for op, args in script:
        for target in (memory, storage):
            if op == "add":
                chain, name, trace = args
                target.add_trace(chain, name, Trace.from_dict(trace.to_dict()))
            else:
                target.clear(*args)
    for uid in ("root", "c0", "c1", "c2", "g0", "g1"):
        for name in (None, "n0", "n1"):
            assert ids(storage.get_traces(uid, name)) == ids(memory.get_traces(uid, name)), (uid, name)


def test_sessions_record_into_sql_and_see_descendants(storage: Any) -> None:
    with ContextVarSession("outer", storage=storage, run=1) as outer:
        record_trace(name="outer call")
        with ContextVarSession("inner", arm="b") as inner:
            record_trace(name="inner call")
    assert [t.name for t in outer.llm_calls] == ["outer call", "inner call"]
    assert [t.name for t in inner.llm_calls] == ["inner call"]
    assert inner.llm_calls[0].metadata == {"run": 1, "arm": "b"}
    assert len(outer) == 2
    outer.clear_calls()
    assert outer.llm_calls == [] and inner.llm_calls == []


def test_storage_url_travels_in_contexts_and_reopens_the_same_data(storage: Any) -> None:
    with ContextVarSession("s", storage=storage) as s:
        record_trace(name="here")
        ctx = s.to_context()
    assert ctx["storage_url"] == storage.url
    other = open_storage(ctx["storage_url"])
    assert isinstance(other, SqlSessionStorage)
    assert [t.name for t in other.get_traces(s.uid)] == ["here"]
    assert open_storage(ctx["storage_url"]) is other  # one storage per process and URL


def test_pickles_by_url(storage: Any) -> None:
    storage.add_trace(["p"], "n", Trace(name="pickled"))
    clone = pickle.loads(pickle.dumps(storage))
    try:
        assert clone.url == storage.url
        assert [t.name for t in clone.get_traces("p")] == ["pickled"]
    finally:
        clone.close()


@pytest.mark.parametrize("make", ["SqliteSessionStorage", "SqlSessionStorage"])
def test_pickles_with_its_retry_policy_and_busy_timeout(tmp_path: Path, make: str) -> None:
    """A pickled copy kept only the URL: it waited 5 s per attempt and retried 8 times where the original was told
    otherwise."""
    import time

    from session_storage_sql import RetryPolicy

    path = tmp_path / "opts.db"
    policy = RetryPolicy(attempts=2, initial_delay=0.01, max_delay=0.01)
    if make == "SqliteSessionStorage":
        original: Any = SqliteSessionStorage(path, retry=policy, busy_timeout=0.1)
    else:
        original = SqlSessionStorage(f"sqlite:///{path}", retry=policy, busy_timeout=0.1)
    original.add_trace(["p"], "n", Trace(name="before"))
    clone = pickle.loads(pickle.dumps(original))
    try:
        assert type(clone) is type(original) and clone.url == original.url
        clone.add_trace(["p"], "n", Trace(name="by the copy"))
        assert [t.name for t in clone.get_traces("p")] == ["before", "by the copy"]
        with clone.engine.connect() as conn, conn.begin():
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 100  # ms
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # hold the write lock: the copy gives up as the original would
        try:
            started = time.monotonic()
            with pytest.raises(StorageError, match="after 2 attempts"):
                clone.add_trace(["p"], "n", Trace(name="locked out"))
            assert time.monotonic() - started < 3
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
    finally:
        clone.close()
        original.close()
    # At the defaults, the pickle is what it always was: the class and the URL or path, which any version reads.
    plain = SqliteSessionStorage(path)
    assert pickle.loads(pickle.dumps(plain)).db_path == str(path)
    assert b"_unpickle" not in pickle.dumps(plain) and b"_unpickle" in pickle.dumps(original)


def test_pickling_a_retry_policy_pickle_cannot_take_keeps_the_storage_picklable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from session_storage_sql import RetryPolicy

    class LocalPolicy(RetryPolicy):  # defined in a function: pickle cannot find it by name
        pass

    storage = SqliteSessionStorage(tmp_path / "local.db", retry=LocalPolicy(attempts=3), busy_timeout=0.5)
    with caplog.at_level("WARNING", logger="session_storage_sql"):
        clone = pickle.loads(pickle.dumps(storage))
    assert "without its retry policy" in caplog.text
    with clone.engine.connect() as conn, conn.begin():
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 500  # the rest is carried
    clone.add_trace(["l"], "n", Trace(name="still works"))
    assert [t.name for t in storage.get_traces("l")] == ["still works"]
    clone.close()
    storage.close()


async def test_async_api(storage: Any) -> None:
    trace = Trace(name="async")
    await storage.async_add_trace(["a", "b"], "n", trace)
    await storage.async_add_traces(["a", "b"], "n", [Trace(name=f"bulk{i}") for i in range(5)])
    got = await storage.async_get_traces("a")
    assert [t.name for t in got] == ["async", *[f"bulk{i}" for i in range(5)]]
    assert ids(await storage.async_get_traces("b", "n")) == ids(got)


async def test_async_iter_traces_reads_each_batch_in_a_worker_thread(storage: Any) -> None:
    import threading

    from sqlalchemy import event

    storage.add_traces(["a", "b"], "n", [Trace(name=f"t{i}", timestamp=float(i // 2)) for i in range(7)])
    reads: list[int] = []

    def note(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        if "LIMIT" in statement:
            reads.append(threading.get_ident())

    event.listen(storage.engine, "before_cursor_execute", note)
    try:
        got = [trace async for trace in storage.async_iter_traces("a", batch_size=3)]
    finally:
        event.remove(storage.engine, "before_cursor_execute", note)
    assert ids(got) == ids(storage.get_traces("a"))
    assert len(reads) == 3 and threading.get_ident() not in reads  # 3 + 3 + 1, none on the loop's thread
    assert [t.name async for t in storage.async_iter_traces("b", "n", batch_size=7)] == [t.name for t in got]
    assert [t async for t in storage.async_iter_traces("nobody")] == []
    with pytest.raises(ValueError, match="batch_size"):
        storage.async_iter_traces("a", batch_size=0)  # checked when called, not at the first iteration


async def test_async_calls_never_block_the_event_loop(tmp_path: Path) -> None:
    from session_storage_sql import RetryPolicy

    path = tmp_path / "locked.db"
    storage = SqliteSessionStorage(path, busy_timeout=3.0, retry=RetryPolicy(attempts=1))
    storage.add_trace(["r"], "n", Trace(name="schema ready"))
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # hold the write lock: the add below must wait for it
    task = asyncio.create_task(storage.async_add_trace(["r"], "n", Trace(name="waited")))
    ticks = 0
    for _ in range(10):
        await asyncio.sleep(0.01)
        ticks += 1
    assert not task.done()  # still waiting for the lock, in a worker thread ...
    assert ticks == 10  # ... while the loop kept running (a blocking call would have frozen it)
    blocker.execute("ROLLBACK")
    blocker.close()
    await task
    assert [t.name for t in storage.get_traces("r")] == ["schema ready", "waited"]


def test_many_threads_share_one_storage(storage: Any) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def work(i: int) -> None:
        for j in range(20):
            storage.add_trace(["root", f"t{i}"], f"thread{i}", Trace(trace_id=f"{i}-{j}", name="x"))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, range(8)))
    assert len(storage.get_traces("root")) == 160
    assert len(storage.get_traces("t3")) == 20


def test_in_memory_sqlite_is_shared_by_threads_but_not_addressable() -> None:
    from concurrent.futures import ThreadPoolExecutor

    storage = SqliteSessionStorage(":memory:")
    assert storage.url is None
    assert "in_memory=True" in repr(SqlSessionStorage("sqlite://"))

    def work(i: int) -> None:
        storage.add_trace(["m"], "n", Trace(name=str(i)))

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(work, range(40)))
    assert len(storage.get_traces("m")) == 40
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(storage)


_CLOSE_WHILE_IN_USE = """
import threading
from session_core import Trace
from session_storage_sql import SqlSessionStorage

storage = SqlSessionStorage("sqlite://")
stop = threading.Event()
errors = []


def write(i):
    try:
        for n in range(300):
            storage.add_trace(["root", f"w{i}"], "w", Trace(name=f"{i}-{n}"))
            storage.get_traces("root")
    except Exception as exc:
        errors.append(repr(exc))


def close():
    while not stop.is_set():
        storage.close()


closer = threading.Thread(target=close)
writers = [threading.Thread(target=write, args=(i,)) for i in range(4)]
closer.start()
for w in writers:
    w.start()
for w in writers:
    w.join()
stop.set()
closer.join()
print("errors:", errors[:3])
"""


def test_closing_an_in_memory_storage_while_threads_use_it(tmp_path: Path) -> None:
    """`close()` from one thread while others write and read an in-memory database: it closed the one shared
    connection under a running statement (MemoryError, "Cannot operate on a closed database", or a segfault of
    the interpreter, hence a child process here). It now waits for the statement in progress."""
    done = subprocess.run(
        [sys.executable, "-c", _CLOSE_WHILE_IN_USE], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "errors: []" and "Traceback" not in done.stderr, done.stderr[-2000:]


def test_sqlite_default_path_is_sessions_db_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    default = SqliteSessionStorage()
    assert default.db_path == str(tmp_path / "sessions.db")
    from_env_default = SqlSessionStorage()
    assert from_env_default.url == f"sqlite:///{tmp_path / 'sessions.db'}"
    default.add_trace(["d"], "n", Trace(name="on disk"))
    assert (tmp_path / "sessions.db").exists()
    assert [t.name for t in from_env_default.get_traces("d")] == ["on disk"]
    monkeypatch.setenv("SESSION_STORAGE_URL", f"sqlite:///{tmp_path / 'from-env.db'}")
    assert SqlSessionStorage().url == f"sqlite:///{tmp_path / 'from-env.db'}"
    assert SqliteSessionStorage().db_path == str(tmp_path / "sessions.db")  # the shorthand ignores the env


def test_relative_sqlite_urls_become_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    storage = SqlSessionStorage("sqlite:///rel/traces.db")
    assert storage.url == f"sqlite:///{tmp_path / 'rel' / 'traces.db'}"
    assert repr(SqliteSessionStorage("x.db")) == f"SqliteSessionStorage(db_path={str(tmp_path / 'x.db')!r})"


def test_a_relative_sqlite_uri_becomes_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``sqlite:///file:rel.db?uri=true`` is relative to the working directory like ``sqlite:///rel.db``: its
    ``storage.url`` kept it relative, so a process elsewhere (a worker, a service) wrote to another file."""
    (tmp_path / "a b%").mkdir()
    monkeypatch.chdir(tmp_path / "a b%")
    storage = SqlSessionStorage("sqlite:///file:rel.db?uri=true")
    storage.add_trace(["r"], "n", Trace(name="here"))
    assert storage.url is not None and storage.url.startswith("sqlite:///file:/")
    monkeypatch.chdir(tmp_path)
    elsewhere = SqlSessionStorage(storage.url)
    assert [t.name for t in elsewhere.get_traces("r")] == ["here"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a b%"]
    elsewhere.close()
    storage.close()


def test_default_session_storage_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'env.db'}"
    monkeypatch.setenv("SESSION_STORAGE_URL", url)
    with ContextVarSession("from env") as s:
        record_trace(name="stored via env")
    assert isinstance(s.storage, SqlSessionStorage)
    assert s.storage.url == url
    assert [t.name for t in SqliteSessionStorage(tmp_path / "env.db").get_traces(s.uid)] == ["stored via env"]


def test_unserializable_values_are_converted_not_lost(storage: Any) -> None:
    import dataclasses
    import datetime

    @dataclasses.dataclass
    class Message:
        role: str
        content: str

    class Opaque:
        def __repr__(self) -> str:
            return "<opaque>"

    trace = Trace(
        name="odd values",
        input=[Message("user", "hi")],
        output={"when": datetime.date(2024, 5, 1), "tags": {"b"}, "raw": b"bytes", "obj": Opaque()},
    )
    storage.add_trace(["u"], "n", trace)
    (back,) = storage.get_traces("u")
    assert back.input == [{"role": "user", "content": "hi"}]
    assert back.output == {"when": "2024-05-01", "tags": ["b"], "raw": "bytes", "obj": "<opaque>"}


# -- hypothesis: any Trace of JSON values survives the database unchanged -----------------------------------
_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20)
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False, allow_infinity=False) | _text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=12,
)
_traces = st.builds(
    Trace,
    name=_text,
    session_name=st.none() | _text,
    input=_json,
    output=_json,
    model=st.none() | _text,
    latency_ms=st.none() | st.floats(0, 1e6),
    tokens=_json,
    metadata=st.dictionaries(_text, _json, max_size=4),
    timestamp=st.floats(0, 4e9),
    parent_trace_id=st.none() | _text,
    cost=st.none() | st.floats(0, 1e3),
    environment=st.none() | _text,
    tools=_json,
    contexts=_json,
    tags=st.none() | st.lists(_text, max_size=3),
)


@pytest.fixture(scope="module")
def hypothesis_storage(tmp_path_factory: pytest.TempPathFactory) -> SqliteSessionStorage:
    return SqliteSessionStorage(tmp_path_factory.mktemp("hyp") / "roundtrip.db")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(trace=_traces)
def test_any_trace_round_trips(hypothesis_storage: SqliteSessionStorage, trace: Trace) -> None:
    trace.trace_id = uuid.uuid4().hex  # examples replayed while shrinking must not collide
    uid = uuid.uuid4().hex
    expected = Trace.from_dict(trace.to_dict())
    if expected.session_name is None:
        expected.session_name = "hyp"
    hypothesis_storage.add_trace(["hyp-root", uid], "hyp", trace)
    (back,) = hypothesis_storage.get_traces(uid)
    assert back == expected


# -- reading rows: msgspec (the `fast` extra) or the standard library, the same traces either way ----------------
@pytest.fixture(params=["msgspec", "stdlib"])
def parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Reads run with msgspec's parser (where the `fast` extra is installed) and with the standard library's."""
    if request.param == "msgspec":
        pytest.importorskip("msgspec", reason="the `fast` extra (msgspec) is not installed in this variant")
    else:
        monkeypatch.setattr(codec, "_fast_loads", None)
    return str(request.param)


def test_the_fast_extra_is_used_exactly_where_it_is_installed() -> None:
    installed = importlib.util.find_spec("msgspec") is not None
    variant = os.environ.get("SESSION_TEST_VARIANT")
    if variant is not None:
        assert installed is (variant == "all")  # nox's `all` variant installs every extra, `bare` none
    assert (codec._fast_loads is not None) is installed


def test_rows_another_writer_left_unreadable_are_skipped_with_an_error(
    storage: Any, parser: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A row that is not JSON, or nests deeper than a parser follows (RecursionError used to escape
    get_traces), costs that row alone; a row holding NaN, which msgspec refuses, is read as json.loads reads it."""
    from sqlalchemy import text

    storage.add_traces(["other"], "n", [Trace(name=n, timestamp=float(i)) for i, n in enumerate("abcd")])
    _, b, c, d = storage.get_traces("other")
    nan_row = f'{{"trace_id":"{d.trace_id}","name":"nan","timestamp":3.0,"output":[NaN,-Infinity]}}'
    deep = "[" * 20_000 + "]" * 20_000
    with storage.engine.begin() as conn:
        for trace_id, data in [(b.trace_id, "{not json"), (c.trace_id, deep), (d.trace_id, nan_row)]:
            conn.execute(text("UPDATE traces SET data = :data WHERE trace_id = :id"), {"data": data, "id": trace_id})
    with caplog.at_level("ERROR", logger="session_storage_sql"):
        got = storage.get_traces("other")
    assert [t.name for t in got] == ["a", "nan"]
    assert math.isnan(got[1].output[0]) and got[1].output[1] == -math.inf
    skipped = [r.getMessage() for r in caplog.records if "not valid JSON" in r.getMessage()]
    assert len(skipped) == 2 and "{not json" in skipped[0] and "[[[" in skipped[1], skipped


_awkward = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()  # any size: past 64 bits a parser may make them floats, which would lose digits
    | st.floats()  # NaN and the infinities included
    | st.text(max_size=8),  # lone surrogates included
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(values=st.lists(_awkward, min_size=1, max_size=5))
def test_msgspec_reads_every_stored_trace_as_the_standard_library_does(values: list[Any]) -> None:
    pytest.importorskip("msgspec", reason="the `fast` extra (msgspec) is not installed in this variant")
    texts = [encode_trace(Trace(trace_id=f"t{i}", name="n", timestamp=1.5, output=v)) for i, v in enumerate(values)]
    fast = decode_traces(texts)
    saved = codec._fast_loads
    codec._fast_loads = None
    try:
        plain = decode_traces(texts)
    finally:
        codec._fast_loads = saved
    assert codec._fast_loads is not None
    assert repr([t.to_dict() for t in fast]) == repr([t.to_dict() for t in plain])  # repr: NaN != NaN


def test_read_traces_are_ordinary_independent_traces(storage: Any) -> None:
    """Traces built straight from stored rows equal `Trace(**row)`: same fields and instance dict, fresh
    mutable defaults, and the garbage collector as it was before the read."""
    import gc

    storage.add_traces(["plain"], "n", [Trace(name="a", timestamp=1.0), Trace(name="b", timestamp=2.0)])
    was_enabled = gc.isenabled()
    first, second = storage.get_traces("plain")
    assert gc.isenabled() is was_enabled
    assert first.__dict__ == Trace(**{**first.to_dict()}).__dict__
    assert list(first.__dict__) == [f for f in Trace.__dataclass_fields__]  # field order, as __init__ sets it
    first.metadata["k"] = 1
    assert second.metadata == {}  # each read trace has its own metadata dict
    first.name = "changed"
    assert storage.get_traces("plain")[0].name == "a"

    gc.disable()
    try:
        assert len(storage.get_traces("plain")) == 2
        assert not gc.isenabled()  # a read never turns on a collector its caller turned off
    finally:
        if was_enabled:
            gc.enable()


def test_keys_json_cannot_have_and_cycles_are_converted_not_lost(storage: Any) -> None:
    """A dict key JSON has no form for (a tuple, an enum, any object) or a self-referencing value made the encoder
    raise, and the trace was lost with a TypeError / ValueError; it is stored with those keys as text instead."""
    looped: list[Any] = ["start"]
    looped.append(looped)
    trace = Trace(name="odd keys", input={("user", 1): "hi", 2: "two"}, output=looped)
    storage.add_trace(["k"], "n", trace)
    with ContextVarSession("keyed", storage=storage, plain=1) as s:
        s.metadata[("arm", "b")] = True  # metadata changed in the session: its row and its traces carry it
        record_trace(name="in a session")
    (back,) = storage.get_traces("k")
    assert back.input == {"('user', 1)": "hi", "2": "two"}
    assert back.output[0] == "start" and isinstance(back.output[1], list)
    (recorded,) = storage.get_traces(s.uid)
    assert recorded.metadata == {"plain": 1, "('arm', 'b')": True}
    assert storage.get_session(s.uid).metadata == {"plain": 1, "('arm', 'b')": True}


def test_an_in_memory_database_used_after_close_says_its_traces_are_gone(caplog: pytest.LogCaptureFixture) -> None:
    storage = SqlSessionStorage("sqlite://")
    storage.add_trace(["root"], "s", Trace(name="before"))
    storage.close()
    with caplog.at_level("WARNING", logger="session_storage_sql"):
        assert storage.get_traces("root") == []  # the database went with its one connection
        storage.add_trace(["root"], "s", Trace(name="after"))
    assert caplog.text.count("used after close()") == 1
    assert [t.name for t in storage.get_traces("root")] == ["after"]
    storage.close()


def test_a_file_database_closed_and_used_again_keeps_its_traces_quietly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    storage = SqlSessionStorage(f"sqlite:///{tmp_path / 'kept.db'}")
    storage.add_trace(["root"], "s", Trace(name="before"))
    storage.close()
    with caplog.at_level("WARNING", logger="session_storage_sql"):
        assert [t.name for t in storage.get_traces("root")] == ["before"]
    assert caplog.text == ""
    storage.close()
