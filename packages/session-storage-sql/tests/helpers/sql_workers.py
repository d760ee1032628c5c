"""Functions run in child processes by the concurrency tests (importable by name, so spawn can pickle them)."""

from __future__ import annotations

import logging
import os
from typing import Any

from session_core import Trace, get_active_session_uids, get_current_metadata, record_trace
from session_storage_sql import RetryPolicy, SqlSessionStorage

# Patient enough to ride out a killed connection or a long lock, still finite.
PATIENT = RetryPolicy(attempts=30, initial_delay=0.01, max_delay=0.5)


def write_traces(url: str, chain: list[str], worker: int, count: int) -> int:
    """Add `count` traces, one transaction each, under `chain` + this worker's own session uid."""
    logging.getLogger("psycopg").setLevel(logging.CRITICAL)  # killed connections are expected here: no noise
    storage = SqlSessionStorage(url, retry=PATIENT)
    mine = [*chain, f"worker{worker:02d}"]
    for i in range(count):
        storage.add_trace(mine, f"worker-{worker}", Trace(trace_id=f"w{worker:02d}-{i:05d}", name="call", input=i))
    storage.close()
    return count


def write_until_killed(url: str, chain: list[str], progress: str) -> None:
    """Add traces forever, appending each committed trace id to the `progress` file after its add returned."""
    storage = SqlSessionStorage(url, retry=PATIENT)
    with open(progress, "a", encoding="utf-8") as out:
        i = 0
        while True:
            trace_id = f"k-{os.getpid()}-{i:06d}"
            storage.add_trace(chain, "doomed", Trace(trace_id=trace_id, name="before the kill", input=i))
            out.write(trace_id + "\n")
            out.flush()
            i += 1


def record_call(i: int) -> dict[str, Any]:
    """Record one trace in whatever session is active (bind_session restored it) and say where it ran."""
    trace = record_trace(name=f"call-{i}", input=i)
    return {
        "pid": os.getpid(),
        "uids": get_active_session_uids(),
        "metadata": get_current_metadata(),
        "trace_id": trace.trace_id if trace is not None else None,
    }


def add_with_inherited(storage: SqlSessionStorage, chain: list[str], trace_id: str) -> None:
    """Use a storage object inherited through fork() (its engine must not reuse the parent's connections)."""
    storage.add_trace(chain, "forked", Trace(trace_id=trace_id, name="from the forked child"))
    assert [t.trace_id for t in storage.get_traces(chain[-1])] == [trace_id]
