"""The storage protocol and the in-process `InMemoryStorage`."""

from __future__ import annotations

import copy
import operator
import threading
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from session_core.trace import Trace

__all__ = ["ContextStore", "InMemoryStorage", "SessionStorage"]


@runtime_checkable
class SessionStorage(Protocol):
    """Where traces live. A trace is stored under every uid of the chain it was recorded in."""

    @property
    def url(self) -> str | None:
        """The URL another process opens this storage by (never with a password), or None if in-process only."""
        ...

    def add_trace(self, session_uid_chain: Sequence[str], session_name: str, trace: Trace) -> None: ...

    def get_traces(self, session_uid: str, session_name: str | None = None) -> list[Trace]: ...

    def clear(self, session_uid: str, session_name: str | None = None) -> None: ...


@runtime_checkable
class ContextStore(Protocol):
    """Optional storage capability: keep a context so oversized metadata can travel by reference."""

    def save_context(self, context: dict[str, Any]) -> None: ...

    def load_context(self, session_uid: str) -> dict[str, Any] | None: ...


_timestamp = operator.attrgetter("timestamp")


class InMemoryStorage:
    """Thread-safe storage in this process's memory. A trace added twice (same `trace_id`) is stored once.

    It cannot be reached from another process (`url` is None): `bind_session` refuses to send it there.
    """

    url: str | None = None

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._traces: dict[str, Trace] = {}
        self._by_uid: dict[str, dict[str, None]] = {}  # uid -> ordered set of trace ids
        self._contexts: dict[str, dict[str, Any]] = {}

    def add_trace(self, session_uid_chain: Sequence[str], session_name: str, trace: Trace) -> None:
        if trace.session_name is None:
            trace.session_name = session_name
        with self._lock:
            trace_id = trace.trace_id
            if trace_id not in self._traces:
                self._traces[trace_id] = trace
            for uid in session_uid_chain:
                self._by_uid.setdefault(uid, {})[trace_id] = None

    def get_traces(self, session_uid: str, session_name: str | None = None) -> list[Trace]:
        """Traces recorded in the session `session_uid` or any descendant, oldest first (by `Trace.timestamp`;
        ties, and timestamps that are not numbers, in the order added), as the SQL storage returns them."""
        with self._lock:
            ids = list(self._by_uid.get(session_uid, ()))
            traces = [self._traces[i] for i in ids]
        if session_name is not None:
            traces = [t for t in traces if t.session_name == session_name]
        try:
            return sorted(traces, key=_timestamp)  # stable, and linear when added in order (the usual case)
        except TypeError:
            return traces  # a timestamp that is not a number: the order added

    def clear(self, session_uid: str, session_name: str | None = None) -> None:
        """Delete the traces visible from `session_uid` (from every session that saw them)."""
        with self._lock:
            ids = self._by_uid.get(session_uid, {})
            doomed = [i for i in ids if session_name is None or self._traces[i].session_name == session_name]
            for trace_id in doomed:
                del self._traces[trace_id]
            if doomed:
                gone = set(doomed)
                for uid, members in list(self._by_uid.items()):
                    for trace_id in gone.intersection(members):
                        del members[trace_id]
                    if not members:
                        del self._by_uid[uid]

    def save_context(self, context: dict[str, Any]) -> None:
        with self._lock:
            self._contexts[context["uid_chain"][-1]] = copy.deepcopy(context)

    def load_context(self, session_uid: str) -> dict[str, Any] | None:
        with self._lock:
            ctx = self._contexts.get(session_uid)
            return copy.deepcopy(ctx) if ctx is not None else None

    def __len__(self) -> int:
        with self._lock:
            return len(self._traces)

    def __repr__(self) -> str:
        return f"InMemoryStorage(traces={len(self)})"
