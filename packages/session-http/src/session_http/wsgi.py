"""`SessionWSGIMiddleware`: the same as `SessionMiddleware`, for WSGI apps (Flask, Django, any WSGI app).

The application and the iteration of its response body run in a copy of the server thread's context with the
child session active, so a streamed body is produced inside the session, and nothing is left on the thread's
own context even when a server never calls ``close()``. Applied twice around one app, only the outer instance
acts: it marks the request's environ (``environ["session_http.middleware"]``) and the inner one passes through.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from session_http.incoming import Incoming, SessionFactory, has_session_members
from session_http.pathslug import META_SEGMENT, request_uri_without

__all__ = ["SessionWSGIMiddleware"]

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

ENVIRON_KEY = "session.metadata"
MARKER_KEY = "session_http.middleware"  # the instance that handles this request: any other one passes it through


class SessionWSGIMiddleware:
    """Run each request inside a child of the session its ``baggage`` header (or path slug) carries.

    The metadata is exposed as ``environ["session.metadata"]`` (``{}`` without a context). Options as for
    `session_http.SessionMiddleware` (applied twice, the outer instance handles each request).
    """

    def __init__(
        self,
        app: WSGIApp,
        *,
        storage: Any = None,
        strict: bool = False,
        signing_key: str | bytes | None = None,
        session_factory: SessionFactory | None = None,
    ) -> None:
        self.app = app
        self.incoming = Incoming(storage, strict, signing_key, session_factory)

    @property
    def storage(self) -> Any:
        """Where the requests' sessions write their traces."""
        return self.incoming.storage

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if MARKER_KEY in environ:  # an outer instance handles this request
            return self.app(environ, start_response)
        environ[MARKER_KEY] = self
        baggage = environ.get("HTTP_BAGGAGE")
        path = environ.get("PATH_INFO") or ""
        if (baggage is None or not has_session_members(baggage)) and META_SEGMENT not in path:
            environ[ENVIRON_KEY] = {}
            return self.app(environ, start_response)

        found = self.incoming.resolve(baggage, environ.get("HTTP_TRACEPARENT"), environ.get("HTTP_TRACESTATE"), path)
        if found.problem is not None and self.incoming.strict:
            body = f"invalid session context: {found.problem}\n".encode("utf-8", "replace")
            start_response(
                "400 Bad Request",
                [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))],
            )
            return [body]
        environ[ENVIRON_KEY] = found.metadata
        slug = found.slug
        if slug is not None:
            environ["PATH_INFO"] = slug.path
            for key in ("REQUEST_URI", "RAW_URI"):
                uri = environ.get(key)
                if isinstance(uri, str):
                    environ[key] = request_uri_without(
                        uri, slug.segment, (environ.get("SCRIPT_NAME") or "") + slug.path
                    )
        session = found.session
        if session is None:
            return self.app(environ, start_response)
        context = contextvars.copy_context()
        result = context.run(_enter_and_call, session, self.app, environ, start_response)
        if isinstance(result, (list, tuple)):  # the body is already produced: leave the session now
            context.run(session.__exit__, None, None, None)
            return result
        return _SessionBody(result, context, session)


def _enter_and_call(session: Any, app: WSGIApp, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    session.__enter__()
    try:
        return app(environ, start_response)
    except BaseException as exc:
        session.__exit__(type(exc), exc, exc.__traceback__)
        raise


class _SessionBody:
    """The application's response iterable, iterated and closed inside the request's session context.

    An exception raised while producing the body is what the session exits with (an `OTelSession` records it on
    its span), as when the application itself raises.
    """

    __slots__ = ("_closed", "_context", "_error", "_iterator", "_result", "_session")

    def __init__(self, result: Iterable[bytes], context: contextvars.Context, session: Any) -> None:
        self._result = result
        self._context = context
        self._session = session
        self._iterator: Iterator[bytes] | None = None
        self._closed = False
        self._error: BaseException | None = None

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        try:
            iterator = self._iterator
            if iterator is None:
                iterator = self._iterator = self._context.run(iter, self._result)
            return self._context.run(next, iterator)
        except StopIteration:
            raise
        except BaseException as exc:
            self._error = exc
            raise

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._context.run(self._close)

    def _close(self) -> None:
        error, self._error = self._error, None  # no reference cycle through the traceback outlives the request
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        except BaseException as exc:
            error = exc
            raise
        finally:
            if error is None:
                self._session.__exit__(None, None, None)
            else:
                self._session.__exit__(type(error), error, error.__traceback__)
