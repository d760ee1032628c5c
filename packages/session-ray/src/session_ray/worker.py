"""The worker side: turn a propagated context into an entered child session writing to reachable storage.

Storage is resolved once per process and URL (`session_core.open_storage` caches per pid). Credentials never
travel in a context (its ``storage_url`` has no password): when the worker's own ``$SESSION_STORAGE_URL`` names
the same storage, that URL, with its credentials, is the one opened.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from session_core import (
    InvalidSessionContext,
    StorageError,
    StorageNotAddressable,
    decode_baggage,
    open_storage,
    redact_url,
    restore_session,
    validate_context,
)
from session_core.stack import ACTIVE

__all__ = ["CONTEXT_KWARG", "LEGACY_CONTEXT_KWARG", "normalize_context", "restore_for_call", "worker_storage"]

CONTEXT_KWARG = "_session_ctx"
LEGACY_CONTEXT_KWARG = "_otel_ctx"
STORAGE_URL_ENV = "SESSION_STORAGE_URL"

# (context URL, worker's $SESSION_STORAGE_URL) -> the URL to open; keeps urlsplit off the per-call path.
_url_choice: dict[tuple[str, str | None], str] = {}


def normalize_context(ctx: Any) -> Mapping[str, Any]:
    """A session context dict from `ctx`: a ``to_context()`` dict as is, or an OTel carrier with ``baggage``."""
    if not isinstance(ctx, Mapping):
        raise InvalidSessionContext(f"invalid session context: expected a dict, got {type(ctx).__name__}")
    if "uid_chain" in ctx:
        return ctx
    baggage = ctx.get("baggage")
    if isinstance(baggage, str):
        decoded = decode_baggage(baggage, strict=True)
        if decoded is None:
            raise InvalidSessionContext("invalid session context: its 'baggage' carries no session members")
        otel = {k: ctx[k] for k in ("traceparent", "tracestate") if isinstance(ctx.get(k), str)}
        if otel:
            decoded = {**decoded, "backend": decoded.get("backend", "otel"), "otel": otel}
        if "storage_url" in ctx and "storage_url" not in decoded:
            decoded = {**decoded, "storage_url": ctx["storage_url"]}
        return decoded
    raise InvalidSessionContext(
        "invalid session context: expected a session context dict (session.to_context()) or an OTel carrier "
        f"with a 'baggage' entry; got keys {sorted(str(k) for k in ctx)[:8]}"
    )


def _url_to_open(url: str) -> str:
    env = os.environ.get(STORAGE_URL_ENV) or None
    key = (url, env)
    chosen = _url_choice.get(key)
    if chosen is None:
        chosen = env if env is not None and env != url and redact_url(env) == url else url
        _url_choice[key] = chosen
    return chosen


def _open(url: str, where: str) -> Any:
    try:
        return open_storage(_url_to_open(url))
    except Exception as exc:
        raise StorageError(
            f"{where}: cannot open the session's storage {redact_url(url)} in this worker (pid {os.getpid()}): "
            f"{exc}. Install the package providing that URL scheme in the workers' environment and make sure the "
            "storage is reachable from every node (a SQLite file only on a filesystem all nodes share; "
            "PostgreSQL across machines, credentials in the workers' $SESSION_STORAGE_URL)."
        ) from exc


def _same_process_storage(ctx: Mapping[str, Any]) -> Any:
    """The storage object of the session that sent `ctx`, when it is active right here (a plain call)."""
    stack = ACTIVE.get()
    if stack:
        chain = ctx.get("uid_chain")
        if isinstance(chain, (list, tuple)) and chain:
            last = chain[-1]
            for session in reversed(stack):
                if session.uid == last:
                    return session.storage
    return None


def worker_storage(ctx: Mapping[str, Any], storage: Any = None, *, where: str = "session_ray") -> Any:
    """Where a call restoring `ctx` writes its traces; raises rather than let them be lost.

    Order: `storage` (an object, or a URL opened here), the sending session's own storage when it is active in
    this very context, the context's ``storage_url`` (credentials from ``$SESSION_STORAGE_URL``), else
    ``$SESSION_STORAGE_URL``. With none of them a `StorageNotAddressable` says what to change.
    """
    if storage is not None:
        return _open(storage, where) if isinstance(storage, str) else storage
    local = _same_process_storage(ctx)
    if local is not None:
        return local
    url = ctx.get("storage_url")
    if isinstance(url, str) and url:
        return _open(url, where)
    env = os.environ.get(STORAGE_URL_ENV)
    if env:
        return _open(env, where)
    validate_context(ctx)  # a malformed context says so, rather than blame the storage
    raise StorageNotAddressable(
        f"{where}: the session context {ctx.get('name')!r} names no storage URL (its session's storage lives in "
        "the sending process only) and this worker has no $SESSION_STORAGE_URL, so traces recorded here would be "
        "lost. Open the session with an addressable storage, e.g. "
        "ContextVarSession(storage=session_storage_sql.SqliteSessionStorage('traces.db')), set "
        "$SESSION_STORAGE_URL for the workers, or pass storage= to ray_entrypoint."
    )


def restore_for_call(ctx: Any, storage: Any = None, *, where: str = "session_ray") -> Any:
    """A not-yet-entered child session continuing `ctx` (of the backend that sent it), with reachable storage.

    Raises `InvalidSessionContext` for a malformed context (`restore_session` validates it), and
    `StorageNotAddressable` / `StorageError` when no storage the traces could reach is found.
    """
    found = validate_context(normalize_context(ctx))  # before any storage is opened (a file, a connection)
    return restore_session(found, storage=worker_storage(found, storage, where=where))
