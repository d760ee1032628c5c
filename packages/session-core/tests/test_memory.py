"""Sessions that have exited are freed: nothing the library keeps (stack, caches, storage) holds on to them."""

from __future__ import annotations

import asyncio
import gc
import threading
import weakref

from session_core import ContextVarSession, InMemoryStorage, bind_session, record_trace, session_baggage


def _collected(refs: list[weakref.ref]) -> int:
    gc.collect()
    return sum(ref() is None for ref in refs)


def test_exited_sessions_are_freed_after_traces_headers_contexts_and_threads():
    storage = InMemoryStorage()
    refs: list[weakref.ref] = []
    with ContextVarSession("root", storage=storage) as root:
        for i in range(200):
            with ContextVarSession(f"child-{i}", step=i) as child, ContextVarSession("leaf", n=[i]) as leaf:
                record_trace(name="call")
                session_baggage(leaf)  # cached per session object
                child.to_context()
                thread = threading.Thread(target=bind_session(record_trace), kwargs={"name": "in-thread"})
                thread.start()
                thread.join()
                refs += [weakref.ref(child), weakref.ref(leaf)]
            del child, leaf
        assert len(root.llm_calls) == 400
    assert _collected(refs) == len(refs)


def test_sessions_of_finished_asyncio_tasks_are_freed():
    refs: list[weakref.ref] = []

    async def task(i: int) -> None:
        with ContextVarSession("task", i=i) as s:
            refs.append(weakref.ref(s))
            await asyncio.sleep(0)
            record_trace(name="t")

    async def main() -> None:
        await asyncio.gather(*(task(i) for i in range(300)))

    with ContextVarSession("root"):
        asyncio.run(main())
    assert _collected(refs) == 300
