"""The ``session-sql`` inspect command on real SQLite files written by real sessions (and PostgreSQL when set).

Most tests run ``main([...])`` in this process and read what it printed; some run the real command in a
subprocess. ``--plain`` output is checked exactly in both variants; rich output only where rich is installed.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.util
import json
import os
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from session_core import ContextVarSession, Trace, record_trace
from session_storage_sql import SqliteSessionStorage, SqlSessionStorage, sqlite_url
from session_storage_sql.cli import main
from session_storage_sql.cli_args import CliError, parse_meta, parse_time, resolve_db
from session_storage_sql.cli_format import clip, fmt_tokens, safe
from session_storage_sql.cli_output import PlainOutput, make_output, rich_available

HAS_RICH = rich_available()


@dataclass
class Db:
    path: Path
    url: str
    uids: dict[str, str]
    middle: float  # between the first rollout's sessions and the second's


def populate(storage: Any) -> tuple[dict[str, str], float]:
    """Two demo-like rollouts: nested named sessions, and a worker chain whose middle session is known by uid only."""
    with ContextVarSession("rollout", storage=storage, task_id="task-1", rollout_idx=1) as root:
        record_trace(name="rollout.result", input="task-1", output="42")
        with ContextVarSession("agent", service="agent") as agent:
            record_trace(
                name="chat.completions",
                model="gpt-x",
                input=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}],
                output="hi!",
                tokens={"prompt": 3, "completion": 8, "total": 11},
                latency_ms=12.34,
            )
            with ContextVarSession("judge", verdict=True) as judge:
                record_trace(
                    name="judge.score",
                    model="judge-m",
                    input="x" * 300,
                    output="\x1b[31mred\x1b[0m line1\nline2",
                    tokens=7,
                )
    middle = time.time()
    with ContextVarSession("rollout", storage=storage, task_id="task-2", rollout_idx=2) as root2:
        record_trace(name="rollout.result", input="task-2", output="41")
    # A Ray-style worker: its session restored from a context, two levels below the root; the middle session
    # ran in a process that recorded nothing, so the database knows it by uid only.
    ray_task, worker = "7a1f" + "0" * 28, "7b2e" + "1" * 28
    storage.add_trace([root2.uid, ray_task, worker], "rollout", Trace(name="tool.call", output="done", model="m2"))
    uids = {"root": root.uid, "agent": agent.uid, "judge": judge.uid, "root2": root2.uid}
    uids.update(ray_task=ray_task, worker=worker)
    return uids, middle


@pytest.fixture
def db(tmp_path: Path) -> Db:
    path = tmp_path / "sessions.db"
    storage = SqliteSessionStorage(path)
    try:
        uids, middle = populate(storage)
    finally:
        storage.close()
    return Db(path, sqlite_url(path), uids, middle)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    code, out, err = run(capsys, *args)
    assert (code, err) == (0, "")
    return json.loads(out)


def assert_user_error(result: tuple[int, str, str], *fragments: str) -> None:
    code, out, err = result
    assert code == 2, err
    assert out == ""
    assert err.endswith("\n") and err.count("\n") == 1, f"expected one line on stderr, got {err!r}"
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err


# -- ls -------------------------------------------------------------------------------------------------------
def test_ls_lists_every_session_oldest_first_with_trace_counts(db: Db, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--db", str(db.path), "--plain", "ls")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == ["uid", "name", "parent", "created", "traces", "metadata"]
    assert set(lines[1]) == {"-", " "}
    rows = lines[2:-1]
    assert lines[-1] == "6 sessions"
    u = db.uids
    assert [row.split()[0] for row in rows] == [
        u[k][:12] for k in ("root", "agent", "judge", "root2", "ray_task", "worker")
    ]
    by_uid = {row.split()[0]: row for row in rows}
    root_row = by_uid[u["root"][:12]]
    assert "rollout" in root_row and "task_id=task-1 rollout_idx=1" in root_row
    assert root_row.split()[4] == "3"  # created is two words: date and time
    assert by_uid[u["agent"][:12]].split()[2] == u["root"][:12]  # parent column
    assert "(unnamed)" in by_uid[u["ray_task"][:12]]
    judge = by_uid[u["judge"][:12]]
    assert judge.split()[5] == "1" and "verdict=true" in judge


def test_ls_json_and_every_filter(db: Db, capsys: pytest.CaptureFixture[str]) -> None:
    u = db.uids

    def uids(*args: str) -> list[str]:
        return [r["uid"] for r in run_json(capsys, "--db", db.url, "ls", "--json", *args)]

    everything = run_json(capsys, "--db", db.url, "--json", "ls")
    assert [r["uid"] for r in everything] == [u[k] for k in ("root", "agent", "judge", "root2", "ray_task", "worker")]
    first = everything[0]
    assert first["name"] == "rollout" and first["parent_uid"] is None and first["root_uid"] == u["root"]
    assert first["metadata"] == {"task_id": "task-1", "rollout_idx": 1}
    assert first["trace_count"] == 3 and isinstance(first["created_at"], float)
    assert everything[4]["name"] is None and everything[4]["trace_count"] == 1

    assert uids("--name", "judge") == [u["judge"]]
    assert uids("--name", "rollout", "--roots") == [u["root"], u["root2"]]
    assert uids("--roots") == [u["root"], u["root2"]]
    assert uids("--meta", "rollout_idx=1") == [u["root"], u["agent"], u["judge"]]  # children inherit it
    assert uids("--meta", 'rollout_idx="1"') == []  # a JSON string is not the number 1
    assert uids("--meta", "task_id=task-2") == [u["root2"]]  # the worker recorded no metadata of its own
    assert uids("--meta", "rollout_idx=1", "--meta", "service=agent") == [u["agent"], u["judge"]]
    assert uids("--meta", "verdict=true") == [u["judge"]]
    assert uids("--meta", "verdict=1") == []
    assert uids("--limit", "2") == [u["root"], u["agent"]]
    assert uids("--last", "2") == [u["ray_task"], u["worker"]]
    assert uids("--last", "0") == []
    assert uids("--since", "1h") == [u[k] for k in ("root", "agent", "judge", "root2", "ray_task", "worker")]
    assert uids("--until", "1h") == []
    assert uids("--since", "2d", "--roots", "--limit", "1") == [u["root"]]
    middle = datetime.datetime.fromtimestamp(db.middle).isoformat()
    assert uids("--since", middle) == [u["root2"], u["ray_task"], u["worker"]]
    assert uids("--until", middle) == [u["root"], u["agent"], u["judge"]]
    utc = datetime.datetime.fromtimestamp(db.middle, tz=datetime.timezone.utc).isoformat().replace("+00:00", "Z")
    assert uids("--since", utc, "--roots") == [u["root2"]]


def test_a_worker_session_stores_the_name_it_was_recorded_under(db: Db, capsys: pytest.CaptureFixture[str]) -> None:
    # add_trace(chain, "rollout", ...) names the innermost session; the worker has no metadata of its own.
    worker = run_json(capsys, "--db", db.url, "ls", "--json", "--name", "rollout", "--last", "1")
    assert [w["uid"] for w in worker] == [db.uids["worker"]]


def test_ls_quiet_prints_full_uids_for_scripts(db: Db, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "ls", "--db", str(db.path), "-q", "--roots")
    assert code == 0
    assert out == f"{db.uids['root']}\n{db.uids['root2']}\n"


def test_stats_counts_one_root_in_the_singular(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    storage = SqliteSessionStorage(tmp_path / "one.db")
    storage.add_trace(["only-root"], "solo", Trace(name="t"))
    storage.close()
    code, out, _ = run(capsys, "--db", str(tmp_path / "one.db"), "--plain", "stats")
    assert code == 0 and "1 (1 root; 1 named, 0 known only by uid)" in out


def test_ls_quiet_and_json_together_are_refused(db: Db, capsys: pytest.CaptureFixture[str]) -> None:
    assert_user_error(run(capsys, "--db", str(db.path), "ls", "-q", "--json"), "--quiet", "--json")


def test_ls_with_no_match_says_so(db: Db, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--db", str(db.path), "--plain", "ls", "--name", "nothing-like-this")
    assert (code, out) == (0, "no sessions match\n")
    assert run_json(capsys, "--db", str(db.path), "ls", "--name", "nothing", "--json") == []


def test_ls_with_a_limit_beyond_64_bits_lists_everything(db: Db, capsys: pytest.CaptureFixture[str]) -> None:
    everything = run_json(capsys, "--db", str(db.path), "ls", "--json")
    for option in ("--limit", "--last"):
        listed = run_json(capsys, "--db", str(db.path), "ls", option, "99999999999999999999", "--json")
        assert sorted(r["uid"] for r in listed) == sorted(r["uid"] for r in everything)
    # stats --top likewise (it ended in an OverflowError traceback on SQLite)
    top = run_json(capsys, "--db", str(db.path), "stats", "--top", "99999999999999999999", "--json")["top_names"]
    assert sum(entry["sessions"] for entry in top) == len(everything)


def test_global_options_go_before_or_after_the_command(db: Db, capsys: pytest.CaptureFixture[str]) -> None:
    before = run_json(capsys, "--db", str(db.path), "--json", "ls", "--roots")
    after = run_json(capsys, "ls", "--roots", "--json", "--db", str(db.path))
    assert before == after and len(before) == 2


# -- tree -----------------------------------------------------------------------------------------------------
def test_tree_shows_nesting_trace_counts_and_what_each_session_adds(db: Db, capsys: pytest.CaptureFixture[str]) -> None:
    u = db.uids
    code, out, err = run(capsys, "--db", str(db.path), "--plain", "tree", u["root"])
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"rollout {u['root'][:12]}  3 traces, 1 own  task_id=task-1 rollout_idx=1",
        f"└── agent {u['agent'][:12]}  2 traces, 1 own  service=agent",
        f"    └── judge {u['judge'][:12]}  1 trace  verdict=true",
        "3 sessions, 3 traces",
    ]


def test_tree_of_a_worker_chain_shows_the_session_known_only_by_uid(db: Db, capsys: pytest.CaptureFixture[str]) -> None:
    u = db.uids
    code, out, _ = run(capsys, "--db", str(db.path), "--plain", "tree", u["root2"][:8])
    assert code == 0
    assert out.splitlines() == [
        f"rollout {u['root2'][:12]}  2 traces, 1 own  task_id=task-2 rollout_idx=2",
        f"└── (unnamed) {u['ray_task'][:12]}  1 trace",
        f"    └── rollout {u['worker'][:12]}  1 trace",
        "3 sessions, 2 traces",
    ]


def test_tree_of_an_inner_session_names_its_root(db: Db, capsys: pytest.CaptureFixture[str]) -> None:
    u = db.uids
    code, out, _ = run(capsys, "--db", str(db.path), "--plain", "tree", u["agent"])
    assert code == 0
    lines = out.splitlines()
    # The top of the tree shows its whole merged metadata; the sessions below show what they add.
    assert lines[0] == f"agent {u['agent'][:12]}  2 traces, 1 own  task_id=task-1 rollout_idx=1 service=agent"
    assert lines[1] == f"└── judge {u['judge'][:12]}  1 trace  verdict=true"
    assert (
        lines[-1]
        == f"2 sessions, 2 traces; part of the tree of root {u['root'][:12]} (session-sql tree {u['root'][:12]})"
    )


def test_tree_traces_lists_each_trace_under_the_session_that_recorded_it(
    db: Db, capsys: pytest.CaptureFixture[str]
) -> None:
    u = db.uids
    code, out, _ = run(capsys, "--db", str(db.path), "--plain", "tree", u["root"], "--traces")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith(f"rollout {u['root'][:12]}")
    assert lines[1].startswith("├── • ") and "rollout.result" in lines[1] and "task-1 → 42" in lines[1]
    assert lines[2].startswith(f"└── agent {u['agent'][:12]}")
    assert lines[3].startswith("    ├── • ") and "chat.completions gpt-x" in lines[3]
    assert "[2 msgs] user: hello there → hi!" in lines[3]
    assert lines[4].startswith(f"    └── judge {u['judge'][:12]}")
    assert lines[5].startswith("        └── • ") and "judge.score judge-m" in lines[5]
    assert "\x1b" not in out and "\\x1b[31mred" in lines[5]  # a terminal escape is shown, never sent


def test_tree_json_is_the_nested_structure(db: Db, capsys: pytest.CaptureFixture[str]) -> None:
    u = db.uids
    tree = run_json(capsys, "--db", str(db.path), "--json", "tree", u["root"], "--traces")
    assert (tree["uid"], tree["trace_count"], tree["own_trace_count"]) == (u["root"], 3, 1)
    assert [t["name"] for t in tree["traces"]] == ["rollout.result"]
    (agent,) = tree["children"]
    assert (agent["uid"], agent["name"], agent["parent_uid"], agent["depth"]) == (u["agent"], "agent", u["root"], 2)
    assert agent["metadata"] == {"task_id": "task-1", "rollout_idx": 1, "service": "agent"}
    (judge,) = agent["children"]
    assert (judge["trace_count"], judge["children"]) == (1, [])
    assert judge["traces"][0]["tokens"] == 7
    plain = run_json(capsys, "--db", str(db.path), "tree", u["root"], "--json")
    assert "traces" not in plain and plain["children"][0]["uid"] == u["agent"]


def test_a_tree_deeper_than_the_recursion_limit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A chain of sessions each nested in the last (an agent loop that opens a session per step) 1,200 deep: the
    storage reads it, but session-sql tree built and printed it recursively and died with RecursionError from
    about 500 levels on, as text, as a rich tree and as --json."""
    path = tmp_path / "deep.db"
    chain = [f"deep{i:06d}" for i in range(1200)]
    storage = SqliteSessionStorage(path)
    storage.add_trace(chain, "step", Trace(name="leaf"))
    storage.close()
    d = ("--db", str(path))
    code, out, err = run(capsys, *d, "--plain", "tree", chain[0], "--traces")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert len(lines) == 1200 + 1 + 1  # the sessions, the trace, the summary
    assert lines[1199].endswith("└── step deep001199  1 trace")
    assert lines[1200].startswith(" " * 4 * 1199 + "└── • ") and lines[1200].endswith(" leaf")
    if HAS_RICH:
        code, out, err = run(capsys, *d, "tree", chain[0])
        assert (code, err) == (0, "") and "1200 sessions, 1 trace" in out
    code, out, err = run(capsys, *d, "--json", "tree", chain[0], "--traces")
    assert (code, err) == (0, "")
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(10_000)  # json.loads recurses per level too (the output is 2,400 levels deep)
    try:
        node = json.loads(out)
    finally:
        sys.setrecursionlimit(limit)
    for uid in chain:
        assert node["uid"] == uid and node["trace_count"] == 1
        if uid != chain[-1]:
            (node,) = node["children"]
    assert node["children"] == [] and [t["name"] for t in node["traces"]] == ["leaf"]


