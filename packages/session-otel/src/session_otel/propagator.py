"""`SessionPropagator`: wraps the global OTel propagator so session baggage follows the innermost session and
reaches only allowed hosts.

OpenTelemetry's propagator API does not tell a propagator where a carrier is going, so the requests/httpx
instrumentations get a request hook (`requests_request_hook`, `httpx_request_hook`, `httpx_async_request_hook`)
that notes the target host just before they inject; the next `inject` in the same context reads it. An inject
whose target is unknown (a manual ``propagate.inject``, a message queue) is treated as going to an unknown host:
with an allow-list in force it carries no session members. Other baggage members and ``traceparent`` are never
touched.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from opentelemetry.context import Context, get_current
from opentelemetry.propagators.textmap import (
    CarrierT,
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)

from session_core import ContextTooLarge, session_baggage
from session_core.hosts import host_of
from session_core.stack import ACTIVE
from session_otel._keys import BAGGAGE_KEY
from session_otel.ambient import UIDS, other_members, session_in
from session_otel.hosts import HostFilter

__all__ = [
    "SessionPropagator",
    "httpx_async_request_hook",
    "httpx_request_hook",
    "note_target_host",
    "requests_request_hook",
]

logger = logging.getLogger(__name__)

_TARGET: ContextVar[str | None] = ContextVar("session_otel.target_host", default=None)


def note_target_host(url_or_host: Any) -> None:
    """Record where the next `inject` in this context sends its carrier (a URL, an httpx.URL or a host)."""
    host: str | None
    if isinstance(url_or_host, str):
        host = host_of(url_or_host) if "://" in url_or_host else url_or_host  # as the allow-list reads URLs
    elif isinstance(url_or_host, tuple) and len(url_or_host) >= 2:  # httpcore's (scheme, host, port, path)
        raw = url_or_host[1]
        host = raw.decode("ascii", "replace") if isinstance(raw, (bytes, bytearray)) else str(raw)
    else:
        host = getattr(url_or_host, "host", None)
    _TARGET.set(host or "")


def requests_request_hook(span: Any, request: Any) -> None:
    """`RequestsInstrumentor(request_hook=...)`: note the request's host for `SessionPropagator`."""
    note_target_host(getattr(request, "url", None) or "")


class _Done:
    """An awaitable that is already done: older httpx instrumentations await the sync hook in async clients."""

    __slots__ = ()

    def __await__(self) -> Iterator[None]:
        return iter(())


_DONE = _Done()


def httpx_request_hook(span: Any, request: Any) -> _Done:
    """`HTTPXClientInstrumentor(request_hook=...)`: note the request's host for `SessionPropagator`.

    Returns an already-done awaitable, so it also serves as the async hook of instrumentations that have one
    `request_hook` for both kinds of client."""
    note_target_host(getattr(request, "url", None) or "")
    return _DONE


async def httpx_async_request_hook(span: Any, request: Any) -> None:
    """`HTTPXClientInstrumentor(async_request_hook=...)`: as `httpx_request_hook`, for async clients."""
    note_target_host(getattr(request, "url", None) or "")


class SessionPropagator(TextMapPropagator):
    """A propagator around `inner` (tracecontext + baggage) that keeps session baggage members right on inject.

    - The session members are those of the innermost active session (any backend), so a `ContextVarSession`
      opened inside an `OTelSession` is what an instrumented request carries; with none active, those of the
      `OTelSession` whose OTel context is attached (a thread that attached it), as its metadata is now.
    - A carrier going to a host outside `hosts` gets no session members.
    - With ``$SESSION_SIGNING_KEY`` set, session members are signed; oversized metadata travels by reference
      (session-core's `session_baggage`) instead of being cut by OTel's size limits.
    """

    def __init__(self, inner: TextMapPropagator, hosts: HostFilter | None = None) -> None:
        self.inner = inner
        self.hosts = hosts if hosts is not None else HostFilter(None)

    def extract(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        getter: Getter[CarrierT] = default_getter,
    ) -> Context:
        return self.inner.extract(carrier, context=context, getter=getter)

    def inject(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        setter: Setter[CarrierT] = default_setter,
    ) -> None:
        target = _TARGET.get()
        if target is not None:
            _TARGET.set(None)
        ctx = context if context is not None else get_current()
        try:
            plan = self._plan(ctx, target, use_stack=context is None)
        except Exception as exc:  # never break the caller's request: send no session members, and say why
            _say_once(exc, "left out of an outgoing carrier", traceback=True)
            plan = _strip(ctx)
        if plan is None:
            self.inner.inject(carrier, context=context, setter=setter)
            return
        new_ctx, header = plan
        if header is None:
            self.inner.inject(carrier, context=new_ctx, setter=setter)
            return
        scratch: dict[str, str] = {}
        self.inner.inject(scratch, context=new_ctx)
        scratch["baggage"] = header
        for key, value in scratch.items():
            setter.set(carrier, key, value)

    def _plan(self, ctx: Context, target: str | None, *, use_stack: bool) -> tuple[Context, str | None] | None:
        """None: inject `ctx` as it is. Else the context to inject and, when not None, the baggage header to set."""
        raw = ctx.get(BAGGAGE_KEY)
        bag: dict[str, object] = raw if isinstance(raw, dict) else {}
        if not self.hosts.allows(target):
            return _strip(ctx) if UIDS in bag else None
        stack = ACTIVE.get() if use_stack else ()
        # The innermost session, else the OTelSession whose context is attached (a thread that attached it by
        # hand; its metadata may have changed since entry), written by session-core's `session_baggage`: exact
        # wire format, cached per session object, signed when a key is configured, oversized metadata by
        # reference instead of members silently dropped by OTel's limits.
        top = stack[-1] if stack else session_in(ctx)
        if top is None:
            return None  # no session object: forward the baggage as OTel would (an extracted context included)
        others = other_members(bag)
        base = Context(ctx, **{BAGGAGE_KEY: others})
        existing = None
        if others:
            scratch: dict[str, str] = {}
            self.inner.inject(scratch, context=base)
            existing = scratch.get("baggage")
        try:
            return base, session_baggage(top, existing=existing)
        except ContextTooLarge as exc:
            _say_once(exc, "not propagated")
            return base, existing

    @property
    def fields(self) -> set[str]:
        return set(self.inner.fields)

    def __repr__(self) -> str:
        return f"SessionPropagator({self.inner!r}, hosts={self.hosts!r})"


_said: set[tuple[str | None, str]] = set()


def _say_once(exc: Exception, what: str, *, traceback: bool = False) -> None:
    """Say why a carrier went without the session: once per session and error, not on every request."""
    stack = ACTIVE.get()
    top = stack[-1] if stack else None
    uid = getattr(top, "uid", None)
    key = (uid, f"{type(exc).__name__}: {exc}"[:240])
    if key in _said:
        logger.debug("session %s %s: %s", uid, what, exc)
        return
    if len(_said) >= 1024:
        _said.clear()
    _said.add(key)
    name = str(getattr(top, "name", ""))[:64]
    logger.warning(
        "session %r (%s) %s (said once per session): %s", name, uid, what, exc, exc_info=exc if traceback else None
    )


def _strip(ctx: Context) -> tuple[Context, None]:
    bag = ctx.get(BAGGAGE_KEY)
    others = other_members(bag) if isinstance(bag, dict) else {}
    return Context(ctx, **{BAGGAGE_KEY: others}), None
