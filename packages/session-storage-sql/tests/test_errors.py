"""Schema versions, unusable databases, locks and retries: errors are StorageErrors that name the cause."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import threading
from pathlib import Path

import pytest

from session_core import StorageError, Trace
from session_storage_sql import SCHEMA_VERSION, RetryPolicy, SchemaVersionError, SqliteSessionStorage, SqlSessionStorage

FAST = RetryPolicy(attempts=3, initial_delay=0.01, max_delay=0.02)


def test_schema_version_is_recorded(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    storage = SqliteSessionStorage(path)
    assert storage.schema_version == SCHEMA_VERSION == 1
    with sqlite3.connect(path) as raw:
        rows = raw.execute("SELECT key, value FROM session_storage_meta").fetchall()
        tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert rows == [("schema_version", "1")]
    assert {"sessions", "traces", "trace_sessions", "session_storage_meta"} <= tables
    storage.add_trace(["r"], "n", Trace(name="fine"))


def test_newer_schema_version_refuses_with_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    SqliteSessionStorage(path).add_trace(["r"], "n", Trace(name="old"))
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE session_storage_meta SET value = '99' WHERE key = 'schema_version'")
    newer = SqliteSessionStorage(path)
    with pytest.raises(SchemaVersionError) as info:
        newer.add_trace(["r"], "n", Trace(name="refused"))
    assert isinstance(info.value, StorageError)
    message = str(info.value)
    assert "schema version 99" in message and "version 1" in message and "pip install -U session-storage-sql" in message
    with pytest.raises(SchemaVersionError):
        newer.get_traces("r")
    assert info.value.found == 99


def test_newer_schema_version_on_postgresql(postgres_url: str) -> None:
    storage = SqlSessionStorage(postgres_url)
    storage.add_trace(["r"], "n", Trace(name="old"))
    with storage.engine.begin() as conn:
        from sqlalchemy import text

        conn.execute(text("UPDATE session_storage_meta SET value = '2' WHERE key = 'schema_version'"))
    storage.close()
    with pytest.raises(SchemaVersionError, match="schema version 2"):
        SqlSessionStorage(postgres_url).get_traces("r")


@pytest.mark.parametrize("recorded", ["0", "-1", "abc", "1.0", " 1", "01", "", "\u0662"])
def test_a_schema_version_that_is_no_version_refuses_with_a_clear_error(tmp_path: Path, recorded: str) -> None:
    path = tmp_path / "odd.db"
    SqliteSessionStorage(path).add_trace(["r"], "n", Trace(name="old"))
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE session_storage_meta SET value = ? WHERE key = 'schema_version'", (recorded,))
    raw.close()
    storage = SqliteSessionStorage(path)
    with pytest.raises(SchemaVersionError) as info:
        storage.add_trace(["r"], "n", Trace(name="refused"))
    message = str(info.value)
    assert f"schema version {recorded!r}" in message and "reads version 1" in message
    assert "whole number, 1 or more" in message and "pip install" not in message  # upgrading would not help
    assert info.value.found == repr(recorded)
    with pytest.raises(SchemaVersionError):
        storage.get_traces("r")
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT count(*) FROM traces").fetchone() == (1,)  # nothing written
    raw.close()


def test_a_schema_version_that_is_no_version_on_postgresql(postgres_url: str) -> None:
    from sqlalchemy import text

    storage = SqlSessionStorage(postgres_url)
    storage.add_trace(["r"], "n", Trace(name="old"))
    with storage.engine.begin() as conn:
        conn.execute(text("UPDATE session_storage_meta SET value = '0' WHERE key = 'schema_version'"))
    storage.close()
    with pytest.raises(SchemaVersionError, match="schema version '0', which no session-storage-sql writes"):
        SqlSessionStorage(postgres_url).get_traces("r")


def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not a SQLite database, just some bytes" * 100)
    storage = SqliteSessionStorage(path, retry=FAST)
    with pytest.raises(StorageError, match="not a database") as info:
        storage.add_trace(["r"], "n", Trace(name="x"))
    assert str(path) in str(info.value)


def test_an_unreachable_directory(tmp_path: Path) -> None:
    storage = SqliteSessionStorage(tmp_path / "no" / "such" / "dir" / "x.db", retry=FAST)
    with pytest.raises(StorageError, match="unable to open database file"):
        storage.get_traces("r")


def test_a_lock_held_past_every_retry_gives_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    storage = SqliteSessionStorage(path, busy_timeout=0.05, retry=FAST)
    storage.add_trace(["r"], "n", Trace(name="before"))
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StorageError) as info:
            storage.add_trace(["r"], "n", Trace(name="blocked"))
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    message = str(info.value)
    assert "database is locked" in message and "after 3 attempts" in message and "busy_timeout" in message
    assert isinstance(info.value.__cause__, Exception)
    storage.add_trace(["r"], "n", Trace(name="after"))  # the lock is gone: writing works again
    assert [t.name for t in storage.get_traces("r")] == ["before", "after"]


def test_a_lock_released_during_the_retries_is_ridden_out(tmp_path: Path) -> None:
    path = tmp_path / "briefly-locked.db"
    storage = SqliteSessionStorage(
        path, busy_timeout=0.02, retry=RetryPolicy(attempts=200, initial_delay=0.005, max_delay=0.05)
    )
    storage.add_trace(["r"], "n", Trace(name="before"))
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN EXCLUSIVE")
    released = threading.Event()

    def release_soon() -> None:
        released.wait(0.3)
        blocker.execute("ROLLBACK")
        blocker.close()

    thread = threading.Thread(target=release_soon)
    thread.start()
    try:
        storage.add_trace(["r"], "n", Trace(name="waited for the lock"))
    finally:
        released.set()
        thread.join()
    assert [t.name for t in storage.get_traces("r")] == ["before", "waited for the lock"]


def test_an_unreachable_postgresql_server_gives_storage_error() -> None:
    pytest.importorskip("psycopg")
    storage = SqlSessionStorage(
        "postgresql://nobody@127.0.0.1:9/none?connect_timeout=1", retry=RetryPolicy(attempts=2, initial_delay=0.01)
    )
    with pytest.raises(StorageError) as info:
        storage.get_traces("r")
    assert "OperationalError" in str(info.value) and "after 2 attempts" in str(info.value)
    assert "127.0.0.1" in str(info.value)


def test_a_postgresql_server_that_never_answers_is_retried_like_one_that_refuses() -> None:
    # A listening socket nobody accepts from: the TCP connection is made, the server never speaks, and psycopg
    # gives up with its ConnectionTimeout (an OperationalError subclass), which was not retried.
    pytest.importorskip("psycopg")
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    port = silent.getsockname()[1]
    try:
        storage = SqlSessionStorage(
            f"postgresql://nobody@127.0.0.1:{port}/none?connect_timeout=1",
            retry=RetryPolicy(attempts=2, initial_delay=0.01),
        )
        with pytest.raises(StorageError) as info:
            storage.add_trace(["r"], "s", Trace(name="kept by the caller, who was told"))
    finally:
        silent.close()
    assert "ConnectionTimeout" in str(info.value) and "after 2 attempts" in str(info.value)
    assert "stayed unreachable" in str(info.value)


def test_retry_policy_validates() -> None:
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError, match="negative"):
        RetryPolicy(initial_delay=-1)
    policy = RetryPolicy(initial_delay=0.1, max_delay=0.4)
    assert all(0.05 <= policy.delay(n) <= 0.6 for n in range(1, 10))


@pytest.mark.parametrize(
    ("uid", "shown"),
    [
        ("u" * 100, "'uuuuuuuuuuuuuuuuuuuuuuuu'... (100 characters)"),
        ("u" * 65, "(65 characters)"),
        ("", "''"),
        ("a\x00b", r"'a\x00b'"),
        ("a\udc80b", r"'a\udc80b'"),
        ("has space", "'has space'"),
        (7, "7 (of type int, not str)"),
        (None, "None (of type NoneType, not str)"),
        (["nested"], "['nested'] (of type list, not str)"),
    ],
)
def test_a_uid_that_is_no_session_uid_is_refused_alike_on_every_database(
    storage: SqlSessionStorage, uid: object, shown: str
) -> None:
    """The uid columns hold 64 characters: PostgreSQL refused a longer uid with a database error (a StorageError
    naming StringDataRightTruncation) while SQLite stored it; NUL, a lone surrogate or an int differed too. Every
    uid is now checked against session_core's rule before the database is touched, the same on both."""
    from session_storage_sql import InvalidSessionUid

    for add in (
        lambda: storage.add_trace(["root", uid], "n", Trace(name="refused")),  # type: ignore[list-item]
        lambda: storage.add_traces([uid], "n", [Trace(name="refused")] * 3),  # type: ignore[list-item]
    ):
        with pytest.raises(InvalidSessionUid) as info:
            add()
        assert isinstance(info.value, ValueError) and isinstance(info.value, StorageError)
        assert shown in str(info.value) and "1-64 characters of [0-9A-Za-z_-]" in str(info.value)
    assert len(storage) == 0 and storage.get_session("root") is None  # nothing stored, not even the root's row
    storage.add_trace(["root", "u" * 64], "n", Trace(name="the longest uid"))  # the rule's edge is stored
    assert [t.name for t in storage.get_traces("u" * 64)] == ["the longest uid"]


