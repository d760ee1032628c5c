"""Sessions across gRPC with nothing but OpenTelemetry: a real grpc server and channel on 127.0.0.1, both
instrumented by opentelemetry-instrumentation-grpc, which injects and extracts through the global propagator
that init_otel_distributed_tracing() installed."""

from __future__ import annotations

import contextvars
import json
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import pytest
from opentelemetry import trace

import session_core
from session_otel import OTelSession, init_otel_distributed_tracing
from session_otel.propagator import note_target_host

grpc = pytest.importorskip("grpc")
instrumentation = pytest.importorskip("opentelemetry.instrumentation.grpc")


def _who(request: bytes, context: Any) -> bytes:
    """The handler: what the server sees of the caller's session, with no session object of its own."""
    span_ctx = trace.get_current_span().get_span_context()
    return json.dumps(
        {
            "name": session_core.get_current_session_name(),
            "uids": session_core.get_active_session_uids(),
            "metadata": session_core.get_current_metadata(),
            "trace_id": f"{span_ctx.trace_id:032x}" if span_ctx.is_valid else None,
        }
    ).encode()


@pytest.fixture(scope="module")
def who() -> Iterator[Any]:
    """A unary method ``/test.Echo/Who`` on a real instrumented server; yields the instrumented client stub."""
    server_instrumentor = instrumentation.GrpcInstrumentorServer()
    client_instrumentor = instrumentation.GrpcInstrumentorClient()
    server_instrumentor.instrument()
    client_instrumentor.instrument()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    handler = grpc.method_handlers_generic_handler("test.Echo", {"Who": grpc.unary_unary_rpc_method_handler(_who)})
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield channel.unary_unary("/test.Echo/Who")
    finally:
        channel.close()
        server.stop(0)
        client_instrumentor.uninstrument()
        server_instrumentor.uninstrument()


def _call(stub: Any) -> dict[str, Any]:
    return json.loads(stub(b"", timeout=30))  # type: ignore[no-any-return]


def test_the_server_sees_the_callers_session_and_trace(who: Any) -> None:
    assert _call(who)["name"] is None  # outside any session: nothing travels
    with OTelSession("grpc-caller", task="t-1", step=2) as outer, session_core.ContextVarSession(arm="b") as inner:
        seen = _call(who)
    assert seen["name"] == "grpc-caller" and seen["uids"] == [outer.uid, inner.uid]
    assert seen["metadata"] == {"task": "t-1", "step": 2, "arm": "b"}  # the innermost session, types kept
    if outer.trace_id is not None:  # a recording SDK span (the all variant): the server continues its trace
        assert seen["trace_id"] == outer.trace_id


def test_with_an_allow_list_the_target_must_be_named(who: Any, restore_hosts: None) -> None:
    """gRPC's instrumentation does not say where it sends: an unknown target gets no session members."""
    init_otel_distributed_tracing(propagate_to=["127.0.0.1"])
    with OTelSession("grpc-listed"):
        assert _call(who)["name"] is None

        def named() -> dict[str, Any]:
            note_target_host("127.0.0.1")
            return _call(who)

        assert contextvars.copy_context().run(named)["name"] == "grpc-listed"
