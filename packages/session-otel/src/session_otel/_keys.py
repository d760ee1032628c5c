"""The OpenTelemetry context keys a session writes, found through the public API.

Entering a session builds ONE new OTel `Context` holding the baggage, the span and the session object, instead
of three `set_value` copies. The baggage and span keys are private to opentelemetry-api, so they are discovered
here by writing through the public functions into an empty context and reading back the one key each added.
"""

from __future__ import annotations

from opentelemetry import baggage as _baggage
from opentelemetry import trace as _trace
from opentelemetry.context import Context, create_key

__all__ = ["BAGGAGE_KEY", "SESSION_KEY", "SPAN_KEY"]


def _only_key(ctx: Context, what: str) -> str:
    keys = list(ctx)
    if len(keys) != 1:  # pragma: no cover - would mean opentelemetry-api changed how it stores these
        raise RuntimeError(f"cannot find OpenTelemetry's {what} context key (found {keys!r})")
    return keys[0]


BAGGAGE_KEY: str = _only_key(_baggage.set_baggage("k", "v", Context()), "baggage")
SPAN_KEY: str = _only_key(_trace.set_span_in_context(_trace.INVALID_SPAN, Context()), "span")
SESSION_KEY: str = create_key("session_otel.session")
"""The `OTelSession` whose baggage and span a context holds (lets a thread that attached the context find it)."""
