"""Traces as compact JSON: fields left at their default are omitted, so rows stay small and decode fast.

Values JSON cannot represent (a pydantic model, a dataclass, a set, bytes, a datetime) are converted rather
than refused, because refusing would lose the whole trace: dataclasses and models become dicts, sets lists,
bytes and other objects text; so do dict keys JSON cannot have (tuples, objects).
"""

from __future__ import annotations

import dataclasses
import datetime
import gc
import json
import logging
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from session_core import Trace

__all__ = [
    "column_json",
    "decode_trace",
    "decode_traces",
    "encode_trace",
    "gc_paused",
    "storable_json",
    "storable_text",
    "to_json",
]

logger = logging.getLogger(__name__)

_ALWAYS = ("trace_id", "name", "timestamp")
_OPTIONAL = tuple(f.name for f in dataclasses.fields(Trace) if f.name not in (*_ALWAYS, "metadata"))
_warned: set[type] = set()


def _fallback(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    for method in ("model_dump", "to_dict"):
        convert = getattr(value, method, None)
        if callable(convert):
            try:
                return convert()
            except Exception:  # a broken converter must not cost the trace
                break
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    kind = type(value)
    if kind not in _warned:
        _warned.add(kind)
        logger.warning("a trace field holds a %s, which JSON cannot represent; storing its repr()", kind.__name__)
    return repr(value)


_dumps = json.JSONEncoder(separators=(",", ":"), default=_fallback).encode
_loads = json.loads

try:  # the `fast` extra: msgspec parses JSON about twice as fast as the standard library
    from msgspec.json import Decoder as _Decoder
except ImportError:
    _fast_loads = None
else:
    # Where msgspec reads a text at all, it reads the values json.loads does (ints of any size included);
    # what it refuses (NaN and the infinities, which `to_json` writes bare; a lone surrogate) goes to json.loads.
    _fast_loads = _Decoder().decode


def to_json(value: Any) -> str:
    """Compact JSON of any value, converting what JSON cannot represent (see the module docstring)."""
    try:
        return _dumps(value)
    except (TypeError, ValueError, RecursionError):  # a key JSON cannot have, a cycle, extreme nesting
        return _dumps(_plain(value, finite=False))


_strict_dumps = json.JSONEncoder(separators=(",", ":"), default=_fallback, allow_nan=False).encode
_NON_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}


def column_json(value: Any, *, postgresql: bool = False) -> str:
    """JSON for a JSON column (a session's metadata): strict JSON, which PostgreSQL's ``jsonb`` and SQLite's
    JSON functions accept. NaN and the infinities, which `to_json` writes as bare ``NaN`` / ``Infinity`` (not
    JSON), are stored as the strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"``; on PostgreSQL, strings are
    made `storable_text`."""
    try:
        text = _strict_dumps(value)
    except (TypeError, ValueError, RecursionError):  # NaN or an infinity, or what `to_json` converts
        text = _strict_dumps(_plain(value, finite=True))
    if postgresql and ("\\u0000" in text or "\\ud" in text):  # NUL, or a surrogate (maybe half of a pair)
        text = _strict_dumps(storable_json(json.loads(text), postgresql=True))
    return text


_UNSTORABLE = {True: re.compile("[\x00\ud800-\udfff]"), False: re.compile("[\ud800-\udfff]")}


def storable_text(text: str | None, *, postgresql: bool) -> str | None:
    """`text` as a text column holds it: a lone surrogate (no UTF-8 encoding exists) and, on PostgreSQL, NUL
    (its text and ``jsonb`` refuse it) become U+FFFD. The trace itself keeps the original in its JSON."""
    if text is None or (text.isascii() and (not postgresql or "\x00" not in text)):
        return text
    return _UNSTORABLE[postgresql].sub("\ufffd", text)


def storable_json(value: Any, *, postgresql: bool) -> Any:
    """`value` (a JSON value) with every string and key made `storable_text`."""
    if isinstance(value, str):
        return storable_text(value, postgresql=postgresql)
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            key = storable_text(k, postgresql=postgresql) if isinstance(k, str) else k
            out[key] = storable_json(v, postgresql=postgresql)
        return out
    if isinstance(value, (list, tuple)):
        return [storable_json(v, postgresql=postgresql) for v in value]
    return value


_JSON_KEYS = (str, int, float, bool, type(None))
_MAX_NESTING = 100


