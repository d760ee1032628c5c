"""A small addressable storage for session-core's own tests: one JSON line per (uid chain, trace).

Real files, real locking, openable from any process by URL ``jsonl:///abs/path`` — what an addressable storage
must offer, without depending on session-storage-sql.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

from session_core import Trace, register_storage_scheme


class JsonlStorage:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.touch(exist_ok=True)

    @classmethod
    def create(cls, path: str | Path) -> JsonlStorage:
        return cls(path)

    @classmethod
    def from_url(cls, url: str) -> JsonlStorage:
        return cls(url[len("jsonl://") :])

    @property
    def url(self) -> str:
        return f"jsonl://{self.path}"

    def _append(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, line)
        finally:
            os.close(fd)

    def _records(self) -> list[dict[str, Any]]:
        with open(self.path) as fh:
            return [json.loads(line) for line in fh if line.strip()]

    def add_trace(self, session_uid_chain, session_name, trace: Trace) -> None:
        self._append({"chain": list(session_uid_chain), "name": session_name, "trace": trace.to_dict()})

    def get_traces(self, session_uid, session_name=None) -> list[Trace]:
        seen: dict[str, Trace] = {}
        for rec in self._records():
            if "trace" in rec and session_uid in rec["chain"]:
                seen.setdefault(rec["trace"]["trace_id"], Trace.from_dict(rec["trace"]))
        traces = list(seen.values())
        if session_name is not None:
            traces = [t for t in traces if t.session_name == session_name]
        return traces

    def clear(self, session_uid, session_name=None) -> None:
        raise NotImplementedError("JsonlStorage is append-only")

    def save_context(self, context: dict[str, Any]) -> None:
        self._append({"context": context})

    def load_context(self, session_uid: str) -> dict[str, Any] | None:
        found = None
        for rec in self._records():
            if "context" in rec and rec["context"]["uid_chain"][-1] == session_uid:
                found = rec["context"]
        return found


register_storage_scheme("jsonl", JsonlStorage.from_url)
