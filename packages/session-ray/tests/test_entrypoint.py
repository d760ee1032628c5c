"""`ray_entrypoint` without Ray: plain calls, asyncio, generators, other processes."""

from __future__ import annotations

import asyncio
import functools
import inspect
import multiprocessing
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from session_core import (
    ContextVarSession,
    InMemoryStorage,
    InvalidSessionContext,
    StorageNotAddressable,
    encode_baggage,
    get_active_session_uids,
    get_current_session,
    get_current_session_name,
    record_trace,
    register_backend,
)
from session_ray import CONTEXT_KWARG, LEGACY_CONTEXT_KWARG, ray_entrypoint


@ray_entrypoint
def work(label: str, *, weight: int = 1) -> dict[str, Any]:
    """Record one trace and report the session it ran in."""
    trace = record_trace(name=label, input=weight)
    return {"name": get_current_session_name(), "uids": get_active_session_uids(), "recorded": trace is not None}


@ray_entrypoint
async def async_work(label: str) -> str | None:
    await asyncio.sleep(0)
    record_trace(name=label)
    return get_current_session_name()


@ray_entrypoint
def stream(count: int) -> Iterator[str | None]:
    try:
        for i in range(count):
            record_trace(name=f"item{i}")
            yield get_current_session_name()
    finally:
        record_trace(name="cleanup")  # runs when the consumer stops early too


@ray_entrypoint
async def async_stream(count: int) -> AsyncIterator[str | None]:
    try:
        for i in range(count):
            await asyncio.sleep(0)
            record_trace(name=f"item{i}")
            yield get_current_session_name()
    finally:
        record_trace(name="cleanup")  # runs when the consumer stops early too


def test_without_a_context_the_function_runs_unchanged() -> None:
    assert work("plain") == {"name": None, "uids": [], "recorded": False}
    with ContextVarSession("caller") as session:
        seen = work("inside-caller")  # no context passed: the caller's own session, as for any call
    assert seen["name"] == "caller"
    assert [t.name for t in session.llm_calls] == ["inside-caller"]


def test_wraps_keeps_name_doc_and_adds_the_context_keywords() -> None:
    assert work.__name__ == "work"
    assert work.__doc__ == "Record one trace and report the session it ran in."
    assert inspect.unwrap(work).__name__ == "work"
    params = inspect.signature(work).parameters
    assert list(params) == ["label", "weight", CONTEXT_KWARG, LEGACY_CONTEXT_KWARG]
    assert params[CONTEXT_KWARG].kind is inspect.Parameter.KEYWORD_ONLY
    assert params[CONTEXT_KWARG].default is None


def test_context_is_restored_as_a_child_writing_to_the_same_storage_in_process() -> None:
    storage = InMemoryStorage()
    with ContextVarSession("parent", storage=storage, run=3) as parent:
        ctx = parent.to_context()
        seen = work("child-call", weight=2, _session_ctx=ctx)
        assert get_current_session() is parent  # the child left no trace on the caller's stack
    assert seen["name"] == "parent"
    assert seen["uids"][:-1] == parent.uid_chain
    [trace] = parent.llm_calls
    assert (trace.name, trace.input, trace.metadata["run"]) == ("child-call", 2, 3)


def test_legacy_otel_ctx_keyword_and_an_otel_carrier_are_accepted(storage: Any) -> None:
    with ContextVarSession("legacy", storage=storage) as session:
        ctx = session.to_context()
    assert work("via-otel-ctx", _otel_ctx=ctx)["name"] == "legacy"
    carrier = {
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "baggage": encode_baggage(ctx),
        "storage_url": storage.url,
    }
    seen = work("via-carrier", _otel_ctx=carrier)
    assert seen["name"] == "legacy"
    assert seen["uids"][:-1] == session.uid_chain
    assert sorted(t.name for t in session.llm_calls) == ["via-carrier", "via-otel-ctx"]


