"""HMAC signing of contexts, so a service can refuse contexts it did not (directly or transitively) issue.

The signature covers the name, the uid chain, the merged metadata and the issue time, so it cannot be moved
onto another session's chain, and every other field the context holds (``storage_url``, ``backend``, ``otel``,
any field a later version adds), so a tampered field fails verification: a signed context cannot be redirected
to another storage. (A context with none of those, such as what a ``baggage`` header carries, is signed exactly
as before they were covered.)

The key comes from the argument or ``$SESSION_SIGNING_KEY``; it is never written into a context or a header.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from typing import Any

from session_core.context import MAX_TS
from session_core.errors import SignatureError

__all__ = ["DEFAULT_MAX_AGE", "SIGNING_KEY_ENV", "resolve_signing_key", "sign_context", "verify_context"]

SIGNING_KEY_ENV = "SESSION_SIGNING_KEY"
DEFAULT_MAX_AGE = 24 * 3600
_CLOCK_SKEW = 300


_ENV_DATA: Any = getattr(os.environ, "_data", None) if os.name == "posix" else None
_ENV_NAME = SIGNING_KEY_ENV.encode()


def resolve_signing_key(key: str | bytes | None = None) -> bytes | None:
    """`key` as bytes, else ``$SESSION_SIGNING_KEY``, else None (signing off)."""
    if key is None:
        if _ENV_DATA is not None:  # os.environ's bytes, without its ~2 us exception path for a missing name
            return _ENV_DATA.get(_ENV_NAME) or None  # (read on every outgoing request)
        key = os.environ.get(SIGNING_KEY_ENV) or None
    if key is None:
        return None
    if isinstance(key, str):
        key = key.encode()
    if not key:
        raise ValueError("a signing key must not be empty")
    return key


_COVERED_APART = frozenset(("v", "name", "uid_chain", "metadata", "ts", "sig"))  # "v" is checked when read


def _payload(ctx: dict[str, Any], ts: int) -> bytes:
    body = [ctx["name"], list(ctx["uid_chain"]), ctx.get("metadata", {}), ts]
    others = {key: value for key, value in ctx.items() if key not in _COVERED_APART}
    if others:  # storage_url, backend, otel: covered too, or a signed context could be sent to another storage
        body.append(others)
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _digest(key: bytes, ctx: dict[str, Any], ts: int) -> str:
    mac = hmac.new(key, _payload(ctx, ts), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def sign_context(ctx: dict[str, Any], key: str | bytes, *, now: float | None = None) -> dict[str, Any]:
    """A copy of `ctx` with ``ts`` (issue time) and ``sig`` (HMAC-SHA256) added."""
    raw = resolve_signing_key(key)
    assert raw is not None
    ts = int(time.time() if now is None else now)
    return {**ctx, "ts": ts, "sig": _digest(raw, ctx, ts)}


def verify_context(
    ctx: dict[str, Any],
    key: str | bytes,
    *,
    max_age: float | None = DEFAULT_MAX_AGE,
    now: float | None = None,
) -> dict[str, Any]:
    """Return `ctx` when its signature is valid and not older than `max_age` seconds; else `SignatureError`."""
    raw = resolve_signing_key(key)
    assert raw is not None
    sig, ts = ctx.get("sig"), ctx.get("ts")
    if not isinstance(sig, str) or type(ts) is not int:
        raise SignatureError("session context is not signed, but a signing key is configured")
    if not -MAX_TS < ts < MAX_TS:  # `current - ts` below would raise OverflowError
        raise SignatureError("session context is signed with an issue time out of range")
    try:
        expected = _digest(raw, ctx, ts)
    except (KeyError, TypeError, ValueError):  # no name or uid chain, or metadata JSON cannot write: not ours
        raise SignatureError("session context signature does not match: not a context this key signed") from None
    # compare_digest raises TypeError for non-ASCII str: such a signature is simply not ours
    if not sig.isascii() or not hmac.compare_digest(sig, expected):
        raise SignatureError("session context signature does not match: forged or tampered with")
    current = time.time() if now is None else now
    if ts > current + _CLOCK_SKEW:
        raise SignatureError("session context is signed with an issue time in the future")
    if max_age is not None and current - ts > max_age:
        raise SignatureError(f"session context signature expired ({int(current - ts)} s old, max {max_age} s)")
    return ctx
