"""Outgoing propagation for `httpx`, sync ``Client`` and ``AsyncClient``: every request hop carries the session.

The wrap sits on the clients' per-hop send (``_send_single_request``, which httpx calls for the first request
and for each redirect, whatever the transport), so a redirect to a host outside the allow-list is stripped of
session data. On an httpx without it, the public ``send`` is wrapped instead (redirect hops then keep the
first hop's decision).
"""

from __future__ import annotations

import functools
import importlib
import threading
from collections.abc import Iterable
from typing import Any, ClassVar

from session_core import MissingOptionalDependency
from session_http.propagation import ClientConfigs, OutgoingConfig

__all__ = ["instrument_httpx", "uninstrument_httpx"]

_CONFIGS = ClientConfigs()
_HOP = "_send_single_request"


class _State:
    lock: ClassVar[threading.Lock] = threading.Lock()
    wrapped: ClassVar[dict[type, tuple[str, Any, Any]]] = {}  # client class -> (attribute, original, wrapper)


def _httpx(feature: str) -> Any:
    try:
        return importlib.import_module("httpx")
    except ImportError as exc:
        raise MissingOptionalDependency(feature, "httpx", "session-http", "httpx") from exc


_config = _CONFIGS.lookup


def _apply(config: OutgoingConfig, request: Any) -> None:
    config.apply(request.headers, None if config.allow.every_host else request.url.host)


def _wrap_sync(original: Any) -> Any:
    @functools.wraps(original)
    def send(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        config = _config(self)
        if config is not None:
            _apply(config, request)
        return original(self, request, *args, **kwargs)

    return send


def _wrap_async(original: Any) -> Any:
    @functools.wraps(original)
    async def send(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        config = _config(self)
        if config is not None:
            _apply(config, request)
        return await original(self, request, *args, **kwargs)

    return send


def _install(httpx: Any) -> None:
    with _State.lock:
        for cls, wrap in ((httpx.Client, _wrap_sync), (httpx.AsyncClient, _wrap_async)):
            if cls in _State.wrapped:
                continue
            attribute = _HOP if hasattr(cls, _HOP) else "send"
            original = getattr(cls, attribute)
            wrapper = wrap(original)
            setattr(cls, attribute, wrapper)
            _State.wrapped[cls] = (attribute, original, wrapper)


def instrument_httpx(
    client: Any = None,
    *,
    propagate_to: str | Iterable[str] | None = None,
    signing_key: str | bytes | None = None,
) -> None:
    """Make `client` (an ``httpx.Client`` or ``AsyncClient``; None: every client, sync and async) send the session.

    `propagate_to`: hosts that may receive session data (default ``$SESSION_PROPAGATE_TO``, else every host);
    requests to other hosts carry none. `signing_key` (default ``$SESSION_SIGNING_KEY``) signs the context.
    Calling it again replaces the configuration. Raises `MissingOptionalDependency` without httpx installed.
    """
    httpx = _httpx("session_http.instrument_httpx")
    if client is not None and not isinstance(client, (httpx.Client, httpx.AsyncClient)):
        raise TypeError(f"instrument_httpx() takes an httpx.Client or httpx.AsyncClient, got {type(client).__name__}")
    config = OutgoingConfig(propagate_to, signing_key)
    _install(httpx)
    _CONFIGS.configure(client, config)


def uninstrument_httpx(client: Any = None) -> None:
    """Stop propagating: for `client` only, or (None) for every client, restoring the wrapped methods."""
    if not _CONFIGS.clear(client):
        return
    with _State.lock:
        for cls, (attribute, original, wrapper) in list(_State.wrapped.items()):
            if cls.__dict__.get(attribute) is wrapper:  # else wrapped on top of us: stay in place, switched off
                setattr(cls, attribute, original)
                del _State.wrapped[cls]


def is_instrumented(client: Any = None) -> bool:
    """Whether requests sent by `client` (None: by clients without their own configuration) propagate."""
    if client is not None:
        return bool(_State.wrapped) and _CONFIGS.lookup(client) is not None
    return bool(_State.wrapped) and _CONFIGS.global_config is not None
