"""With OpenTelemetry's own ASGI server instrumentation in front (real SDK, in-memory exporter).

OTel extracts the same baggage into its context; the middleware's session is still the only session object.
When session-otel is installed (found through session-core's backend registry, never imported by
session-http) and OpenTelemetry is set up in the server, a request runs in an `OTelSession`, continuing the
caller's trace when it carries a W3C ``traceparent``.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from typing import Any

import pytest

from session_core import (
    ContextVarSession,
    InMemoryStorage,
    get_active_sessions,
    get_current_metadata,
    get_current_session,
    record_trace,
)
from session_http import SessionMiddleware, inject

HAVE_SESSION_OTEL = importlib.util.find_spec("session_otel") is not None
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@pytest.fixture(scope="module")
def exporter() -> Any:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return memory


async def inspect_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    from opentelemetry import baggage, trace

    if scope["type"] != "http":
        return
    record_trace(name="otel-probe")
    session = get_current_session()
    info = {
        "sessions": [type(s).__name__ for s in get_active_sessions()],
        "chain": session.uid_chain if session else None,
        "metadata": get_current_metadata(),
        "otel_baggage_has_session": "session.uids" in baggage.get_all(),
        "trace_id": format(trace.get_current_span().get_span_context().trace_id, "032x"),
    }
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": json.dumps(info).encode()})


def test_otel_server_instrumentation_and_the_middleware_make_one_session(serve_asgi, fetch_json, exporter):
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    storage = InMemoryStorage()
    app = OpenTelemetryMiddleware(SessionMiddleware(inspect_app, storage=storage))
    server = serve_asgi(app)
    with ContextVarSession("one", storage=storage, team="t", n=1) as root:
        headers = inject({"traceparent": TRACEPARENT})
        _, info = fetch_json(server.url + "/x", headers)
    assert info["otel_baggage_has_session"] is True  # OTel extracted the baggage too ...
    assert len(info["sessions"]) == 1  # ... and still there is one session object: the middleware's
    assert info["chain"][:-1] == root.uid_chain
    assert info["metadata"] == {"team": "t", "n": 1}
    assert info["trace_id"] == TRACE_ID  # the server span continues the caller's trace
    assert [t.name for t in root.llm_calls] == ["otel-probe"]  # one trace, attributed once
    expected = "OTelSession" if HAVE_SESSION_OTEL else "ContextVarSession"
    assert info["sessions"] == [expected]


def test_without_a_traceparent_an_otel_set_up_server_starts_a_trace_in_its_session(serve_asgi, fetch_json, exporter):
    """OpenTelemetry is set up here (the exporter fixture's TracerProvider): a request from a client that sends
    session baggage but no trace context (``session_http.inject``) still gets an `OTelSession`, on a new trace."""
    server = serve_asgi(SessionMiddleware(inspect_app))
    with ContextVarSession("plain", k=1) as root:
        _, info = fetch_json(server.url + "/x", inject())
    assert info["sessions"] == ["OTelSession" if HAVE_SESSION_OTEL else "ContextVarSession"]
    assert info["chain"][:-1] == root.uid_chain and info["metadata"] == {"k": 1}
    if HAVE_SESSION_OTEL:
        assert info["trace_id"] not in ("0" * 32, TRACE_ID)  # the session's own span: a trace of its own


def test_otel_sessions_of_one_caller_get_their_own_metadata_every_request(serve_asgi, fetch_json, exporter):
    """The decoded header is cached and handed to the OTel backend without validating it again: each request's
    session still owns its nested values (a handler changing them changes nothing for the next request), with
    every type intact, the caller's trace continued, and its span carrying the metadata."""

    async def mutating(scope: dict[str, Any], receive: Any, send: Any) -> None:
        from opentelemetry import trace

        session = get_current_session()
        merged = session.merged_metadata()
        seen = {
            "session": type(session).__name__,
            "metadata": json.loads(json.dumps(merged)),
            "trace_id": format(trace.get_current_span().get_span_context().trace_id, "032x"),
        }
        merged["tags"].append("mutated")
        merged["run"]["attempt"] += 1
        scope["state"]["session_metadata"]["tags"].append("mutated-too")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": json.dumps(seen).encode()})

    server = serve_asgi(SessionMiddleware(mutating))
    meta = {"tags": ["a"], "run": {"attempt": 1}, "temperature": 0.5, "n": 1, "ok": True}
    with ContextVarSession("own-copy", **meta):
        headers = inject({"traceparent": TRACEPARENT})
    exporter.clear()
    answers = [fetch_json(server.url + "/", headers)[1] for _ in range(3)]
    kind = "OTelSession" if HAVE_SESSION_OTEL else "ContextVarSession"
    assert [a["session"] for a in answers] == [kind] * 3
    assert [a["metadata"] for a in answers] == [meta] * 3
    if HAVE_SESSION_OTEL:
        assert [a["trace_id"] for a in answers] == [TRACE_ID] * 3
        deadline = time.monotonic() + 30  # a session span ends after its response went out
        while len(spans := [s for s in exporter.get_finished_spans() if s.name == "session:own-copy"]) < 3:
            assert time.monotonic() < deadline, f"{len(spans)} of 3 session spans ended"
            time.sleep(0.01)
        assert len(spans) == 3
        assert all(s.attributes["session.metadata.tags"] == ("a",) for s in spans)
        assert all(s.attributes["session.metadata.temperature"] == 0.5 for s in spans)


_NOT_SET_UP = """
import json, logging, threading, urllib.request
from wsgiref.simple_server import WSGIRequestHandler, make_server
from opentelemetry import propagate, trace
from session_core import ContextVarSession, get_active_sessions
from session_http import SessionWSGIMiddleware, inject

logging.basicConfig(level=logging.WARNING)
propagator_before = type(propagate.get_global_textmap()).__name__

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps([type(s).__name__ for s in get_active_sessions()]).encode()]

class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass

server = make_server("127.0.0.1", 0, SessionWSGIMiddleware(app), handler_class=Quiet)
threading.Thread(target=server.serve_forever, daemon=True).start()
with ContextVarSession("caller"):
    headers = inject({"traceparent": "TRACEPARENT"})
request = urllib.request.Request(f"http://127.0.0.1:{server.server_port}/", headers=headers)
sessions = json.load(urllib.request.urlopen(request, timeout=30))
server.shutdown()
print(json.dumps({
    "sessions": sessions,
    "provider": type(trace.get_tracer_provider()).__name__,
    "propagator_unchanged": type(propagate.get_global_textmap()).__name__ == propagator_before,
}))
""".replace("TRACEPARENT", TRACEPARENT)


@pytest.mark.skipif(not HAVE_SESSION_OTEL, reason="session-otel is not installed here (no dependency of this package)")
def test_a_traceparent_alone_never_sets_up_opentelemetry_in_a_server_that_does_not_use_it():
    """A fresh process with session-otel installed but OpenTelemetry never set up: a request carrying a
    ``traceparent`` (many proxies add one) runs in a `ContextVarSession`; nothing OTel-wide changes, no warning."""
    proc = subprocess.run([sys.executable, "-c", _NOT_SET_UP], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report == {
        "sessions": ["ContextVarSession"],
        "provider": "ProxyTracerProvider",
        "propagator_unchanged": True,
    }
    assert proc.stderr == ""  # no auto-initialisation warning


@pytest.mark.skipif(not HAVE_SESSION_OTEL, reason="session-otel is not installed here (no dependency of this package)")
def test_traceparent_restores_an_otel_session_continuing_the_trace(serve_asgi, fetch_json, exporter):
    storage = InMemoryStorage()
    server = serve_asgi(SessionMiddleware(inspect_app, storage=storage))  # no OTel server instrumentation
    with ContextVarSession("otel-backend", storage=storage, k="v") as root:
        _, info = fetch_json(server.url + "/x", inject({"traceparent": TRACEPARENT}))
    assert info["sessions"] == ["OTelSession"]
    assert info["chain"][:-1] == root.uid_chain and info["metadata"] == {"k": "v"}
    assert info["trace_id"] == TRACE_ID  # the session's span continues the caller's trace


@pytest.mark.skipif(not HAVE_SESSION_OTEL, reason="session-otel is not installed here (no dependency of this package)")
def test_behind_otel_server_instrumentation_the_session_span_is_a_child_of_the_server_span(
    serve_asgi, fetch_json, exporter
):
    """OpenTelemetry's ASGI middleware in front: the request's session span (and the work inside it) goes under
    the server span, which continues the caller's trace; not beside it, as a second child of the caller's span."""
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from opentelemetry.trace import SpanKind

    app = OpenTelemetryMiddleware(SessionMiddleware(inspect_app, storage=InMemoryStorage()))
    server = serve_asgi(app)
    exporter.clear()
    with ContextVarSession("under-server") as root:
        status, _ = fetch_json(server.url + "/x", inject({"traceparent": TRACEPARENT}))
    assert status == 200
    deadline = time.monotonic() + 30  # both spans end just after the response went out
    while not any(s.kind is SpanKind.SERVER for s in exporter.get_finished_spans()) and time.monotonic() < deadline:
        time.sleep(0.01)
    finished = exporter.get_finished_spans()
    (session_span,) = [s for s in finished if s.name == "session:under-server"]
    (server_span,) = [s for s in finished if s.kind is SpanKind.SERVER]
    assert server_span.parent.span_id == int(TRACEPARENT.split("-")[2], 16)  # the caller's span
    assert session_span.parent.span_id == server_span.context.span_id
    assert session_span.context.trace_id == int(TRACE_ID, 16)
    assert session_span.attributes["session.uid_chain"][:-1] == tuple(root.uid_chain)
