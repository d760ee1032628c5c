"""A session's baggage members and span attributes, built fast and byte-identical to session-core's wire format.

Each metadata value's baggage member is computed by `session_core.context_to_baggage_items` the first time that
(key, type, value) is seen and reused afterwards, together with its span attribute; and every session with the
same name and merged metadata shares one `Template` of members and attributes, so opening the thousandth session
with ``task="eval", arm="a"`` costs one dict lookup and two dict copies, not JSON encoding. Small lists, tuples
and dicts of such values (``tags=["rl", "eval"]``) are cached too, under a frozen copy that keeps every type and
the order, so a server opening a session per request for the same caller encodes nothing. The fixed members
(version, name, uid chain) are checked against session-core once at import; should they ever differ, every
build goes through session-core.
"""

from __future__ import annotations

import threading
from typing import Any

from opentelemetry.util.types import AttributeValue

from session_core import context_to_baggage_items
from session_otel.attributes import METADATA_PREFIX, SESSION_ID, SESSION_NAME, SESSION_UID_CHAIN, attribute_value, text

__all__ = [
    "FIXED_OK",
    "Entry",
    "Template",
    "base_members",
    "metadata_entry",
    "name_parts",
    "template",
]

Entry = tuple[str, "str | None", str, "AttributeValue | None"]
"""(baggage member key, member value or None when JSON cannot carry it, attribute key, attribute value or None)."""

_CACHE_MAX = 4096
_CACHEABLE_STR = 256
_cache: dict[tuple[str, type, Any], Entry] = {}
_lock = threading.Lock()
_names: dict[str, tuple[str, str]] = {}  # session name -> ('session.name' member value, span name)

_probe = context_to_baggage_items({"name": "n", "uid_chain": ["u", "w"], "metadata": {"k": 1}})
FIXED_OK = _probe == {"session.v": "1", "session.name": "n", "session.uids": "u.w", "session.m.k": "1"}
META_PREFIX = "session.m."
_FIXED_KEYS = frozenset(("session.v", "session.name", "session.uids"))


def name_parts(name: str) -> tuple[str, str]:
    """The ``session.name`` member value session-core writes for `name`, and the span name (cached)."""
    parts = _names.get(name)
    if parts is None:
        value = context_to_baggage_items({"name": name, "uid_chain": ("u",), "metadata": {}})["session.name"]
        parts = (value, text("session:" + name))
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
    return (member_key, member, text(METADATA_PREFIX + key), attribute_value(value))


def _simple(value: Any) -> bool:
    """Whether equal values of this exact type always encode alike, so an entry or template keyed on
    ``(type, value)`` is safe (small scalars; not 0.0, which equals -0.0, nor NaN, which equals nothing)."""
    t = type(value)
    return (
        t is int
        or t is bool
        or value is None
        or (t is str and len(value) <= _CACHEABLE_STR)
        or (t is float and value != 0.0 and value == value)  # 0.0 == -0.0 but they encode differently
    )


_FREEZE_ITEMS = 64  # values and keys a frozen copy may hold in all, nested containers included
_FREEZE_DEPTH = 4


class _TooBig(Exception):
    """Raised inside `_frozen`: the value holds something (or more) that a frozen copy does not cover."""


def _freeze(value: Any, depth: int, budget: list[int]) -> Any:
    t = type(value)
    budget[0] -= 1
    if budget[0] < 0 or depth < 0:
        raise _TooBig
    if _simple(value):
        return (t, value)
    if t is list or t is tuple:
        if len(value) > budget[0] or (depth == 0 and value):
            raise _TooBig  # its items would be past the budget or the depth
        frozen: list[Any] = []
        for item in value:
            kind = type(item)
            if (kind is str and len(item) <= _CACHEABLE_STR) or kind is int or kind is bool:
                budget[0] -= 1  # what _freeze(item) would do, without the call: tags are lists of short strings
                frozen.append((kind, item))
            else:
                frozen.append(_freeze(item, depth - 1, budget))
        if budget[0] < 0:
            raise _TooBig
        return (t, tuple(frozen))
    if t is dict:
        pairs = []
        for k, v in value.items():
            if type(k) is not str or len(k) > _CACHEABLE_STR:
                raise _TooBig  # JSON turns other keys into text: {1: x} and {"1": x} must not share an entry
            budget[0] -= 1
            pairs.append((k, _freeze(v, depth - 1, budget)))
        return (t, tuple(pairs))
    raise _TooBig


