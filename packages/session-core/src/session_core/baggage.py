"""The W3C baggage encoding of a context, shared by session-http and session-otel (one wire format).

Members (keys and values percent-encoded per W3C; a value never holds a raw ``+`` or space, so
OpenTelemetry's ``unquote_plus`` and a plain ``unquote`` read the same thing)::

    session.v=1                    wire-format version
    session.name=<name>
    session.uids=<uid>.<uid>...    the uid chain, root first
    session.m.<key>=<JSON value>   one member per merged-metadata key; JSON keeps types (ints stay ints)
    session.ref=1                  metadata travels by reference: the receiver's storage has the context
    session.ts=<unix seconds>      with signing on: issue time ...
    session.sig=<HMAC>             ... and signature (see `session_core.signing`)

Through OpenTelemetry's propagator, which strips whitespace around keys, a metadata key with leading or
trailing whitespace arrives stripped (names are protected by JSON-quoting).

Text UTF-8 cannot encode (lone surrogates, as ``os.fsdecode`` gives for a non-UTF-8 file name) has no
percent-encoding. In a name or a metadata value it travels as JSON ``\\udce9`` escapes, which read back exactly;
a metadata key travels with such escapes as plain text (``caf\\udce9``), with one warning per key.

Decoding is total: any input gives a context or None with one logged warning that names the problem (never
the whole input); only ``strict=True`` raises `InvalidSessionContext`.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import weakref
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, unquote

from session_core.context import (
    CONTEXT_VERSION,
    MAX_METADATA_KEYS,
    MAX_NAME_LENGTH,
    _checked_metadata,
    _flat_plain,
    _same_types,
)
from session_core.errors import ContextTooLarge, InvalidSessionContext
from session_core.signing import DEFAULT_MAX_AGE, resolve_signing_key, sign_context, verify_context
from session_core.storage import ContextStore

__all__ = [
    "MAX_HEADER_BYTES",
    "MAX_MEMBERS",
    "MAX_MEMBER_BYTES",
    "PREFIX",
    "context_from_baggage_items",
    "context_to_baggage_items",
    "decode_baggage",
    "encode_baggage",
    "is_session_key",
    "split_baggage",
    "strip_session_members",
]

logger = logging.getLogger(__name__)

MAX_HEADER_BYTES = 8192
MAX_MEMBERS = 180
MAX_MEMBER_BYTES = 4096
PREFIX = "session."
META_PREFIX = "session.m."
_META_LEN = len(META_PREFIX)
WIRE_VERSION = "1"

_KEY_SAFE = "!#$&'*-.^_`|~"  # RFC 7230 tchar, less % and + (which we always escape)
_VALUE_SAFE = "!#$&'()*/:<=>?@[]^`{|}"  # W3C baggage-octet, less % and + (plus what quote keeps anyway)
_PLAIN_VALUE = re.compile(r"[A-Za-z0-9!#$&'()*\-./:<=>?@\[\]^_`{|}~]*")
_PLAIN_KEY = re.compile(r"[A-Za-z0-9!#$&'*\-.^_`|~]+")
_PLAIN_STRING = re.compile(r"[A-Za-z0-9 !#$%&'()*+,\-./:;<=>?@\[\]^_`{|}~]*")  # JSON-encodes as "<itself>"
_ENCODED_VALUE = re.compile(r"(?:[!#$&-+\--:<-\[\]-~]|%[0-9A-Fa-f]{2})*")
_UIDS = re.compile(r"[0-9A-Za-z_-]{1,64}(?:\.[0-9A-Za-z_-]{1,64}){0,63}")
_INT = re.compile(r"-?(?:0|[1-9][0-9]{0,17})")
_SURROGATE = re.compile(r"[\ud800-\udfff]")  # what UTF-8 cannot encode: ``os.fsdecode`` of a non-UTF-8 name


def _unencodable(text: str) -> bool:
    """Whether `text` holds a lone surrogate, which UTF-8 (so percent-encoding) cannot encode."""
    return not text.isascii() and _SURROGATE.search(text) is not None


def is_session_key(key: str) -> bool:
    return key.startswith(PREFIX)


# -- values ------------------------------------------------------------------------------------------------
def _json_value(value: Any) -> str:
    t = type(value)
    if t is str and _PLAIN_STRING.fullmatch(value):
        return f'"{value}"'
    if t is int:
        return str(value)
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    if _unencodable(text):  # JSON's \u escapes carry lone surrogates exactly; UTF-8 cannot
        return json.dumps(value, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return text


def _parse_json_value(text: str) -> Any:
    first = text[:1]
    if first == '"':
        if len(text) >= 2 and text[-1] == '"' and "\\" not in text and '"' not in text[1:-1]:
            return text[1:-1]
    elif (first.isdigit() or first == "-") and _INT.fullmatch(text):
        return int(text)
    return json.loads(text)


def _name_value(name: str) -> str:
    """The name as is; as a JSON string when it starts with a quote or has edge whitespace (which OTel strips),
    or holds lone surrogates (written as JSON escapes, which UTF-8 can carry)."""
    unencodable = _unencodable(name)
    if unencodable or name[:1] == '"' or name != name.strip():
        return json.dumps(name, ensure_ascii=unencodable)
    return name


_escaped_keys: set[str] = set()  # metadata keys warned about, so each is said once per process


def _wire_key(key: str, metadata: Mapping[str, Any]) -> str | None:
    """The metadata key `key` as it travels: itself, or with lone surrogates (which UTF-8 cannot encode) written as
    ``\\udce9`` escapes; None (left out) when that escaped form is also a key of `metadata`, whose value it keeps.

    A key cannot be JSON-quoted as a name is (a quoted key is a valid key), so this is said once per key."""
    if not _unencodable(key):
        return key
    escaped = key.encode("utf-8", "backslashreplace").decode("utf-8")
    kept = escaped not in metadata
    if escaped not in _escaped_keys and len(_escaped_keys) < 1024:
        _escaped_keys.add(escaped)
        logger.warning(
            "metadata key %r holds text UTF-8 cannot encode (a lone surrogate, as os.fsdecode gives for a "
            "non-UTF-8 file name): %s",
            key[:64],
            "it travels in baggage with that escape written out"
            if kept
            else "left out of baggage, where that escaped form is already another key",
        )
    return escaped if kept else None


def _wire_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """`metadata` with its keys as they travel (see `_wire_key`); `metadata` itself when every key is as is."""
    if not any(map(_unencodable, metadata)):
        return metadata
    out = {}
    for key, value in metadata.items():
        wire = _wire_key(key, metadata)
        if wire is not None:
            out[wire] = value
    return out


def _parse_name(value: str) -> str:
    if value[:1] == '"':
        try:
            name = json.loads(value)
        except ValueError:
            raise _Refused("'session.name' starts with a quote but is not a JSON string") from None
        if not isinstance(name, str):
            raise _Refused("'session.name' is not a string")
        return name
    return value


def _enc_value(value: str) -> str:
    return value if _PLAIN_VALUE.fullmatch(value) else quote(value, safe=_VALUE_SAFE)


def _enc_key(key: str) -> str:
    return key if _PLAIN_KEY.fullmatch(key) else quote(key, safe=_KEY_SAFE)


# -- items: decoded key -> decoded value (what OpenTelemetry's baggage API holds) --------------------------
def context_to_baggage_items(ctx: Mapping[str, Any]) -> dict[str, str]:
    """The baggage members of `ctx` as decoded ``{key: value}`` (metadata inline; signature if present)."""
    items = {
        "session.v": WIRE_VERSION,
        "session.name": _name_value(ctx["name"]),
        "session.uids": ".".join(ctx["uid_chain"]),
    }
    metadata = ctx.get("metadata", {})
    for key, value in metadata.items():
        member = META_PREFIX + key
        if not member.isascii():
            wire = _wire_key(key, metadata)
            if wire is None:
                continue
            member = META_PREFIX + wire
        items[member] = _json_value(value)
    if "sig" in ctx:
        items["session.ts"] = str(ctx["ts"])
        items["session.sig"] = ctx["sig"]
    return items


def _reference_items(ctx: Mapping[str, Any]) -> dict[str, str]:
    items = {
        "session.v": WIRE_VERSION,
        "session.name": _name_value(ctx["name"]),
        "session.uids": ".".join(ctx["uid_chain"]),
        "session.ref": "1",
    }
    if "sig" in ctx:
        items["session.ts"] = str(ctx["ts"])
        items["session.sig"] = ctx["sig"]
    return items


class _Refused(Exception):
    """Internal: why a baggage context was refused (becomes a warning, or InvalidSessionContext when strict)."""


def context_from_baggage_items(
    items: Mapping[str, Any],
    *,
    signing_key: str | bytes | None = None,
    storage: Any = None,
    strict: bool = False,
    max_age: float | None = DEFAULT_MAX_AGE,
) -> dict[str, Any] | None:
    """The context held by decoded baggage members, or None when there is none or it is refused.

    `signing_key` (or ``$SESSION_SIGNING_KEY``): refuse unsigned or badly signed contexts. `storage`: where a
    by-reference context's metadata is looked up.
    """
    try:
        return _from_items(items, resolve_signing_key(signing_key), storage, max_age)
    except (_Refused, InvalidSessionContext) as exc:
        if strict:
            raise InvalidSessionContext(f"session baggage refused: {exc}") from None
        logger.warning("session baggage ignored: %s", exc)
        return None


_MISSING: Any = object()
_parsed_values: dict[str, Any] = {}  # JSON text of a metadata value -> the value, when a scalar contexts allow


def _from_items(
    items: Mapping[str, Any], key: bytes | None, storage: Any, max_age: float | None
) -> dict[str, Any] | None:
    uids = items.get("session.uids")
    if uids is None:
        if any(isinstance(k, str) and k.startswith(PREFIX) for k in items):
            raise _Refused("session members present but 'session.uids' is missing")
        return None  # no context at all: nothing to refuse, signed or not
    version = items.get("session.v", WIRE_VERSION)
    if version != WIRE_VERSION:
        raise _Refused(f"unsupported wire version {str(version)[:8]!r} (this session-core reads {WIRE_VERSION})")
    if not isinstance(uids, str) or not _UIDS.fullmatch(uids):
        raise _Refused("'session.uids' is not a dot-separated list of uids")
    name = items.get("session.name")
    if not isinstance(name, str) or not name:
        raise _Refused("'session.name' is missing or empty")
    name = _parse_name(name)
    metadata: dict[str, Any] = {}
    parsed = _parsed_values
    flat_plain = True  # every value a cached scalar (keys are str): nothing for `_checked_metadata` to do
    for k, v in items.items():
        if isinstance(k, str) and k.startswith(META_PREFIX):
            mkey = k[_META_LEN:]  # "" too: metadata may have an empty key, as contexts and slugs allow
            text = str(v)
            value = parsed.get(text, _MISSING)
            if value is _MISSING:
                try:
                    value = _parse_json_value(text)
                except (ValueError, RecursionError):
                    raise _Refused(f"metadata member {mkey[:64]!r} is not JSON") from None
                if len(text) <= _CACHEABLE_MEMBER and _flat_plain({"": value}):  # a scalar kept as is
                    _remember(parsed, text, value)
                else:
                    flat_plain = False
            metadata[mkey] = value
    if not flat_plain or len(metadata) > MAX_METADATA_KEYS:
        metadata = _checked_metadata(metadata)  # JSON allows what contexts do not: NaN, 1e999, deep nesting
    ctx: dict[str, Any] = {"v": CONTEXT_VERSION, "name": name, "uid_chain": uids.split("."), "metadata": metadata}
    if items.get("session.ref") == "1":
        ctx["metadata"] = _load_reference(ctx["uid_chain"][-1], storage)
    sig = items.get("session.sig")
    if sig is not None:
        ts = items.get("session.ts")
        if not isinstance(ts, str) or not _INT.fullmatch(ts):
            raise _Refused("'session.ts' is missing or not an integer")
        ctx["ts"] = int(ts)
        ctx["sig"] = str(sig)
    if len(name) > MAX_NAME_LENGTH:
        raise _Refused(f"'session.name' is over the limit of {MAX_NAME_LENGTH} characters")
    if len(metadata) > MAX_METADATA_KEYS:
        raise _Refused(f"{len(metadata)} metadata members, over the limit of {MAX_METADATA_KEYS}")
    if key is not None:
        try:
            verify_context(ctx, key, max_age=max_age)
        except InvalidSessionContext as exc:
            raise _Refused(str(exc)) from None
    return ctx


def _load_reference(uid: str, storage: Any) -> dict[str, Any]:
    if storage is None or not isinstance(storage, ContextStore):
        raise _Refused(
            "the context's metadata travels by reference, but no storage that keeps contexts is configured "
            "here (set $SESSION_STORAGE_URL to the sender's storage)"
        )
    saved = storage.load_context(uid)
    if saved is None:
        # No repr of the storage: strict servers send this text back to the caller (a path, host, user name).
        raise _Refused(
            f"the context's metadata travels by reference, but session {uid} is not in this service's storage "
            "(it must read the sender's)"
        )
    metadata = saved.get("metadata", {})
    if not isinstance(metadata, dict):
        raise _Refused("the stored context's metadata is not a dict")
    return metadata


# -- the header --------------------------------------------------------------------------------------------
def _member_key(raw: str) -> str:
    """A member's key as OpenTelemetry's propagator reads it (``unquote_plus``), before stripping."""
    return unquote(raw.replace("+", " ")) if "%" in raw or "+" in raw else raw


def split_baggage(header: str) -> list[tuple[str, str, str]]:
    """Split a baggage header into ``(raw key, raw value, raw member)``.

    A member without ``=`` is malformed: one that would be a ``session.*`` member raises `_Refused`; another
    vendor's is left out, as OpenTelemetry's propagator leaves it out, so it cannot cost the session.
    """
    out = []
    for member in header.split(","):
        member = member.strip(" \t")
        if not member:
            continue
        pair = member.split(";", 1)[0]
        key, eq, value = pair.partition("=")
        if not eq:
            name = _member_key(key).strip(" \t")
            if name.startswith(PREFIX):
                raise _Refused(f"baggage member {name[:64]!r} has no '='")
            continue
        out.append((key.strip(" \t"), value.strip(" \t"), member))
    return out


def strip_session_members(header: str | None) -> str:
    """`header` without its ``session.*`` members (other members kept verbatim, in order).

    A key is read as OpenTelemetry's propagator reads it (``unquote_plus(key).strip()``), so ``%20session.m.x``,
    which OTel takes for ``session.m.x``, goes too: kept, it would reach an OTel-reading service as ours."""
    if not header:
        return ""
    kept = []
    for member in header.split(","):
        stripped = member.strip(" \t")
        if not stripped:
            continue
        key = stripped.split("=", 1)[0]
        key = _member_key(key)
        if not key.strip().startswith(PREFIX):
            kept.append(stripped)
    return ",".join(kept)


def _encode_items(items: Mapping[str, str]) -> list[str]:
    plain = _PLAIN_VALUE.fullmatch
    out = []
    for k, v in items.items():
        if plain(v) is None:
            # a JSON string of plain characters: only its quotes need escaping (the common metadata case)
            v = (
                f"%22{v[1:-1]}%22"
                if len(v) >= 2 and v[0] == '"' == v[-1] and plain(v, 1, len(v) - 1)
                else _enc_value(v)
            )
        out.append(f"{_enc_key(k)}={v}")
    return out


_CACHE_MAX = 4096  # entries per cache (a full cache starts over)
_CACHEABLE_MEMBER = 256  # longer members and values are not cached


def _remember(cache: dict[Any, Any], key: Any, value: Any) -> None:
    """``cache[key] = value`` in one of this module's bounded caches: a full cache starts over."""
    if len(cache) >= _CACHE_MAX:
        cache.clear()
    cache[key] = value


