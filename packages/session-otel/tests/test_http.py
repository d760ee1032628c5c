"""Sessions across HTTP with nothing but OpenTelemetry: a real uvicorn server instrumented only with OTel's ASGI
middleware, real httpx/requests clients instrumented by init_otel_distributed_tracing()."""

from __future__ import annotations

import asyncio
import functools
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry import baggage, propagate
from opentelemetry.context import attach, detach

import session_core
from session_otel import OTelSession, init_otel_distributed_tracing
from session_otel.tracing import current_setup

httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")
asgi = pytest.importorskip("opentelemetry.instrumentation.asgi")


async def _app(report_of: Callable[[str], dict[str, Any]], scope: dict[str, Any], receive: Any, send: Any) -> None:
    """What a service handler sees: only what OTel's ASGI middleware extracted, no session middleware."""
    assert scope["type"] == "http"
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
    report = report_of(scope["path"])
    report["baggage_header"] = headers.get("baggage")
    body = json.dumps(report).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def port(handler_report: Callable[[str], dict[str, Any]]) -> Iterator[int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        asgi.OpenTelemetryMiddleware(functools.partial(_app, handler_report)),
        lifespan="off",
        log_level="warning",
        access_log=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    yield sock.getsockname()[1]
    server.should_exit = True
    thread.join(10)
    sock.close()


def _instrumented(library: str) -> bool:
    setup = current_setup()
    return bool(setup and getattr(setup, library))


def _get(url: str) -> dict[str, Any]:
    """httpx GET; where httpx is not instrumented (bare variant), inject the OTel headers by hand."""
    headers: dict[str, str] = {}
    if not _instrumented("httpx"):
        propagate.inject(headers)
    with httpx.Client(timeout=10) as client:
        response = client.get(url, headers=headers)
    response.raise_for_status()
    return response.json()  # type: ignore[no-any-return]


def _assert_continues(report: dict[str, Any], session: OTelSession) -> None:
    assert report["metadata"] == session.merged_metadata()
    assert report["name"] == session.name
    assert report["uids"] == session.uid_chain
    if session.trace_id is not None:
        assert report["trace_id"] == session.trace_id


def test_the_handler_sees_the_callers_session_with_types_intact(port):
    with OTelSession("http-caller", user="ann", n=3, ratio=0.5, tags=["x", "y"], flag=True) as s:
        report = _get(f"http://127.0.0.1:{port}/")
    _assert_continues(report, s)
    assert report["metadata"]["n"] == 3 and report["metadata"]["flag"] is True


def test_a_session_opened_in_the_handler_continues_the_callers_chain(port):
    with OTelSession("caller", team="a") as s:
        report = _get(f"http://127.0.0.1:{port}/child")
    assert report["child_chain"][:-1] == s.uid_chain
    assert report["child_metadata"] == {"team": "a", "handler": "child"}


def test_record_trace_in_a_handler_without_a_session_object_says_to_open_one(port, caplog, monkeypatch):
    monkeypatch.setattr(session_core.helpers, "_warned_ambient", False)
    with caplog.at_level("WARNING", logger="session_core"), OTelSession("ambient-caller", k=1) as s:
        reports = [_get(f"http://127.0.0.1:{port}/record") for _ in range(2)]
    assert [r["recorded"] for r in reports] == [None, None] and reports[0]["uids"] == s.uid_chain
    said = [r.getMessage() for r in caplog.records if "ambient context" in r.getMessage()]
    assert len(said) == 1 and "'ambient-caller'" in said[0]


def test_outside_a_session_the_handler_sees_none(port):
    report = _get(f"http://127.0.0.1:{port}/")
    assert report["metadata"] == {} and report["name"] is None and report["uids"] == []


def test_requests_is_instrumented_too(port):
    requests = pytest.importorskip("requests")
    pytest.importorskip("opentelemetry.instrumentation.requests")
    with OTelSession("via-requests", k="v") as s:
        report = requests.get(f"http://127.0.0.1:{port}/", timeout=10).json()
    _assert_continues(report, s)


def test_async_httpx_in_many_tasks_each_carries_its_own_session(port):
    pytest.importorskip("opentelemetry.instrumentation.httpx")

    async def one(i: int, client: Any) -> tuple[list[str], dict[str, Any]]:
        async with OTelSession(f"task-{i}", i=i) as s:
            response = await client.get(f"http://127.0.0.1:{port}/")
            return s.uid_chain, response.json()

    async def main() -> list[tuple[list[str], dict[str, Any]]]:
        async with httpx.AsyncClient(timeout=10) as client:
            return await asyncio.gather(*(one(i, client) for i in range(20)))

    for i, (chain, report) in enumerate(asyncio.run(main())):
        assert report["uids"] == chain
        assert report["metadata"] == {"i": i}
        assert report["name"] == f"task-{i}"


def test_propagate_to_keeps_session_members_from_other_hosts(port):
    pytest.importorskip("opentelemetry.instrumentation.httpx")
    before = current_setup()
    assert before is not None
    init_otel_distributed_tracing(propagate_to=["127.0.0.1"])
    token = attach(baggage.set_baggage("tenant", "acme"))
    try:
        with OTelSession("scoped", secret_project="p1") as s:
            allowed = _get(f"http://127.0.0.1:{port}/")
            other = _get(f"http://localhost:{port}/")  # the same server under another host name
    finally:
        detach(token)
        init_otel_distributed_tracing(propagate_to=before.propagate_to or "*")
    _assert_continues(allowed, s)
    assert other["metadata"] == {} and other["uids"] == []
    assert other["baggage_header"] == "tenant=acme"  # other baggage untouched
    assert other["tenant"] == "acme"
    if s.trace_id is not None:
        assert other["trace_id"] == s.trace_id  # the trace still continues


def test_a_url_noted_by_hand_is_read_as_the_client_reads_it(port, restore_hosts):
    """`note_target_host(url)` + `propagate.inject(headers)` (the documented way for a client without a hook) read
    ``http://localhost:P\\@127.0.0.1:P/`` as 127.0.0.1, as urllib does, while urllib3 (and requests) send it to
    localhost: with only 127.0.0.1 allowed, the session reached localhost. session-core's `host_of` treats a
    backslash in the authority as no known host."""
    urllib3 = pytest.importorskip("urllib3")
    from session_otel import note_target_host

    init_otel_distributed_tracing(propagate_to=["127.0.0.1"])
    url = f"http://localhost:{port}\\@127.0.0.1:{port}/"
    assert urllib3.util.parse_url(url).host == "localhost"
    with OTelSession("noted", secret_project="p1"):
        headers: dict[str, str] = {}
        note_target_host(url)
        propagate.inject(headers)
        report = json.loads(urllib3.PoolManager().request("GET", url, headers=headers, timeout=10).data)
    assert report["name"] is None and report["metadata"] == {}
    assert "session." not in (report["baggage_header"] or "")
