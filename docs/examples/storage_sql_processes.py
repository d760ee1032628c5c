"""A session continued in worker processes: every worker's traces land in one SQLite file the parent reads."""

from __future__ import annotations

import multiprocessing
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from session_core import ContextVarSession, bind_session, get_current_metadata, record_trace
from session_storage_sql import SqliteSessionStorage


def grade(answer: str) -> int:
    """Runs in a worker process, inside a child of the parent's session (restored by bind_session)."""
    assert get_current_metadata()["experiment"] == "rl-42"
    record_trace(name="judge", input=answer, output="ok", metadata={"worker_pid": os.getpid()})
    return len(answer)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        storage = SqliteSessionStorage(Path(tmp) / "sessions.db")
        answers = ["4", "Paris", "blue", "42"]
        with ContextVarSession("rollout", storage=storage, experiment="rl-42") as rollout:
            ctx = multiprocessing.get_context("spawn")  # fresh interpreters: only the context crosses over
            with ProcessPoolExecutor(2, mp_context=ctx) as pool:
                lengths = list(pool.map(bind_session(grade), answers))

        assert lengths == [1, 5, 4, 2]
        judged = rollout.llm_calls  # read back from the database the workers wrote
        assert sorted(t.input for t in judged) == sorted(answers)
        assert all(t.metadata["experiment"] == "rl-42" for t in judged)
        assert {t.metadata["worker_pid"] for t in judged}.isdisjoint({os.getpid()})

        tree = storage.session_tree(rollout.uid)
        assert tree is not None
        assert tree.name == "rollout"
        assert tree.trace_count == len(answers)
        print(f"{len(judged)} traces from {len(tree.children)} worker sessions")
        storage.close()


if __name__ == "__main__":
    main()
