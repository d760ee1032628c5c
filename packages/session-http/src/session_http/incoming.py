"""The request side shared by the ASGI and WSGI middlewares: headers and path in, a child session out.

The caller's context comes from the ``baggage`` header, else from a ``/meta/<slug>/`` path segment (baggage
wins when both are present). Anything wrong with it (malformed, oversized, bad slug, unsigned or forged when a
signing key is configured) is refused: the request runs without a session and one warning names the problem,
or, with ``strict=True``, the middleware answers 400. Decoded baggage is cached by header value, so a client
that keeps sending one session's header pays the decoding once (except a context whose metadata travels by
reference: the storage holds it, and it changes while the header stays the same).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from session_core import (
    BaseSession,
    ContextVarSession,
    InvalidSessionContext,
    context_from_routing_metadata,
    decode_baggage,
    default_storage,
    get_backend,
    restore_session,
    validate_context,
    verify_context,
)
from session_core.signing import DEFAULT_MAX_AGE, resolve_signing_key
from session_http.pathslug import META_SEGMENT, PathSlug, find_path_slug

__all__ = ["Incoming", "Resolution", "SessionFactory", "has_session_members"]

logger = logging.getLogger("session_http.middleware")

SessionFactory = Callable[[dict[str, Any], Any], Any]
"""``session_factory(ctx, storage)``: the (not yet entered) session a request runs in."""

OTEL_BACKEND = "otel"
_CACHE_SIZE = 512
_OTEL_RECHECK = 1.0  # seconds a "OpenTelemetry is not set up" answer stands
_TRACEPARENT = re.compile(r"(?!ff)[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")
_TRACESTATE_MAX = 512
_UNSET: Any = object()


def has_session_members(raw: bytes | str) -> bool:
    """Cheap pre-check: could this baggage header hold ``session.*`` members at all?"""
    if isinstance(raw, bytes):
        return b"session." in raw or (b"%" in raw and b"session%2e" in raw.lower())
    return "session." in raw or ("%" in raw and "session%2e" in raw.lower())


def _by_reference(raw: bytes | str) -> bool:
    """Whether a baggage header sends its metadata by reference (``session.ref``), to be looked up per request
    (asked once a header has decoded, so off the hot path)."""
    text = raw.decode("latin-1") if isinstance(raw, bytes) else raw
    return "session.ref" in text or "session%2eref" in text.lower()


def _text(raw: bytes | str | None) -> str | None:
    if raw is None:
        return None
    if isinstance(raw, bytes):
        return raw.decode("latin-1")
    return raw


_SCALARS = frozenset({str, int, float, bool, type(None)})
_FROM_VALID: Callable[[dict[str, Any], Any], Any] | None = getattr(ContextVarSession, "_from_valid_context", None)


def _copy_json(value: Any) -> Any:
    """A deep copy of a JSON-like value (lists, dicts, scalars)."""
    t = type(value)
    if t is list:
        return [_copy_json(v) for v in value]
    if t is dict:
        return {k: _copy_json(v) for k, v in value.items()}
    return value


def _copier(value: Any) -> Callable[[Any], Any]:
    """The cheapest exact copy for one metadata value: `list`/`dict` when flat, else a deep copy."""
    if type(value) is list and all(type(v) in _SCALARS for v in value):
        return list
    if type(value) is dict and all(type(v) in _SCALARS for v in value.values()):
        return dict
    return _copy_json


class _Known:
    """A decoded and validated context, cached by the header value it came from (decoding happens once)."""

    __slots__ = ("copiers", "ctx", "expires")

    def __init__(self, ctx: dict[str, Any]) -> None:
        self.ctx = ctx
        # Containers (lists, dicts) in the metadata are copied for every session, so no request changes what
        # the next one sees; scalars are immutable and shared.
        copiers = tuple((k, _copier(v)) for k, v in ctx["metadata"].items() if type(v) not in _SCALARS)
        self.copiers = copiers or None
        self.expires: float | None = ctx["ts"] + DEFAULT_MAX_AGE if "sig" in ctx else None

    def own(self) -> dict[str, Any]:
        """A context a session may keep: the cached one when its metadata holds scalars only (never mutated)."""
        ctx = self.ctx
        copiers = self.copiers
        if copiers is None:
            return ctx
        metadata = dict(ctx["metadata"])
        for key, copy in copiers:
            metadata[key] = copy(metadata[key])
        return {**ctx, "metadata": metadata}

    def open(self, storage: Any) -> tuple[Any, dict[str, Any]]:
        """``(child session, metadata to expose)``: `restore_session` for a context validated once already.

        `from_context` validates on every call, which for metadata with floats, lists or dicts would be most of
        the middleware's cost per request; session-core's `_from_valid_context` skips that (a session-core
        without it gets `from_context`).
        """
        ctx = self.ctx
        copiers = self.copiers
        if copiers is not None:
            metadata = dict(ctx["metadata"])
            for key, copy in copiers:
                metadata[key] = copy(metadata[key])
            ctx = {**ctx, "metadata": metadata}
        if _FROM_VALID is None:
            return ContextVarSession.from_context(ctx, storage=storage), dict(ctx["metadata"])
        return _FROM_VALID(ctx, storage), dict(ctx["metadata"])


class Resolution(NamedTuple):
    """What the middleware does with one request."""

    session: Any  # the not-yet-entered child session, or None
    metadata: dict[str, Any]  # exposed to the application ({} without a context)
    slug: PathSlug | None  # the path segment to strip, when there is one of ours
    problem: str | None  # why the context was refused (warning logged; 400 when strict)


class Incoming:
    """Turns a request's baggage header, trace headers and path into a `Resolution`."""

    __slots__ = (
        "_lock",
        "_otel",
        "_otel_ready",
        "_otel_recheck",
        "known",
        "session_factory",
        "signing_key",
        "storage",
        "strict",
    )

    def __init__(
        self,
        storage: Any = None,
        strict: bool = False,
        signing_key: str | bytes | None = None,
        session_factory: SessionFactory | None = None,
    ) -> None:
        self.storage = storage if storage is not None else default_storage()
        self.strict = bool(strict)
        self.signing_key = resolve_signing_key(signing_key)
        self.session_factory = session_factory
        self.known: dict[bytes | str, _Known] = {}  # decoded session headers by value (bounded, FIFO)
        self._lock = threading.Lock()
        self._otel: Any = _UNSET
        self._otel_ready = False  # once set up, OpenTelemetry stays set up: cached when true
        self._otel_recheck = 0.0  # when "not set up" may be asked again (monotonic seconds)

    # -- reading the context -------------------------------------------------------------------------
    def _from_baggage(self, raw: bytes | str) -> _Known | None:
        known = self.known.get(raw)
        if known is not None and (known.expires is None or time.time() <= known.expires):
            return known
        decoded = decode_baggage(raw, signing_key=self.signing_key, storage=self.storage, strict=True)
        if decoded is None:
            return None
        known = _Known(validate_context(decoded))
        if _by_reference(raw):  # its metadata lives in the storage and changes under an unchanged header
            return known
        with self._lock:
            if len(self.known) >= _CACHE_SIZE:
                self.known.pop(next(iter(self.known)), None)
            self.known[raw] = known
        return known

    def _from_slug(self, metadata: dict[str, Any]) -> _Known | None:
        ctx = context_from_routing_metadata(metadata)  # validated
        if ctx is None:
            return None
        if self.signing_key is not None:
            verify_context(ctx, self.signing_key)  # a slug carries no signature: refused when signing is on
        return _Known(ctx)

    def hands_over_to_otel(self) -> bool:
        """Whether requests run in the OTel backend's session: session-otel is installed and OpenTelemetry is set
        up in this process (the backend's ``backend_initialized()``, asked at most once a second while the answer
        is no). A ``traceparent``, when there is one, is then continued; without one the session starts a trace."""
        if self._otel_ready:
            return True
        backend = self._otel_backend()
        if backend is None:
            return False
        # Asking OpenTelemetry costs microseconds (it reads the environment), too much for every request: a
        # "not set up" answer stands for a second, so a server that sets it up later hands over within one.
        now = time.monotonic()
        if now < self._otel_recheck:
            return False
        ready = getattr(backend, "backend_initialized", None)
        if ready is not None and not ready():
            self._otel_recheck = now + _OTEL_RECHECK
            return False
        self._otel_ready = True
        return True

    def _otel_backend(self) -> Any:
        backend = self._otel
        if backend is _UNSET:
            backend = self._otel = get_backend(OTEL_BACKEND)
        return backend

    # -- the request ---------------------------------------------------------------------------------
    def resolve(
        self,
        baggage: bytes | str | None,
        traceparent: bytes | str | None,
        tracestate: bytes | str | None,
        path: str,
    ) -> Resolution:
        """The session and metadata for a request. Never raises for any input (only `session_factory` may)."""
        if baggage is not None and META_SEGMENT not in path:
            hit = self.cached(baggage)
            if hit is not None:
                return Resolution(hit[0], hit[1], None, None)
        return self._resolve(baggage, traceparent, tracestate, path)

    def cached(self, baggage: bytes | str) -> tuple[Any, dict[str, Any]] | None:
        """The hot path: ``(child session, metadata)`` for a baggage value seen before, else None.

        Only for the default session class (no `session_factory`, no OTel hand-over) and no path slug; the
        caller checks the latter.
        """
        known = self.known.get(baggage)
        if (
            known is None
            or self.session_factory is not None
            or (known.expires is not None and time.time() > known.expires)
            or self.hands_over_to_otel()
        ):
            return None
        return known.open(self.storage)

    def _resolve(
        self,
        baggage: bytes | str | None,
        traceparent: bytes | str | None,
        tracestate: bytes | str | None,
        path: str,
    ) -> Resolution:
        slug: PathSlug | None = None
        source = "baggage header"
        found: _Known | None = None
        exposed: dict[str, Any] | None = None
        problem: str | None = None
        try:
            if META_SEGMENT in path:
                slug = find_path_slug(path)
            if baggage is not None and has_session_members(baggage):
                found = self._from_baggage(baggage)  # None: only text like "app.session.id", no context
            if found is None and slug is not None:
                source = "path slug"
                if slug.error is not None:
                    problem = slug.error
                else:
                    assert slug.metadata is not None
                    found = self._from_slug(slug.metadata)
                    if found is None:
                        exposed = dict(slug.metadata)  # metadata without a session: shown, no session opened
        except InvalidSessionContext as exc:
            problem = str(exc)
        except Exception as exc:  # our parsing must never fail a request
            problem = f"unexpected {type(exc).__name__} while reading it"
        if problem is None and found is not None:
            try:
                return self._open(found, traceparent, tracestate, slug)
            except InvalidSessionContext as exc:
                problem = str(exc)
        if problem is not None:
            logger.warning(
                "%s (%s): %s",
                "request rejected with 400" if self.strict else "request runs without a session",
                source,
                problem,
            )
            return Resolution(None, {}, slug, problem)
        return Resolution(None, exposed if exposed is not None else {}, slug, None)

    def _open(
        self,
        known: _Known,
        traceparent: bytes | str | None,
        tracestate: bytes | str | None,
        slug: PathSlug | None,
    ) -> Resolution:
        otel = self.hands_over_to_otel()
        if self.session_factory is None and not otel:
            session, metadata = known.open(self.storage)
            return Resolution(session, metadata, slug, None)
        ctx = known.own()
        if otel:
            ctx = self._for_otel(ctx, _text(traceparent), _text(tracestate))
        if self.session_factory is not None:
            own = {**ctx, "uid_chain": list(ctx["uid_chain"]), "metadata": dict(ctx["metadata"])}
            session = self.session_factory(own, self.storage)
        elif otel:
            session = self._otel_session(ctx)
        else:
            session, metadata = known.open(self.storage)
            return Resolution(session, metadata, slug, None)
        merged = getattr(session, "merged_metadata", None)
        metadata = merged() if callable(merged) else dict(ctx["metadata"])
        return Resolution(session, metadata, slug, None)

    def _otel_session(self, ctx: dict[str, Any]) -> Any:
        """The OTel backend's session continuing `ctx`, validated once already (when the header was first decoded;
        `_for_otel` checked the trace headers it added): `restore_session` would validate it again on every
        request, which for metadata holding floats, lists or dicts is most of the cost."""
        backend = self._otel_backend()
        from_valid = getattr(backend, "_from_valid_context", None)
        if from_valid is None or not (isinstance(backend, type) and issubclass(backend, BaseSession)):
            return restore_session(ctx, storage=self.storage)
        return from_valid(ctx, self.storage)

    @staticmethod
    def _for_otel(ctx: dict[str, Any], traceparent: str | None, tracestate: str | None) -> dict[str, Any]:
        """`ctx` marked for the OTel backend, carrying the caller's W3C trace context when it is well-formed."""
        if traceparent is None or len(traceparent) != 55 or not _TRACEPARENT.fullmatch(traceparent):
            return {**ctx, "backend": OTEL_BACKEND}
        otel = {"traceparent": traceparent}
        if tracestate and len(tracestate) <= _TRACESTATE_MAX and tracestate.isascii():
            otel["tracestate"] = tracestate
        return {**ctx, "backend": OTEL_BACKEND, "otel": otel}
