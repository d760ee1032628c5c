"""Sessions across HTTP into a WSGI service with nothing but OpenTelemetry: a real wsgiref server whose app is
wrapped only in OTel's WSGI middleware (no session middleware), called by a real httpx client from inside an
`OTelSession`."""

from __future__ import annotations

import functools
import json
import socketserver
import threading
from collections.abc import Callable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
from opentelemetry import baggage, propagate
from opentelemetry.context import attach, detach

from session_otel import OTelSession
from session_otel.tracing import current_setup

httpx = pytest.importorskip("httpx")
wsgi = pytest.importorskip("opentelemetry.instrumentation.wsgi")


def _app(report_of: Callable[[str], dict[str, Any]], environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """What a WSGI handler sees: only what OTel's WSGI middleware extracted."""
    body = json.dumps(report_of(environ["PATH_INFO"])).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def port(handler_report: Callable[[str], dict[str, Any]]) -> Iterator[int]:
    app = wsgi.OpenTelemetryMiddleware(functools.partial(_app, handler_report))
    server = make_server("127.0.0.1", 0, app, server_class=_Server, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(10)


def _get(url: str) -> dict[str, Any]:
    """httpx GET; where httpx is not instrumented (bare variant), inject the OTel headers by hand."""
    setup = current_setup()
    headers: dict[str, str] = {}
    if not (setup and setup.httpx):
        propagate.inject(headers)
    with httpx.Client(timeout=10) as client:
        response = client.get(url, headers=headers)
    response.raise_for_status()
    return response.json()  # type: ignore[no-any-return]


def test_the_wsgi_handler_sees_the_callers_session_with_types_intact(port):
    token = attach(baggage.set_baggage("tenant", "acme"))
    try:
        with OTelSession("rollout", task_id=7, score=0.5, tags=["rl", "eval"], ok=True) as session:
            report = _get(f"http://127.0.0.1:{port}/")
    finally:
        detach(token)
    assert report["metadata"] == {"task_id": 7, "score": 0.5, "tags": ["rl", "eval"], "ok": True}
    assert [type(v).__name__ for v in report["metadata"].values()] == ["int", "float", "list", "bool"]
    assert report["name"] == "rollout"
    assert report["uids"] == session.uid_chain
    assert report["tenant"] == "acme"  # other baggage members travel as they were
    if session.trace_id is not None:  # with the SDK: the server span is in the caller's trace
        assert report["trace_id"] == session.trace_id


def test_a_session_opened_in_the_wsgi_handler_continues_the_callers_chain_and_trace(port):
    with OTelSession("rollout", task_id=8) as outer, OTelSession("step", step=2) as inner:
        report = _get(f"http://127.0.0.1:{port}/child")
    assert report["uids"] == inner.uid_chain
    assert report["child_chain"][:-1] == inner.uid_chain and len(report["child_chain"]) == 3
    assert report["child_metadata"] == {"task_id": 8, "step": 2, "handler": "child"}
    if outer.trace_id is not None:
        assert report["child_trace_id"] == outer.trace_id


def test_outside_a_session_the_wsgi_handler_sees_none(port):
    report = _get(f"http://127.0.0.1:{port}/")
    assert report["metadata"] == {} and report["name"] is None and report["uids"] == []
