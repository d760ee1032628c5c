"""SQLite file paths holding URL characters (``?``, ``#``, ``%``, ``%20``, spaces) open exactly that file, here and
in another process that reopens the storage by its URL."""

from __future__ import annotations

import json
import os
import pickle
import sqlite3
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from session_core import ContextVarSession, open_storage, record_trace
from session_storage_sql import SqliteSessionStorage, SqlSessionStorage, sqlite_url
from session_storage_sql.urls import parse_storage_url

ODD_DIRS = ["a?b", "c#d", "e%41", "f%20g", "h i", "q?x=1&y=%2F#frag %25"]

CHILD = """
import json, sys
from session_core import Trace, open_storage

out = []
for url, uid in json.loads(sys.argv[1]):
    storage = open_storage(url)
    names = [t.name for t in storage.get_traces(uid)]
    storage.add_trace([uid], "child", Trace(name="from the child"))
    out.append({"database": storage.engine.url.database, "url": storage.url, "names": names})
    storage.close()
print(json.dumps(out))
"""


def stored_names(path: Path, uid: str) -> list[str]:
    """The trace names linked to `uid`, read from `path` with raw sqlite3 (no URL involved)."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT t.data FROM trace_sessions j JOIN traces t ON t.trace_id = j.trace_id WHERE j.session_uid = ? "
            "ORDER BY j.timestamp, j.seq",
            (uid,),
        ).fetchall()
    finally:
        conn.close()
    return [json.loads(data)["name"] for (data,) in rows]


def test_paths_with_url_characters_round_trip_through_open_storage_in_another_process(tmp_path: Path) -> None:
    written: list[tuple[Path, str, str]] = []
    for name in ODD_DIRS:
        path = tmp_path / name / "s.db"
        path.parent.mkdir()
        storage = SqliteSessionStorage(path)
        with ContextVarSession("odd", storage=storage) as session:
            record_trace(name=f"in {name}")
        url = storage.url
        assert url == sqlite_url(path) and storage.db_path == str(path)
        parts = urlsplit(url)
        assert (parts.query, parts.fragment) == ("", ""), url  # a valid URL: nothing after the path
        assert pickle.loads(pickle.dumps(storage)).engine.url.database == str(path)
        storage.close()
        written.append((path, url, session.uid))

    child = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps([(url, uid) for _, url, uid in written])],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    results = json.loads(child.stdout)
    for (path, url, uid), seen in zip(written, results):
        assert seen == {"database": str(path), "url": url, "names": [f"in {path.parent.name}"]}
        assert stored_names(path, uid) == [f"in {path.parent.name}", "from the child"]

    # Nothing was created anywhere else (``a?b`` once opened ``a``, ``e%41`` once opened ``eA``).
    made = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert made == sorted(f"{name}/s.db" for name in ODD_DIRS)
    assert sorted(os.listdir(tmp_path)) == sorted(ODD_DIRS)


def test_a_url_built_by_sqlite_url_names_the_file_in_this_process_too(tmp_path: Path) -> None:
    path = tmp_path / "x?y#z%2541 w" / "s.db"
    path.parent.mkdir()
    storage = SqlSessionStorage(sqlite_url(path))
    try:
        with ContextVarSession("here", storage=storage) as session:
            record_trace(name="here")
        assert storage.url == sqlite_url(path)
        assert open_storage(storage.url).get_traces(session.uid)[0].name == "here"
    finally:
        storage.close()
    assert stored_names(path, session.uid) == ["here"]
    assert sqlite_url(path) == "sqlite:///" + str(path).replace("%", "%25").replace("?", "%3F").replace("#", "%23")


@given(st.lists(st.text(st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)), min_size=1)))
def test_sqlite_url_and_parse_storage_url_are_inverse(parts: list[str]) -> None:
    path = "/" + "/".join(parts)
    url = sqlite_url(path)
    assert "?" not in url and "#" not in url
    parsed = parse_storage_url(url)
    expected = Path(path).absolute().as_posix()
    assert parsed.engine_url.database == expected
    assert parsed.public == sqlite_url(expected)


def test_open_storage_of_a_relative_url_follows_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``open_storage("sqlite:///traces.db")`` after ``os.chdir`` gave the storage of the old directory's file
    (so traces went to the wrong database); its absolute URL gave a second storage object for the same file."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    monkeypatch.chdir(first)
    here = open_storage("sqlite:///traces.db")
    assert here.url == sqlite_url(first / "traces.db")
    assert open_storage("sqlite:///traces.db") is here and open_storage(here.url) is here
    monkeypatch.chdir(second)
    there = open_storage("sqlite:///traces.db")
    assert there.url == sqlite_url(second / "traces.db") and there is not here
    assert open_storage(here.url) is here  # an absolute URL: the same file, the same storage, from anywhere
    with ContextVarSession("in second", storage=there) as s:
        record_trace(name="second")
    assert stored_names(second / "traces.db", s.uid) == ["second"]
    assert here.get_traces(s.uid) == []
    monkeypatch.chdir(first)
    assert open_storage("sqlite:///traces.db") is here
    assert open_storage("sqlite:///./traces.db") is here
    here.close()
    there.close()
