"""OTelSession quickstart: the five-line setup, nested sessions, their spans and their baggage.

Run: python docs/examples/otel_quickstart.py
"""

from __future__ import annotations

from opentelemetry import baggage, propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from session_core import decode_baggage, get_current_metadata, record_trace
from session_otel import OTelSession, SessionSpanProcessor, init_otel_distributed_tracing

# Your usual OpenTelemetry setup (here: spans kept in memory so the example can check them) ...
exporter = InMemorySpanExporter()
provider = TracerProvider(resource=Resource.create({"service.name": "quickstart"}))
provider.add_span_processor(SessionSpanProcessor())  # session attributes on every span inside a session
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)

# ... and the session setup: propagation (tracecontext + baggage) and requests/httpx instrumentation.
init_otel_distributed_tracing(service_name="quickstart")

llm = trace.get_tracer("my.llm.client")  # stands in for any LLM instrumentation library

with OTelSession("rollout", task_id=42, policy="v3") as rollout:
    episode = OTelSession("episode", episode=1)
    with episode:
        assert get_current_metadata() == {"task_id": 42, "policy": "v3", "episode": 1}

        # The session is in the OTel baggage, in session-core's wire format ...
        assert baggage.get_baggage("session.m.task_id") == "42"
        headers: dict[str, str] = {}
        propagate.inject(headers)  # what any instrumented HTTP client sends
        assert decode_baggage(headers["baggage"])["uid_chain"] == [rollout.uid, episode.uid]

        # ... and spans started inside belong to the session.
        with llm.start_as_current_span("chat"):
            record_trace(name="llm.call", model="fake-1", input="hi", output="hello")

spans = {s.name: s for s in exporter.get_finished_spans()}
chat = spans["chat"]
assert chat.parent.span_id == spans["session:episode"].context.span_id
assert spans["session:episode"].parent.span_id == spans["session:rollout"].context.span_id
assert chat.attributes["session.id"] == episode.uid
assert chat.attributes["session.uid_chain"] == (rollout.uid, episode.uid)
assert chat.attributes["session.metadata.task_id"] == 42
assert rollout.trace_id == f"{chat.context.trace_id:032x}"
assert [t.name for t in rollout.llm_calls] == ["llm.call"]
print(f"trace {rollout.trace_id}: {sorted(spans)}; rollout {rollout.uid} has {len(rollout)} trace(s)")
