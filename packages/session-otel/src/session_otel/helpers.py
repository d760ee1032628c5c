"""Helpers that read the session as OpenTelemetry carries it: from the active stack, else from the baggage.

They work with no session object at all, e.g. in a server whose OpenTelemetry instrumentation extracted the
caller's ``baggage`` header.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.context import get_current

from session_core.stack import ACTIVE
from session_otel.ambient import context_in, session_in
from session_otel.session import OTelSession

__all__ = [
    "get_active_otel_sessions",
    "get_current_otel_session",
    "get_otel_metadata",
    "get_otel_session_name",
]


def get_current_otel_session() -> OTelSession | None:
    """The innermost active `OTelSession`, else the one whose OTel context was attached here, else None."""
    for session in reversed(ACTIVE.get()):
        if isinstance(session, OTelSession):
            return session
    found = session_in(get_current())
    return found if isinstance(found, OTelSession) else None


def get_active_otel_sessions() -> list[OTelSession]:
    """The active `OTelSession` objects of this context, outermost first."""
    return [s for s in ACTIVE.get() if isinstance(s, OTelSession)]


def get_otel_session_name() -> str | None:
    """The name of the session OpenTelemetry carries from here (innermost session, else baggage), or None."""
    stack = ACTIVE.get()
    if stack:
        return stack[-1].name  # type: ignore[no-any-return]
    ctx = context_in()
    return ctx["name"] if ctx else None


def get_otel_metadata() -> dict[str, Any]:
    """Merged metadata of the session OpenTelemetry carries from here (innermost session, else the baggage,
    value types intact); `{}` when there is none."""
    stack = ACTIVE.get()
    if stack:
        return stack[-1].merged_metadata()  # type: ignore[no-any-return]
    ctx = context_in()
    return ctx["metadata"] if ctx else {}
