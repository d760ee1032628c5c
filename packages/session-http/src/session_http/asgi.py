"""`SessionMiddleware`: pure ASGI (FastAPI, Starlette, any ASGI app), no framework dependency.

HTTP requests run inside a child of the caller's session for the whole ``await app(...)``, so a streaming
response's body is produced inside the session too. A websocket connection runs inside one child session from
its handshake to its close (the context read from the handshake's headers or path, as for a request). Lifespan
scopes pass through untouched. Applied twice around one app, only the outer instance acts: the inner one
passes through the very scope the outer handed down (noted in a `ContextVar`, so the scope itself is neither
copied nor marked: what the app's router writes into it, e.g. ``scope["route"]``, stays visible to middlewares
further out, and an ASGI app called in-process from a handler gets a scope of its own and is served as usual).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from contextvars import ContextVar
from typing import Any

from session_http.incoming import Incoming, SessionFactory, has_session_members
from session_http.pathslug import META_SEGMENT, raw_path_without

__all__ = ["SessionMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

STATE_KEY = "session_metadata"
_SCOPE_TYPES = frozenset({"http", "websocket"})
# The scope an instance handed down with a session (or a refusal) decided: any other instance passes it through.
_handed_down: ContextVar[Scope | None] = ContextVar("session_http_handed_down", default=None)


class SessionMiddleware:
    """Run each HTTP request (and each websocket connection, for its whole life) inside a child of the session
    its ``baggage`` header (or path slug) carries.

    The metadata is exposed as ``scope["state"]["session_metadata"]`` (Starlette/FastAPI:
    ``request.state.session_metadata``, ``websocket.state.session_metadata``; ``{}`` without a context).
    `storage`: where the child sessions write (default ``$SESSION_STORAGE_URL``, else one in-memory storage for
    this middleware). `strict`: answer 400 to a malformed or refused context instead of running without a session
    (a websocket handshake too, or 403 from a server that cannot answer a handshake with a response).
    `signing_key` (or ``$SESSION_SIGNING_KEY``): refuse unsigned, forged and tampered contexts.
    `session_factory(ctx, storage)`: build the session yourself (default `session_core.restore_session`).
    Applied twice around one app (a framework adds it and so do you), the outer instance handles each request
    and its options apply.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        storage: Any = None,
        strict: bool = False,
        signing_key: str | bytes | None = None,
        session_factory: SessionFactory | None = None,
    ) -> None:
        self.app = app
        self.incoming = Incoming(storage, strict, signing_key, session_factory)
        self._known = self.incoming.known  # the decoded-header cache, read directly on the hot path
        self._storage = self.incoming.storage
        self._plain_sessions = session_factory is None

    @property
    def storage(self) -> Any:
        """Where the requests' sessions write their traces."""
        return self.incoming.storage

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in _SCOPE_TYPES or _handed_down.get() is scope:  # lifespan, or an outer one handles it
            await self.app(scope, receive, send)
            return
        raw_headers = scope["headers"]
        headers = dict(raw_headers)  # one C call; it keeps the last of repeated names: baggage is joined here
        baggage: bytes | None = headers.get(b"baggage")
        if baggage is not None and len(headers) != len(raw_headers):
            baggage = _joined(raw_headers, b"baggage")
        path: str = scope["path"]
        state = scope.get("state")
        if state is None:  # a server without lifespan state: add it to a copy (changes must not leak upstream)
            state = {}
            scope = {**scope, "state": state}
        if META_SEGMENT not in path:
            if baggage is None or (
                b"session." not in baggage and (b"%" not in baggage or not has_session_members(baggage))
            ):
                state[STATE_KEY] = {}  # no session: the request costs this much
                await self.app(scope, receive, send)
                return
            known = self._known.get(baggage) if self._plain_sessions else None
            if (
                known is not None  # the hot path: a session header seen before (decoded and validated then)
                and (known.expires is None or time.time() <= known.expires)
                and not self.incoming.hands_over_to_otel()
            ):
                session, state[STATE_KEY] = known.open(self._storage)
                session._enter_stack()
                handed = _handed_down.set(scope)
                try:
                    await self.app(scope, receive, send)
                finally:
                    _handed_down.reset(handed)
                    session._exit_stack()
                return
        traceparent: bytes | None = headers.get(b"traceparent")
        tracestate: bytes | None = headers.get(b"tracestate")
        if tracestate is not None and len(headers) != len(raw_headers):
            tracestate = _joined(raw_headers, b"tracestate")

        found = self.incoming.resolve(baggage, traceparent, tracestate, path)
        if found.problem is not None and self.incoming.strict:
            await _reject(scope, send, found.problem)
            return
        state[STATE_KEY] = found.metadata
        if found.slug is not None:
            scope = dict(scope)
            scope["path"] = found.slug.path
            scope["raw_path"] = raw_path_without(scope.get("raw_path"), found.slug.segment, found.slug.path)
        session = found.session
        handed = _handed_down.set(scope)  # an inner instance must not accept what this one refused either
        try:
            if session is None:
                await self.app(scope, receive, send)
                return
            with session:
                await self.app(scope, receive, send)
        finally:
            _handed_down.reset(handed)


def _joined(headers: Any, name: bytes) -> bytes | None:
    """Every `name` header's value joined with commas (how repeated list-valued headers combine), or None."""
    values = [value for key, value in headers if key == name]
    return b",".join(values) if values else None


async def _reject(scope: Scope, send: Send, problem: str) -> None:
    body = f"invalid session context: {problem}\n".encode("utf-8", "replace")
    prefix = "http."
    if scope["type"] == "websocket":
        if "websocket.http.response" not in (scope.get("extensions") or {}):
            await send({"type": "websocket.close", "code": 1008})  # before accepting: the server answers 403
            return
        prefix = "websocket.http."  # the ASGI extension for answering a handshake with an HTTP response
    await send(
        {
            "type": prefix + "response.start",
            "status": 400,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode("ascii")),
            ],
        }
    )
    await send({"type": prefix + "response.body", "body": body, "more_body": False})