_key_cache: dict[str, str] = {}
_member_cache: dict[tuple[str, type, Any], str] = {}


def _meta_key(key: str) -> str:
    encoded = _key_cache.get(key)
    if encoded is None:
        encoded = _enc_key(META_PREFIX + key)
        _remember(_key_cache, key, encoded)
    return encoded


def _meta_member(key: str, value: Any) -> str:
    """The header member of one metadata item, ``<encoded session.m.key>=<encoded JSON value>``."""
    t = type(value)
    if t is str and _PLAIN_VALUE.fullmatch(value):
        return f"{_meta_key(key)}=%22{value}%22"
    if t is int:
        return f"{_meta_key(key)}={value}"
    return f"{_meta_key(key)}={_enc_value(_json_value(value))}"


def _encode_context(ctx: Mapping[str, Any], metadata: Mapping[str, Any]) -> list[str]:
    """Header members of `ctx` with its checked `metadata`: `_encode_items(context_to_baggage_items(ctx))`, fast.

    A metadata member is computed the first time its ``(key, type, value)`` is seen and reused afterwards
    (1, True and 1.0 are equal but have different types, so they never share an entry).
    """
    name = ctx["name"]
    members = [
        "session.v=" + WIRE_VERSION,
        "session.name=" + (name if _PLAIN_VALUE.fullmatch(name) else _enc_value(_name_value(name))),
        "session.uids=" + ".".join(ctx["uid_chain"]),
    ]
    cache = _member_cache
    for key, value in metadata.items():
        t = type(value)
        # equal values of these types always encode alike (not 0.0: it equals -0.0, which encodes differently)
        if t is str or t is int or t is bool or (t is float and value != 0.0):
            cache_key = (key, t, value)
            member = cache.get(cache_key)
            if member is None:
                wire = key if key.isascii() else _wire_key(key, metadata)
                if wire is None:
                    continue
                member = _meta_member(wire, value)
                if wire is key and len(member) <= _CACHEABLE_MEMBER:  # an escaped key is checked every time
                    _remember(cache, cache_key, member)
            members.append(member)
        else:
            wire = key if key.isascii() else _wire_key(key, metadata)
            if wire is not None:
                members.append(_meta_member(wire, value))
    if "sig" in ctx:
        members.append(f"session.ts={ctx['ts']}")
        members.append(f"session.sig={_enc_value(ctx['sig'])}")
    return members