def test_decorator_storage_wins_and_may_be_a_url(storage: Any, tmp_path: Path, storage_at: Any) -> None:
    own = InMemoryStorage()
    by_url = storage_at(tmp_path / "by-url.db")

    @ray_entrypoint(storage=own)
    def to_object(label: str) -> None:
        record_trace(name=label)

    @ray_entrypoint(storage=by_url.url)
    def to_url(label: str) -> None:
        record_trace(name=label)

    with ContextVarSession("elsewhere", storage=storage) as session:
        pass
    ctx = session.to_context()
    to_object("object", _session_ctx=ctx)
    to_url("url", _session_ctx=ctx)
    assert [t.name for t in own.get_traces(session.uid)] == ["object"]
    assert [t.name for t in by_url.get_traces(session.uid)] == ["url"]
    assert session.llm_calls == []


def test_a_context_whose_storage_cannot_be_reached_raises_instead_of_losing_traces() -> None:
    with ContextVarSession("memory-only", storage=InMemoryStorage()) as session:
        ctx = session.to_context()
    assert "storage_url" not in ctx
    with pytest.raises(StorageNotAddressable, match="names no storage URL"):
        work("lost", _session_ctx=ctx)  # the session is no longer active here: nowhere to write


def test_malformed_contexts_raise_invalid_session_context() -> None:
    with pytest.raises(InvalidSessionContext, match="uid_chain"):
        work("x", _session_ctx={"v": 1, "name": "n", "uid_chain": "not-a-list", "storage_url": "memory://x"})
    with pytest.raises(InvalidSessionContext, match="expected a dict"):
        work("x", _session_ctx="name=foo")
    with pytest.raises(InvalidSessionContext, match="baggage"):
        work("x", _otel_ctx={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})


def test_a_registered_backend_class_restores_its_own_contexts(storage: Any) -> None:
    class AuditedSession(ContextVarSession):
        backend_name = "audited-test"

    register_backend("audited-test", AuditedSession)
    with ContextVarSession("audited", storage=storage) as session:
        ctx = {**session.to_context(), "backend": "audited-test"}

    @ray_entrypoint
    def kind() -> str:
        return type(get_current_session()).__name__

    assert kind(_session_ctx=ctx) == "AuditedSession"


def test_an_otel_session_context_is_restored_as_an_otel_session(storage: Any) -> None:
    """Through session-core's backend registry: session_ray never imports session_otel."""
    otel = pytest.importorskip("session_otel")
    otel.init_otel_distributed_tracing("session-ray-tests")

    @ray_entrypoint
    def inspect_session() -> tuple[str, str, list[str]]:
        session = get_current_session()
        record_trace(name="in-otel-child")
        return type(session).__name__, session.trace_id, session.uid_chain

    with otel.OTelSession("otel-parent", storage=storage) as parent:
        ctx = parent.to_context()
    kind, trace_id, chain = inspect_session(_session_ctx=ctx)
    assert (kind, trace_id, chain[:-1]) == ("OTelSession", parent.trace_id, parent.uid_chain)
    assert [t.name for t in parent.llm_calls] == ["in-otel-child"]


async def test_async_function_restores_inside_the_coroutine(storage: Any) -> None:
    with ContextVarSession("async-parent", storage=storage) as session:
        ctx = session.to_context()
    names = await asyncio.gather(async_work("a", _session_ctx=ctx), async_work("b"))
    assert names == ["async-parent", None]
    assert [t.name for t in session.llm_calls] == ["a"]
    assert get_current_session() is None


class _AsyncCallable:
    """A callable instance whose ``__call__`` is a coroutine function."""

    async def __call__(self, label: str) -> str | None:
        await asyncio.sleep(0)
        record_trace(name=label)
        return get_current_session_name()


