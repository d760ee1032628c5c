"""Outgoing propagation: the current session as ``baggage`` header members, and reading them back.

`inject` merges the current session's members into a headers mapping (other baggage members kept, any
``session.*`` members already there replaced, so a header that OpenTelemetry's propagator filled carries the
session once). A host outside the ``propagate_to`` allow-list gets no session data at all. The encoded members
are cached per session object (session-core's `session_baggage`), so an instrumented client pays a few
microseconds per request.
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any, TypeVar, overload

from session_core import current_context, decode_baggage, encode_baggage, get_current_session, session_baggage
from session_core.baggage import strip_session_members
from session_core.signing import resolve_signing_key
from session_http.allowlist import PROPAGATE_TO_ENV, HostAllowList, host_of
from session_http.incoming import has_session_members

__all__ = ["BAGGAGE", "OutgoingConfig", "extract", "inject"]

logger = logging.getLogger(__name__)

BAGGAGE = "baggage"
_H = TypeVar("_H", bound=MutableMapping[str, str])
_ENV_DATA: Any = getattr(os.environ, "_data", None) if os.name == "posix" else None


def getenv(name: str) -> str | None:
    """``os.environ.get(name)`` without its ~2 us exception path for a missing name (read per request)."""
    if _ENV_DATA is not None:
        raw = _ENV_DATA.get(name.encode())
        return None if raw is None else os.fsdecode(raw)
    return os.environ.get(name)


def _find_baggage(headers: Mapping[str, str]) -> tuple[str | None, str | None]:
    """``(key, value)`` of the baggage header in `headers`, matching the name case-insensitively; a bytes value
    (requests takes those) as latin-1 text, as requests sends it."""
    name: str | None = BAGGAGE
    value: Any = headers.get(BAGGAGE)
    if value is None:
        name = None
        if type(headers) is dict:  # a plain dict is case-sensitive; case-insensitive mappings answered above
            for key, item in headers.items():
                if key.lower() == BAGGAGE:
                    name, value = key, item
                    break
    if type(value) is bytes:
        value = value.decode("latin-1")
    return name, value


def _strip(headers: MutableMapping[str, str]) -> None:
    name, existing = _find_baggage(headers)
    if name is None or existing is None or not has_session_members(existing):
        return
    others = strip_session_members(existing)
    if others:
        headers[name] = others
    else:
        del headers[name]


def _inject(headers: MutableMapping[str, str], key: bytes | str | None) -> None:
    """Merge the current session (else an ambient context) into `headers`; `key` None: ``$SESSION_SIGNING_KEY``."""
    session = get_current_session()
    if session is not None:  # its members, cached per session object (session-core's `session_baggage`)
        name, existing = _find_baggage(headers)
        headers[name or BAGGAGE] = session_baggage(session, existing=existing, signing_key=key)
        return
    ctx = current_context()  # an ambient context (e.g. OTel baggage a server extracted), or None
    if ctx is None:  # outside any session: what the caller put there (if anything) goes as it is
        return
    name, existing = _find_baggage(headers)
    headers[name or BAGGAGE] = encode_baggage(ctx, existing=existing, signing_key=key)


@overload
def inject(
    headers: None = None,
    *,
    url: str | None = None,
    propagate_to: str | Iterable[str] | None = None,
    signing_key: str | bytes | None = None,
) -> dict[str, str]: ...


@overload
def inject(
    headers: _H,
    *,
    url: str | None = None,
    propagate_to: str | Iterable[str] | None = None,
    signing_key: str | bytes | None = None,
) -> _H: ...


def inject(
    headers: MutableMapping[str, str] | None = None,
    *,
    url: str | None = None,
    propagate_to: str | Iterable[str] | None = None,
    signing_key: str | bytes | None = None,
) -> MutableMapping[str, str]:
    """Add the current session's baggage members to `headers` (a new dict when None) and return it.

    Other baggage members are kept; ``session.*`` members already there are replaced. A request to a host outside
    `propagate_to` (default ``$SESSION_PROPAGATE_TO``, else every host) gets the session members removed instead;
    while an allow-list is in force, a call without `url` cannot be checked and is treated the same way, with
    one warning (pass the request's `url`, or ``propagate_to="*"`` for a carrier that is not an HTTP request).
    `signing_key` (default ``$SESSION_SIGNING_KEY``) signs the context. Outside any session, nothing is added.
    Metadata JSON cannot carry is left out, with a warning. Raises `session_core.ContextTooLarge` when the
    context cannot fit the header, `session_core.InvalidSessionContext` when its session is nested deeper than
    a context may carry (64 uids).
    """
    if headers is None:
        headers = {}
    allow = _allow_list(propagate_to)
    if not allow.every_host and (url is None or not allow.allows_url(url)):
        if url is None:
            _warn_no_url(allow)
        _strip(headers)
        return headers
    _inject(headers, signing_key)
    return headers


_said_no_url = False


def _warn_no_url(allow: HostAllowList) -> None:
    global _said_no_url
    if _said_no_url or (get_current_session() is None and current_context() is None):
        return
    _said_no_url = True
    logger.warning(
        "inject() was called without url= while %r limits which hosts receive session data: the session was not "
        "added. Pass the request's url=, or propagate_to='*' for a carrier that is not an HTTP request",
        allow,
    )


_env_allow: tuple[str | None, HostAllowList] | None = None


def _allow_list(propagate_to: str | Iterable[str] | None) -> HostAllowList:
    global _env_allow
    if propagate_to is not None:
        return HostAllowList.from_setting(propagate_to)
    env = getenv(PROPAGATE_TO_ENV) or None
    cached = _env_allow
    if cached is None or cached[0] != env:
        cached = _env_allow = (env, HostAllowList.from_setting(env) if env else HostAllowList(None))
    return cached[1]


def _header_value(headers: Mapping[str, Any] | Iterable[tuple[Any, Any]]) -> str | bytes | None:
    if isinstance(headers, Mapping):
        getlist = getattr(headers, "getlist", None)  # Starlette's, werkzeug's: `get` answers the first header only
        if callable(getlist):
            return _combined(getlist(BAGGAGE))
        getall = getattr(headers, "getall", None)  # aiohttp's (multidict's) `getlist`
        if callable(getall):
            try:
                return _combined(list(getall(BAGGAGE)))
            except KeyError:  # multidict's answer for a name it lacks (a case-sensitive one may spell it otherwise)
                pass
        found: Any = headers.get(BAGGAGE)
        if found is None:
            for key, value in headers.items():  # a case-sensitive mapping, or one with bytes keys
                if isinstance(key, (str, bytes)) and key.lower() in (BAGGAGE, BAGGAGE.encode()):
                    found = value
                    break
        return found if isinstance(found, (str, bytes)) else None
    items = getattr(headers, "items", None)
    pairs: Iterable[Any] = items() if callable(items) else headers  # `email.message.Message` (http.server): pairs
    values: list[Any] = []
    for pair in pairs:  # ASGI-style pairs; several baggage headers combine
        if type(pair) not in (tuple, list) or len(pair) != 2:
            raise TypeError(
                f"extract() takes a mapping of headers or (name, value) pairs, got {type(headers).__name__} "
                f"holding {type(pair).__name__}"
            )
        key, value = pair
        if isinstance(key, (str, bytes)) and key.lower() in (BAGGAGE, BAGGAGE.encode()):
            values.append(value)
    return _combined(values)


def _combined(values: list[Any]) -> str | bytes | None:
    """Several baggage headers' values as one (comma-joined, as W3C combines them); None for none."""
    if not values:
        return None
    if all(isinstance(v, bytes) for v in values):
        return b",".join(values)
    return ",".join(v.decode("latin-1") if isinstance(v, bytes) else str(v) for v in values)


def extract(
    headers: Mapping[str, Any] | Iterable[tuple[Any, Any]],
    *,
    signing_key: str | bytes | None = None,
    storage: Any = None,
    strict: bool = False,
) -> dict[str, Any] | None:
    """The context dict carried by the ``baggage`` header in `headers`, or None.

    `headers` is a mapping (names matched case-insensitively; every repeated ``baggage`` header combined when it
    has ``getlist`` or ``getall``, as Starlette's and aiohttp's ``request.headers`` do), ``(name, value)`` pairs
    (ASGI's raw headers) or an object with ``items()`` giving such pairs (``http.server``'s
    ``email.message.Message``); a `TypeError` for anything else.
    Malformed, oversized or (with a signing key) unsigned/forged contexts give None with one warning, or raise
    `session_core.InvalidSessionContext` when `strict`. `storage` resolves contexts sent by reference.
    """
    value = _header_value(headers)
    if value is None:
        return None
    return decode_baggage(value, signing_key=signing_key, storage=storage, strict=strict)


_warned: set[tuple[str | None, str]] = set()


def _warn_not_propagated(host: str | None, exc: Exception) -> None:
    """Say why a request went without its session: once per session and error, not on every request."""
    session = get_current_session()
    key = (getattr(session, "uid", None), f"{type(exc).__name__}: {exc}"[:240])
    if key in _warned:
        logger.debug("session context not propagated to %s: %s", host or "the request's host", exc)
        return
    if len(_warned) >= 1024:
        _warned.clear()
    _warned.add(key)
    logger.warning(
        "session context not propagated to %s: %s (said once per session; its requests go without it)",
        host or "the request's host",
        exc,
    )


class OutgoingConfig:
    """What an instrumented client applies to each request: the allow-list and the signing key."""

    __slots__ = ("allow", "signing_key")

    def __init__(self, propagate_to: str | Iterable[str] | None, signing_key: str | bytes | None) -> None:
        self.allow = HostAllowList.from_setting(propagate_to)
        self.signing_key = resolve_signing_key(signing_key) if signing_key is not None else None

    def apply(self, headers: MutableMapping[str, str], host: str | None) -> None:
        """Inject into (or, for a host outside the allow-list, strip from) `headers`; never raises."""
        try:
            if self.allow.every_host or self.allow.allows(host):
                _inject(headers, self.signing_key)
            else:
                _strip(headers)
        except Exception as exc:  # an HTTP request must not fail because its session context could not travel
            _warn_not_propagated(host, exc)
            try:
                _strip(headers)
            except Exception:
                pass

    def apply_url(self, headers: MutableMapping[str, str], url: str) -> None:
        self.apply(headers, None if self.allow.every_host else host_of(url))


class ClientConfigs:
    """Which clients of one instrumented library send the session, and how: per client, else globally.

    The configuration lives in the client's ``__dict__`` (no registry keeping clients alive) and the wrapped
    send method looks it up per call, so switching off never needs unwrapping. A client switched off on its own
    holds `OFF` there, so that it stays off while every other client is instrumented.
    """

    ATTR = "_session_http_config"
    OFF: Any = object()

    def __init__(self) -> None:
        self.global_config: OutgoingConfig | None = None
        self._instances: weakref.WeakSet[Any] = weakref.WeakSet()

    def lookup(self, client: Any) -> OutgoingConfig | None:
        """The configuration `client` sends with, or None (not instrumented)."""
        config: OutgoingConfig | None = client.__dict__.get(self.ATTR)
        if config is None:
            return self.global_config
        return None if config is self.OFF else config

    def configure(self, client: Any, config: OutgoingConfig) -> None:
        """Make `client` (None: every client) send with `config`."""
        if client is None:
            self.global_config = config
        else:
            client.__dict__[self.ATTR] = config
            self._instances.add(client)

    def clear(self, client: Any) -> bool:
        """Switch `client` off (None: every client); True when every client was switched off."""
        if client is not None:
            client.__dict__[self.ATTR] = self.OFF  # off even while every client is instrumented
            self._instances.add(client)
            return False
        self.global_config = None
        for instance in list(self._instances):
            instance.__dict__.pop(self.ATTR, None)
        self._instances = weakref.WeakSet()
        return True