@pytest.mark.parametrize("uid", ["u" * 100, "a\x00b", "a\udc80b", "", "not.a-uid"])
def test_looking_up_a_uid_that_cannot_be_stored_finds_nothing(storage: SqlSessionStorage, uid: str) -> None:
    storage.add_trace(["root"], "n", Trace(name="t"))
    assert storage.get_traces(uid) == [] and storage.get_traces(uid, "n") == []
    assert storage.get_session(uid) is None and storage.session_tree(uid) is None
    assert storage.load_context(uid) is None
    storage.clear(uid)
    assert len(storage) == 1
    with pytest.raises(TypeError, match="a session uid is a str, got int"):
        storage.get_traces(7)  # type: ignore[arg-type]


def test_a_chain_given_as_one_str_is_refused(storage: SqlSessionStorage) -> None:
    with pytest.raises(TypeError, match="must be a list of uids"):
        storage.add_trace("root", "n", Trace(name="t"))  # was stored under the uids 'r', 'o' and 't'
    with pytest.raises(TypeError, match="must be a list of uids"):
        asyncio.run(storage.async_add_trace("root", "n", Trace(name="t")))  # it copied the str into its letters
    with pytest.raises(TypeError, match="must be a list of uids"):
        asyncio.run(storage.async_add_traces("root", "n", [Trace(name="t")]))
    assert len(storage) == 0