def _frozen(value: Any) -> Any:
    """A hashable copy of a small list, tuple or dict of `_simple` values (nested up to 4 deep): two values get
    equal copies only when they encode alike (types at every level and order kept), so an entry or template
    keyed on it is safe. None when the value is bigger or holds anything else."""
    try:
        return _freeze(value, _FREEZE_DEPTH, [_FREEZE_ITEMS])
    except _TooBig:
        return None


def _frozen_items(metadata: Any) -> tuple[tuple[str, Any], ...] | None:
    """`_frozen` of a whole metadata mapping's items (each value within the limits of `_frozen`), or None."""
    frozen = []
    for key, value in metadata.items():
        kind = type(value)
        if (kind is str and len(value) <= _CACHEABLE_STR) or kind is int or kind is bool or value is None:
            frozen.append((key, (kind, value)))  # what _frozen(value) returns, without the calls
        else:
            item = _frozen(value)
            if item is None:
                return None
            frozen.append((key, item))
    return tuple(frozen)


def metadata_entry(key: str, value: Any) -> Entry:
    """The baggage member and span attribute of one metadata item (cached for small values, containers of
    small values included)."""
    if _simple(value):
        cache_key: tuple[Any, ...] | None = (key, type(value), value)
    else:
        frozen = _frozen(value)
        cache_key = None if frozen is None else (key, frozen)
    if cache_key is not None:
        entry = _cache.get(cache_key)
        if entry is None:
            entry = _compute(key, value)
            with _lock:
                if len(_cache) >= _CACHE_MAX:
                    _cache.clear()
                _cache[cache_key] = entry
        return entry
    return _compute(key, value)


Template = tuple[dict[str, str], dict[str, AttributeValue], str, tuple[str, ...], bool]
"""What every session with one name and (merged) metadata shares: its baggage members and span attributes with
the uid chain left empty (filled per session, in place, so the key order stays session-core's), its span name,
the metadata keys JSON cannot carry, and whether a value may change in place (a list, a dict: the members
and attributes built from it then hold only until it does)."""

_templates: dict[tuple[Any, ...], Template] = {}


_IMMUTABLE = frozenset({str, int, float, bool, type(None)})


def _fixed(value: Any) -> bool:
    """Whether a metadata value cannot change in place: a JSON scalar, or a tuple of them (as session-core's
    outgoing header cache reads it)."""
    kind = type(value)
    return kind in _IMMUTABLE or (kind is tuple and all(_fixed(item) for item in value))


def _build_template(name: str, metadata: Any) -> Template:
    name_value, span_name = name_parts(name)
    items = {"session.v": "1", "session.name": name_value, "session.uids": ""}
    attrs: dict[str, AttributeValue] = {}
    unserializable: list[str] = []
    for key, value in metadata.items():
        member_key, member, attr_key, attr_value = metadata_entry(key, value)
        if member is not None:
            items[member_key] = member
        else:
            unserializable.append(key)
        if attr_value is not None:
            attrs[attr_key] = attr_value
    # The session's own attributes last (filled per session, in place): over the SDK's attribute limit a span
    # drops its oldest attributes, and these must stay.
    attrs[SESSION_NAME] = text(name)
    attrs[SESSION_UID_CHAIN] = ()
    attrs[SESSION_ID] = ""
    mutable = not all(_fixed(value) for value in metadata.values())
    return items, attrs, span_name, tuple(unserializable), mutable


def template(name: str, metadata: Any) -> Template:
    """The `Template` of sessions named `name` with `metadata` (their merged metadata), cached when every
    value is a small scalar or a small container of them: the thousandth session with ``task="eval", arm="a"``
    costs one dict lookup."""
    try:
        key: tuple[Any, ...] | None = (name, tuple(metadata.items()), tuple(map(type, metadata.values())))
        found = _templates.get(key)  # type: ignore[arg-type]
    except TypeError:  # an unhashable value (a list, a dict)
        key = found = None
    if found is not None:
        return found
    if key is None or not all(map(_simple, metadata.values())):
        frozen = _frozen_items(metadata)
        key = None if frozen is None else (name, frozen)  # two items: never equal to a three-item key above
        found = None if key is None else _templates.get(key)
        if found is not None:
            return found
    built = _build_template(name, metadata)
    if key is not None:
        with _lock:
            if len(_templates) >= _CACHE_MAX:
                _templates.clear()
            _templates[key] = built
    return built
