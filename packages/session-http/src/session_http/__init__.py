"""session-http: sessions across HTTP services.

Incoming: `SessionMiddleware` (ASGI) and `SessionWSGIMiddleware` (WSGI) run each request inside a child of the
caller's session, read from the W3C ``baggage`` header or a ``/meta/<slug>/`` path segment. Outgoing: `inject`
adds the current session to a request's headers; `instrument_requests` / `instrument_httpx` do it for every
request a client sends, to the hosts of the ``propagate_to`` allow-list.
"""

from __future__ import annotations

from session_http._version import __version__
from session_http.allowlist import HostAllowList
from session_http.asgi import SessionMiddleware
from session_http.client_httpx import instrument_httpx, uninstrument_httpx
from session_http.client_requests import instrument_requests, uninstrument_requests
from session_http.propagation import extract, inject
from session_http.wsgi import SessionWSGIMiddleware

__all__ = [
    "SessionMiddleware",
    "SessionWSGIMiddleware",
    "inject",
    "extract",
    "instrument_requests",
    "uninstrument_requests",
    "instrument_httpx",
    "uninstrument_httpx",
    "HostAllowList",
    "__version__",
]
