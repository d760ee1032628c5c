"""A session's outgoing ``baggage`` header: what every adapter that sends a session over the network puts there.

session-http's instrumented clients and session-otel's propagator both call `session_baggage`, so a session
reaches a service the same way whichever of them sent it:

- The members carry the session's name, uid chain and merged metadata. A metadata value JSON cannot carry is
  left out with a warning (once per key), instead of the whole session: the service still sees the session,
  and traces recorded there still land under its chain.
- Encoding takes about ten microseconds, and a client sends the same session over and over, so the members are
  cached per session object. Each call re-checks them against what they were built from (name, uid chain,
  merged metadata, signing key), so they are never stale. Nested metadata values changed in place are seen too,
  as `BaseSession.to_context` sees them. (A dict whose items only moved may go out in its earlier order: JSON
  objects have none.)
- Signed members are re-signed after `SIGNED_TTL` seconds, so their issue time stays within the receiver's
  max-age.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from session_core.baggage import (
    MAX_HEADER_BYTES,
    MAX_MEMBERS,
    PREFIX,
    _utf8_size,
    encode_baggage,
    strip_session_members,
)
from session_core.context import _same_json_type, _same_types, json_safe, make_context
from session_core.errors import UnserializableMetadata
from session_core.session import BaseSession
from session_core.signing import resolve_signing_key

__all__ = ["SIGNED_TTL", "portable_metadata", "session_baggage"]

logger = logging.getLogger(__name__)

SIGNED_TTL = 60.0
"""Seconds a signed header is reused before it is signed again with a fresh issue time."""

_CACHE_SIZE = 256


class _Entry:
    """The encoded members of one session object and what they were built from.

    It keeps the session's uid, not the session, so the cache holds no session or storage alive; a new object
    that reuses a freed one's ``id()`` has another uid.
    """

    __slots__ = ("chain", "expires", "key", "members", "merged", "name", "uid", "watch")

    def __init__(
        self,
        uid: str,
        name: str,
        chain: tuple[str, ...],
        merged: dict[str, Any],
        key: bytes | None,
        members: str,
        expires: float | None,
        watch: _Watch,
    ) -> None:
        self.uid = uid
        self.name = name
        self.chain = chain
        self.merged = merged  # the checked metadata they were encoded from
        self.key = key
        self.members = members
        self.expires = expires
        self.watch = watch


# The session's merged view the members describe (rebuilt on any metadata change, so while it is the same object
# only its values that can change in place can have changed), and those values: each key with a copy of its value
# and whether a change of type alone could hide behind == there. (None, ()) when no view can be watched.
_Watch = tuple[dict[str, Any] | None, tuple[tuple[str, Any, bool], ...]]
_UNWATCHED: _Watch = (None, ())
_SCALARS = frozenset({str, int, float, bool, type(None)})


_entries: dict[int, _Entry] = {}
_entries_lock = threading.Lock()
_left_out: set[str] = set()


def session_baggage(session: Any, *, existing: str | None = None, signing_key: str | bytes | None = None) -> str:
    """The ``baggage`` header value carrying `session`, merged into `existing` (its session members replaced).

    The same header as ``encode_baggage(session.to_context(), existing=existing, signing_key=signing_key,
    storage=session.storage)``, except that metadata JSON cannot carry is left out (with a warning) rather than
    raising `UnserializableMetadata`, and that repeated calls for one session are cheap (see the module
    docstring). `signing_key` defaults to ``$SESSION_SIGNING_KEY``. Raises `ContextTooLarge` when the session
    does not fit the header even with its metadata by reference.
    """
    key = resolve_signing_key(signing_key)
    members = _members(session, key)
    others = _others(existing)
    if not others:
        return members
    if _utf8_size(others) + 1 + len(members) <= MAX_HEADER_BYTES and (
        others.count(",") + members.count(",") + 2 <= MAX_MEMBERS
    ):
        return f"{others},{members}"
    # Too big together: the encoder moves the metadata by reference when the storage keeps contexts, or says why not.
    return encode_baggage(_context(session), existing=others, signing_key=key, storage=session.storage)


def _members(session: Any, key: bytes | None) -> str:
    """The session's own members, from the cache when they still describe it."""
    if isinstance(session, BaseSession):
        name, chain, merged = session.name, session._chain_tuple(), session._merged_view()
    else:  # any other SessionProtocol implementation: built every time
        return _encode_context(_context(session), session, key)
    entry = _entries.get(id(session))
    if (
        entry is not None
        and entry.uid == chain[-1]
        and entry.key == key
        and (entry.expires is None or time.monotonic() < entry.expires)
        and entry.name == name
        and entry.chain == chain
        and _unchanged(entry, merged)
    ):
        return entry.members
    watch = _watch(merged)  # before encoding: a change made meanwhile is a miss next time, never a stale hit
    ctx = _context(session)
    members = _encode_context(ctx, session, key)
    if len(ctx["metadata"]) != len(merged):
        return members  # values were left out: no copy of what the session holds to check a cached entry against
    expires = time.monotonic() + SIGNED_TTL if key else None
    new = _Entry(chain[-1], name, chain, ctx["metadata"], key, members, expires, watch)
    with _entries_lock:
        if len(_entries) >= _CACHE_SIZE:
            _entries.pop(next(iter(_entries)), None)
        _entries[id(session)] = new
    return members


