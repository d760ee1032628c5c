"""`OTelSession`: a session whose context lives in OpenTelemetry baggage while a ``session:<name>`` span is current."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from contextvars import Token
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.baggage import get_all as _baggage_items
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.trace import (
    INVALID_SPAN,
    NonRecordingSpan,
    NoOpTracer,
    ProxyTracerProvider,
    Span,
    SpanContext,
    Status,
    StatusCode,
    Tracer,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from session_core import BaseSession, ContextTooLarge, encode_baggage, make_context, portable_metadata
from session_core import metadata_version as _metadata_version
from session_core.baggage import MAX_HEADER_BYTES
from session_core.stack import ACTIVE as _ACTIVE
from session_otel import _state
from session_otel._keys import BAGGAGE_KEY, SESSION_KEY, SPAN_KEY
from session_otel._version import __version__
from session_otel.ambient import UIDS, _decode, session_in, without_session_members
from session_otel.attributes import SESSION_ID, SESSION_UID_CHAIN
from session_otel.members import FIXED_OK, Template, base_members, template

__all__ = ["OTelSession"]

logger = logging.getLogger(__name__)

_S = TypeVar("_S", bound="OTelSession")
_BASE_NAME: property = BaseSession.__dict__["name"]
_get_current = otel_context.get_current
_attach = otel_context.attach
_detach = otel_context.detach
_get_provider = otel_trace.get_tracer_provider
_TRACECONTEXT = TraceContextTextMapPropagator()
_BAGGAGE = W3CBaggagePropagator()
_NOOP_PROVIDERS = (otel_trace.ProxyTracerProvider, otel_trace.NoOpTracerProvider)
_UNSET = object()
_tracer_cache: tuple[object, Tracer | None] = (_UNSET, None)  # (key, session-otel's tracer or None if no-op)
# opentelemetry-api keeps the provider set by `set_tracer_provider` in this module global (None until then).
# Keying the cache on it avoids get_tracer_provider()'s environment lookup on every entry while none is set.
_KEYED = hasattr(otel_trace, "_TRACER_PROVIDER")


def _global_tracer() -> Tracer | None:
    """session-otel's tracer from the global provider, or None while that provider records nothing."""
    global _tracer_cache
    key: object = otel_trace._TRACER_PROVIDER if _KEYED else _get_provider()
    cached_key, tracer = _tracer_cache
    if key is cached_key:
        return tracer
    provider = _get_provider()  # may load $OTEL_PYTHON_TRACER_PROVIDER and set the global
    tracer = None if isinstance(provider, _NOOP_PROVIDERS) else provider.get_tracer("session_otel", __version__)
    _tracer_cache = (otel_trace._TRACER_PROVIDER if _KEYED else provider, tracer)
    return tracer


def _noop_span(parent: object) -> Span:
    """What OpenTelemetry's no-op tracer returns: the parent's span context in a non-recording span."""
    if parent is None:
        return INVALID_SPAN
    if type(parent) is NonRecordingSpan:
        return parent
    if isinstance(parent, Span):
        return parent if isinstance(parent, NonRecordingSpan) else NonRecordingSpan(parent.get_span_context())
    return INVALID_SPAN


def _in_trace_of(current: object, remote: Span) -> bool:
    """Whether `current` is a valid span in `remote`'s trace, e.g. the server span OpenTelemetry's instrumentation
    started for the request that carried the context: a restored session's span then goes under it, not beside it."""
    if not isinstance(current, Span):
        return False
    ctx = current.get_span_context()
    return ctx.is_valid and ctx.trace_id == remote.get_span_context().trace_id


def _auto_init() -> None:
    from session_otel.tracing import auto_init

    auto_init()


def _hand_over_context(session: OTelSession, stack: tuple[Any, ...], token: Token[Context]) -> bool:
    """`session` exits while sessions inside it are active (they stay on the stack): rather than detach its OTel
    context now, which would drop theirs while they run on, hand its token to the first `OTelSession` inside it,
    whose exit then restores what was current before `session` was entered. True when handed over."""
    for i, active in enumerate(stack):
        if active is session:
            for inner in stack[i + 1 :]:
                if isinstance(inner, OTelSession) and inner._token is not None:
                    inner._token = token
                    return True
            return False
    return False