def encode_baggage(
    ctx: Mapping[str, Any],
    *,
    existing: str | None = None,
    signing_key: str | bytes | None = None,
    storage: Any = None,
) -> str:
    """A ``baggage`` header value carrying `ctx`, merged into `existing` (its session members replaced).

    Metadata too large for the header travels by reference through `storage` when that keeps contexts and is
    addressable (has a URL); otherwise `ContextTooLarge` says the size and the limit. Never truncates.
    """
    if "sig" in ctx or "ts" in ctx:
        ctx = {k: v for k, v in ctx.items() if k not in ("sig", "ts")}
    key = resolve_signing_key(signing_key)
    metadata = _checked_metadata(ctx.get("metadata", {}))
    if key is not None:
        metadata = _wire_metadata(metadata)  # the signature covers the keys as they travel
    ctx = {**ctx, "metadata": metadata}
    if key is not None:  # signed as the header carries it: name, uid chain and metadata (no storage_url, ...)
        ctx = sign_context({"name": ctx["name"], "uid_chain": ctx["uid_chain"], "metadata": metadata}, key)
    others = strip_session_members(existing)
    members = _encode_context(ctx, metadata)
    ours = ",".join(members)
    size = _utf8_size(others) + 1 + len(ours) if others else len(ours)  # our members are ASCII: characters are bytes
    longest = max(map(len, members)) if size > MAX_MEMBER_BYTES else size  # no member is longer than the header
    count = len(members) + _count(others)
    if size > MAX_HEADER_BYTES or count > MAX_MEMBERS or longest > MAX_MEMBER_BYTES:
        if storage is None or not isinstance(storage, ContextStore) or getattr(storage, "url", None) is None:
            if longest > MAX_MEMBER_BYTES:
                raise ContextTooLarge(longest, MAX_MEMBER_BYTES)
            if size > MAX_HEADER_BYTES:
                raise ContextTooLarge(size, MAX_HEADER_BYTES)
            raise ContextTooLarge(count, MAX_MEMBERS, unit="members")
        _save_reference(storage, ctx)
        members = _encode_items(_reference_items(ctx))
        size = _header_size(others, members)
        if size > MAX_HEADER_BYTES:
            raise ContextTooLarge(size, MAX_HEADER_BYTES)
        count = len(members) + _count(others)
        if count > MAX_MEMBERS:  # `existing` alone leaves no room: every receiver would refuse the header
            raise ContextTooLarge(count, MAX_MEMBERS, unit="members")
        ours = ",".join(members)
    return f"{others},{ours}" if others else ours