# -- show -----------------------------------------------------------------------------------------------------
def test_show_lists_the_traces_with_time_model_tokens_latency_and_clipped_text(
    db: Db, capsys: pytest.CaptureFixture[str]
) -> None:
    u = db.uids
    code, out, err = run(capsys, "--db", str(db.path), "--plain", "show", u["root"])
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == f"session {u['root']}"
    fields = dict(line.split(None, 1) for line in lines[1:8])
    assert fields == {
        "name": "rollout",
        "parent": "(root)",
        "root": u["root"],
        "depth": "1",
        "created": fields["created"],
        "metadata": "task_id=task-1 rollout_idx=1",
        "traces": "3",
    }
    assert lines[9] == "3 traces, oldest first"
    assert lines[10].split() == ["time", "session", "name", "model", "tokens", "ms", "input", "output"]
    rows = lines[12:]
    assert len(rows) == 3
    assert rows[0].split()[1:3] == [u["root"][:12], "rollout.result"]
    chat = rows[1]
    assert u["agent"][:12] in chat and "gpt-x" in chat and "11 (3+8)" in chat and "12.3" in chat
    assert "[2 msgs] user: hello there" in chat and chat.endswith("hi!")
    judge = rows[2]
    assert u["judge"][:12] in judge and "x" * 31 + "…" in judge and "x" * 33 not in judge
    assert "\x1b" not in out and "\\x1b[31mred\\x1b[0m line1 line2" in judge
    time_cell = rows[0].split()[0]
    assert len(time_cell) == len("12:00:00.000")  # all on one day: the date is left out


