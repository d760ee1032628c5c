"""Outgoing propagation for `requests`: every ``Session.send`` (so every redirect hop too) carries the session.

Instrumenting wraps ``requests.Session.send`` once; what it does is looked up per call (the session's own
configuration, else the global one), so uninstrumenting only switches it off, even when another library (e.g.
OpenTelemetry's instrumentor) wrapped ``send`` on top of ours.
"""

from __future__ import annotations

import functools
import importlib
import threading
from collections.abc import Iterable
from typing import Any, ClassVar

from session_core import MissingOptionalDependency
from session_http.propagation import ClientConfigs, OutgoingConfig

__all__ = ["instrument_requests", "uninstrument_requests"]

_CONFIGS = ClientConfigs()
_MARK = "__session_http_wrapper__"


class _State:
    lock: ClassVar[threading.Lock] = threading.Lock()
    original: ClassVar[Any] = None  # Session.send before we wrapped it
    wrapper: ClassVar[Any] = None


def _requests(feature: str) -> Any:
    try:
        return importlib.import_module("requests")
    except ImportError as exc:
        raise MissingOptionalDependency(feature, "requests", "session-http", "requests") from exc


def _install(requests: Any) -> None:
    with _State.lock:
        if _State.wrapper is not None:
            return
        original = requests.Session.send

        @functools.wraps(original)
        def send(self: Any, request: Any, **kwargs: Any) -> Any:
            config = _CONFIGS.lookup(self)
            if config is not None:
                config.apply_url(request.headers, request.url or "")
            return original(self, request, **kwargs)

        setattr(send, _MARK, True)
        _State.original = original
        _State.wrapper = send
        requests.Session.send = send


def instrument_requests(
    session: Any = None,
    *,
    propagate_to: str | Iterable[str] | None = None,
    signing_key: str | bytes | None = None,
) -> None:
    """Make `session` (a ``requests.Session``; None: every session, including ``requests.get``) send the session.

    `propagate_to`: hosts that may receive session data (default ``$SESSION_PROPAGATE_TO``, else every host);
    requests to other hosts carry none. `signing_key` (default ``$SESSION_SIGNING_KEY``) signs the context.
    Calling it again replaces the configuration. Raises `MissingOptionalDependency` without requests installed.
    """
    requests = _requests("session_http.instrument_requests")
    if session is not None and not isinstance(session, requests.Session):
        raise TypeError(f"instrument_requests() takes a requests.Session, got {type(session).__name__}")
    config = OutgoingConfig(propagate_to, signing_key)
    _install(requests)
    _CONFIGS.configure(session, config)


def uninstrument_requests(session: Any = None) -> None:
    """Stop propagating: for `session` only, or (None) for every session, restoring ``Session.send``."""
    if not _CONFIGS.clear(session):
        return
    with _State.lock:
        wrapper = _State.wrapper
        if wrapper is None:
            return
        try:
            requests = importlib.import_module("requests")
        except ImportError:  # pragma: no cover - it was importable when we wrapped it
            return
        if requests.Session.send is wrapper:  # else someone wrapped on top of us: stay in place, switched off
            requests.Session.send = _State.original
            _State.wrapper = None
            _State.original = None


def is_instrumented(session: Any = None) -> bool:
    """Whether requests sent by `session` (None: by sessions without their own configuration) propagate."""
    if session is not None:
        return _State.wrapper is not None and _CONFIGS.lookup(session) is not None
    return _State.wrapper is not None and _CONFIGS.global_config is not None
