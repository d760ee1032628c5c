"""A session crossing HTTP with nothing but OpenTelemetry on both sides.

The client's requests are instrumented by init_otel_distributed_tracing() (session-otel[http]); the service
only extracts the W3C headers into its OTel context — exactly what OTel's server instrumentations (ASGI, WSGI,
FastAPI, Flask, ...) do — and session_core's helpers read the caller's session from the baggage.
`propagate_to` keeps session data away from hosts not on the list.

Run: python docs/examples/otel_http.py
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests
from opentelemetry import propagate, trace
from opentelemetry.context import attach, detach

from session_core import get_active_session_uids, get_current_metadata, get_current_session_name
from session_otel import OTelSession, init_otel_distributed_tracing, note_target_host


class Handler(BaseHTTPRequestHandler):
    """A service handler: OTel extracts the headers, the session helpers read them. No session code."""

    def do_GET(self) -> None:
        token = attach(propagate.extract(dict(self.headers)))  # what OTel server instrumentation does
        try:
            span = trace.get_current_span().get_span_context()
            body = json.dumps(
                {
                    "session": get_current_session_name(),
                    "metadata": get_current_metadata(),
                    "uids": get_active_session_uids(),
                    "trace_id": f"{span.trace_id:032x}" if span.is_valid else None,
                }
            ).encode()
        finally:
            detach(token)
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:  # keep the example's output short
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
threading.Thread(target=server.serve_forever, daemon=True).start()
port = server.server_address[1]

setup = init_otel_distributed_tracing(service_name="client", propagate_to=["127.0.0.1"])


def get(url: str) -> dict:
    headers: dict[str, str] = {}
    if not setup.requests:  # without session-otel[http]: inject by hand, saying where the headers go
        note_target_host(url)
        propagate.inject(headers)
    return requests.get(url, headers=headers, timeout=10).json()  # type: ignore[no-any-return]


with OTelSession("support-chat", user="ann", turn=3, ab_arm="b") as session:
    seen = get(f"http://127.0.0.1:{port}/answer")
    elsewhere = get(f"http://localhost:{port}/answer")  # same server, a host not in propagate_to

assert seen["session"] == "support-chat"
assert seen["metadata"] == {"user": "ann", "turn": 3, "ab_arm": "b"}  # types intact: turn is an int
assert seen["uids"] == session.uid_chain
if session.trace_id is not None:
    assert seen["trace_id"] == session.trace_id  # the service's spans are in the caller's trace
assert elsewhere["metadata"] == {}
assert elsewhere["session"] is None
server.shutdown()
print(f"service saw {seen['metadata']} in session {seen['uids'][-1]}; localhost saw {elsewhere['metadata']}")
