"""The context dict: the immutable, serializable part of a session that crosses boundaries.

Version 1 holds::

    {"v": 1, "name": str, "uid_chain": [str, ...], "metadata": {str: JSON value},
     "storage_url": str (optional), "backend": str (optional), "otel": {...} (optional, backend fields),
     "ts": int, "sig": str (optional, see `session_core.signing`)}

It is JSON-serializable and picklable; metadata values keep their JSON types (ints stay ints).
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Mapping
from typing import Any

from session_core.errors import InvalidSessionContext, UnserializableMetadata
from session_core.urls import redact_url

__all__ = [
    "CONTEXT_VERSION",
    "MAX_CHAIN_DEPTH",
    "MAX_INT_DIGITS",
    "MAX_NAME_LENGTH",
    "json_safe",
    "make_context",
    "validate_context",
]

CONTEXT_VERSION = 1
MAX_CHAIN_DEPTH = 64
MAX_NAME_LENGTH = 256
MAX_METADATA_KEYS = 128
MAX_NESTING = 32
MAX_INT_DIGITS: int = getattr(sys.int_info, "str_digits_check_threshold", 640)
"""Digits an int may have in a context: the fewest any Python (3.11+, ``sys.set_int_max_str_digits``) converts
to and from JSON text. A longer int makes ``json.dumps`` / ``str`` raise ``ValueError`` on one side or the other."""
_INT_BOUND = 10**MAX_INT_DIGITS
_INT_RANGE = (-_INT_BOUND, _INT_BOUND)  # negated once: ``-_INT_BOUND`` in a loop builds a 2 KB int every time
MAX_TS = 2**63
"""A context's ``ts`` (unix seconds) lies in ``(-MAX_TS, MAX_TS)``, a 64-bit time."""

UID_RE = re.compile(r"[0-9A-Za-z_-]{1,64}")