@pytest.mark.parametrize("seconds", [-1, -0.001, float("nan"), float("inf"), -float("inf"), 2_147_484, 1e10])
def test_busy_timeout_out_of_range_is_refused_at_construction(tmp_path: Path, seconds: float) -> None:
    """A negative busy_timeout was made 0 (no wait for a lock at all), one past SQLite's C int of milliseconds
    wrapped around to 0 too, and NaN or an infinity failed at the first write with a bare ValueError /
    OverflowError from int(); all now fail where they are given, saying what is accepted."""
    for make in (
        lambda: SqliteSessionStorage(tmp_path / "b.db", busy_timeout=seconds),
        lambda: SqlSessionStorage(f"sqlite:///{tmp_path / 'b.db'}", busy_timeout=seconds),
        lambda: SqlSessionStorage("postgresql://u@127.0.0.1:9/never-opened", busy_timeout=seconds),
    ):
        with pytest.raises(ValueError, match=r"busy_timeout must be from 0 to 2,147,483\.647 seconds") as info:
            make()
        assert repr(seconds) in str(info.value)
    assert not (tmp_path / "b.db").exists()


@pytest.mark.parametrize("value", [True, "5", None, b"5"])
def test_busy_timeout_that_is_no_number_is_refused_at_construction(tmp_path: Path, value: object) -> None:
    with pytest.raises(TypeError, match=f"busy_timeout must be a number of seconds .*got {type(value).__name__}"):
        SqliteSessionStorage(tmp_path / "b.db", busy_timeout=value)  # type: ignore[arg-type]


@pytest.mark.parametrize("seconds", [0, 0.25, 7, 2_147_483.647])
def test_busy_timeout_in_range_reaches_the_connection(tmp_path: Path, seconds: float) -> None:
    storage = SqliteSessionStorage(tmp_path / "b.db", busy_timeout=seconds)
    storage.add_trace(["r"], "n", Trace(name="t"))
    with storage.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one() == int(seconds * 1000)
    storage.close()