def _plain(value: Any, *, finite: bool, depth: int = 0) -> Any:
    """`value` with what the JSON encoder refuses made encodable: a dict key JSON cannot have (a tuple, any object)
    becomes its str(), a value nested past 100 levels (a cycle) its repr(), and, when `finite`, NaN and the
    infinities the strings JSON's encoders name them."""
    if isinstance(value, float):
        return value if not finite or math.isfinite(value) else _NON_FINITE.get(value, "NaN")
    if not isinstance(value, (dict, list, tuple)):
        return value
    if depth >= _MAX_NESTING:
        return repr(value)
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, _JSON_KEYS):
                kind = type(k)
                if kind not in _warned:
                    _warned.add(kind)
                    logger.warning(
                        "a trace field has a %s as a dict key, which JSON cannot have; storing its str()", kind.__name__
                    )
                k = str(k)
            out[k] = _plain(v, finite=finite, depth=depth + 1)
        return out
    return [_plain(v, finite=finite, depth=depth + 1) for v in value]


def encode_trace(trace: Trace) -> str:
    """The trace as compact JSON; `decode_trace` rebuilds an equal `Trace`."""
    data: dict[str, Any] = {"trace_id": trace.trace_id, "name": trace.name, "timestamp": trace.timestamp}
    if trace.metadata:
        data["metadata"] = trace.metadata
    for field in _OPTIONAL:
        value = getattr(trace, field)
        if value is not None:
            data[field] = value
    return to_json(data)


_FIELDS = dataclasses.fields(Trace)
_FIELD_NAMES = frozenset(f.name for f in _FIELDS)
# Every field in declaration order with its plain default (None where the default comes from a factory): a
# stored row merged over it is the instance dict `Trace(**row)` would build, when the row has trace_id and
# timestamp and only known fields. Valid while Trace is a plain dataclass without __post_init__ or slots.
_STATE = {f.name: None if f.default is dataclasses.MISSING else f.default for f in _FIELDS}
_DIRECT = not hasattr(Trace, "__post_init__") and not hasattr(Trace, "__slots__")
_new = object.__new__


def _to_trace(data: Any) -> Trace:
    if _DIRECT and type(data) is dict and "trace_id" in data and "timestamp" in data and _FIELD_NAMES.issuperset(data):
        state = {**_STATE, **data}
        if "metadata" not in data:
            state["metadata"] = {}
        trace = _new(Trace)
        trace.__dict__ = state
        return trace
    try:
        return Trace(**data)
    except TypeError:
        return Trace.from_dict(data)


def decode_traces(texts: list[str]) -> list[Trace]:
    """Many traces at once: one JSON parse of the whole batch (twice as fast as one parse per row; twice as fast
    again with the `fast` extra, msgspec). Run it under `gc_paused` for large batches.

    A row that is not valid JSON (written by something else), nests deeper than the parser can follow, or holds
    a JSON value that is no object (``null``, a number, a list), is skipped with an error logged, so one bad row
    does not hide a whole session's traces (nor make the result depend on which rows share its batch).
    """
    if not texts:
        return []
    parts = list(texts)  # brackets on the ends rather than around the joined text: one copy of it, not two
    parts[0] = "[" + parts[0]
    parts[-1] += "]"
    batch = ",".join(parts)
    datas: Any = None
    if _fast_loads is not None:
        try:
            datas = _fast_loads(batch)
        except Exception:  # NaN or an infinity, a lone surrogate, a bad row: the standard library's turn
            datas = None
    if datas is None:
        try:
            datas = _loads(batch)
        except (ValueError, RecursionError):
            datas = None
    # A row with a comma at its top level (``{...},{...}``, not JSON) parses as two elements of the batch, and
    # rows that are fragments of one value as one: read alone, each is skipped, whatever its neighbours. (Only
    # a parse per row would catch both at once in one batch, where the count comes out right.)
    if datas is None or len(datas) != len(texts):
        datas = []
        for text in texts:
            try:
                datas.append(_loads(text))
            except (ValueError, RecursionError) as exc:
                logger.error("skipping a stored trace that is not valid JSON (%s): %.80r", exc, text)
    try:
        return [_to_trace(data) for data in datas]
    except TypeError:  # a row that is JSON but no object (Trace.from_dict refuses it): checked only then
        for data in datas:
            if type(data) is not dict:
                logger.error("skipping a stored trace that is not a JSON object: %.80r", data)
        return [_to_trace(data) for data in datas if type(data) is dict]


@contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off for the block: reading rows and building traces allocates tens of
    thousands of containers and no garbage, which would set off collection after collection. Left alone when
    it was off already (another thread's read, or the caller's choice)."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def decode_trace(text: str) -> Trace:
    """A `Trace` from `encode_trace` output (or any JSON object of trace fields; unknown keys are kept in metadata)."""
    return _to_trace(_loads(text))
