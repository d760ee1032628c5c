"""A SQLite database in another journal mode than WAL opens read-only (``mode=ro``) and stays byte-for-byte as it
was: through the storage, and through the ``session-sql`` command that always opens read-only."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from sqlalchemy import URL, create_engine

from session_core import ContextVarSession, StorageError, Trace, record_trace
from session_storage_sql import SqliteSessionStorage, SqlSessionStorage
from session_storage_sql.cli import main
from session_storage_sql.cli_db import open_database


def delete_mode_database(path: Path) -> str:
    """A session database switched back to ``journal_mode=DELETE`` with raw sqlite3; the root session's uid."""
    storage = SqliteSessionStorage(path)
    with ContextVarSession("rollout", storage=storage, task_id="t-1") as root:
        record_trace(name="first")
        with ContextVarSession("judge"):
            record_trace(name="second")
    storage.close()
    raw = sqlite3.connect(path)
    try:
        assert raw.execute("PRAGMA journal_mode = DELETE").fetchone()[0] == "delete"
    finally:
        raw.close()
    assert not Path(f"{path}-wal").exists()
    return root.uid


def journal_mode(path: Path) -> str:
    raw = sqlite3.connect(f"file:{quote(path.as_posix())}?mode=ro", uri=True)
    try:
        return str(raw.execute("PRAGMA journal_mode").fetchone()[0])
    finally:
        raw.close()


def read_only_url(path: Path) -> URL:
    return URL.create("sqlite", database="file:" + quote(path.as_posix()), query={"mode": "ro", "uri": "true"})


def test_a_non_wal_database_opens_read_only_and_is_left_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "delete-mode.db"
    uid = delete_mode_database(path)
    before = path.read_bytes()

    engine = create_engine(read_only_url(path))
    storages = [SqlSessionStorage(engine=engine), SqlSessionStorage(read_only_url(path))]
    storages.append(SqlSessionStorage(storages[1].url))  # its public URL (a file: URI) opens the same file
    try:
        for storage in storages:
            assert [t.name for t in storage.get_traces(uid)] == ["first", "second"]
            assert [t.name for t in storage.get_traces(uid, session_name="judge")] == ["second"]
            record = storage.get_session(uid)
            assert record is not None and record.metadata == {"task_id": "t-1"}
            assert storage.schema_version == 1
            with pytest.raises(StorageError, match="readonly"):  # really read-only
                storage.add_trace([uid], "rollout", Trace(name="never stored"))
    finally:
        for storage in storages:
            storage.close()
        engine.dispose()
    assert path.read_bytes() == before
    assert journal_mode(path) == "delete"
    assert sorted(os.listdir(tmp_path)) == ["delete-mode.db"]


def test_the_cli_opens_a_non_wal_database_read_only_and_leaves_it_unchanged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "delete-mode.db"
    uid = delete_mode_database(path)
    before = path.read_bytes()

    with open_database(path) as db:
        assert db.storage.engine.url.query.get("mode") == "ro"
    for args in (["ls", "--json"], ["tree", uid, "--json"], ["show", uid, "--json"], ["stats", "--json"]):
        assert main(["--db", str(path), *args]) == 0, args
    out = capsys.readouterr().out
    assert f'"uid": "{uid}"' in out and '"name": "second"' in out
    assert main(["--db", str(path), "export", uid, "-o", str(tmp_path / "out.jsonl")]) == 0
    assert len((tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()) == 2

    child = subprocess.run(
        [sys.executable, "-m", "session_storage_sql.cli", "--db", str(path), "stats", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    stats = json.loads(child.stdout)
    assert (stats["sessions"], stats["traces"]) == (2, 2)
    assert stats["size_bytes"] == len(before)

    assert path.read_bytes() == before
    assert journal_mode(path) == "delete"
    assert sorted(os.listdir(tmp_path)) == ["delete-mode.db", "out.jsonl"]