def test_show_full_prints_every_field_untruncated(db: Db, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--db", str(db.path), "--plain", "show", db.uids["judge"], "--full")
    assert code == 0
    assert "trace 1/1  judge.score" in out
    body = out[out.index("{") :]
    data = json.loads(body)
    assert data["input"] == "x" * 300 and data["tokens"] == 7 and data["model"] == "judge-m"
    assert data["output"] == "\x1b[31mred\x1b[0m line1\nline2"  # JSON-escaped on screen, exact when parsed
    assert "\x1b" not in out


def test_show_json_has_the_session_and_its_traces(db: Db, capsys: pytest.CaptureFixture[str]) -> None:
    data = run_json(capsys, "--db", str(db.path), "--json", "show", db.uids["agent"][:10])
    assert data["session"]["uid"] == db.uids["agent"] and data["session"]["trace_count"] == 2
    traces = [Trace.from_dict(t) for t in data["traces"]]
    assert [t.name for t in traces] == ["chat.completions", "judge.score"]
    assert traces[0].tokens == {"prompt": 3, "completion": 8, "total": 11} and traces[0].latency_ms == 12.34


def test_show_a_session_without_traces(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "empty-session.db"
    storage = SqliteSessionStorage(path)
    with ContextVarSession("waiting", storage=storage, step=0) as session:
        storage.save_context(session.to_context())
    storage.close()
    code, out, _ = run(capsys, "--db", str(path), "--plain", "show", session.uid)
    assert code == 0
    assert out.splitlines()[-1].split() == ["traces", "0"]
    assert run_json(capsys, "--db", str(path), "--json", "show", session.uid)["traces"] == []


def test_a_trace_time_no_calendar_can_show_is_shown_as_unix_seconds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A trace's timestamp is whatever the application gave (NaN, 1e20, far before year 1): show, tree --traces
    and stats ended in a ValueError traceback ("year ... is out of range") for the whole listing."""
    path = tmp_path / "times.db"
    storage = SqliteSessionStorage(path)
    storage.add_trace(["oddtimes1"], "odd", Trace(name="fine", timestamp=1714564800.0))
    storage.add_trace(["oddtimes1"], "odd", Trace(name="far", timestamp=1e20))
    storage.add_trace(["oddtimes1"], "odd", Trace(name="before", timestamp=-1e15))
    storage.add_trace(["oddtimes1"], "odd", Trace(name="nan", timestamp=float("nan")))
    storage.close()
    d = ("--db", str(path), "--plain")
    for args in (["show", "oddtimes1"], ["show", "oddtimes1", "--full"], ["tree", "oddtimes1", "--traces"], ["stats"]):
        code, out, err = run(capsys, *d, *args)
        assert (code, err) == (0, ""), err
        if args[0] != "stats":
            assert "1e+20" in out and "nan" in out  # the unix seconds, as stored
            assert datetime.datetime.fromtimestamp(1714564800.0).strftime("%Y-%m-%d %H:%M:%S") in out


# -- export ---------------------------------------------------------------------------------------------------
def test_export_jsonl_round_trips_through_trace_from_dict(db: Db, capsys: pytest.CaptureFixture[str]) -> None:
    storage = SqliteSessionStorage(db.path)
    expected = storage.get_traces(db.uids["root"])
    storage.close()
    code, out, err = run(capsys, "--db", str(db.path), "export", db.uids["root"])
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert len(lines) == 3
    assert [Trace.from_dict(json.loads(line)) for line in lines] == expected


def test_export_to_a_file_and_as_one_json_document(db: Db, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "out" / "agent.jsonl"
    target.parent.mkdir()
    code, out, err = run(capsys, "--db", str(db.path), "export", db.uids["agent"][:7], "--output", str(target))
    assert (code, out) == (0, "")
    assert err == f"wrote 2 traces of session {db.uids['agent']} to {target}\n"
    traces = [Trace.from_dict(json.loads(line)) for line in target.read_text(encoding="utf-8").splitlines()]
    assert [t.name for t in traces] == ["chat.completions", "judge.score"]
    assert traces[1].output == "\x1b[31mred\x1b[0m line1\nline2"

    code, out, _ = run(capsys, "--db", str(db.path), "export", db.uids["agent"], "--format", "json")
    assert code == 0
    document = json.loads(out)
    assert document["session"]["uid"] == db.uids["agent"] and document["session"]["name"] == "agent"
    assert [Trace.from_dict(t) for t in document["traces"]] == traces

    assert_user_error(
        run(capsys, "--db", str(db.path), "export", db.uids["agent"], "-o", str(tmp_path / "missing" / "x.jsonl")),
        "cannot write",
    )


@pytest.mark.parametrize("count", [0, 1, 2_345])
def test_export_streams_batches_into_the_text_one_dump_would_make(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], count: int
) -> None:
    """Export reads a batch at a time (`iter_traces`, 1,000 per read) and writes each trace as it comes; the
    output is the text that dumping the whole session at once made, odd values and batch edges included."""
    from session_storage_sql.cli import _record_dict
    from session_storage_sql.cli_format import json_text

    path = tmp_path / "many.db"
    storage = SqliteSessionStorage(path)
    storage.add_trace(["bigroot"], "big", Trace(name="root's own"))
    odd = {"nan": float("nan"), "text": "ün☃ line\nnext", "lone": "\ud800", "deep": [[{"a": [1]}]]}
    traces = [Trace(name=f"t{i}", timestamp=float(i // 7), output=odd if i % 500 == 0 else i) for i in range(count)]
    storage.add_traces(["bigroot", "bigchild"], "big", traces)
    storage.save_context({"name": "big", "uid_chain": ["bigroot", "bigchild"], "metadata": {"k": 1}})
    record = storage.get_session("bigchild")
    expected = [t.to_dict() for t in storage.get_traces("bigchild")]
    storage.close()
    assert len(expected) == count
    document = json_text({"session": _record_dict(record), "traces": expected}, indent=2) + "\n"
    lines = "".join(json_text(t) + "\n" for t in expected)
    for form, wanted in (("jsonl", lines), ("json", document)):
        code, out, err = run(capsys, "--db", str(path), "export", "bigchild", "--format", form)
        assert (code, err) == (0, "")
        assert out == wanted, form
        target = tmp_path / f"out.{form}"
        code, out, err = run(capsys, "--db", str(path), "export", "bigchild", "--format", form, "-o", str(target))
        assert (code, out) == (0, "") and err.startswith(f"wrote {count} trace")
        assert target.read_text(encoding="utf-8") == wanted


def _export_locked_at_batch(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    traces: int,
    batch: int,
    target: Path,
) -> tuple[int, str, str]:
    """Export a session of `traces` traces to `target` while another process locks the database file just before
    export's read of batch number `batch` (1: the first), past the command's retries."""
    from sqlalchemy import Engine, event

    from session_storage_sql import cli_db

    monkeypatch.setattr(cli_db, "LOCK_WAIT", 0.01)
    path = tmp_path / f"locked-{traces}-{batch}.db"
    storage = SqliteSessionStorage(path)
    storage.add_traces(["lockedsession"], "n", [Trace(name=str(i), timestamp=float(i)) for i in range(traces)])
    storage.close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA journal_mode = DELETE")  # an exclusive lock keeps readers out (WAL would let them in)
    batches: list[str] = []

    def lock(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        if "LIMIT" in statement:
            batches.append(statement)
            if len(batches) == batch:
                holder.execute("BEGIN EXCLUSIVE")

    event.listen(Engine, "before_cursor_execute", lock)
    try:
        result = run(capsys, "--db", str(path), "export", "lockedsession", "-o", str(target))
    finally:
        event.remove(Engine, "before_cursor_execute", lock)
        holder.close()
    code, out, err = result
    assert (code, out) == (1, "") and "database is locked" in err and err.count("\n") == 1, err
    assert run(capsys, "--db", str(path), "export", "lockedsession", "-o", str(tmp_path / "whole.jsonl"))[0] == 0
    assert len((tmp_path / "whole.jsonl").read_text(encoding="utf-8").splitlines()) == traces  # unlocked: whole
    return result


def test_an_export_the_database_fails_midway_leaves_no_partial_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Export streams batch by batch: when a later batch cannot be read, the command fails with one line and
    removes what it had written, instead of leaving an export that looks whole."""
    target = tmp_path / "midway.jsonl"
    target.write_text("an older export\n", encoding="utf-8")
    _export_locked_at_batch(tmp_path, capsys, monkeypatch, 1_500, 2, target)
    assert not target.exists()


def test_an_export_the_database_fails_before_its_first_trace_leaves_an_older_file_as_it_was(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The session is found, then the file is locked before the first batch is read: the file it was to write
    holds the older export still, as before export streamed (it was emptied, then removed)."""
    target = tmp_path / "early.jsonl"
    target.write_text("an older export\n", encoding="utf-8")
    _export_locked_at_batch(tmp_path, capsys, monkeypatch, 3, 1, target)
    assert target.read_text(encoding="utf-8") == "an older export\n"


def test_an_export_failing_midway_through_a_symlink_leaves_the_link(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """-o names a symlink (``/dev/stdout`` is one, to the file the shell redirected to): a failure partway
    removed the link itself (as root, /dev/stdout from the system) and left the file it points to half
    written. Only a regular file the export created by that name is removed; a link is left as it is."""
    real = tmp_path / "real.jsonl"
    real.write_text("", encoding="utf-8")
    link = tmp_path / "link.jsonl"
    link.symlink_to(real)
    _export_locked_at_batch(tmp_path, capsys, monkeypatch, 1_500, 2, link)
    assert link.is_symlink() and link.resolve() == real.resolve()


def _strict_json(text: str) -> Any:
    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_json_output_is_strict_json_when_a_trace_holds_nan_or_infinity(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Trace fields may hold NaN and the infinities: --json and export wrote bare ``NaN`` / ``Infinity`` tokens,
    which are not JSON (jq and JSON.parse refuse the whole document). They are written as the strings session
    metadata is stored with."""
    path = tmp_path / "nan.db"
    storage = SqliteSessionStorage(path)
    nan, inf = float("nan"), float("inf")
    trace = Trace(name="odd", output={"v": nan, "w": [-inf]}, tokens=nan, latency_ms=inf, metadata={"m": nan})
    storage.add_trace(["nonfinite1"], "odd", trace)
    storage.close()
    d = ("--db", str(path))
    expected = {"output": {"v": "NaN", "w": ["-Infinity"]}, "tokens": "NaN", "latency_ms": "Infinity"}
    for args in (["--json", "show", "nonfinite1"], ["--json", "tree", "nonfinite1", "--traces"]):
        code, out, err = run(capsys, *d, *args)
        assert (code, err) == (0, "")
        (shown,) = _strict_json(out)["traces"]
        assert {k: shown[k] for k in expected} == expected and shown["metadata"] == {"m": "NaN"}
    code, out, err = run(capsys, *d, "export", "nonfinite1")
    assert (code, err) == (0, "")
    assert {k: _strict_json(out)[k] for k in expected} == expected
    code, out, err = run(capsys, *d, "export", "nonfinite1", "--format", "json")
    assert (code, err) == (0, "")
    assert {k: _strict_json(out)["traces"][0][k] for k in expected} == expected


def test_export_never_writes_over_the_database_it_reads(db: Db, capsys: pytest.CaptureFixture[str]) -> None:
    """``export UID -o sessions.db`` (a slip for ``-o session.jsonl``) truncated the database to the export."""
    before = hashlib.sha256(db.path.read_bytes()).hexdigest()
    link = db.path.parent / "same.db"
    link.symlink_to(db.path)
    side_files = [db.path.parent / f"{db.path.name}{suffix}" for suffix in ("-wal", "-shm", "-journal")]
    for target in (db.path, link, *side_files):  # SQLite's own files beside it, whether they exist now or not
        assert_user_error(
            run(capsys, "--db", str(db.path), "export", db.uids["root"], "-o", str(target)), "is the database"
        )
    assert hashlib.sha256(db.path.read_bytes()).hexdigest() == before
    assert run_json(capsys, "--db", str(db.path), "stats", "--json")["traces"] == 5


# -- stats ----------------------------------------------------------------------------------------------------
def test_stats_counts_sessions_traces_names_and_size(db: Db, capsys: pytest.CaptureFixture[str]) -> None:
    data = run_json(capsys, "--db", str(db.path), "stats", "--json")
    assert data["url"] == db.url and data["dialect"] == "sqlite" and data["schema_version"] == 1
    assert (data["sessions"], data["roots"], data["unnamed"], data["traces"]) == (6, 2, 1, 5)
    assert data["top_names"] == [
        {"name": "rollout", "sessions": 3},
        {"name": None, "sessions": 1},
        {"name": "agent", "sessions": 1},
        {"name": "judge", "sessions": 1},
    ]
    assert data["first_session_at"] <= db.middle < data["last_session_at"]
    assert data["first_trace_at"] <= db.middle < data["last_trace_at"]
    wal = Path(f"{db.path}-wal")
    assert data["size_bytes"] == db.path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)

    code, out, _ = run(capsys, "--db", str(db.path), "--plain", "stats", "--top", "1")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "database"
    assert lines[1].split() == ["url", db.url]
    assert "sessions          6 (2 roots; 5 named, 1 known only by uid)" in out
    assert lines[-4:] == ["top session names", "name     sessions", "-------  --------", "rollout         3"]


# -- uids -----------------------------------------------------------------------------------------------------
def test_uid_prefixes_like_git(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "prefixes.db"
    storage = SqliteSessionStorage(path)
    for uid in ("feedface1000", "feedface2000", "feedbeef3000", "feedbeef"):
        storage.add_trace([uid], f"s-{uid}", Trace(name="t"))
    storage.close()
    show = ("--db", str(path), "--json", "show")
    assert run_json(capsys, *show, "feedface1000")["session"]["uid"] == "feedface1000"
    assert run_json(capsys, *show, "feedface1")["session"]["uid"] == "feedface1000"
    assert run_json(capsys, *show, "feedbeef")["session"]["uid"] == "feedbeef"  # a whole uid wins over a prefix
    assert run_json(capsys, *show, "feedbeef3")["session"]["uid"] == "feedbeef3000"
    assert_user_error(run(capsys, *show, "feedface"), "'feedface' is ambiguous", "feedface1000, feedface2000")
    assert_user_error(run(capsys, *show, "feed"), "at least 6 characters")
    assert_user_error(run(capsys, *show, "FEEDFACE1"), "no session with uid or uid prefix")  # case matters
    assert_user_error(run(capsys, *show, "eedface1"), "no session with uid or uid prefix 'eedface1'")
    assert_user_error(run(capsys, "--db", str(path), "tree", "fee%ace"), "no session")  # LIKE wildcards are literal
    assert_user_error(run(capsys, "--db", str(path), "export", "   "), "empty session uid")


def test_a_uid_no_database_can_hold_finds_no_session(db: Db, capsys: pytest.CaptureFixture[str]) -> None:
    """A uid argument with bytes that are not UTF-8 (``show $'\\xff...'``) reaches Python as lone surrogates: the
    prefix lookup sent them to the driver and ended in a UnicodeEncodeError traceback. NUL, likewise."""
    prefix = db.uids["root"][:8]
    for given in (prefix + "\udcff", "\udcff" * 8, prefix + "\x00", "\ud800abcdefg"):
        for command in ("show", "tree", "export"):
            assert_user_error(run(capsys, "--db", str(db.path), command, given), "no session with uid")


# -- errors ---------------------------------------------------------------------------------------------------
def test_a_missing_database_is_an_error_and_is_never_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.db"
    for command in (["ls"], ["tree", "abcdef12"], ["show", "abcdef12"], ["export", "abcdef12"], ["stats"]):
        assert_user_error(run(capsys, "--db", str(missing), *command), f"no session database at {missing}")
        assert_user_error(run(capsys, "--db", f"sqlite:///{missing}", *command), "does not exist")
    assert list(tmp_path.iterdir()) == []
    assert_user_error(run(capsys, "--db", str(tmp_path), "ls"), "is a directory")
    if hasattr(os, "mkfifo"):  # a path that exists but is no regular file was said not to exist
        fifo = tmp_path / "pipe.db"
        os.mkfifo(fifo)
        assert_user_error(run(capsys, "--db", str(fifo), "ls"), "is not a regular file")
    # A home directory no user has: Path.expanduser raised RuntimeError, a traceback.
    for given in ("~no-such-user-here/x.db", "sqlite:///~no-such-user-here/x.db"):
        assert_user_error(run(capsys, "--db", given, "ls"), "~no-such-user-here", "home directory")
    # A path the system refuses to look up (too long here; no permission alike) ended in an OSError traceback.
    assert_user_error(run(capsys, "--db", str(tmp_path / ("a" * 300)), "ls"), "cannot be read")


def test_a_sqlite_uri_is_opened_read_only_too(db: Db, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A ``sqlite:///file:...`` URI is opened as given, but read-only: a mistyped one created an empty file (and
    an existing non-WAL database was switched to WAL)."""
    missing = tmp_path / "typo.db"
    result = run(capsys, "--db", f"sqlite:///file:{missing}?uri=true", "ls")
    assert result[0] == 2 and "cannot open" in result[2]
    assert not missing.exists()
    with sqlite3.connect(db.path) as conn:
        conn.execute("PRAGMA journal_mode = DELETE")
    conn.close()
    before = hashlib.sha256(db.path.read_bytes()).hexdigest()
    assert run(capsys, "--db", f"sqlite:///file:{db.path}?uri=true&mode=rwc", "ls")[0] == 0
    assert hashlib.sha256(db.path.read_bytes()).hexdigest() == before
    assert not Path(f"{db.path}-wal").exists()


def test_files_that_are_not_session_databases(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello, not a database\n" * 100)
    assert_user_error(run(capsys, "--db", str(text), "ls"), "cannot open", "file is not a database")
    empty = tmp_path / "empty.db"
    empty.touch()
    assert_user_error(run(capsys, "--db", str(empty), "stats"), "is not a session database")
    assert empty.stat().st_size == 0  # still empty: no tables were created in it
    assert_user_error(run(capsys, "--db", "sqlite://", "ls"), "in-memory")
    assert_user_error(run(capsys, "--db", "mysql://db/x", "ls"), "SQLite or PostgreSQL")


@pytest.mark.parametrize("missing", ["tables", "version"])
def test_a_database_with_only_part_of_the_schema_is_refused_unchanged(
    missing: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A database with a session_storage_meta table but not the other session tables (or no recorded version)
    is not a session database: the storage, opened read-only, failed with "attempt to write a readonly database"
    naming its internal read-only URI (exit 1); on PostgreSQL it created the tables (see below)."""
    path = tmp_path / "partial.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE session_storage_meta (key TEXT PRIMARY KEY, value TEXT)")
        if missing == "tables":
            conn.execute("INSERT INTO session_storage_meta VALUES ('schema_version', '1')")
        else:
            conn.execute("CREATE TABLE sessions (uid TEXT)")
            conn.execute("CREATE TABLE traces (trace_id TEXT)")
            conn.execute("CREATE TABLE trace_sessions (trace_id TEXT)")
    conn.close()
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    fragment = (
        "lacks the sessions, traces, trace_sessions tables" if missing == "tables" else "records no schema_version"
    )
    for command in (["ls"], ["stats"], ["show", "abcdef12"]):
        assert_user_error(
            run(capsys, "--db", str(path), *command), f"{sqlite_url(path)} is not a session database", fragment
        )
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_a_database_that_fails_for_now_exits_1_not_as_a_usage_error(
    db: Db, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SQLite file another process holds locked exited 2 as if the command were wrong; the README promises 1 when
    the database fails (a refused PostgreSQL connection: see the test below). A database that is not there stays 2."""
    from session_storage_sql import cli_db

    monkeypatch.setattr(cli_db, "LOCK_WAIT", 0.05)
    holder = sqlite3.connect(db.path, isolation_level=None)
    try:
        holder.execute("PRAGMA locking_mode = EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")
        code, out, err = run(capsys, "--db", str(db.path), "ls")
    finally:
        holder.close()
    assert (code, out) == (1, "") and "database is locked" in err and err.count("\n") == 1, err
    assert run(capsys, "--db", str(db.path), "ls")[0] == 0  # released: readable again
    assert_user_error(run(capsys, "--db", str(db.path.parent / "absent.db"), "ls"))


def test_a_database_written_by_a_newer_version_is_named_as_the_user_gave_it(db: Db) -> None:
    with sqlite3.connect(db.path) as conn:
        conn.execute("UPDATE session_storage_meta SET value = '99' WHERE key = 'schema_version'")
    conn.close()
    done = subprocess.run(
        [sys.executable, "-m", "session_storage_sql.cli", "--db", str(db.path), "stats"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
    )
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert f"the session database {db.url} has schema version 99" in done.stderr
    assert "mode=ro" not in done.stderr  # not the read-only engine the command opens it with


def test_bad_arguments_are_one_line_errors(db: Db, capsys: pytest.CaptureFixture[str]) -> None:
    d = ("--db", str(db.path))
    assert_user_error(run(capsys, *d, "ls", "--meta", "no-equals-sign"), "bad --meta filter 'no-equals-sign'")
    assert_user_error(run(capsys, *d, "ls", "--meta", "=3"), "expected key=value")
    assert_user_error(run(capsys, *d, "ls", "--since", "yesterday"), "bad --since value 'yesterday'", "ISO 8601")
    assert_user_error(run(capsys, *d, "ls", "--until", "5 parsecs"), "bad --until value")
    assert_user_error(run(capsys, *d, "ls", "--limit", "-1"), "expected zero or more")
    assert_user_error(run(capsys, *d, "ls", "--limit", "ten"), "expected a whole number")
    assert_user_error(run(capsys, *d, "ls", "--limit", "1", "--last", "1"), "not allowed with")
    assert_user_error(run(capsys, *d, "export", db.uids["root"], "--format", "csv"), "invalid choice")
    assert_user_error(run(capsys, *d, "frobnicate"), "invalid choice")
    assert_user_error(run(capsys, *d), "required")
    assert_user_error(run(capsys, *d, "show"), "UID")
    assert_user_error(run(capsys, *d, "show", "0123456789abcdef"), "no session with uid or uid prefix")


def test_a_url_given_in_the_wrong_place_is_never_echoed_with_its_password(
    db: Db, capsys: pytest.CaptureFixture[str]
) -> None:
    """A URL typed without --db (``session-sql ls postgresql://app:pw@db/x``) or in another option's place was
    quoted back whole in the usage error: the password went to the terminal, and to any CI log."""
    url = "postgresql://app:s3cret-pw@db.internal:5432/traces?sslpassword=k3y-pw"
    d = ("--db", str(db.path))
    for args in (
        ["ls", url],
        [url, "ls"],
        [*d, "show", "a", url],
        [*d, "ls", "--limit", url],
        [*d, "ls", "--since", url],
        [*d, "ls", "--meta", url.partition("?")[0]],  # with its query, the URL is a key=value filter
        [*d, "show", url],
        [*d, "stats", "--top", url],
    ):
        code, out, err = run(capsys, *args)
        assert code == 2 and out == "" and err.count("\n") == 1, err
        assert "s3cret" not in err and "k3y" not in err, err
        assert "postgresql://app@db.internal:5432/traces" in err  # still says what was given where


def test_postgresql_without_its_extra_or_its_server_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    url = "postgresql://nobody@127.0.0.1:1/nothing"  # port 1: refused at once
    if importlib.util.find_spec("psycopg") is None:  # the bare variant
        assert_user_error(run(capsys, "--db", url, "ls"), 'pip install "session-storage-sql[postgres]"')
    else:  # the database fails (its server is not there): 1, not the usage-error 2
        code, out, err = run(capsys, "--db", url, "ls")
        assert (code, out) == (1, "") and err.count("\n") == 1 and "Traceback" not in err, err
        assert "cannot open postgresql+psycopg://nobody@127.0.0.1:1/nothing" in err and "Connection refused" in err


def test_bad_filters_fail_before_the_database_is_opened(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert_user_error(run(capsys, "--db", str(tmp_path / "missing.db"), "ls", "--meta", "x"), "bad --meta filter")


def test_help_and_version_exit_zero(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "session-sql" in out and "ls" in out and "export" in out
    code, out, _ = run(capsys, "ls", "--help")
    assert code == 0 and "--meta KEY=VALUE" in out and "--since WHEN" in out
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.startswith("session-sql (session-storage-sql ")


# -- read-only, defaults --------------------------------------------------------------------------------------
def test_inspecting_never_changes_the_database_file(db: Db, capsys: pytest.CaptureFixture[str]) -> None:
    def digest() -> str:
        return hashlib.sha256(db.path.read_bytes()).hexdigest()

    before = digest()
    for args in (["ls"], ["tree", db.uids["root"], "--traces"], ["show", db.uids["root"]], ["stats"]):
        assert run(capsys, "--db", str(db.path), *args)[0] == 0
    assert run(capsys, "--db", str(db.path), "export", db.uids["root"])[0] == 0
    assert digest() == before


def test_the_default_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert_user_error(run(capsys, "ls"), f"no session database at {Path.cwd() / 'sessions.db'}")
    assert not (tmp_path / "sessions.db").exists()

    storage = SqliteSessionStorage("sessions.db")  # what SqlSessionStorage() opens here by default
    with ContextVarSession("plain", storage=storage):
        record_trace(name="t")
    storage.close()
    assert [r["name"] for r in run_json(capsys, "ls", "--json")] == ["plain"]

    demo = SqliteSessionStorage("session-demo.db")  # what the demo writes: preferred when present
    with ContextVarSession("rollout", storage=demo, task_id="task-0", rollout_idx=0):
        record_trace(name="t")
    demo.close()
    assert [r["name"] for r in run_json(capsys, "ls", "--json")] == ["rollout"]
    assert run_json(capsys, "stats", "--json")["url"] == sqlite_url(Path.cwd() / "session-demo.db")

    monkeypatch.setenv("SESSION_STORAGE_URL", sqlite_url(tmp_path / "sessions.db"))
    assert [r["name"] for r in run_json(capsys, "ls", "--json")] == ["plain"]
    monkeypatch.setenv("SESSION_STORAGE_URL", "sessions.db")  # a path works there too
    assert [r["name"] for r in run_json(capsys, "ls", "--json")] == ["plain"]
    assert [r["name"] for r in run_json(capsys, "--db", "session-demo.db", "ls", "--json")] == ["rollout"]


def test_a_path_with_url_characters_opens_that_very_file(
    db: Db, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    odd = tmp_path / "runs?v=2#x %41"
    odd.mkdir()
    target = odd / "s.db"
    target.write_bytes(db.path.read_bytes())
    assert [r["uid"] for r in run_json(capsys, "--db", str(target), "ls", "--roots", "--json")] == [
        db.uids["root"],
        db.uids["root2"],
    ]
    assert_user_error(run(capsys, "--db", str(odd / "other.db"), "ls"), f"no session database at {odd / 'other.db'}")


@pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="file names there are Unicode, not bytes")
def test_a_path_that_is_not_utf8_opens_that_very_file(
    db: Db, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A directory named in Latin-1 (``café`` as the byte 0xE9) reaches Python as a lone surrogate: opening the
    file ended in a UnicodeEncodeError traceback, from --db, a sqlite: URL and the default ./sessions.db alike."""
    odd = tmp_path / os.fsdecode(b"caf\xe9")
    odd.mkdir()
    target = odd / "sessions.db"
    target.write_bytes(db.path.read_bytes())
    roots = [db.uids["root"], db.uids["root2"]]
    assert [r["uid"] for r in run_json(capsys, "--db", str(target), "ls", "--roots", "--json")] == roots
    assert [r["uid"] for r in run_json(capsys, "--db", sqlite_url(target), "ls", "--roots", "--json")] == roots
    monkeypatch.chdir(odd)
    assert run_json(capsys, "stats", "--json")["sessions"] == 6
    code, out, err = run(capsys, "--plain", "stats")
    assert (code, err) == (0, "") and "caf\\udce9" in out  # the URL shown escaped
    assert_user_error(run(capsys, "--db", str(odd / "other.db"), "ls"), "no session database at", "caf\\udce9")
    # An error names the path it was given terminal-safe: escaped, like the text of a trace.
    code, _, err = run(capsys, "--db", str(tmp_path / "x\x1b[2J.db"), "ls")
    assert code == 2 and "x\\x1b[2J.db" in err and "\x1b" not in err


def test_resolve_db(tmp_path: Path) -> None:
    here = Path("/srv/app")
    assert resolve_db("sqlite:////x/y.db", {}, here) == "sqlite:////x/y.db"
    assert resolve_db("data/s.db", {}, here) == Path("/srv/app/data/s.db")
    assert resolve_db("a?b#c%41.db", {}, here) == Path("/srv/app/a?b#c%41.db")  # a path stays a path
    assert resolve_db("/abs/s.db", {"SESSION_STORAGE_URL": "sqlite:////other.db"}, here) == Path("/abs/s.db")
    assert resolve_db(None, {"SESSION_STORAGE_URL": "postgresql://u@h/db"}, here) == "postgresql://u@h/db"
    assert resolve_db(None, {"SESSION_STORAGE_URL": "t.db"}, here) == Path("/srv/app/t.db")
    assert resolve_db(None, {}, here) == Path("/srv/app/sessions.db")
    (tmp_path / "session-demo.db").touch()
    assert resolve_db(None, {}, tmp_path) == tmp_path / "session-demo.db"
    with pytest.raises(CliError, match="--db is empty"):
        resolve_db("  ", {}, here)


def test_parse_meta_and_time() -> None:
    assert parse_meta(["a=1", "b=true", "c=null", 'd="1"', "e=text", "f=", "g=[1, 2]", "h=a=b", "a=2.5"]) == {
        "a": 2.5,
        "b": True,
        "c": None,
        "d": "1",
        "e": "text",
        "f": "",
        "g": [1, 2],
        "h": "a=b",
    }
    now = 1_700_000_000.0
    assert parse_time("30m", "--since", now) == now - 1800
    assert parse_time("1h", "--since", now) == now - 3600
    assert parse_time("2d", "--since", now) == now - 2 * 86400
    assert parse_time(" 1.5 hrs ", "--since", now) == now - 5400
    assert parse_time("1w", "--since", now) == now - 7 * 86400
    assert parse_time("2024-05-01T12:00:00+00:00", "--since") == 1714564800.0
    assert parse_time("2024-05-01T12:00:00Z", "--since") == 1714564800.0
    assert parse_time("2024-05-01", "--since") == datetime.datetime(2024, 5, 1).timestamp()
    for bad in ("", "soon", "10", "1y", "2024-13-01", "0001-01-01"):  # the last: "year 0 is out of range"
        with pytest.raises(CliError, match="bad --until value"):
            parse_time(bad, "--until")


def test_display_helpers_keep_terminals_safe() -> None:
    assert safe("a\nb\t\tc") == "a b c"
    assert safe("\x1b[2J\x07\u202e") == "\\x1b[2J\\x07\\u202e"
    assert clip("abcdef", 4) == "abc…" and clip({"k": [1, 2]}, 0) == '{"k":[1,2]}'
    assert fmt_tokens(7) == "7" and fmt_tokens(None) == ""
    assert fmt_tokens({"prompt": 3, "completion": 8, "total": 11}) == "11 (3+8)"
    assert fmt_tokens({"prompt_tokens": 3, "completion_tokens": 4}) == "7 (3+4)"
    assert fmt_tokens({"total": 5}) == "5" and fmt_tokens({"weird": 1}) == '{"weird":1}'


# -- output variants ------------------------------------------------------------------------------------------
def test_without_rich_the_output_is_plain_text(db: Db, capsys: pytest.CaptureFixture[str]) -> None:
    """What a bare install prints (no extras): the same plain tables. With rich, --plain asks for them."""
    out_obj = make_output()
    assert isinstance(out_obj, PlainOutput) is (not HAS_RICH)
    args = ["--db", str(db.path), "ls", "--roots"] + ([] if not HAS_RICH else ["--plain"])
    code, out, _ = run(capsys, *args)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["uid", "name", "parent", "created", "traces", "metadata"] and lines[1].startswith("---")
    assert lines[-1] == "2 sessions"


def test_rich_tables_and_trees(db: Db, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("rich")
    monkeypatch.setenv("COLUMNS", "200")  # the page width rich lays out for when the output is not a terminal
    u = db.uids
    code, out, _ = run(capsys, "--db", str(db.path), "ls")
    assert code == 0
    assert "─" in out and u["root"][:12] in out and "task_id=task-1 rollout_idx=1" in out and "6 sessions" in out
    assert "\x1b[" not in out  # not a terminal: no colors
    code, out, _ = run(capsys, "--db", str(db.path), "tree", u["root"], "--traces")
    assert code == 0
    assert f"└── agent {u['agent'][:12]}  2 traces, 1 own  service=agent" in out
    assert "judge.score judge-m" in out and "\\x1b[31mred" in out and "\x1b[31m" not in out
    code, out, _ = run(capsys, "--db", str(db.path), "show", u["root"])
    assert code == 0
    assert f"session {u['root']}" in out and "11 (3+8)" in out and "[2 msgs] user: hello there" in out
    code, out, _ = run(capsys, "--db", str(db.path), "stats")
    assert code == 0 and "known only by uid" in out and "top session names" in out
    # Markup in stored text is shown literally, never interpreted.
    path = db.path.parent / "markup.db"
    storage = SqliteSessionStorage(path)
    with ContextVarSession("[bold red]x[/]", storage=storage, note="[link=http://e.x]y[/link]"):
        record_trace(name=":smile: [b]", output="[red]z")
    storage.close()
    code, out, _ = run(capsys, "--db", str(path), "ls")
    assert "[bold red]x[/]" in out and "[link=http://e.x]y[/link]" in out


# -- subprocesses ---------------------------------------------------------------------------------------------
def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "SESSION_STORAGE_URL"}
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def test_python_dash_m_runs_the_command(db: Db, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "session_storage_sql.cli", "--db", str(db.path)]
    done = subprocess.run(
        [*command, "--json", "tree", db.uids["root"][:8]], capture_output=True, text=True, env=_env(), timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["children"][0]["uid"] == db.uids["agent"]
    missing = subprocess.run(
        [sys.executable, "-m", "session_storage_sql.cli", "--db", str(tmp_path / "gone.db"), "stats"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
    )
    assert missing.returncode == 2 and missing.stdout == ""
    assert missing.stderr.count("\n") == 1 and "no session database" in missing.stderr
    assert not (tmp_path / "gone.db").exists()


def test_the_installed_console_script(db: Db, tmp_path: Path) -> None:
    script = Path(sys.executable).parent / ("session-sql.exe" if os.name == "nt" else "session-sql")
    if not script.exists():
        pytest.skip(f"the session-sql console script is not installed next to {sys.executable}")
    done = subprocess.run(
        [str(script), "export", db.uids["root"], "--db", str(db.path)], capture_output=True, text=True, env=_env()
    )
    assert done.returncode == 0, done.stderr
    assert [Trace.from_dict(json.loads(line)).name for line in done.stdout.splitlines()] == [
        "rollout.result",
        "chat.completions",
        "judge.score",
    ]
    bad = subprocess.run([str(script), "--db", str(db.path), "ls", "--since", "later"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The real command, its output read back as UTF-8 with lone surrogates kept (``surrogatepass``)."""
    done = subprocess.run(
        [sys.executable, "-m", "session_storage_sql.cli", *args], capture_output=True, env=_env(), timeout=60
    )
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode("utf-8"), done.stderr.decode("utf-8", "backslashreplace")
    )


def test_a_lone_surrogate_in_a_trace_is_shown_escaped_and_exported_exactly(tmp_path: Path) -> None:
    """A trace may hold a lone surrogate (a file name decoded with surrogateescape, half of an emoji cut in two):
    every command printing it died with UnicodeEncodeError and a traceback, export -o left a truncated file."""
    path = tmp_path / "odd.db"
    storage = SqliteSessionStorage(path)
    storage.add_trace(["surrogate1"], "odd", Trace(name="cut\ud83d", input="a\ud800b", output={"k\udfff": "\udc80"}))
    expected = storage.get_traces("surrogate1")
    storage.close()
    assert expected[0].input == "a\ud800b"  # stored and read back as it was given
    d = ("--db", str(path))
    for args in (["show", "surrogate1"], ["show", "surrogate1", "--full"], ["tree", "surrogate1", "--traces"]):
        for style in [["--plain"], *([[]] if HAS_RICH else [])]:  # rich too, where installed
            done = _cli(*d, *style, *args)
            assert (done.returncode, done.stderr) == (0, ""), done.stderr
            assert "\\ud800" in done.stdout and "\ud800" not in done.stdout  # escaped, as control characters are
    for args in (["--json", "show", "surrogate1"], ["--json", "tree", "surrogate1", "--traces"]):
        done = _cli(*d, *args)
        assert (done.returncode, done.stderr) == (0, ""), done.stderr
        assert [Trace.from_dict(t) for t in json.loads(done.stdout)["traces"]] == expected
    done = _cli(*d, "export", "surrogate1")
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert [Trace.from_dict(json.loads(line)) for line in done.stdout.splitlines()] == expected
    target = tmp_path / "odd.json"
    done = _cli(*d, "export", "surrogate1", "--format", "json", "-o", str(target))
    assert done.returncode == 0, done.stderr
    assert [Trace.from_dict(t) for t in json.loads(target.read_text(encoding="utf-8"))["traces"]] == expected


def test_an_output_stream_that_is_not_utf8_gets_escapes_not_a_traceback(tmp_path: Path) -> None:
    """Standard output in a legacy encoding (a Latin-1 locale; a pipe on Windows, which is cp1252): any name or
    trace text outside it ended every command in UnicodeEncodeError. Text is now written with backslash
    escapes, JSON with \\u escapes (the same JSON, in ASCII)."""
    path = tmp_path / "names.db"
    storage = SqliteSessionStorage(path)
    storage.add_trace(["unicode01"], "名前 ✓", Trace(name="chat ✓", input="héllo 世界", output="ok"))
    storage.close()
    d = ("--db", str(path))
    env = {**_env(), "PYTHONIOENCODING": "ascii"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "session_storage_sql.cli", *d, *args]
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)

    for args in (["--plain", "ls"], ["ls"], ["--plain", "show", "unicode01"], ["tree", "unicode01", "--traces"]):
        done = cli(*args)
        assert (done.returncode, done.stderr) == (0, ""), done.stderr
        assert "\\u540d\\u524d" in done.stdout  # 名前, escaped
    for args in (["--json", "ls"], ["--json", "show", "unicode01"], ["--json", "tree", "unicode01", "--traces"]):
        done = cli(*args)
        assert (done.returncode, done.stderr) == (0, ""), done.stderr
        assert done.stdout.isascii() and "名前 ✓" in json.dumps(json.loads(done.stdout), ensure_ascii=False)
    done = cli("export", "unicode01")
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert Trace.from_dict(json.loads(done.stdout)).input == "héllo 世界"


# -- PostgreSQL -----------------------------------------------------------------------------------------------
def test_postgresql_database(postgres_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    storage = SqlSessionStorage(postgres_url)
    try:
        uids, _ = populate(storage)
    finally:
        storage.close()
    d = ("--db", postgres_url)
    assert [r["uid"] for r in run_json(capsys, *d, "ls", "--json", "--roots")] == [uids["root"], uids["root2"]]
    assert [
        r["uid"] for r in run_json(capsys, *d, "ls", "--json", "--meta", "rollout_idx=1", "--meta", "verdict=true")
    ] == [uids["judge"]]
    tree = run_json(capsys, *d, "--json", "tree", uids["root"][:9])
    assert tree["trace_count"] == 3 and tree["children"][0]["children"][0]["uid"] == uids["judge"]
    code, out, _ = run(capsys, *d, "export", uids["agent"])
    assert code == 0 and [Trace.from_dict(json.loads(x)).name for x in out.splitlines()] == [
        "chat.completions",
        "judge.score",
    ]
    stats = run_json(capsys, *d, "stats", "--json")
    assert stats["dialect"] == "postgresql" and (stats["sessions"], stats["traces"]) == (6, 5)
    assert stats["size_bytes"] > 0 and stats["url"].startswith("postgresql+psycopg://postgres@")
    assert_user_error(run(capsys, *d, "show", "7a1f"), "at least 6 characters")
    assert_user_error(run(capsys, *d, "show", "7a1f%%"), "no session")
    assert run_json(capsys, *d, "show", "7a1f00", "--json")["session"]["uid"] == uids["ray_task"]
    assert_user_error(run(capsys, *d, "show", uids["root"][:8] + "\udcff"), "no session")
    assert_user_error(run(capsys, *d, "tree", uids["root"][:8] + "\x00"), "no session")


def test_a_postgresql_database_without_session_tables_is_not_changed(
    postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert_user_error(run(capsys, "--db", postgres_url, "ls"), "is not a session database")
    from sqlalchemy import create_engine, inspect

    engine = create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            assert inspect(conn).get_table_names() == []
    finally:
        engine.dispose()


@pytest.mark.parametrize("missing", ["tables", "version"])
def test_a_postgresql_database_with_only_part_of_the_schema_is_not_completed(
    missing: str, postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """session-sql opened it through the storage, which created the missing tables (or recorded a version): a
    write by the read-only command. It is refused, and left as it was."""
    from sqlalchemy import create_engine, inspect, text

    engine = create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE session_storage_meta (key TEXT PRIMARY KEY, value TEXT)"))
            if missing == "tables":
                conn.execute(text("INSERT INTO session_storage_meta VALUES ('schema_version', '1')"))
            else:
                for table in ("sessions", "traces", "trace_sessions"):
                    conn.execute(text(f"CREATE TABLE {table} (x TEXT)"))
        with engine.connect() as conn:
            before = sorted(inspect(conn).get_table_names())
        assert_user_error(run(capsys, "--db", postgres_url, "ls"), "is not a session database")
        with engine.connect() as conn:
            assert sorted(inspect(conn).get_table_names()) == before
            assert conn.execute(text("SELECT count(*) FROM session_storage_meta")).scalar_one() == (
                1 if missing == "tables" else 0
            )
    finally:
        engine.dispose()
