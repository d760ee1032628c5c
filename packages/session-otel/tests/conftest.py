"""session-otel fixtures.

OpenTelemetry lets a process set its global TracerProvider once, so it is set here, once, before this package's
first test runs: an SDK provider exporting to an `InMemorySpanExporter` (when the SDK is installed; the bare
variant runs on the API's no-op provider) with `SessionSpanProcessor` on it; then
`init_otel_distributed_tracing()` as an application would call it at startup. After this package's last test,
OpenTelemetry's globals and the requests/httpx instrumentation are put back as they were, so the other packages'
suites can run in the same pytest process, before or after it.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import baggage, propagate, trace
from opentelemetry.context import get_current

import session_core
from session_core import stack
from session_otel import OTelSession, SessionSpanProcessor, init_otel_distributed_tracing
from session_otel.tracing import current_setup

HAVE_SDK: bool
try:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
except ImportError:
    HAVE_SDK = False
else:
    HAVE_SDK = True

_exporter: Any = None


def _reset_otel_globals() -> None:
    """Forget the global TracerProvider and session-otel's setup, and take the instrumentation off requests and
    httpx (as OpenTelemetry's own test utilities do: its API has no way to unset a provider)."""
    from session_otel import _state, tracing

    for module, name in (
        ("opentelemetry.instrumentation.requests", "RequestsInstrumentor"),
        ("opentelemetry.instrumentation.httpx", "HTTPXClientInstrumentor"),
    ):
        try:
            instrumentor = getattr(importlib.import_module(module), name)()
        except ImportError:
            continue
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
    trace._TRACER_PROVIDER = None  # type: ignore[attr-defined]
    trace._TRACER_PROVIDER_SET_ONCE._done = False  # type: ignore[attr-defined]
    tracing._setup = None
    _state.initialized = False


_HERE = Path(__file__).resolve().parent
_saved: tuple[Any, dict[str, str]] | None = None  # what the first test here found: global propagator, environment


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """OpenTelemetry set up as an application would, before this package's first test (of a run of them)."""
    global _saved
    if _saved is None:
        _saved = (propagate.get_global_textmap(), dict(os.environ))
        _reset_otel_globals()  # another package's suite may have set a provider of its own in this process
        _configure()


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """After this package's last test (of a run of them), OpenTelemetry is put back as it was found."""
    global _saved
    if _saved is not None and (nextitem is None or _HERE not in Path(nextitem.path).resolve().parents):
        textmap, environ = _saved
        _saved = None
        _reset_otel_globals()
        propagate.set_global_textmap(textmap)
        os.environ.clear()
        os.environ.update(environ)


def _configure() -> None:
    global _exporter
    os.environ.pop("SESSION_PROPAGATE_TO", None)
    os.environ.pop("SESSION_SIGNING_KEY", None)
    os.environ.pop("SESSION_STORAGE_URL", None)
    if HAVE_SDK:
        _exporter = InMemorySpanExporter()
        provider = TracerProvider(resource=Resource.create({"service.name": "session-otel-tests"}))
        provider.add_span_processor(SessionSpanProcessor())
        provider.add_span_processor(SimpleSpanProcessor(_exporter))
        trace.set_tracer_provider(provider)
    init_otel_distributed_tracing(service_name="session-otel-tests")


@pytest.fixture(autouse=True)
def _clean_contexts() -> Iterator[None]:
    """Every test starts and ends outside any session, with no session members in the OTel baggage."""
    assert stack.ACTIVE.get() == (), "a previous test leaked an active session"
    assert not any(k.startswith("session.") for k in baggage.get_all()), "a previous test leaked session baggage"
    yield
    leaked = stack.ACTIVE.get()
    stack.ACTIVE.set(())
    assert leaked == (), f"test leaked active sessions: {leaked}"
    assert not any(k.startswith("session.") for k in baggage.get_all(get_current())), "test leaked session baggage"


@pytest.fixture
def spans() -> Any:
    """The in-memory exporter of the process's SDK TracerProvider, emptied (skips where the SDK is absent)."""
    pytest.importorskip("opentelemetry.sdk")
    assert _exporter is not None
    _exporter.clear()
    return _exporter


@pytest.fixture
def no_storage_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SESSION_STORAGE_URL", raising=False)


@pytest.fixture
def restore_hosts() -> Iterator[None]:
    """For tests that change `propagate_to`: the process's setting is put back afterwards."""
    before = current_setup()
    assert before is not None
    yield
    init_otel_distributed_tracing(propagate_to=before.propagate_to or "*")


def _handler_report(path: str) -> dict[str, Any]:
    """What a service handler sees with only OpenTelemetry's server instrumentation (ASGI, WSGI) in front of it and
    no session middleware; ``/record`` records a trace there, ``/child`` opens a session there."""
    span_ctx = trace.get_current_span().get_span_context()
    report: dict[str, Any] = {
        "metadata": session_core.get_current_metadata(),
        "name": session_core.get_current_session_name(),
        "uids": session_core.get_active_session_uids(),
        "trace_id": f"{span_ctx.trace_id:032x}" if span_ctx.is_valid else None,
        "tenant": baggage.get_baggage("tenant"),
    }
    if path == "/record":  # no session object here: nothing is stored, and a warning says why
        report["recorded"] = session_core.record_trace(name="handler-call")
    if path == "/child":
        with OTelSession(handler="child") as child:  # continues the caller's session
            report["child_chain"] = child.uid_chain
            report["child_metadata"] = session_core.get_current_metadata()
            report["child_trace_id"] = child.trace_id
    return report


@pytest.fixture(scope="session")
def handler_report() -> Callable[[str], dict[str, Any]]:
    """`_handler_report`, for the servers of test_http (ASGI) and test_wsgi (WSGI)."""
    return _handler_report
