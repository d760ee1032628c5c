"""init_otel_distributed_tracing: propagation, provider, instrumentation, propagate_to — and auto-init."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import baggage, propagate
from opentelemetry.context import attach, detach

from session_core import decode_baggage
from session_otel import HostFilter, OTelSession, SessionPropagator, init_otel_distributed_tracing
from session_otel.hosts import resolve_propagate_to
from session_otel.propagator import note_target_host

HELPERS = Path(__file__).parent / "helpers"
HAVE_SDK = importlib.util.find_spec("opentelemetry.sdk") is not None


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


HAVE_OTLP = HAVE_SDK and _installed("opentelemetry.exporter.otlp.proto.http")


def _run(script: str, **env: str) -> tuple[dict, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SESSION_", "OTEL_"))}
    proc = subprocess.run(
        [sys.executable, str(HELPERS / script)],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def test_init_is_idempotent_and_wraps_the_global_propagator_once():
    first = init_otel_distributed_tracing()
    second = init_otel_distributed_tracing()
    assert first == second
    textmap = propagate.get_global_textmap()
    assert isinstance(textmap, SessionPropagator)
    assert not isinstance(textmap.inner, SessionPropagator)
    assert {"traceparent", "baggage"} <= textmap.fields
    assert {"traceparent", "baggage"} <= set(first.propagators)


def test_init_reports_what_it_enabled_here():
    setup = init_otel_distributed_tracing()
    has_http = importlib.util.find_spec("opentelemetry.instrumentation.requests") is not None
    assert setup.requests is has_http
    assert setup.httpx is (importlib.util.find_spec("opentelemetry.instrumentation.httpx") is not None)
    assert setup.tracer_provider is False  # conftest set the process's provider before init
    assert setup.service_name == ("session-otel-tests" if HAVE_SDK else None)  # no SDK: no provider, no name
    assert setup.automatic is False


def test_first_session_without_init_initialises_once_with_one_warning():
    report, stderr = _run("otel_auto_init.py")
    assert stderr.count("OTelSession entered before init_otel_distributed_tracing()") == 1
    assert report["automatic"] is True
    assert report["initialized"] == [False, True]  # what session-http asks before handing requests over
    assert report["propagator"] == "SessionPropagator"
    assert report["tracer_provider"] is HAVE_SDK
    assert report["recording"] is HAVE_SDK
    if HAVE_SDK:
        assert report["provider_class"] == "TracerProvider"
        assert report["late_service_name"].startswith("unknown_service")  # the automatic provider's name
        assert "installed when an OTelSession was entered before this call" in stderr
        assert "a TracerProvider was set before" not in stderr
        assert all(len(t) == 32 for t in report["trace_ids"])
        assert report["trace_ids"][0] != report["trace_ids"][1]
    else:
        assert report["trace_ids"] == [None, None]


def test_init_in_a_fresh_process_installs_a_provider_only_with_the_sdk_and_reads_the_env():
    report, stderr = _run("otel_init_service.py", SESSION_PROPAGATE_TO="api.example.com, *.internal")
    assert report["propagate_to"] == ["api.example.com", "*.internal"]
    assert report["same_again"] is True
    assert report["automatic"] is False
    assert report["tracer_provider"] is HAVE_SDK
    assert report["span_processor"] is HAVE_SDK
    assert report["service_name"] == report["setup_service_name"] == ("svc-under-test" if HAVE_SDK else None)
    if not HAVE_SDK:  # the log says exactly what to install
        assert 'pip install "session-otel[sdk]"' in stderr


@pytest.mark.skipif(not HAVE_SDK, reason="needs opentelemetry-sdk (the all variant) to set a provider")
def test_a_service_name_that_cannot_be_applied_is_not_reported_as_applied():
    """The application set its provider first: init cannot rename it, says so, and reports the name in use."""
    report, stderr = _run("otel_provider_first.py")
    assert report == {"service_name": "the-apps-own", "tracer_provider": False}
    assert stderr.count("init_otel_distributed_tracing(service_name='wanted')") == 1
    assert "service.name 'the-apps-own' stays" in stderr


@pytest.fixture
def otlp_receiver() -> Iterator[tuple[str, list[bytes]]]:
    """A real HTTP server on 127.0.0.1 taking OTLP/HTTP trace exports: ``(endpoint, request bodies)``."""
    bodies: list[bytes] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.path == "/v1/traces":
                bodies.append(body)
            self.send_response(200 if self.path == "/v1/traces" else 404)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", bodies
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.skipif(not HAVE_OTLP, reason="needs session-otel[otlp] (the all variant)")
def test_init_exports_to_the_otlp_collector_the_environment_names(otlp_receiver):
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    endpoint, bodies = otlp_receiver
    report, stderr = _run("otel_otlp_export.py", OTEL_EXPORTER_OTLP_ENDPOINT=endpoint)
    assert report["exporter"] == "otlp http/protobuf" and report["flushed"] is True, stderr
    spans = {}
    for body in bodies:
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}["service.name"]
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans[span.name] = (service, span, {a.key: a.value for a in span.attributes})
    assert set(spans) == {"session:rollout", "chat"}
    service, session_span, attributes = spans["session:rollout"]
    assert service == "otlp-under-test" and session_span.trace_id.hex() == report["trace_id"]
    assert attributes["session.name"].string_value == "rollout"
    assert attributes["session.metadata.task"].string_value == "t-1"
    chat = spans["chat"][1]
    assert chat.parent_span_id == session_span.span_id  # the LLM span is a child of the session's
    assert spans["chat"][2]["session.name"].string_value == "rollout"  # stamped by SessionSpanProcessor


@pytest.mark.skipif(not HAVE_SDK, reason="needs opentelemetry-sdk (the all variant) to install a provider")
def test_an_otlp_endpoint_without_the_exporter_installed_says_what_to_install(otlp_receiver):
    endpoint, bodies = otlp_receiver
    report, stderr = _run("otel_otlp_export.py", OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, BLOCK_OTLP_EXPORTER="1")
    assert report["exporter"] is None and bodies == []
    assert stderr.count("exporter is not installed") == 1 and 'pip install "session-otel[otlp]"' in stderr


def _inject(target: str | None) -> dict[str, str]:
    headers: dict[str, str] = {}
    if target is not None:
        note_target_host(target)
    propagate.inject(headers)
    return headers


def test_propagate_to_keeps_session_members_from_other_hosts(restore_hosts):
    setup = init_otel_distributed_tracing(propagate_to=["api.example.com", "*.internal"])
    assert setup.propagate_to == ("api.example.com", "*.internal")
    token = attach(baggage.set_baggage("tenant", "acme"))
    try:
        with OTelSession("scoped", k=1) as s:
            allowed = _inject("https://API.example.com:8443/v1/chat")
            wildcard = _inject("http://models.eu.internal/x")
            other = _inject("https://evil.example.org/collect")
            parent = _inject("https://internal/")  # '*.internal' is subdomains only
            unknown = _inject(None)  # no request hook told us where: fail closed
    finally:
        detach(token)
    assert decode_baggage(allowed["baggage"])["uid_chain"] == [s.uid]
    assert decode_baggage(wildcard["baggage"])["uid_chain"] == [s.uid]
    for headers in (other, parent, unknown):
        assert headers["baggage"] == "tenant=acme"
        assert "session." not in headers["baggage"]
    if s.trace_id is not None:
        assert all(s.trace_id in h["traceparent"] for h in (allowed, other, unknown))


def test_default_propagates_to_every_host(restore_hosts):
    init_otel_distributed_tracing(propagate_to="*")
    with OTelSession("everywhere") as s:
        assert decode_baggage(_inject("https://anything.example/")["baggage"])["uid_chain"] == [s.uid]
        assert decode_baggage(_inject(None)["baggage"])["uid_chain"] == [s.uid]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, None),
        ("a.example.com,*.Internal.", ("a.example.com", "*.internal")),
        (["[::1]", "127.0.0.1", "127.0.0.1"], ("::1", "127.0.0.1")),
        ([], ()),
        (["*"], ("*",)),
    ],
)
def test_resolve_propagate_to(given, expected):
    assert resolve_propagate_to(given) == expected


@pytest.mark.parametrize("bad", ["https://a.example.com", "a.example.com:443", "a.*.com", "**"])
def test_resolve_propagate_to_refuses_urls_ports_and_inner_wildcards(bad):
    with pytest.raises(ValueError, match="propagate_to"):
        resolve_propagate_to([bad])


def test_host_filter_matching():
    f = HostFilter(("a.example.com", "*.internal", "::1"))
    assert f.allows("A.Example.com.") and f.allows("x.y.internal") and f.allows("[::1]")
    assert not f.allows("internal") and not f.allows("b.example.com") and not f.allows(None)
    assert not f.allows("evilinternal")
    assert HostFilter(None).allows(None) and HostFilter(("*",)).allows("anything")
    assert not HostFilter(()).allows("a.example.com")