async def test_an_async_callable_instance_restores_inside_the_coroutine(storage: Any) -> None:
    """It was taken for a sync function: the session was gone before the coroutine ran, the trace lost."""
    wrapped = ray_entrypoint(_AsyncCallable())
    assert inspect.iscoroutinefunction(wrapped)
    with ContextVarSession("callable-parent", storage=storage) as session:
        ctx = session.to_context()
    assert await wrapped("in-call", _session_ctx=ctx) == "callable-parent"
    assert [t.name for t in session.llm_calls] == ["in-call"]


def test_generator_keeps_the_session_across_steps_without_leaking_it(storage: Any) -> None:
    with ContextVarSession("gen-parent", storage=storage) as session:
        ctx = session.to_context()
    items = stream(3, _session_ctx=ctx)
    first = next(items)
    assert get_current_session() is None  # between steps the consumer sees no session
    rest = list(items)
    assert [first, *rest] == ["gen-parent"] * 3
    assert [t.name for t in session.llm_calls] == ["item0", "item1", "item2", "cleanup"]


def test_generator_closed_early_cleans_up_inside_the_session(storage: Any) -> None:
    with ContextVarSession("gen-early", storage=storage) as session:
        ctx = session.to_context()
    items = stream(5, _session_ctx=ctx)
    assert next(items) == "gen-early"
    items.close()
    assert get_current_session() is None
    assert [t.name for t in session.llm_calls] == ["item0", "cleanup"]


async def test_async_generator_keeps_the_session_across_steps_without_leaking_it(storage: Any) -> None:
    with ContextVarSession("agen-parent", storage=storage) as session:
        ctx = session.to_context()
    items = async_stream(3, _session_ctx=ctx)
    first = await items.__anext__()
    assert get_current_session() is None  # between steps the consumer sees no session
    assert record_trace(name="consumer") is None  # so nothing the consumer records lands in the generator's
    rest = [item async for item in items]
    assert [first, *rest] == ["agen-parent"] * 3
    assert [t.name for t in session.llm_calls] == ["item0", "item1", "item2", "cleanup"]


async def test_async_generator_closed_early_cleans_up_inside_the_session(storage: Any) -> None:
    with ContextVarSession("agen-early", storage=storage) as session:
        ctx = session.to_context()
    items = async_stream(5, _session_ctx=ctx)
    async for item in items:
        assert item == "agen-early"
        break
    assert get_current_session() is None  # stopping early leaves no session behind in the consumer
    await items.aclose()
    assert get_current_session() is None
    assert [t.name for t in session.llm_calls] == ["item0", "cleanup"]


_POOL_MODULE = textwrap.dedent(
    """
    from session_core import get_active_session_uids, get_current_session_name, record_trace
    from session_ray import ray_entrypoint


    @ray_entrypoint
    def pooled(i):
        record_trace(name=f"pooled-{i}", input=i)
        return get_current_session_name(), get_active_session_uids()
    """
)


def test_multiprocessing_spawn_pool_lands_in_the_parent_session(tmp_path: Path, storage: Any) -> None:
    """Each spawned worker opens the storage by the context's URL and writes under the parent's chain."""
    (tmp_path / "pool_work.py").write_text(_POOL_MODULE)
    sys.path.insert(0, str(tmp_path))
    try:
        import pool_work  # type: ignore[import-not-found]  # written just above

        mp = multiprocessing.get_context("spawn")
        with ContextVarSession("pool-parent", storage=storage, job=5) as session:
            task = functools.partial(pool_work.pooled, _session_ctx=session.to_context())
            with mp.Pool(2, initializer=sys.path.insert, initargs=(0, str(tmp_path))) as pool:
                results = pool.map(task, range(6))
                outside = pool.apply(pool_work.pooled, (99,))
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("pool_work", None)
    assert [name for name, _ in results] == ["pool-parent"] * 6
    assert all(uids[:-1] == session.uid_chain for _, uids in results)
    assert tuple(outside) == (None, [])
    traces = session.llm_calls
    assert sorted(t.input for t in traces) == list(range(6))
    assert {t.metadata["job"] for t in traces} == {5}
