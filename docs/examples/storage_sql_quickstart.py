"""Sessions recorded into a SQLite file, then queried: traces by session, sessions by metadata, a session tree."""

from __future__ import annotations

import tempfile
from pathlib import Path

from session_core import ContextVarSession, record_trace
from session_storage_sql import SqliteSessionStorage


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        storage = SqliteSessionStorage(Path(tmp) / "sessions.db")

        with ContextVarSession("eval-run", storage=storage, model="gpt-x", dataset="qa-v2") as run:
            for arm in ("a", "b"):
                with ContextVarSession("arm", arm=arm):
                    record_trace(name="chat.completions", input=f"question for {arm}", output="answer", tokens=21)
            record_trace(name="summary", output="done")

        # The run sees its own trace and every descendant's, oldest first.
        assert [t.name for t in run.llm_calls] == ["chat.completions", "chat.completions", "summary"]
        assert run.llm_calls[0].metadata == {"model": "gpt-x", "dataset": "qa-v2", "arm": "a"}

        # Sessions are rows too: find them by name, by a subset of their (merged) metadata, by time.
        arm_b = storage.list_sessions(name="arm", metadata={"arm": "b"})
        assert len(arm_b) == 1
        assert arm_b[0].parent_uid == run.uid
        assert [s.uid for s in storage.list_sessions(roots_only=True)] == [run.uid]

        # The whole tree with trace counts (subtree and own).
        tree = storage.session_tree(run.uid)
        assert tree is not None
        assert (tree.trace_count, tree.own_trace_count, len(tree.children)) == (3, 1, 2)
        for node in tree.walk():
            print(f"{'  ' * (node.session.depth - 1)}{node.name}: {node.trace_count} traces")

        # Another process (or this one) opens the same database by the URL the session's context carries.
        assert run.to_context()["storage_url"] == storage.url
        storage.close()


if __name__ == "__main__":
    main()
