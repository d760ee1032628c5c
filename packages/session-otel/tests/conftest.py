"""session-otel fixtures.

OpenTelemetry lets a process set its global TracerProvider once, so it is set here, once, before any test runs:
an SDK provider exporting to an `InMemorySpanExporter` (when the SDK is installed; the bare variant runs on the
API's no-op provider) with `SessionSpanProcessor` on it; then `init_otel_distributed_tracing()` as an
application would call it at startup.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import baggage, trace
from opentelemetry.context import get_current

from session_core import stack
from session_otel import SessionSpanProcessor, init_otel_distributed_tracing
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


def _configure_once() -> None:
    global _exporter
    if current_setup() is not None:
        return
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


_configure_once()


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