def _unchanged(entry: _Entry, merged: dict[str, Any]) -> bool:
    """Whether `merged` (the session's merged view) still has the metadata the entry's members were encoded from.

    While the view is the one they were built from, only its values that can change in place are compared with
    their copies (``==``, and where it could hide a change of type, the types: ``==`` takes 1, True and 1.0, and
    0.0 and -0.0, for one value, which encode differently). A rebuilt view (a metadata change) is compared whole
    with the checked metadata, once: a match is noted, with new copies.
    """
    view, watched = entry.watch
    if view is merged:
        for key, copied, numeric in watched:
            value = merged[key]
            try:
                if value != copied or (numeric and not _same_json_type(copied, value)):
                    return False
            except Exception:  # a value whose == raises (or answers no bool): built anew, never a failed request
                return False
        return True
    built = entry.merged
    if not _matches(built, merged):
        return False  # a miss: `_members` copies what it watches once, before encoding anew
    watch = _watch(merged)
    if not _matches(built, merged):  # changed in place meanwhile: copies newer than the members are never noted
        return False
    entry.watch = watch
    return True


def _matches(built: dict[str, Any], merged: dict[str, Any]) -> bool:
    return built == merged and _same_types(built, merged)


def _watch(view: dict[str, Any]) -> _Watch:
    """`view` with copies of its values that can change in place (lists, dicts, other objects; not JSON scalars
    or tuples of them); `_UNWATCHED` when one cannot be copied."""
    watched = []
    for key, value in view.items():
        if not _fixed(value):
            try:
                copied = copy.deepcopy(value)
            except Exception:  # an object deepcopy cannot take: such a session's members are rebuilt on every use
                return _UNWATCHED
            watched.append((key, copied, _numeric(copied)))
    return view, tuple(watched)


def _fixed(value: Any) -> bool:
    """Whether `value` cannot change in place: a JSON scalar, or a tuple of them."""
    kind = type(value)
    return kind in _SCALARS or (kind is tuple and all(_fixed(item) for item in value))


def _numeric(value: Any) -> bool:
    """Whether `value` holds an int, a float or a bool anywhere (in dicts, lists and tuples)."""
    if isinstance(value, dict):
        return any(_numeric(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return any(_numeric(item) for item in value)
    return isinstance(value, (int, float))


def _encode_context(ctx: dict[str, Any], session: Any, key: bytes | None) -> str:
    storage = session.storage
    return encode_baggage(ctx, signing_key=key, storage=storage) if key else encode_baggage(ctx, storage=storage)


def _context(session: Any) -> dict[str, Any]:
    """Name, uid chain and the merged metadata JSON can carry (a checked copy, which the context owns)."""
    merged_of = getattr(session, "merged_metadata", None)
    merged = merged_of() if callable(merged_of) else session.to_context()["metadata"]
    name, chain = session.name, session.uid_chain
    try:
        return make_context(name, chain, merged)
    except UnserializableMetadata:
        return make_context(name, chain, portable_metadata(merged, name))


def portable_metadata(metadata: Mapping[str, Any], session_name: str) -> dict[str, Any]:
    """`metadata` without the values JSON cannot carry: what may travel in baggage or a context.

    Logs one warning per key left out, naming the session and why; a key warned about once (by this or by
    `session_baggage`, which uses it) is not warned about again in this process, so an adapter that leaves
    values out at another moment (an OTel session's baggage on entry, say) reports through here and the user
    hears of each key once.
    """
    out = {}
    left = []
    for key, value in metadata.items():
        try:
            out[key] = json_safe(value, f"metadata[{key!r}]")
        except UnserializableMetadata as exc:
            left.append((key, exc))
    fresh = [(key, exc) for key, exc in left if key not in _left_out]
    if fresh and len(_left_out) < 1024:
        _left_out.update(key for key, _ in fresh)
        logger.warning(
            "session %r: metadata left out of outgoing baggage (the session still travels without it): %s",
            session_name[:64],
            "; ".join(str(exc) for _, exc in fresh[:8]),
        )
    return out


def _others(existing: str | None) -> str:
    """The members of `existing` that are not session members, in order."""
    if not existing:
        return ""
    # A key can only read as "session.*" (percent-decoded: "%73ession.m.x") if it holds the prefix or a '%'.
    if PREFIX not in existing and "%" not in existing:
        return ",".join(m.strip(" \t") for m in existing.split(",") if m.strip(" \t"))
    return strip_session_members(existing)
