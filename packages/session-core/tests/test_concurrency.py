"""Threads, asyncio tasks, process pools and multiprocessing with real workers."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import pickle
import threading
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import core_workers
import pytest

from session_core import (
    ContextVarSession,
    InMemoryStorage,
    StorageNotAddressable,
    bind_session,
    get_active_sessions,
    get_current_metadata,
    get_current_session,
    get_current_session_name,
    record_trace,
)


def test_threads_do_not_inherit_unless_bound():
    seen = {}
    with ContextVarSession("main", k=1) as s:
        plain = threading.Thread(target=lambda: seen.__setitem__("plain", get_current_session()))
        plain.start()
        plain.join()

        def work():
            seen["bound"] = (get_current_session_name(), get_current_metadata())
            record_trace(name="in thread")

        bound = threading.Thread(target=bind_session(work))
        bound.start()
        bound.join()
    assert seen["plain"] is None
    assert seen["bound"] == ("main", {"k": 1})
    assert [t.name for t in s.llm_calls] == ["in thread"]  # same InMemoryStorage object


def test_fifty_threads_each_own_session():
    storage = InMemoryStorage()
    barrier = threading.Barrier(50)
    errors = []

    def worker(i):
        with ContextVarSession(f"t{i}", storage=storage, i=i) as s:
            barrier.wait()
            for _ in range(20):
                if get_current_metadata() != {"i": i} or get_current_session() is not s:
                    errors.append(i)
                record_trace(name=f"t{i}")
            return s

    with ThreadPoolExecutor(50) as pool:
        sessions = list(pool.map(worker, range(50)))
    assert errors == []
    for i, s in enumerate(sessions):
        assert {t.name for t in s.llm_calls} == {f"t{i}"} and len(s.llm_calls) == 20


def test_thousand_asyncio_tasks_each_own_session():
    storage = InMemoryStorage()

    async def task(i):
        async with ContextVarSession(f"a{i}", storage=storage, i=i) as s:
            for _ in range(3):
                await asyncio.sleep(0)
                assert get_current_metadata() == {"i": i}
                assert get_current_session() is s
                record_trace(name=f"a{i}")
            return s

    async def main():
        with ContextVarSession("parent", storage=storage) as parent:
            sessions = await asyncio.gather(*(task(i) for i in range(1000)))
        return parent, sessions

    parent, sessions = asyncio.run(main())
    assert all({t.name for t in s.llm_calls} == {f"a{i}"} for i, s in enumerate(sessions))
    assert len(parent.llm_calls) == 3000
    assert all(s.uid_chain[0] == parent.uid for s in sessions)


def test_asyncio_tasks_inherit_current_session():
    async def child():
        return get_current_session_name()

    async def main():
        async with ContextVarSession("inherit"):
            return await asyncio.create_task(child())

    assert asyncio.run(main()) == "inherit"


def test_bind_session_async_function():
    async def work():
        await asyncio.sleep(0)
        record_trace(name="async bound")
        return get_current_session_name()

    with ContextVarSession("abind") as s:
        bound = bind_session(work)
    assert asyncio.run(bound()) == "abind"
    assert [t.name for t in s.llm_calls] == ["async bound"]


def test_bind_outside_session_runs_plain():
    assert bind_session(get_current_session)() is None


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_process_pool_with_addressable_storage(method, jsonl_storage):
    ctx = multiprocessing.get_context(method)
    with ContextVarSession("pool", storage=jsonl_storage, run=3) as s:
        fn = bind_session(core_workers.record_in_child)
        with ProcessPoolExecutor(2, mp_context=ctx) as pool:
            results = list(pool.map(fn, [f"job{i}" for i in range(4)]))
    for r in results:
        assert r["name"] == "pool" and r["metadata"] == {"run": 3}
        assert r["uids"][0] == s.uid and len(r["uids"]) == 2
    assert sorted(t.name for t in s.llm_calls) == ["job0", "job1", "job2", "job3"]


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_multiprocessing_process(method, jsonl_storage):
    ctx = multiprocessing.get_context(method)
    with ContextVarSession("proc", storage=jsonl_storage) as s:
        p = ctx.Process(target=bind_session(core_workers.record_and_exit), args=("from process",))
        p.start()
        p.join(60)
    assert p.exitcode == 0
    assert [t.name for t in s.llm_calls] == ["from process"]


def test_in_memory_storage_refuses_to_cross_process():
    with ContextVarSession("mem", storage=InMemoryStorage()):
        fn = bind_session(core_workers.record_in_child)
    with pytest.raises(StorageNotAddressable, match="lives in this process only"):
        pickle.dumps(fn)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        with pytest.raises(StorageNotAddressable, match="SqliteSessionStorage"):
            pool.submit(fn, "lost?").result(timeout=60)


def test_in_memory_storage_fork_refuses_in_child():
    """A forked child never silently writes to its private copy of an in-memory store."""
    ctx = multiprocessing.get_context("fork")
    with ContextVarSession("mem", storage=InMemoryStorage()) as s:
        p = ctx.Process(target=bind_session(core_workers.record_and_exit), args=("lost",))
        p.start()
        p.join(60)
    assert p.exitcode != 0
    assert s.llm_calls == []


def test_a_forked_worker_starts_outside_any_session(jsonl_storage):
    """A fork-started pool worker is reused for later calls: it must not keep the session it was forked in."""
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(1, mp_context=ctx) as pool:
        with ContextVarSession("forked-in", storage=jsonl_storage) as first:
            bound = pool.submit(bind_session(core_workers.record_in_child), "bound").result(timeout=60)
        with ContextVarSession("later", storage=jsonl_storage) as later:
            unbound = pool.submit(core_workers.record_in_child, "unbound").result(timeout=60)
        outside = pool.submit(core_workers.record_in_child, "outside").result(timeout=60)
    assert bound["name"] == "forked-in" and bound["uids"][:-1] == [first.uid]
    assert unbound["pid"] == outside["pid"] == bound["pid"]  # one worker, reused
    assert (unbound["name"], unbound["uids"], unbound["trace_id"]) == (None, [], None)
    assert (outside["name"], outside["uids"], outside["trace_id"]) == (None, [], None)
    assert [t.name for t in first.llm_calls] == ["bound"]
    assert later.llm_calls == []


def test_a_forked_child_never_writes_to_its_copy_of_an_inherited_in_memory_session():
    """Unbound, a forked child sees no session (as a thread or a spawned child): nothing recorded, nothing lost."""
    ctx = multiprocessing.get_context("fork")
    queue = ctx.SimpleQueue()
    with ContextVarSession("mem", storage=InMemoryStorage()):
        p = ctx.Process(target=core_workers.report_to, args=(queue, "lost?"))
        p.start()
        seen = queue.get()
        p.join(60)
    assert p.exitcode == 0
    assert (seen["name"], seen["trace_id"]) == (None, None)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_a_forked_child_running_on_out_of_its_parents_blocks_leaves_them_quietly():
    """``os.fork()`` inside ``with`` blocks, the child carrying on: no session is active in it, and leaving the
    parent's blocks (inner then outer) raises nothing, while the parent's own stack is untouched."""
    read_end, write_end = os.pipe()
    pid = -1
    try:
        with ContextVarSession("outer") as outer, ContextVarSession("inner"):
            pid = os.fork()
            if pid == 0:
                inside = get_active_sessions()
        if pid == 0:
            os.write(write_end, b"ok" if inside == [] and get_active_sessions() == [] else b"wrong stack")
    except BaseException as exc:
        if pid != 0:
            raise
        os.write(write_end, f"raised {type(exc).__name__}: {exc}".encode())
    finally:
        if pid == 0:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        said = reader.read().decode()
    _, status = os.waitpid(pid, 0)
    assert said == "ok" and os.waitstatus_to_exitcode(status) == 0
    assert get_active_sessions() == [] and outer.uid


def test_a_session_object_pickled_into_a_process_pool_is_the_same_session(jsonl_storage):
    """Sent before its uid was ever read, the session still has one uid on both sides, keeps its uid chain and
    metadata, and the traces recorded in the worker are the parent's."""
    with ContextVarSession("outer", storage=jsonl_storage, run=1) as outer:
        inner = ContextVarSession("inner", step=2)
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            with inner:  # pickled while entered: the copy arrives not entered
                got = pool.submit(core_workers.enter_and_record, inner, "pickled").result(timeout=60)
            again = pool.submit(core_workers.enter_and_record, inner, "again").result(timeout=60)
    assert got["uids"] == again["uids"] == [outer.uid, inner.uid]
    assert got["name"] == "inner" and got["metadata"] == {"run": 1, "step": 2}
    assert sorted(t.name for t in inner.llm_calls) == ["again", "pickled"]
    assert len(outer.llm_calls) == 2


def test_a_session_with_in_memory_storage_refuses_to_be_pickled():
    with ContextVarSession("mem") as s:  # no storage configured: a process-local InMemoryStorage
        with pytest.raises(StorageNotAddressable, match=r"pickling ContextVarSession\(name='mem'.*SqliteSession"):
            pickle.dumps(s)