_saved: weakref.WeakKeyDictionary[Any, dict[str, dict[str, Any]]] = weakref.WeakKeyDictionary()
_saved_lock = threading.Lock()


def _save_reference(storage: Any, ctx: Mapping[str, Any]) -> None:
    """`storage.save_context(ctx)`, skipped when the same name, uid chain and metadata are what this process last
    saved in that storage for the session: every request a session sends would otherwise write it again."""
    uid = ctx["uid_chain"][-1]
    kept = {"name": ctx["name"], "uid_chain": list(ctx["uid_chain"]), "metadata": ctx["metadata"]}
    try:
        known = _saved.get(storage)
    except TypeError:  # a storage that cannot be weakly referenced (or hashed): save every time
        storage.save_context(dict(ctx))
        return
    if known is not None:
        last = known.get(uid)
        if last == kept and _same_types(last["metadata"], kept["metadata"]):  # 1 == True: not the same JSON
            return
    storage.save_context(dict(ctx))
    with _saved_lock:
        _remember(_saved.setdefault(storage, {}), uid, kept)


def _utf8_size(text: str) -> int:
    """Bytes `text` takes in a header (members of `existing` may hold non-ASCII text, which W3C's limits count in
    UTF-8 bytes, and so does `decode_baggage`)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "replace"))


def _count(header: str) -> int:
    return header.count(",") + 1 if header else 0


def _header_size(others: str, members: list[str]) -> int:
    size = sum(map(len, members)) + max(len(members) - 1, 0)  # encoded members are ASCII: characters are bytes
    return size + (_utf8_size(others) + 1 if others else 0)


def decode_baggage(
    header: str | bytes | None,
    *,
    signing_key: str | bytes | None = None,
    storage: Any = None,
    strict: bool = False,
    max_age: float | None = DEFAULT_MAX_AGE,
) -> dict[str, Any] | None:
    """The context in a ``baggage`` header, or None (no session members, or refused with a warning).

    Total: never raises for any input unless `strict`, where a refused context raises `InvalidSessionContext`.
    """
    try:
        items = _header_items(header)
        if items is None:
            return None
        return _from_items(items, resolve_signing_key(signing_key), storage, max_age)
    except (_Refused, InvalidSessionContext) as exc:
        if strict:
            raise InvalidSessionContext(f"session baggage refused: {exc}") from None
        logger.warning("session baggage ignored: %s", exc)
        return None


def _header_items(header: str | bytes | None) -> dict[str, str] | None:
    if header is None:
        return None
    sized = False
    if isinstance(header, (bytes, bytearray)):
        if len(header) > MAX_HEADER_BYTES:
            raise _Refused(f"baggage header is {len(header)} bytes, over the limit of {MAX_HEADER_BYTES}")
        header = bytes(header).decode("latin-1")  # as HTTP reads header bytes; never fails
        sized = True
    if not isinstance(header, str):
        raise _Refused(f"baggage header must be text, got {type(header).__name__}")
    if PREFIX not in header and "session%2E" not in header.lower():
        return None  # fast path: no session members at all
    if not sized and (len(header) > MAX_HEADER_BYTES or len(header.encode("utf-8", "replace")) > MAX_HEADER_BYTES):
        raise _Refused(f"baggage header is over the limit of {MAX_HEADER_BYTES} bytes")
    if not header.isascii():
        # W3C baggage is ASCII: another vendor's non-ASCII member is left out (as OpenTelemetry leaves it out),
        # one of ours is refused, by the general reader
        return _general_header_items(header)
    items = _plain_header_items(header)
    return items if items is not None else _general_header_items(header)


_decoded_members: dict[str, tuple[str, str]] = {}  # raw member -> (key, decoded value)
_PER_SESSION = frozenset({"session.uids", "session.ts", "session.sig"})  # members not worth caching


def _plain_header_items(header: str) -> dict[str, str] | None:
    """`_general_header_items` of a header without whitespace, properties or anything it would refuse, else None.

    Members other than the per-session ones (uids, signature) are decoded once and cached by their raw text.
    Returns None (the general path then reads the header, and words any refusal) at the first thing out of the
    ordinary, so it never refuses anything itself.
    """
    if " " in header or "\t" in header or ";" in header or header.count(",") >= MAX_MEMBERS:
        return None
    cache = _decoded_members
    items: dict[str, str] = {}
    for member in header.split(","):
        hit = cache.get(member)
        if hit is not None:
            key, value = hit
        else:
            key, eq, raw_value = member.partition("=")
            if not eq or "%" in key or "+" in key:
                return None
            if not key.startswith(PREFIX):
                continue
            if len(member) > MAX_MEMBER_BYTES:
                return None
            try:
                value = _decode_value(key, raw_value)
            except _Refused:
                return None
            if key not in _PER_SESSION and len(member) <= _CACHEABLE_MEMBER:
                _remember(cache, member, (key, value))
        if key in items:
            return None
        items[key] = value
    return items


def _general_header_items(header: str) -> dict[str, str]:
    """The decoded session members of an ASCII `header` of acceptable size; raises `_Refused` naming a problem."""
    members = split_baggage(header)
    if len(members) > MAX_MEMBERS:
        raise _Refused(f"baggage header has {len(members)} members, over the limit of {MAX_MEMBERS}")
    items: dict[str, str] = {}
    for raw_key, raw_value, member in members:
        key = _member_key(raw_key)
        if not key.startswith(PREFIX):
            continue
        if len(member) > MAX_MEMBER_BYTES:
            raise _Refused(f"member {key[:64]!r} is over the limit of {MAX_MEMBER_BYTES} bytes")
        if not member.isascii():
            raise _Refused(f"member {key[:64]!r} holds non-ASCII characters")
        value = _decode_value(key, raw_value)
        if key in items:
            raise _Refused(f"member {key[:64]!r} appears twice")
        items[key] = value
    return items


def _decode_value(key: str, raw_value: str) -> str:
    """The percent-decoded value of member `key`; raises `_Refused` when it is malformed."""
    n = len(raw_value)
    if n >= 6 and raw_value[:3] == "%22" and raw_value[-3:] == "%22" and _PLAIN_VALUE.fullmatch(raw_value, 3, n - 3):
        return f'"{raw_value[3:-3]}"'  # fast path: a JSON string of plain characters
    if not _ENCODED_VALUE.fullmatch(raw_value):
        raise _Refused(f"member {key[:64]!r} has a malformed value (bad percent-encoding or characters)")
    if "%" in raw_value or "+" in raw_value:
        # OTel writes a space as '+'; our encoder never emits a raw '+', so both read alike.
        try:
            return unquote(raw_value.replace("+", " "), errors="strict")
        except UnicodeDecodeError:
            raise _Refused(f"member {key[:64]!r} percent-decodes to invalid UTF-8") from None
    return raw_value
