"""Another process restores to_otel_context(): same trace (its session span a child of the sender's), same uid
chain, merged metadata with types intact, and — with shared SQL storage — traces the parent sees."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from session_core import InMemoryStorage
from session_otel import OTelSession

WORKER = Path(__file__).parent / "helpers" / "otel_worker.py"


def _worker(ctx: dict, *args: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SESSION_", "OTEL_"))}
    proc = subprocess.run(
        [sys.executable, str(WORKER), *args],
        input=json.dumps(ctx),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_worker_process_continues_the_trace_and_the_chain():
    with OTelSession("sender", storage=InMemoryStorage(), run=7, cfg={"lr": 0.1, "layers": [1, 2]}) as outer:
        with OTelSession("sender", step=1) as s:
            report = _worker(s.to_otel_context())
    assert report["class"] == "OTelSession"
    assert report["uid_chain"][:-1] == [outer.uid, s.uid]
    assert report["metadata"] == {"run": 7, "cfg": {"lr": 0.1, "layers": [1, 2]}, "step": 1}
    assert report["name"] == "sender"
    if s.trace_id is not None:
        assert report["trace_id"] == s.trace_id
        if report["parent_span_id"] is not None:  # the worker records spans when it has the SDK
            assert report["parent_span_id"] == s.span_id


def test_a_worker_that_never_imported_session_otel_writes_to_shared_sqlite(tmp_path):
    sql = pytest.importorskip("session_storage_sql")
    storage = sql.SqliteSessionStorage(tmp_path / "traces.db")
    with OTelSession("parent", storage=storage, experiment="e1", seed=3) as parent:
        ctx = parent.to_otel_context()
        assert ctx["storage_url"] == storage.url
        report = _worker(ctx, "--generic")
    assert report["class"] == "OTelSession"  # found through the session_core.backends entry point
    assert report["storage_url"] == storage.url
    if parent.trace_id is not None:
        assert report["trace_id"] == parent.trace_id
    calls = parent.llm_calls
    assert [t.trace_id for t in calls] == [report["recorded"]]
    assert calls[0].name == "worker-call"
    assert calls[0].metadata == {"experiment": "e1", "seed": 3}
    assert calls[0].session_name == "parent"
