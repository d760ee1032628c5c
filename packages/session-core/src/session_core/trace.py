"""`Trace`: one recorded LLM call or other event."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from session_core._ids import new_trace_id

__all__ = ["Trace"]


@dataclass
class Trace:
    """One recorded event; every field can be given by keyword, `trace_id` and `timestamp` default to new values."""

    trace_id: str = field(default_factory=new_trace_id)
    name: str = ""
    session_name: str | None = None
    input: Any = None
    output: Any = None
    model: str | None = None
    latency_ms: float | None = None
    tokens: Any = None
    metadata: dict[str, Any] = field(default_factory=dict)
    timestamp: float = field(default_factory=time.time)
    parent_trace_id: str | None = None
    cost: float | None = None
    environment: str | None = None
    tools: Any = None
    contexts: Any = None
    tags: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        """A plain dict of every field (values as they are; JSON-safe when the fields are)."""
        return {f.name: getattr(self, f.name) for f in _FIELDS}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Trace:
        """Rebuild a trace from `to_dict()` output; unknown keys go into `metadata['extra']` rather than lost."""
        if not isinstance(data, Mapping):
            raise TypeError(f"Trace.from_dict expects a dict, got {type(data).__name__}")
        known = {k: v for k, v in data.items() if k in _FIELD_NAMES}
        extra = {k: v for k, v in data.items() if k not in _FIELD_NAMES}
        if known.get("trace_id") is None:
            known.pop("trace_id", None)
        if known.get("timestamp") is None:
            known.pop("timestamp", None)
        if known.get("metadata") is None:
            known["metadata"] = {}
        trace = cls(**known)
        if extra:
            trace.metadata = {**trace.metadata, "extra": extra}
        return trace


_FIELDS = dataclasses.fields(Trace)
_FIELD_NAMES = frozenset(f.name for f in _FIELDS)
