"""session-otel: distributed session tracking on OpenTelemetry.

An `OTelSession` keeps its context in W3C baggage (session-core's wire format) and makes a ``session:<name>``
span current, so any OpenTelemetry propagator carries the session across HTTP, and every span inside is
attributable to it. `init_otel_distributed_tracing()` sets up propagation, a TracerProvider and HTTP
instrumentation in one call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from session_otel._version import __version__
from session_otel.ambient import baggage_context
from session_otel.attributes import session_attributes
from session_otel.helpers import (
    get_active_otel_sessions,
    get_current_otel_session,
    get_otel_metadata,
    get_otel_session_name,
)
from session_otel.hosts import HostFilter
from session_otel.propagator import SessionPropagator, note_target_host
from session_otel.session import OTelSession
from session_otel.tracing import TracingSetup, init_otel_distributed_tracing

if TYPE_CHECKING:
    from session_otel.processor import SessionSpanProcessor

__all__ = [
    "OTelSession",
    "SessionSpanProcessor",
    "SessionPropagator",
    "HostFilter",
    "TracingSetup",
    "init_otel_distributed_tracing",
    "note_target_host",
    "get_current_otel_session",
    "get_otel_session_name",
    "get_otel_metadata",
    "get_active_otel_sessions",
    "baggage_context",
    "session_attributes",
    "__version__",
]


def __getattr__(name: str) -> Any:
    """`SessionSpanProcessor` is imported on first use: it subclasses the SDK's SpanProcessor when the SDK is
    installed, and `import session_otel` should not pay for importing the SDK."""
    if name == "SessionSpanProcessor":
        from session_otel.processor import SessionSpanProcessor

        return SessionSpanProcessor
    raise AttributeError(f"module 'session_otel' has no attribute {name!r}")
