"""Sessions across processes: bind_session with a ProcessPoolExecutor and an addressable storage.

The parent opens a SQLite-backed session (session-storage-sql); each worker process restores the session's
context, opens the same database by URL and records its trace there, so the parent's `llm_calls` lists them.

Run: python docs/examples/core_processes.py
"""

from __future__ import annotations

import os
import tempfile
from concurrent.futures import ProcessPoolExecutor

from session_core import ContextVarSession, bind_session, get_current_session, open_storage, record_trace


def work(item: int) -> int:
    session = get_current_session()  # a child of the parent's session, restored in this process
    record_trace(name="worker.call", input=item, output=item * item, metadata={"pid": os.getpid()})
    return len(session.uid_chain)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        storage = open_storage(f"sqlite:///{tmp}/traces.db")
        with ContextVarSession("batch", storage=storage, run="demo") as batch, ProcessPoolExecutor(2) as pool:
            depths = list(pool.map(bind_session(work), range(6)))
        assert depths == [2] * 6  # batch → the worker's child session
        assert sorted(t.input for t in batch.llm_calls) == list(range(6))
        assert {t.metadata["run"] for t in batch.llm_calls} == {"demo"}
        print(f"{len(batch.llm_calls)} traces from {len({t.metadata['pid'] for t in batch.llm_calls})} processes")
