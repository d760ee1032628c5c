"""A worker process: restore the session context read from stdin, record a trace, report what it saw.

``--generic`` restores through session_core.restore_session without importing session_otel (the backend is
found through its entry point) and writes to the storage the context names; otherwise it uses
OTelSession.from_otel_context with an in-memory storage.
"""

from __future__ import annotations

import json
import sys

import session_core

ctx = json.loads(sys.stdin.read())
if "--generic" in sys.argv:
    session = session_core.restore_session(ctx)
else:
    from session_otel import OTelSession, init_otel_distributed_tracing

    init_otel_distributed_tracing("worker")
    session = OTelSession.from_otel_context(ctx, storage=session_core.InMemoryStorage())

with session:
    trace = session_core.record_trace(name="worker-call", model="m", input="q", output="a")
    span = session.span
    parent = getattr(span, "parent", None)
    report = {
        "class": type(session).__name__,
        "imported_session_otel_first": "--generic" not in sys.argv,
        "uid_chain": session.uid_chain,
        "metadata": session_core.get_current_metadata(),
        "name": session_core.get_current_session_name(),
        "trace_id": session.trace_id,
        "parent_span_id": f"{parent.span_id:016x}" if parent is not None else None,
        "recorded": trace.trace_id if trace is not None else None,
        "storage_url": getattr(session.storage, "url", None),
    }
print(json.dumps(report))
