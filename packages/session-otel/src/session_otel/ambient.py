"""The session context held by the current OpenTelemetry baggage, with or without a session object.

A server whose OpenTelemetry instrumentation (ASGI, WSGI, ...) extracted the caller's ``baggage`` header has
the caller's context in its OTel context and no session object; `baggage_context` finds it there. It is
registered as session-core's ``session_core.ambient`` provider, so ``session_core.get_current_metadata()`` and
friends see it too.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from opentelemetry.context import get_current

from session_core import CONTEXT_VERSION, context_from_baggage_items
from session_otel._keys import BAGGAGE_KEY, SESSION_KEY

__all__ = ["IdentityCache", "baggage_context", "context_in", "other_members", "session_in", "without_session_members"]

UIDS = "session.uids"
_PREFIX = "session."

_MISSING = object()


class IdentityCache:
    """A small thread-safe cache keyed by the identity of a dict (an OTel baggage dict, never mutated once in a
    context), holding a reference to it so the identity cannot be reused while cached. Concurrent requests
    each decode their caller's baggage once, and a refused one warns once, not on every helper call."""

    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._entries: dict[int, tuple[object, Any]] = {}

    def get(self, key: object) -> Any:
        entry = self._entries.get(id(key))
        if entry is not None and entry[0] is key:
            return entry[1]
        return _MISSING

    def put(self, key: object, value: Any) -> None:
        with self._lock:
            if len(self._entries) >= self._size:
                del self._entries[next(iter(self._entries))]
            self._entries[id(key)] = (key, value)


_decoded = IdentityCache()
_others = IdentityCache(64)


def without_session_members(bag: Mapping[str, object]) -> dict[str, object]:
    """A new dict of `bag`'s members that are not session members."""
    return {k: v for k, v in bag.items() if not k.startswith(_PREFIX)}


def other_members(bag: dict[str, object]) -> dict[str, object]:
    """`without_session_members(bag)`, once per baggage dict (every request a session sends asks for it). The
    result is shared: callers put it in a `Context` as baggage and never change it."""
    cached = _others.get(bag)
    if cached is _MISSING:
        cached = without_session_members(bag)
        _others.put(bag, cached)
    return cached  # type: ignore[no-any-return]


def session_in(otel_ctx: Mapping[str, object]) -> Any:
    """The `OTelSession` whose baggage `otel_ctx` still carries, or None."""
    session: Any = otel_ctx.get(SESSION_KEY)
    if session is None:
        return None
    bag = otel_ctx.get(BAGGAGE_KEY)
    if isinstance(bag, dict) and bag.get(UIDS) == session._carried_uids():  # nobody replaced the session's baggage
        return session
    return None


def _decode(bag: dict[str, object]) -> dict[str, Any] | None:
    """Decode the session members of `bag`, once per baggage dict."""
    cached = _decoded.get(bag)
    if cached is not _MISSING:
        return cached  # type: ignore[no-any-return]
    storage = None
    if bag.get("session.ref") == "1":  # metadata travels by reference: look it up in our own storage
        from session_core import default_storage

        storage = default_storage()
    ctx = context_from_baggage_items(bag, storage=storage)
    _decoded.put(bag, ctx)
    return ctx


def context_in(otel_ctx: Mapping[str, object] | None = None) -> dict[str, Any] | None:
    """The session context in `otel_ctx` (default: the current OTel context), or None.

    From the session object when the context holds an `OTelSession` (metadata types exactly as given),
    else decoded from the ``session.*`` baggage members (signature checked when ``$SESSION_SIGNING_KEY`` is set).
    """
    if otel_ctx is None:
        otel_ctx = get_current()
    bag = otel_ctx.get(BAGGAGE_KEY)
    if not isinstance(bag, dict) or UIDS not in bag:
        return None
    session = session_in(otel_ctx)
    if session is not None:
        return {
            "v": CONTEXT_VERSION,
            "name": session.name,
            "uid_chain": session.uid_chain,
            "metadata": session.merged_metadata(),
        }
    ctx = _decode(bag)
    if ctx is None:
        return None
    return {**ctx, "uid_chain": list(ctx["uid_chain"]), "metadata": dict(ctx["metadata"])}


def baggage_context() -> dict[str, Any] | None:
    """session-core's ambient provider: the context in the current OTel baggage, or None."""
    return context_in(get_current())
