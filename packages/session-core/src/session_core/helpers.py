"""Helpers that see sessions of every backend, and an ambient context (e.g. OTel baggage) with no session."""

from __future__ import annotations

import logging
from typing import Any

from session_core.registry import ambient_context
from session_core.stack import ACTIVE
from session_core.trace import Trace

__all__ = [
    "current_context",
    "get_active_session_uids",
    "get_active_sessions",
    "get_current_metadata",
    "get_current_session",
    "get_current_session_name",
    "record_trace",
]

logger = logging.getLogger(__name__)


def get_current_session() -> Any:
    """The innermost active session object of any backend, or None."""
    stack = ACTIVE.get()
    return stack[-1] if stack else None


def get_active_sessions() -> list[Any]:
    """Active session objects, outermost first."""
    return list(ACTIVE.get())


def current_context() -> dict[str, Any] | None:
    """The context of the innermost session, else an ambient one (OTel baggage extracted by a server), else None."""
    stack = ACTIVE.get()
    if stack:
        return stack[-1].to_context()  # type: ignore[no-any-return]
    return ambient_context()


def get_current_session_name() -> str | None:
    stack = ACTIVE.get()
    if stack:
        return stack[-1].name  # type: ignore[no-any-return]
    ctx = ambient_context()
    return ctx["name"] if ctx else None


def get_current_metadata() -> dict[str, Any]:
    """Merged metadata of the innermost session (or of an ambient context); `{}` outside any session."""
    stack = ACTIVE.get()
    if stack:
        return stack[-1].merged_metadata()  # type: ignore[no-any-return]
    ctx = ambient_context()
    return dict(ctx["metadata"]) if ctx else {}


def get_active_session_uids() -> list[str]:
    """The uid chain of the innermost session (root first), or of an ambient context; `[]` outside."""
    stack = ACTIVE.get()
    if stack:
        return stack[-1].uid_chain  # type: ignore[no-any-return]
    ctx = ambient_context()
    return list(ctx["uid_chain"]) if ctx else []


def record_trace(trace: Trace | None = None, /, **fields: Any) -> Trace | None:
    """Store a trace in the innermost session's storage under its whole uid chain.

    Give a `Trace` or its fields by keyword. The session name and merged metadata are filled in (the trace's
    own metadata wins). Returns the stored trace, or None outside any session. With no session object but an
    ambient context (a server whose OpenTelemetry instrumentation extracted the caller's baggage), nothing is
    stored either, and one warning per process says to open a session there (``with OTelSession():`` continues
    the caller's chain).
    """
    stack = ACTIVE.get()
    if not stack:
        _warn_if_ambient()
        return None
    session = stack[-1]
    if trace is None:
        trace = Trace(**fields)
    elif fields:
        for key, value in fields.items():
            setattr(trace, key, value)
    name = session.name
    if trace.session_name is None:
        trace.session_name = name
    merged = session.merged_metadata()
    if merged:
        trace.metadata = {**merged, **trace.metadata}
    session.storage.add_trace(session.uid_chain, name, trace)
    return trace


_warned_ambient = False


def _warn_if_ambient() -> None:
    global _warned_ambient
    if _warned_ambient:
        return
    ctx = ambient_context()
    if ctx is None:
        return
    _warned_ambient = True
    logger.warning(
        "record_trace() outside any session object did not store the trace, although the caller's session %r is "
        "in the ambient context (OpenTelemetry baggage): open a session here to record under its chain "
        "(`with OTelSession():` continues it; session-http's SessionMiddleware opens one per request)",
        ctx["name"],
    )
