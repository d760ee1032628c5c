"""Inspect a session database from the shell with ``session-sql``: ls, tree, show, export, stats.

Two rollouts are recorded into a SQLite file; then the real command runs on it in a subprocess (as
``python -m session_storage_sql.cli``, what the ``session-sql`` console script runs) and its output is checked.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from session_core import ContextVarSession, Trace, record_trace
from session_storage_sql import SqliteSessionStorage


def session_sql(*args: str) -> str:
    """Run ``session-sql ARGS`` and return what it printed (raise with its one-line error if it failed)."""
    done = subprocess.run(
        [sys.executable, "-m", "session_storage_sql.cli", *args], capture_output=True, text=True, timeout=60
    )
    if done.returncode != 0:
        raise SystemExit(f"session-sql {' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "sessions.db"
        storage = SqliteSessionStorage(db)
        for idx in range(2):
            with ContextVarSession("rollout", storage=storage, task_id=f"task-{idx}", rollout_idx=idx) as rollout:
                with ContextVarSession("agent", service="agent"):
                    record_trace(
                        name="chat.completions",
                        model="fake-model",
                        input=[{"role": "user", "content": f"plan for task-{idx}"}],
                        output="Let me break this down.",
                        tokens={"prompt": 3, "completion": 5, "total": 8},
                        latency_ms=4.2,
                    )
                record_trace(name="rollout.result", input=f"task-{idx}", output="42")
        expected = storage.get_traces(rollout.uid)
        storage.close()
        db_option = ("--db", str(db))  # default: $SESSION_STORAGE_URL, ./session-demo.db, ./sessions.db

        # Tables and trees (drawn by rich when installed; --plain for plain text, as here without rich).
        listing = session_sql(*db_option, "--plain", "ls", "--roots")
        print(listing)
        assert listing.splitlines()[-1] == "2 sessions"
        assert rollout.uid[:12] in listing

        tree = session_sql(*db_option, "--plain", "tree", rollout.uid[:8], "--traces")  # a unique uid prefix
        print(tree)
        assert tree.splitlines()[0].startswith(f"rollout {rollout.uid[:12]}  2 traces, 1 own  task_id=task-1")
        assert "└── agent" in tree
        assert "user: plan for task-1 → Let me break this down." in tree

        shown = session_sql(*db_option, "--plain", "show", rollout.uid[:8])
        print(shown)
        assert "8 (3+5)" in shown
        assert "fake-model" in shown

        # Machine-readable: --json for ls / tree / show / stats, export for the traces themselves.
        matching = json.loads(session_sql(*db_option, "--json", "ls", "--meta", "rollout_idx=1", "--roots"))
        assert [s["uid"] for s in matching] == [rollout.uid]
        assert matching[0]["trace_count"] == 2

        exported = session_sql(*db_option, "export", rollout.uid, "--format", "jsonl")
        assert [Trace.from_dict(json.loads(line)) for line in exported.splitlines()] == expected

        stats = json.loads(session_sql(*db_option, "stats", "--json"))
        assert (stats["sessions"], stats["roots"], stats["traces"]) == (4, 2, 4)
        print(f"{stats['sessions']} sessions, {stats['traces']} traces in {stats['url']}")


if __name__ == "__main__":
    main()