def _record_exception(span: Span, exc: Exception) -> None:
    """Record `exc` on `span` with status ERROR. An exception whose ``str()`` fails gets its type as the status
    description: it must neither replace the exception the caller sees nor keep the session open."""
    try:
        description = f"{type(exc).__name__}: {exc}"
    except Exception:
        description = type(exc).__name__
    try:
        span.record_exception(exc, escaped=True)
    except Exception:
        logger.debug("could not record %s on the session span", type(exc).__name__, exc_info=True)
    span.set_status(Status(StatusCode.ERROR, description))


class OTelSession(BaseSession):
    """A session carried by OpenTelemetry: its context in W3C baggage, a ``session:<name>`` span current.

    Same protocol and semantics as `ContextVarSession` (it is pushed on the same active-session stack), plus:
    any OTel propagator carries the session (W3C baggage, session-core's wire format), spans started inside
    are children of the session span, and `to_otel_context` / `from_otel_context` continue the same trace and
    uid chain in another process. Entered with no session active, it continues the session found in the
    current OTel context (e.g. the caller's baggage extracted by a server's OTel instrumentation).
    """

    backend_name = "otel"

    # OTel state, class-level defaults so that creating a session sets only what differs (no __slots__ here:
    # a session with an instance dict is cheaper to create than one assigning eight slots).
    _tracer: Tracer | None = None
    _span: Span | None = None  # the session span of the current (or last) entry
    _token: Token[Context] | None = None
    _remote_span: Span | None = None  # the sender's span, for a restored context with a traceparent
    _inherited_bag: dict[str, object] | None = None  # the sender's other baggage members
    _bag: dict[str, object] | None = None  # the baggage attached by the current (or last) entry
    # (chain, baggage members, span name, session_core's metadata_version() when built)
    _prep: tuple[tuple[str, ...], dict[str, str], str, int] | None = None
    _attrs: dict[str, AttributeValue] | None = None  # span attributes, built after `_prep` when a span records
    _tmpl: Template | None = None  # what `_prep` and `_attrs` were built from

    def __init__(
        self,
        name: str | None = None,
        storage: Any = None,
        *,
        tracer: Tracer | None = None,
        **metadata: Any,
    ) -> None:
        BaseSession.__init__(self, name, storage)
        self._meta = metadata  # what BaseSession.__init__(..., **metadata) stores, without repacking the kwargs
        if tracer is not None:
            self._tracer = tracer

    def _rename(self, value: str) -> None:
        self._name = value
        prep = self._prep
        if prep is not None:  # rebuilt with the new name (its uid chain still read meanwhile, see _carried_uids)
            self._prep = (prep[0], prep[1], prep[2], -1)

    if TYPE_CHECKING:

        @property
        def name(self) -> str: ...
        @name.setter
        def name(self, value: str) -> None: ...

    else:  # session-core's getter itself (no extra call to read it); renaming reaches the baggage and spans
        name = property(_BASE_NAME.fget, _rename, doc="The session's name (renaming reaches its baggage and spans).")

    # -- restoring ---------------------------------------------------------------------------------------
    def _init_backend_from_context(self, ctx: dict[str, Any]) -> None:
        """Called by `from_context`: read the sender's traceparent and non-session baggage members."""
        otel = ctx.get("otel")
        if not otel:
            return
        traceparent = otel.get("traceparent")
        if traceparent:
            carrier = {"traceparent": traceparent}
            if otel.get("tracestate"):
                carrier["tracestate"] = otel["tracestate"]
            span = otel_trace.get_current_span(_TRACECONTEXT.extract(carrier, context=Context()))
            if span.get_span_context().is_valid:
                self._remote_span = span
            else:
                logger.warning(
                    "session context %r carries a malformed traceparent; its session span starts a new trace",
                    ctx["name"][:64],
                )
        header = otel.get("baggage")
        if header and len(header) > MAX_HEADER_BYTES:  # OpenTelemetry would drop it too, logging all of it
            logger.warning(
                "session context %r: its baggage field is %d characters, over the limit of %d; its other baggage "
                "members are left out",
                ctx["name"][:64],
                len(header),
                MAX_HEADER_BYTES,
            )
        elif header:
            inherited = without_session_members(_baggage_items(_BAGGAGE.extract({"baggage": header}, Context())))
            self._inherited_bag = inherited or None

    @classmethod
    def backend_initialized(cls) -> bool:
        """Whether OpenTelemetry is set up in this process: `init_otel_distributed_tracing` has run, or the
        application set a TracerProvider of its own. A server that uses neither runs incoming requests in
        `ContextVarSession`s, so a ``traceparent`` header alone never sets up OpenTelemetry in it."""
        return _state.initialized or not isinstance(otel_trace.get_tracer_provider(), ProxyTracerProvider)

    @classmethod
    def from_otel_context(
        cls: type[_S], ctx: Mapping[str, Any], storage: Any = None, *, tracer: Tracer | None = None
    ) -> _S:
        """A not-yet-entered child session continuing `ctx` (from `to_otel_context`, or any session's
        `to_context()`): same uid chain and merged metadata and, when `ctx` has a traceparent, the same trace
        with this session's span a child of the sender's (or of the span current at entry when that one is in
        the same trace, e.g. a server span). Raises `InvalidSessionContext` when malformed."""
        session = cls.from_context(ctx, storage)
        if tracer is not None:
            session._tracer = tracer
        return session

    # -- entering and leaving ------------------------------------------------------------------------------
    def __enter__(self: _S) -> _S:
        if not _state.initialized:
            _auto_init()
        self._enter_stack()
        try:
            self._activate()
        except BaseException:
            self._exit_stack()
            raise
        return self

    def _activate(self) -> None:
        cur = _get_current()
        bag = cur.get(BAGGAGE_KEY)
        if bag and self._parent is None and self._ctx is None:
            self._adopt(cur)
        tracer = self._tracer
        if tracer is None:
            tracer = _global_tracer()
        elif type(tracer) is NoOpTracer:
            tracer = None
        chain = self._chain_tuple()
        prep = self._prep
        if prep is None or prep[0] is not chain or prep[3] != _metadata_version():
            prep = self._prepare(chain)
        items = prep[1]
        inherited = self._inherited_bag
        if bag:
            assert isinstance(bag, dict)
            if UIDS in bag and not self._extends(cur, bag):
                bag = without_session_members(bag)
            new_bag = {**inherited, **bag, **items} if inherited else {**bag, **items}
        elif inherited:
            new_bag = {**inherited, **items}
        else:
            new_bag = items  # shared, never mutated: OTel copies baggage before changing it
        remote = self._remote_span
        here = cur.get(SPAN_KEY)
        if remote is None or _in_trace_of(here, remote):
            parent_ctx = cur
        else:  # a restored context: the session span is a child of the sender's
            parent_ctx = Context(cur, **{SPAN_KEY: remote})
            here = remote
        if tracer is None:
            span = _noop_span(here)
        else:
            attrs = self._attrs
            if attrs is None:
                attrs = self._span_attributes(chain)
            span = tracer.start_span(prep[2], parent_ctx, attributes=attrs)
        self._span = span
        self._bag = new_bag
        self._token = _attach(Context(parent_ctx, **{BAGGAGE_KEY: new_bag, SPAN_KEY: span, SESSION_KEY: self}))

    def _extends(self, cur: Context, bag: dict[str, object]) -> bool:
        """Whether `bag` is our direct parent's baggage, whose session members ours all replace."""
        holder = cur.get(SESSION_KEY)
        return holder is not None and holder is self._parent and bag is getattr(holder, "_bag", None)

    def _adopt(self, cur: Context) -> None:
        """No session on the stack: continue the session held by the current OTel context, if any."""
        bag = cur.get(BAGGAGE_KEY)
        if not isinstance(bag, dict) or UIDS not in bag:
            return
        holder = session_in(cur)
        if holder is not None and holder is not self:
            self._parent = holder  # an OTelSession whose OTel context was carried here (e.g. into a thread)
        else:
            ctx = _decode(bag)  # the caller's context, extracted from a request's baggage header
            if ctx is None:
                return
            self._ctx = ctx
            if self._name is None:
                self._name = ctx["name"]
        self._chain = None
        self._merged = None

    def _prepare(self, chain: tuple[str, ...]) -> tuple[tuple[str, ...], dict[str, str], str, int]:
        """The baggage members this session sets on every entry (and its span name), built once per chain from
        the template shared by every session with the same name and merged metadata."""
        version = _metadata_version()  # noted first: a change made while preparing is seen on the next entry
        name = self._name
        if name is None:
            name = self.name
        metadata = self._meta if self._parent is None and self._ctx is None else self._merged_view()
        tmpl = template(name, metadata)
        if tmpl[3]:  # metadata JSON cannot carry: session-core says so, once per key in this process
            portable_metadata({key: metadata[key] for key in tmpl[3]}, name)
        items = tmpl[0].copy()
        if FIXED_OK:
            items[UIDS] = ".".join(chain)
        else:
            items.update(base_members(name, chain))
        if tmpl[4]:
            version = -1  # a list or dict may change in place, which no version notes: prepare every entry anew
        prep = (chain, items, tmpl[2], version)
        self._prep = prep
        self._tmpl = tmpl
        self._attrs = None
        return prep

    def _span_attributes(self, chain: tuple[str, ...]) -> dict[str, AttributeValue]:
        """The span attributes for `chain` (prepared with the baggage members)."""
        tmpl = self._tmpl
        assert tmpl is not None
        attrs = tmpl[1].copy()
        attrs[SESSION_ID] = chain[-1]
        attrs[SESSION_UID_CHAIN] = chain
        self._attrs = attrs
        return attrs

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        token = self._token
        if token is not None:
            stack = _ACTIVE.get()
            innermost = bool(stack) and stack[-1] is self
            span = self._span
            if exc is not None and isinstance(exc, Exception) and span is not None and span.is_recording():
                _record_exception(span, exc)
            if innermost or any(active is self for active in stack):
                self._token = None
                if innermost or not _hand_over_context(self, stack, token):
                    _detach(token)
            elif span is not None:
                # Exited where it is not active (another thread or task): session-core refuses and keeps the stack
                # as it is, and the OTel context attached where it is active cannot be detached from here; it stays
                # for an exit there (ending a non-recording stand-in then). The span ends now, as asked.
                self._span = NonRecordingSpan(span.get_span_context())
            if span is not None:
                span.end()
        self._exit_stack()

    # -- OpenTelemetry views ---------------------------------------------------------------------------------
    @property
    def span(self) -> Span | None:
        """The session span (None before the first entry)."""
        return self._span

    def _span_context(self) -> SpanContext | None:
        span = self._span
        if span is not None:
            ctx = span.get_span_context()
            if ctx.is_valid:
                return ctx
        return self._remote_span.get_span_context() if self._remote_span is not None else None

    @property
    def trace_id(self) -> str | None:
        """The session's OTel trace id as 32 hex digits; None when there is no valid span (e.g. no SDK)."""
        ctx = self._span_context()
        return otel_trace.format_trace_id(ctx.trace_id) if ctx is not None and ctx.is_valid else None

    @property
    def span_id(self) -> str | None:
        """The session span's id as 16 hex digits (before entry: the sender's, for a restored context)."""
        ctx = self._span_context()
        return otel_trace.format_span_id(ctx.span_id) if ctx is not None and ctx.is_valid else None

    def _prepared(self) -> tuple[tuple[str, ...], dict[str, str], str, int]:
        chain = self._chain_tuple()
        prep = self._prep
        if prep is not None and prep[0] is chain and prep[3] == _metadata_version():
            return prep
        return self._prepare(chain)

    @property
    def baggage_items(self) -> dict[str, str]:
        """The ``session.*`` baggage members this session sets (session-core's wire format, decoded)."""
        return dict(self._prepared()[1])

    def _carried_uids(self) -> str | None:
        """The ``session.uids`` member this session puts in baggage (None before it was prepared)."""
        prep = self._prep
        return prep[1][UIDS] if prep is not None else None

    def span_attributes(self) -> dict[str, AttributeValue]:
        """The session attributes of this session's span (and of spans `SessionSpanProcessor` stamps)."""
        prep = self._prepared()
        attrs = self._attrs
        return attrs if attrs is not None else self._span_attributes(prep[0])

    # -- contexts ----------------------------------------------------------------------------------------------
    def to_context(self) -> dict[str, Any]:
        """The core context plus ``"backend": "otel"`` and ``"otel"``: W3C ``traceparent`` (and ``tracestate``)
        of the session span, and the ``baggage`` header carrying the session and the other baggage members."""
        core = make_context(self.name, self._chain_tuple(), self._merged_view(), self.storage_url)
        otel: dict[str, str] = {}
        span_ctx = self._span_context()
        if span_ctx is not None and span_ctx.is_valid:
            _TRACECONTEXT.inject(otel, Context({SPAN_KEY: NonRecordingSpan(span_ctx)}))
        others = self._other_baggage()
        others_header = ""
        if others:
            carrier: dict[str, str] = {}
            _BAGGAGE.inject(carrier, Context({BAGGAGE_KEY: others}))
            others_header = carrier.get("baggage", "")
        try:
            header = encode_baggage(core, existing=others_header or None, storage=self.storage)
        except ContextTooLarge as exc:
            logger.info("%r: session members left out of the context's baggage field: %s", self, exc)
            header = others_header
        if header:
            otel["baggage"] = header
        ctx = {**core, "backend": self.backend_name}
        if otel:
            ctx["otel"] = otel
        return ctx

    def to_otel_context(self) -> dict[str, Any]:
        """JSON-able context for another process or service: `to_context()` with the OTel fields."""
        return self.to_context()

    def _other_baggage(self) -> dict[str, object]:
        if self._bag is not None:
            return without_session_members(self._bag)
        if self._inherited_bag:
            return dict(self._inherited_bag)
        return {}


