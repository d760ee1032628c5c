"""Functions child processes run in session-core's tests (importable by name for spawn)."""

from __future__ import annotations

import os
from typing import Any

import core_testing_storage  # noqa: F401 - registers the jsonl:// scheme in child processes

from session_core import get_active_session_uids, get_current_metadata, get_current_session_name, record_trace


def record_in_child(label: str) -> dict:
    trace = record_trace(name=label, output=os.getpid())
    return {
        "pid": os.getpid(),
        "name": get_current_session_name(),
        "metadata": get_current_metadata(),
        "uids": get_active_session_uids(),
        "trace_id": trace.trace_id if trace else None,
    }


def record_and_exit(label: str) -> None:
    record_in_child(label)


def report_to(queue: Any, label: str) -> None:
    queue.put(record_in_child(label))


def enter_and_record(session: Any, label: str) -> dict:
    """Enter a session object that came pickled from the parent and record a trace in it."""
    with session:
        return record_in_child(label)
