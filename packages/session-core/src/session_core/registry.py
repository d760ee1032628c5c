"""Registries that installed packages fill through entry points, so adapters never import each other.

Groups:

- ``session_core.storage``: name = URL scheme, value = a callable ``factory(url) -> storage``.
- ``session_core.backends``: name = backend name (as in a context's ``"backend"`` field), value = a session
  class with ``from_context(ctx, storage=None)``.
- ``session_core.ambient``: value = a callable returning the context found in the ambient environment
  (e.g. OpenTelemetry baggage extracted by a server's instrumentation), or None.

Entry points are read once, lazily, the first time a group is used.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from session_core.errors import UnknownStorageScheme
from session_core.storage import InMemoryStorage
from session_core.urls import redact_url, url_scheme

__all__ = [
    "ambient_context",
    "get_backend",
    "open_storage",
    "register_ambient_provider",
    "register_backend",
    "register_storage_scheme",
    "storage_schemes",
]

logger = logging.getLogger(__name__)

STORAGE_GROUP = "session_core.storage"
BACKEND_GROUP = "session_core.backends"
AMBIENT_GROUP = "session_core.ambient"

# Which distribution provides a scheme or backend, for the error message when it is missing.
_PROVIDERS = {
    "sqlite": "session-storage-sql",
    "postgresql": "session-storage-sql[postgres]",
    "postgres": "session-storage-sql[postgres]",
    "otel": "session-otel",
}

_lock = threading.RLock()
_loaded: dict[str, dict[str, Any]] = {}
_explicit: dict[str, dict[str, Any]] = {STORAGE_GROUP: {}, BACKEND_GROUP: {}, AMBIENT_GROUP: {}}
# (pid, URL as given) -> (storage, the working directory it was opened in, or None when that cannot matter)
_storage_cache: dict[tuple[int, str], tuple[Any, str | None]] = {}
# (pid, storage.url, the URL given when it holds a secret) -> storage: one storage per place
_storage_by_url: dict[tuple[int, str, str | None], Any] = {}
_memory_stores: dict[str, InMemoryStorage] = {}


def _group(group: str) -> dict[str, Any]:
    """Entry points of `group` by name, loaded on first use; explicit registrations win."""
    found = _loaded.get(group)
    if found is None:
        with _lock:
            found = _loaded.get(group)
            if found is None:
                found = {ep.name: ep for ep in entry_points(group=group)}
                _loaded[group] = found
    if _explicit[group]:
        return {**found, **_explicit[group]}
    return found


def _resolve(group: str, name: str) -> Any:
    item = _group(group).get(name)
    if item is None:
        return None
    if hasattr(item, "load") and hasattr(item, "group"):  # an EntryPoint not loaded yet
        try:
            loaded = item.load()
        except ImportError as exc:
            logger.warning("entry point %s:%s could not be loaded: %s", group, name, exc)
            return None
        with _lock:
            _explicit[group].setdefault(name, loaded)
        return loaded
    return item


def register_storage_scheme(scheme: str, factory: Callable[[str], Any]) -> None:
    """Register `factory(url)` for URLs of `scheme` (entry points do this for installed packages)."""
    with _lock:
        _explicit[STORAGE_GROUP][scheme.lower()] = factory


def register_backend(name: str, session_class: Any) -> None:
    """Register a session class under the backend name that its contexts carry."""
    with _lock:
        _explicit[BACKEND_GROUP][name] = session_class


def register_ambient_provider(name: str, provider: Callable[[], dict[str, Any] | None]) -> None:
    """Register a callable that finds a context in the ambient environment when no session is active."""
    with _lock:
        _explicit[AMBIENT_GROUP][name] = provider


def storage_schemes() -> list[str]:
    """Every URL scheme `open_storage` can open in this environment."""
    return sorted({"memory", *_group(STORAGE_GROUP)})


def get_backend(name: str) -> Any:
    """The session class registered as backend `name`, or None when not installed."""
    if name == "contextvar":
        from session_core.session import ContextVarSession

        return ContextVarSession
    return _resolve(BACKEND_GROUP, name)


def ambient_context() -> dict[str, Any] | None:
    """The first context an ambient provider finds (e.g. OTel baggage with no session object), or None."""
    providers = _group(AMBIENT_GROUP)
    if not providers:
        return None
    for name in providers:
        provider = _resolve(AMBIENT_GROUP, name)
        if provider is None:
            continue
        try:
            ctx = provider()
        except Exception:  # a broken provider must not break the caller's helper call
            logger.warning("ambient session provider %r failed", name, exc_info=True)
            continue
        if ctx is not None:
            return ctx  # type: ignore[no-any-return]
    return None


def _cwd() -> str:
    try:
        return os.getcwd()
    except OSError:  # the working directory was removed: never equal to a recorded one
        return ""


def open_storage(url: str) -> Any:
    """The storage for `url`, opened once per process and place.

    ``memory://`` (optionally ``memory://name``) is a process-wide `InMemoryStorage`. Other schemes come
    from installed packages, e.g. ``sqlite:///traces.db`` from session-storage-sql.

    A URL whose storage reports another ``url`` (a relative path made absolute, a password left out) is
    opened again when the working directory has changed since, so a relative path means the file in the current
    directory; URLs that reach the same storage ``url`` share one storage object.
    """
    if not isinstance(url, str) or not url:
        raise UnknownStorageScheme(f"open_storage needs a storage URL string, got {url!r}")
    scheme = url_scheme(url)
    if scheme == "memory":
        with _lock:
            return _memory_stores.setdefault(url, InMemoryStorage())
    pid = os.getpid()
    key = (pid, url)
    cached = _storage_cache.get(key)
    if cached is not None and (cached[1] is None or cached[1] == _cwd()):
        return cached[0]
    factory = _resolve(STORAGE_GROUP, scheme)
    if factory is None and "+" in scheme:  # postgresql+psycopg -> postgresql
        factory = _resolve(STORAGE_GROUP, scheme.split("+", 1)[0])
    if factory is None:
        base = scheme.split("+", 1)[0]
        hint = _PROVIDERS.get(base)
        install = f' Install it with: pip install "{hint}"' if hint else ""
        raise UnknownStorageScheme(
            f"no installed package provides storage URLs of scheme {scheme!r} ({redact_url(url)}).{install} "
            f"Schemes available here: {', '.join(storage_schemes())}"
        )
    with _lock:
        cwd = _cwd()
        cached = _storage_cache.get(key)
        if cached is not None and (cached[1] is None or cached[1] == cwd):
            return cached[0]
        storage = factory(url)
        address = getattr(storage, "url", None)
        if isinstance(address, str) and address:
            # A URL holding a secret keeps a storage of its own (it connects with that secret), shared only with
            # the very same URL; every other URL shares the storage first opened for its address.
            place = (pid, address, None if redact_url(url) == url else url)
            shared = _storage_by_url.setdefault(place, storage)
            if shared is not storage:  # the place was open already: let the new one go (its engine, its file)
                close = getattr(storage, "close", None)
                if callable(close):
                    close()
                storage = shared
        # Its own address given: the same place from any directory. Else the URL may be relative to this one.
        _storage_cache[key] = (storage, None if address == url or not isinstance(address, str) else cwd)
    return storage