def json_safe(value: Any, where: str = "metadata", _depth: int = 0) -> Any:
    """Return a JSON-safe copy of `value` (tuples become lists) or raise `UnserializableMetadata`."""
    t = type(value)
    if t is str or t is bool or value is None:
        return value
    if t is int:
        low, high = _INT_RANGE
        if low < value < high:
            return value
        raise UnserializableMetadata(
            f"{where} is an int of more than {MAX_INT_DIGITS} digits, which JSON text cannot carry between all "
            "Pythons (sys.set_int_max_str_digits); send it as a str"
        )
    if t is float:
        if math.isfinite(value):
            return value
        raise UnserializableMetadata(f"{where} is {value!r}; JSON has no representation of non-finite floats")
    if _depth >= MAX_NESTING:
        raise UnserializableMetadata(f"{where} nests deeper than {MAX_NESTING} levels")
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if type(k) is not str:
                if not isinstance(k, str):
                    raise UnserializableMetadata(
                        f"{where} has a non-string key {_shown(k)}; JSON object keys are strings"
                    )
                k = str.__getitem__(k, slice(None))  # a str-valued enum: the plain text, as for values
            out[k] = json_safe(v, f"{where}[{k!r}]", _depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        return [json_safe(v, f"{where}[{i}]", _depth + 1) for i, v in enumerate(value)]
    if isinstance(value, str):  # subclasses, e.g. str-valued enums: keep the plain value
        return str.__getitem__(value, slice(None))
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return json_safe(int(value), where, _depth)
    if isinstance(value, float):
        return json_safe(float(value), where, _depth)
    raise UnserializableMetadata(
        f"{where} is a {t.__name__}, which cannot cross a process boundary as JSON; "
        "use str, int, float, bool, None, lists or dicts of them"
    )


def make_context(
    name: str,
    uid_chain: list[str] | tuple[str, ...],
    metadata: Mapping[str, Any],
    storage_url: str | None = None,
    **backend_fields: Any,
) -> dict[str, Any]:
    """Build a version-1 context dict; metadata is checked and copied so the result is immutable in effect."""
    ctx = _new_context(name, uid_chain, _checked_metadata(metadata, False) if metadata else {}, storage_url)
    if backend_fields:
        for key, value in backend_fields.items():
            if value is not None:
                ctx[key] = value
    return ctx


def _new_context(
    name: str, uid_chain: list[str] | tuple[str, ...], checked_metadata: dict[str, Any], storage_url: str | None
) -> dict[str, Any]:
    """`make_context` without backend fields, for metadata `_checked_metadata` returned (the context owns it)."""
    if not name or len(name) > MAX_NAME_LENGTH:  # as `validate_context`, here in the sender: see the chain below
        problem = (
            "must be a non-empty string"
            if not name
            else f"is {len(name)} characters long, over the limit of {MAX_NAME_LENGTH}"
        )
        raise _bad("name", f"{problem}: a session named so works in this process but cannot cross a process boundary")
    if len(uid_chain) > MAX_CHAIN_DEPTH:  # refused here, by the sender, not later by whoever receives it
        raise _bad(
            "uid_chain",
            f"is {len(uid_chain)} deep, over the limit of {MAX_CHAIN_DEPTH}: sessions nested this deep work in "
            "this process but cannot cross a process or service boundary",
        )
    ctx: dict[str, Any] = {
        "v": CONTEXT_VERSION,
        "name": name,
        "uid_chain": list(uid_chain),
        "metadata": checked_metadata,
    }
    if storage_url:
        ctx["storage_url"] = _redacted(storage_url)
    return ctx


def _redacted(url: str) -> str:
    """`url` without a secret: a password sits before an ``@`` or in a ``password=`` query parameter."""
    return redact_url(url) if "@" in url or "=" in url else url


def _shown(value: Any) -> str:
    """A short repr of `value` for a message: never raises (an int too long for ``str``), never a whole blob."""
    if type(value) is int and not _INT_RANGE[0] < value < _INT_RANGE[1]:
        return f"an int of more than {MAX_INT_DIGITS} digits"
    try:
        text = repr(value)
    except Exception:  # a foreign object's __repr__ may raise anything
        return f"a {type(value).__name__}"
    return text if len(text) <= 80 else f"{text[:77]}..."


def _bad(field: str, problem: str) -> InvalidSessionContext:
    return InvalidSessionContext(f"invalid session context: {field!r} {problem}")


_PLAIN = frozenset({str, bool, type(None)})
_CHAIN_RE = re.compile(r"[0-9A-Za-z_-]{1,64}(?:\.[0-9A-Za-z_-]{1,64})*")


def _flat_plain(metadata: dict[Any, Any]) -> bool:
    """Whether `metadata` has str keys and JSON scalar values only (str, bool, None, ints of at most
    `MAX_INT_DIGITS` digits, finite floats)."""
    plain = _PLAIN
    isfinite = math.isfinite
    low, high = _INT_RANGE
    for key, value in metadata.items():
        if type(key) is not str:
            return False
        t = type(value)
        if t not in plain:
            if t is int:
                if not low < value < high:
                    return False
            elif t is not float or not isfinite(value):
                return False
    return True


def _same_types(built: dict[str, Any], current: Mapping[str, Any]) -> bool:
    """Whether `built` (checked metadata, ``== current``) and `current` have the same JSON types throughout: ``==``
    takes 1, True and 1.0 (and 0.0 and -0.0) for one value, which JSON writes differently."""
    return all(_same_json_type(value, current[key]) for key, value in built.items())


def _same_json_type(value: Any, other: Any) -> bool:
    """`_same_types` of two equal values."""
    t = type(value)
    if t is not type(other):
        return False
    if t is float:
        return value != 0.0 or math.copysign(1.0, value) == math.copysign(1.0, other)
    if t is dict:
        for key, item in value.items():
            if not _same_json_type(item, other[key]):
                return False
    elif t is list or t is tuple:
        for item, another in zip(value, other):
            if not _same_json_type(item, another):
                return False
    return True


def _checked_metadata(metadata: Any, wrap: bool = True) -> dict[str, Any]:
    if type(metadata) is not dict:
        if not isinstance(metadata, Mapping):
            raise _bad("metadata", f"must be a dict, got {type(metadata).__name__}")
        metadata = dict(metadata)
    if len(metadata) > MAX_METADATA_KEYS:
        raise _bad("metadata", f"has {len(metadata)} keys, over the limit of {MAX_METADATA_KEYS}")
    if _flat_plain(metadata):
        return dict(metadata)  # fast path: nothing to convert
    if not wrap:
        return json_safe(metadata)  # type: ignore[no-any-return]
    try:
        return json_safe(metadata)  # type: ignore[no-any-return]
    except UnserializableMetadata as exc:
        raise _bad("metadata", str(exc)) from exc


def _plain_chain(chain: list[Any] | tuple[Any, ...]) -> bool:
    try:
        joined = ".".join(chain)
    except TypeError:  # a non-string uid
        return False
    # One dot per join: a dot inside a uid ("a.b") would read back as two uids from baggage.
    return joined.count(".") == len(chain) - 1 and _CHAIN_RE.fullmatch(joined) is not None


def validate_context(ctx: Any) -> dict[str, Any]:
    """Check a context dict from anywhere (pickle, JSON, network) and return a normalized copy.

    Raises `InvalidSessionContext` naming the bad field.
    """
    if type(ctx) is not dict and not isinstance(ctx, Mapping):
        raise InvalidSessionContext(f"invalid session context: expected a dict, got {type(ctx).__name__}")
    v = ctx.get("v", CONTEXT_VERSION)
    if v != CONTEXT_VERSION or type(v) is not int:
        if type(v) is not int or v < 1:
            raise _bad("v", f"must be a positive int, got {_shown(v)}")
        raise _bad(
            "v", f"is {_shown(v)}, newer than this session-core understands ({CONTEXT_VERSION}); upgrade session-core"
        )
    name = ctx.get("name")
    if type(name) is not str or not name:
        if not isinstance(name, str) or not name:
            raise _bad("name", f"must be a non-empty string, got {type(name).__name__}")
        name = str.__getitem__(name, slice(None))
    if len(name) > MAX_NAME_LENGTH:
        raise _bad("name", f"is {len(name)} characters long, over the limit of {MAX_NAME_LENGTH}")
    chain = ctx.get("uid_chain")
    if not isinstance(chain, (list, tuple)) or not chain:
        raise _bad("uid_chain", "must be a non-empty list of uids")
    if len(chain) > MAX_CHAIN_DEPTH:
        raise _bad("uid_chain", f"is {len(chain)} deep, over the limit of {MAX_CHAIN_DEPTH}")
    if not _plain_chain(chain):
        bad = next((u for u in chain if not isinstance(u, str) or UID_RE.fullmatch(u) is None), chain)
        raise _bad("uid_chain", f"holds {_shown(bad)}; a uid is 1-64 characters of [0-9A-Za-z_-]")
    out: dict[str, Any] = {
        "v": CONTEXT_VERSION,
        "name": name,
        "uid_chain": list(chain),
        "metadata": _checked_metadata(ctx.get("metadata", {})),
    }
    if len(ctx) > 4 or "v" not in ctx or "metadata" not in ctx:  # else just the four fields read above
        _optional_fields(ctx, out)
    return out


def _optional_fields(ctx: Mapping[str, Any], out: dict[str, Any]) -> None:
    storage_url = ctx.get("storage_url")
    if storage_url is not None:
        if not isinstance(storage_url, str) or not storage_url or "://" not in storage_url:
            raise _bad("storage_url", "must be a storage URL such as 'sqlite:///traces.db'")
        out["storage_url"] = _redacted(storage_url)
    backend = ctx.get("backend")
    if backend is not None:
        if not isinstance(backend, str):
            raise _bad("backend", f"must be a string, got {type(backend).__name__}")
        out["backend"] = backend
    otel = ctx.get("otel")
    if otel is not None:
        if not isinstance(otel, Mapping) or not all(
            isinstance(k, str) and isinstance(val, str) for k, val in otel.items()
        ):
            raise _bad("otel", "must be a dict of strings (traceparent, tracestate)")
        out["otel"] = dict(otel)
    ts = ctx.get("ts")
    if ts is not None:
        if type(ts) is not int or not -MAX_TS < ts < MAX_TS:
            got = type(ts).__name__ if type(ts) is not int else "an int out of range"
            raise _bad("ts", f"must be an int (unix seconds, 64-bit), got {got}")
        out["ts"] = ts
    sig = ctx.get("sig")
    if sig is not None:
        if not isinstance(sig, str):
            raise _bad("sig", f"must be a string, got {type(sig).__name__}")
        out["sig"] = sig
