"""One active-session stack for every backend; threads and asyncio tasks each see only their own session."""

from __future__ import annotations

import asyncio
import threading

from opentelemetry import baggage, propagate, trace

from session_core import (
    ContextVarSession,
    InMemoryStorage,
    decode_baggage,
    get_active_session_uids,
    get_active_sessions,
    get_current_metadata,
    record_trace,
)
from session_otel import OTelSession, get_active_otel_sessions, get_current_otel_session, get_otel_metadata


def _carried() -> dict:
    headers: dict[str, str] = {}
    propagate.inject(headers)
    return decode_baggage(headers["baggage"])


def test_contextvar_inside_otel_keeps_one_chain():
    storage = InMemoryStorage()
    with OTelSession("o", storage=storage, a=1) as o, ContextVarSession(b=2) as c, OTelSession(c=3) as inner:
        assert get_active_sessions() == [o, c, inner]
        assert inner.uid_chain == [o.uid, c.uid, inner.uid]
        assert get_current_metadata() == {"a": 1, "b": 2, "c": 3}
        assert baggage.get_baggage("session.uids") == ".".join(inner.uid_chain)
        assert get_active_otel_sessions() == [o, inner]
        assert _carried()["uid_chain"] == inner.uid_chain
        record_trace(name="deep")
        assert c.storage is storage
    assert [t.name for t in o.llm_calls] == ["deep"]


def test_otel_inside_contextvar_keeps_one_chain():
    with ContextVarSession("c", b=2) as c, OTelSession(o=1) as o, ContextVarSession(d=4) as d:
        assert d.uid_chain == [c.uid, o.uid, d.uid]
        assert get_active_session_uids() == d.uid_chain
        assert get_otel_metadata() == {"b": 2, "o": 1, "d": 4}
        assert get_current_otel_session() is o
        assert _carried()["uid_chain"] == d.uid_chain
        assert baggage.get_baggage("session.uids") == f"{c.uid}.{o.uid}"  # the OTel view of the OTel session
    assert get_current_metadata() == {}


def test_fifty_threads_each_see_only_their_own_session():
    barrier = threading.Barrier(50)
    errors: list[str] = []

    def worker(i: int) -> None:
        try:
            with OTelSession(f"thread-{i}", i=i) as s:
                barrier.wait(timeout=30)  # every thread inside its session at once
                for _ in range(20):
                    assert get_current_metadata() == {"i": i}
                    assert baggage.get_baggage("session.m.i") == str(i)
                    assert trace.get_current_span() is s.span
                    assert _carried()["uid_chain"] == [s.uid]
                barrier.wait(timeout=30)
            assert get_current_metadata() == {}
        except Exception as exc:  # collected: an assertion in a thread would otherwise be lost
            errors.append(f"{i}: {exc!r}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_a_thousand_tasks_each_see_only_their_own_session():
    async def task(i: int, outer_uid: str) -> tuple[int, list[str]]:
        async with OTelSession(f"task-{i}", i=i) as s:
            await asyncio.sleep(0)
            assert get_current_metadata() == {"run": "r", "i": i}
            assert baggage.get_baggage("session.m.i") == str(i)
            assert trace.get_current_span() is s.span
            await asyncio.sleep(0)
            assert get_active_session_uids() == [outer_uid, s.uid]
            return i, s.uid_chain

    async def main() -> list[tuple[int, list[str]]]:
        async with OTelSession("run", run="r") as outer:
            results = await asyncio.gather(*(task(i, outer.uid) for i in range(1000)))
            assert get_current_metadata() == {"run": "r"}
            return results

    results = asyncio.run(main())
    assert [i for i, _ in results] == list(range(1000))
    assert len({chain[1] for _, chain in results}) == 1000
