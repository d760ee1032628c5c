"""Span attributes that attribute a span to a session: ``session.id``, ``session.name``, ``session.uid_chain``
and ``session.metadata.<key>``.

OpenTelemetry attribute values are str, bool, int, float or homogeneous sequences of them; any other metadata
value (a dict, a mixed list) becomes its compact JSON text so it is still searchable, and None is left out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.util.types import AttributeValue

__all__ = [
    "METADATA_PREFIX",
    "SESSION_ID",
    "SESSION_NAME",
    "SESSION_UID_CHAIN",
    "attribute_value",
    "metadata_attributes",
    "session_attributes",
    "text",
]

SESSION_ID = "session.id"  # OpenTelemetry semantic convention: the session's unique id (our uid)
SESSION_NAME = "session.name"
SESSION_UID_CHAIN = "session.uid_chain"
METADATA_PREFIX = "session.metadata."

_PRIMITIVES = (str, bool, int, float)
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1


def text(value: str) -> str:
    """`value`, with lone surrogates (``os.fsdecode`` of a non-UTF-8 file name) written as ``\\udce9`` escapes:
    OTLP sends UTF-8, and one string it cannot encode makes its exporter refuse the whole batch of spans."""
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def attribute_value(value: Any) -> AttributeValue | None:
    """`value` as an OpenTelemetry attribute value, or None when it should be left out.

    What OTLP cannot carry becomes text it can: integers beyond 64 bits their decimal digits, strings UTF-8
    cannot encode their escaped form (see `text`); else one such attribute makes its exporter refuse the whole
    batch of spans."""
    t = type(value)
    if t is str:
        return text(value)
    if t is bool or t is float:
        return value  # type: ignore[no-any-return]
    if t is int:
        return value if _INT64_MIN <= value <= _INT64_MAX else str(value)
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        if not value:
            return ()
        first = type(value[0])
        if (
            first in _PRIMITIVES
            and all(type(v) is first for v in value)
            and (first is not int or all(_INT64_MIN <= v <= _INT64_MAX for v in value))
        ):
            return tuple(map(text, value)) if first is str else tuple(value)
    elif isinstance(value, _PRIMITIVES):  # subclasses such as str enums: keep the plain value
        for base in _PRIMITIVES:
            if isinstance(value, base):
                return attribute_value(base(value))
    try:
        return text(json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=str))
    except (TypeError, ValueError):
        return text(str(value))


def metadata_attributes(metadata: Mapping[str, Any]) -> dict[str, AttributeValue]:
    """``session.metadata.<key>`` attributes for merged metadata (None values left out)."""
    out: dict[str, AttributeValue] = {}
    for key, value in metadata.items():
        converted = attribute_value(value)
        if converted is not None:
            out[text(METADATA_PREFIX + key)] = converted
    return out


def session_attributes(
    name: str,
    uid: str,
    uid_chain: Sequence[str],
    metadata_attrs: Mapping[str, AttributeValue] | None = None,
) -> dict[str, AttributeValue]:
    """Every session attribute of a span, with `metadata_attrs` from `metadata_attributes`. The metadata come
    first: a span over the SDK's attribute limit drops its oldest attributes, and ``session.id`` must stay."""
    attrs: dict[str, AttributeValue] = dict(metadata_attrs) if metadata_attrs else {}
    attrs[SESSION_NAME] = text(name)
    attrs[SESSION_UID_CHAIN] = tuple(uid_chain)
    attrs[SESSION_ID] = uid
    return attrs
