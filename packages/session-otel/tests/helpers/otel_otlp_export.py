"""Run in a fresh process with $OTEL_EXPORTER_OTLP_ENDPOINT set: init, one session with a child span, flush.

With $BLOCK_OTLP_EXPORTER set, the HTTP exporter cannot be imported (as in an install without it).
"""

from __future__ import annotations

import json
import logging
import os
import sys

logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
if os.environ.get("BLOCK_OTLP_EXPORTER"):
    sys.modules["opentelemetry.exporter.otlp.proto.http.trace_exporter"] = None  # type: ignore[assignment]

from opentelemetry import trace  # noqa: E402

from session_otel import OTelSession, init_otel_distributed_tracing  # noqa: E402

setup = init_otel_distributed_tracing("otlp-under-test")
with OTelSession("rollout", task="t-1") as session:
    with trace.get_tracer("llm").start_as_current_span("chat"):
        pass
flushed = trace.get_tracer_provider().force_flush(10_000)  # type: ignore[attr-defined]
print(json.dumps({"exporter": setup.exporter, "flushed": flushed, "trace_id": session.trace_id}))
