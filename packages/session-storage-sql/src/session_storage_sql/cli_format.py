"""How ``session-sql`` shows stored values in a terminal: times, uids, tokens, metadata and clipped text.

Everything stored came from the traced application, so text is made safe before it reaches a terminal:
control characters (an ANSI escape in a model's output, a carriage return) and lone surrogates (which no
encoding can write) are shown escaped, never sent raw. `json_text` writes JSON any UTF-8 stream can take.
"""

from __future__ import annotations

import datetime
import json
import math
import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "SHORT_UID",
    "clip",
    "day_of",
    "fmt_bytes",
    "fmt_latency",
    "fmt_meta",
    "fmt_time",
    "fmt_tokens",
    "json_text",
    "meta_changes",
    "safe",
    "safe_block",
    "short_uid",
    "summarize",
    "to_jsonable",
]

SHORT_UID = 12
"""Characters of a uid shown in tables (any unique prefix of 6 or more is accepted back)."""

_SPACES = re.compile(r"[\t\n\r\f\v ]+")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_MISSING = object()
_NON_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}


def safe(text: str) -> str:
    """`text` with whitespace runs as one space and other control characters escaped (``\\x1b``)."""
    return _CONTROL.sub(_escape, _SPACES.sub(" ", text))


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\u{code:04x}" if code > 0xFF else f"\\x{code:02x}"


def safe_block(text: str) -> str:
    """Multi-line `text` (pretty JSON) with control characters other than newlines escaped as ``\\uXXXX``."""
    return _CONTROL.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def clip(value: Any, width: int) -> str:
    """A one-line, terminal-safe rendering of `value`, cut to `width` characters with an ellipsis."""
    text = safe(value if isinstance(value, str) else _compact(value)).strip()
    if width > 0 and len(text) > width:
        return text[: max(width - 1, 0)] + "…"
    return text


def short_uid(uid: str) -> str:
    return safe(uid[:SHORT_UID])


def fmt_time(timestamp: float | None, *, millis: bool = False, date: bool = True) -> str:
    """Local time, ``2024-05-01 12:30:05`` (``.123`` with `millis`; without the day unless `date`); empty for
    None; the unix seconds as stored (``nan``, ``1e+20``) for a time no calendar date has."""
    if timestamp is None:
        return ""
    moment = _local(timestamp)
    if moment is None:
        return safe(str(timestamp))
    text = moment.strftime("%Y-%m-%d %H:%M:%S" if date else "%H:%M:%S")
    return f"{text}.{moment.microsecond // 1000:03d}" if millis else text


def day_of(timestamp: float) -> datetime.date | None:
    """The local calendar day of `timestamp`, or None when it has none (NaN, beyond year 1 to 9999)."""
    moment = _local(timestamp)
    return None if moment is None else moment.date()


def _local(timestamp: float) -> datetime.datetime | None:
    try:
        return datetime.datetime.fromtimestamp(timestamp)
    except (ValueError, OverflowError, OSError, TypeError):  # NaN, out of range, not a number
        return None


def fmt_tokens(tokens: Any) -> str:
    """``11`` for a count; ``11 (3+8)`` for a ``{"prompt", "completion", "total"}`` dict; compact JSON otherwise."""
    if tokens is None:
        return ""
    if isinstance(tokens, bool) or not isinstance(tokens, (int, float, Mapping)):
        return clip(tokens, 24)
    if not isinstance(tokens, Mapping):
        return f"{tokens:g}" if isinstance(tokens, float) else str(tokens)
    prompt = _number(tokens, "prompt", "prompt_tokens", "input", "input_tokens")
    completion = _number(tokens, "completion", "completion_tokens", "output", "output_tokens")
    total = _number(tokens, "total", "total_tokens")
    if total is None and prompt is not None and completion is not None:
        total = prompt + completion
    if total is None:
        return clip(dict(tokens), 24)
    if prompt is not None and completion is not None:
        return f"{total:g} ({prompt:g}+{completion:g})"
    return f"{total:g}"


def _number(data: Mapping[str, Any], *keys: str) -> float | None:
    for key in keys:
        value = data.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
    return None


def fmt_latency(latency_ms: float | None) -> str:
    if latency_ms is None:
        return ""
    try:
        return f"{float(latency_ms):.1f}"
    except (TypeError, ValueError):
        return clip(latency_ms, 12)


def fmt_bytes(size: int | None) -> str:
    """``512 B``, ``72.0 KiB``, ``3.4 MiB``; ``unknown`` for None."""
    if size is None:
        return "unknown"
    if size < 1024:
        return f"{size} B"
    value = size / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def fmt_meta(metadata: Mapping[str, Any] | None, width: int = 0) -> str:
    """``key=value`` pairs (strings bare unless they need quotes, other values as JSON), clipped to `width`."""
    if not metadata:
        return ""
    parts = [f"{safe(str(key))}={_meta_value(value)}" for key, value in metadata.items()]
    return clip(" ".join(parts), width)


def meta_changes(metadata: Mapping[str, Any] | None, inherited: Mapping[str, Any] | None) -> dict[str, Any]:
    """The keys of a child's merged `metadata` that it set itself: new, or different from the parent's."""
    if not metadata:
        return {}
    base = inherited or {}
    return {k: v for k, v in metadata.items() if base.get(k, _MISSING) != v or type(base.get(k)) is not type(v)}


def summarize(value: Any, width: int) -> str:
    """A chat message list as its last message (``user: ...``), a message dict as its content, else the value."""
    if isinstance(value, list) and value and all(isinstance(m, Mapping) for m in value):
        last = value[-1]
        if "content" in last:
            role = last.get("role")
            content = last.get("content")
            text = content if isinstance(content, str) else _compact(content)
            more = f"[{len(value)} msgs] " if len(value) > 1 else ""
            return clip(f"{more}{role}: {text}" if role else f"{more}{text}", width)
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return clip(value["content"], width)
    if value is None:
        return ""
    return clip(value, width)


def json_text(value: Any, *, indent: int | None = None, ascii_only: bool = False) -> str:
    """`value` as strict JSON text (non-ASCII as is, or escaped with `ascii_only`) that any parser reads and a
    UTF-8 stream can always take.

    NaN and the infinities, which a trace may hold but JSON has no token for, are written as the strings
    ``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` (as session metadata is stored); a lone surrogate, which UTF-8
    cannot encode, as its ``\\uXXXX`` escape, which parses back to it."""
    try:
        text = json.dumps(value, indent=indent, ensure_ascii=ascii_only, allow_nan=False, default=str)
    except ValueError:  # NaN or an infinity somewhere
        text = json.dumps(_finite(value), indent=indent, ensure_ascii=ascii_only, allow_nan=False, default=str)
    return text if ascii_only else _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _finite(value: Any) -> Any:
    """`value` with NaN and the infinities as the strings JSON's encoders name them."""
    if isinstance(value, float):
        return value if math.isfinite(value) else _NON_FINITE.get(value, "NaN")
    if isinstance(value, Mapping):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def to_jsonable(value: Any) -> Any:
    """`value` made JSON-serializable (stored values already are; anything else becomes its string)."""
    return json.loads(json.dumps(value, default=str))


def _meta_value(value: Any) -> str:
    if isinstance(value, str) and value and not any(c.isspace() or c in "=\"'" for c in value):
        return safe(value)
    return safe(_compact(value))


def _compact(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    except ValueError:  # a circular structure cannot come from the database, but never fail on display
        return repr(value)