# -- fork ----------------------------------------------------------------------------------------------------------
_forking = threading.local()  # the forking thread's active sessions, noted just before it forks


def _note_sessions_before_fork() -> None:
    _forking.stack = _ACTIVE.get()


def _forget_noted_sessions() -> None:
    _forking.stack = ()


def _leave_sessions_after_fork() -> None:
    """A forked child starts outside any session (session-core empties its stack there): leave the OTel context of
    the `OTelSession`s active at the fork too, back to what was current before the outermost was entered, so the
    child's spans, requests and helpers are not attributed to them (a reused fork-started pool worker would carry
    them into every later call). A child that runs out of their ``with`` blocks then leaves their spans alone."""
    stack = getattr(_forking, "stack", ())
    _forking.stack = ()
    forked = [s for s in stack if isinstance(s, OTelSession) and s._token is not None]
    ctx = _get_current()
    if forked:
        before = getattr(forked[0]._token, "old_value", None)  # contextvars' Token: the context it replaced
        ctx = before if isinstance(before, Context) else Context()
        for session in forked:
            session._token = None
    holder = ctx.get(SESSION_KEY)
    if holder is not None:  # an OTelSession's context attached by hand in the forking thread: leave it too
        values = {key: value for key, value in ctx.items() if key != SESSION_KEY}
        bag = values.get(BAGGAGE_KEY)
        if isinstance(bag, dict):
            values[BAGGAGE_KEY] = without_session_members(bag)
        if values.get(SPAN_KEY) is getattr(holder, "_span", None):
            del values[SPAN_KEY]
        ctx = Context(values)
    if forked or holder is not None:
        _attach(ctx)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_note_sessions_before_fork,
        after_in_parent=_forget_noted_sessions,
        after_in_child=_leave_sessions_after_fork,
    )
