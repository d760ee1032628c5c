"""A session's baggage members and span attributes, built fast and byte-identical to session-core's wire format.

Each metadata value's baggage member is computed by `session_core.context_to_baggage_items` the first time that
(key, type, value) is seen and reused afterwards, together with its span attribute, so opening the thousandth
session with ``task="eval", arm="a"`` costs dict lookups, not JSON encoding. The fixed members (version, name,
uid chain) are checked against session-core once at import; should they ever differ, every build goes through
session-core.
"""

from __future__ import annotations

import threading
from typing import Any

from opentelemetry.util.types import AttributeValue

from session_core import context_to_baggage_items
from session_otel.attributes import METADATA_PREFIX, attribute_value

__all__ = ["FIXED_OK", "Entry", "base_members", "cached_entry", "cached_name", "metadata_entry", "name_parts"]

Entry = tuple[str, "str | None", str, "AttributeValue | None"]
"""(baggage member key, member value or None when JSON cannot carry it, attribute key, attribute value or None)."""

_CACHE_MAX = 4096
_CACHEABLE_STR = 256
_cache: dict[tuple[str, type, Any], Entry] = {}
_lock = threading.Lock()
_names: dict[str, tuple[str, str]] = {}  # session name -> ('session.name' member value, span name)
cached_name = _names.get
"""``cached_name(name)``: the cached `name_parts(name)` or None."""
cached_entry = _cache.get
"""``cached_entry((key, type(value), value))``: the cached entry or None (TypeError for unhashable values)."""

_probe = context_to_baggage_items({"name": "n", "uid_chain": ["u", "w"], "metadata": {"k": 1}})
FIXED_OK = _probe == {"session.v": "1", "session.name": "n", "session.uids": "u.w", "session.m.k": "1"}
META_PREFIX = "session.m."
_FIXED_KEYS = frozenset(("session.v", "session.name", "session.uids"))


def name_parts(name: str) -> tuple[str, str]:
    """The ``session.name`` member value session-core writes for `name`, and the span name (cached)."""
    parts = _names.get(name)
    if parts is None:
        value = context_to_baggage_items({"name": name, "uid_chain": ("u",), "metadata": {}})["session.name"]
        parts = (value, "session:" + name)
        with _lock:
            if len(_names) >= _CACHE_MAX:
                _names.clear()
            _names[name] = parts
    return parts


def base_members(name: str, chain: tuple[str, ...]) -> dict[str, str]:
    """The members every session context has (wire version, name, uid chain), as session-core writes them."""
    if FIXED_OK:
        return {"session.v": "1", "session.name": name_parts(name)[0], "session.uids": ".".join(chain)}
    return context_to_baggage_items({"name": name, "uid_chain": chain, "metadata": {}})


def _compute(key: str, value: Any) -> Entry:
    member_key = META_PREFIX + key
    member: str | None = None
    try:
        items = context_to_baggage_items({"name": "n", "uid_chain": ("u",), "metadata": {key: value}})
    except (TypeError, ValueError, RecursionError):
        pass  # JSON cannot carry it: it stays on the session (and its span) but not in baggage
    else:
        for item_key, item_value in items.items():
            if item_key not in _FIXED_KEYS:
                member_key, member = item_key, item_value
    return (member_key, member, METADATA_PREFIX + key, attribute_value(value))


def metadata_entry(key: str, value: Any) -> Entry:
    """The baggage member and span attribute of one metadata item (cached for small hashable values)."""
    t = type(value)
    if (
        t is int
        or t is bool
        or value is None
        or (t is str and len(value) <= _CACHEABLE_STR)
        or (t is float and value != 0.0)  # 0.0 == -0.0 as keys, but they encode differently
    ):
        cache_key = (key, t, value)
        entry = _cache.get(cache_key)
        if entry is None:
            entry = _compute(key, value)
            with _lock:
                if len(_cache) >= _CACHE_MAX:
                    _cache.clear()
                _cache[cache_key] = entry
        return entry
    return _compute(key, value)
