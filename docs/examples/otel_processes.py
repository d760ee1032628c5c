"""OTelSession across processes: the same OTel trace, the same uid chain, one SQLite store for the traces.

`bind_session` carries the session's context (with its W3C traceparent) into a process pool; each worker's
session span is a child of the parent's session span, and the parent lists every worker's traces.

Run: python docs/examples/otel_processes.py
"""

from __future__ import annotations

import json
import multiprocessing
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from session_core import bind_session, get_current_metadata, record_trace
from session_otel import OTelSession, get_current_otel_session, init_otel_distributed_tracing
from session_storage_sql import SqliteSessionStorage


def solve(prompt: str) -> dict:
    """Runs in a worker process, inside a child OTelSession restored from the parent's context."""
    session = get_current_otel_session()
    assert session is not None
    record_trace(name="llm.call", input=prompt, output=prompt[::-1], model="fake-1")
    return {"trace_id": session.trace_id, "chain": session.uid_chain, "metadata": get_current_metadata()}


def main() -> None:
    init_otel_distributed_tracing(service_name="trainer")
    with tempfile.TemporaryDirectory() as tmp:
        storage = SqliteSessionStorage(Path(tmp) / "traces.db")  # every process can open it by its URL
        with OTelSession("eval", storage=storage, model="m1", seed=7) as session:
            spawn = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(1, mp_context=spawn, initializer=init_otel_distributed_tracing) as pool:
                results = list(pool.map(bind_session(solve), ["abc", "def", "ghi"]))

            # Any other hand-off (a queue, a job system) takes the context as JSON:
            ctx = json.loads(json.dumps(session.to_otel_context()))
            if session.trace_id is not None:  # the OTel SDK is recording
                assert ctx["otel"]["traceparent"].split("-")[1] == session.trace_id
            with OTelSession.from_otel_context(ctx) as restored:
                record_trace(name="after-queue")
                assert restored.uid_chain[:-1] == session.uid_chain

        for result in results:
            assert result["trace_id"] == session.trace_id  # one trace across the processes
            assert result["chain"][0] == session.uid  # children of the parent session
            assert result["metadata"] == {"model": "m1", "seed": 7}
        names = sorted(t.name for t in session.llm_calls)
        assert names == ["after-queue", "llm.call", "llm.call", "llm.call"], names
        print(f"trace {session.trace_id}: {len(names)} traces from {len(results)} worker calls and a queue hand-off")


if __name__ == "__main__":
    main()
