"""`SessionSpanProcessor`: stamps session attributes on every span started inside a session.

LLM instrumentations (OpenAI, Anthropic, LangChain, ...) start their own spans; with this processor on the
TracerProvider each of them carries ``session.id``, ``session.name``, ``session.uid_chain`` and
``session.metadata.<key>`` of the innermost session, or of the caller's context in the baggage when the span
is started in a server with no session object.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from opentelemetry.context import Context, get_current
from opentelemetry.util.types import AttributeValue

from session_core import BaseSession
from session_core.session import metadata_version
from session_core.stack import ACTIVE
from session_otel._keys import BAGGAGE_KEY
from session_otel.ambient import _MISSING, UIDS, IdentityCache, context_in, session_in
from session_otel.attributes import SESSION_ID, SESSION_UID_CHAIN, metadata_attributes, session_attributes

__all__ = ["SessionSpanProcessor", "attributes_for_session"]

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor as _SpanProcessorBase
else:
    try:
        from opentelemetry.sdk.trace import SpanProcessor as _SpanProcessorBase
    except ImportError:  # no SDK, no provider to add a processor to: the class still imports, as a plain object
        _SpanProcessorBase = object

logger = logging.getLogger(__name__)

_lock = threading.Lock()
# The last session stamped for, with what its attributes were built from (uid chain, name, metadata version).
_last_session: tuple[Any, tuple[Any, ...], dict[str, AttributeValue]] = (None, (), {})
_by_baggage = IdentityCache()


def attributes_for_session(session: Any) -> dict[str, AttributeValue]:
    """The session attributes for any session object (an `OTelSession` has them prepared already)."""
    global _last_session
    prepared = getattr(session, "span_attributes", None)
    if prepared is not None:
        return prepared()  # type: ignore[no-any-return]
    if not isinstance(session, BaseSession):  # another SessionProtocol implementation: built every time
        return _build(session)
    key = (session._chain_tuple(), session.name, metadata_version())
    cached_session, cached_key, cached = _last_session
    if cached_session is session and cached_key == key:
        return cached
    attrs = _build(session)
    with _lock:
        _last_session = (session, key, attrs)
    return attrs


def _build(session: Any) -> dict[str, AttributeValue]:
    merged = session.merged_metadata() if hasattr(session, "merged_metadata") else session.to_context()["metadata"]
    chain = session.uid_chain
    return session_attributes(session.name, chain[-1], chain, metadata_attributes(merged))


def _within(session: Any, chain: tuple[str, ...]) -> bool:
    """Whether `session` is the session `chain` ends with or one of its descendants."""
    own = session._chain_tuple() if isinstance(session, BaseSession) else tuple(session.uid_chain)
    return own[: len(chain)] == chain


def _attributes_from_baggage(ctx: Context) -> dict[str, AttributeValue] | None:
    bag = ctx.get(BAGGAGE_KEY)
    if not isinstance(bag, dict) or UIDS not in bag:
        return None
    holder = session_in(ctx)
    if holder is not None:  # an OTelSession's context attached by hand (a thread): its metadata may have changed
        return attributes_for_session(holder)
    cached = _by_baggage.get(bag)
    if cached is not _MISSING:
        return cached  # type: ignore[no-any-return]
    found = context_in(ctx)
    attrs: dict[str, AttributeValue] = {}
    if found is not None:
        chain = found["uid_chain"]
        attrs = session_attributes(found["name"], chain[-1], chain, metadata_attributes(found["metadata"]))
    _by_baggage.put(bag, attrs)
    return attrs


class SessionSpanProcessor(_SpanProcessorBase):
    """An OpenTelemetry SDK span processor (add it with ``provider.add_span_processor(SessionSpanProcessor())``)
    that stamps session attributes on spans started inside a session: the innermost active session's, unless
    the span is started with an explicit context carrying a session this one does not lie within (its own
    session then). Spans that already carry ``session.id`` (session spans themselves) are left alone. It never
    raises into the code starting the span."""

    def on_start(self, span: Any, parent_context: Context | None = None) -> None:
        # The span's session: the innermost one here (the stack); but a span started with an explicit context
        # carrying another session (a message consumer continuing its producer's context) belongs to that one.
        attrs: dict[str, AttributeValue] | None
        try:
            existing = span.attributes
            if existing and SESSION_ID in existing:
                return
            stack = ACTIVE.get()
            if not stack:
                attrs = _attributes_from_baggage(parent_context if parent_context is not None else get_current())
            elif parent_context is None or (attrs := _attributes_from_baggage(parent_context)) is None:
                attrs = attributes_for_session(stack[-1])
            elif _within(stack[-1], attrs[SESSION_UID_CHAIN]):  # type: ignore[arg-type]
                attrs = attributes_for_session(stack[-1])  # the innermost session here lies within the context's
            if attrs:
                span.set_attributes(attrs)
        except Exception:
            logger.debug("SessionSpanProcessor could not stamp a span", exc_info=True)

    def _on_ending(self, span: Any) -> None:
        """Called by newer SDKs just before a span ends; nothing to do."""

    def on_end(self, span: Any) -> None:
        """Nothing to do: the attributes were stamped at start."""

    def shutdown(self) -> None:
        """Nothing to release."""

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

    def __repr__(self) -> str:
        return "SessionSpanProcessor()"
