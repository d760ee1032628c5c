"""Session queries (get_session, list_sessions, session_tree) and contexts kept by reference."""

from __future__ import annotations

import datetime
import time
from typing import Any

import pytest

from session_core import (
    ContextTooLarge,
    ContextVarSession,
    InvalidSessionContext,
    Trace,
    decode_baggage,
    encode_baggage,
    record_trace,
)
from session_storage_sql import SessionNode, SessionRecord


def test_sessions_are_stored_with_name_metadata_and_place_in_the_tree(storage: Any) -> None:
    with ContextVarSession("experiment", storage=storage, run=7, model="m1") as root:
        with ContextVarSession("arm", arm="b", temperature=0.5) as arm:
            record_trace(name="call")
    record = storage.get_session(arm.uid)
    assert isinstance(record, SessionRecord)
    assert (record.uid, record.parent_uid, record.root_uid, record.depth) == (arm.uid, root.uid, root.uid, 2)
    assert record.name == "arm"
    assert record.metadata == {"run": 7, "model": "m1", "arm": "b", "temperature": 0.5}  # merged, types kept
    parent = storage.get_session(root.uid)
    assert parent.is_root and parent.name == "experiment" and parent.metadata == {"run": 7, "model": "m1"}
    assert storage.get_session("no-such-uid") is None


def test_metadata_changed_inside_a_session_reaches_its_traces_and_its_row(storage: Any) -> None:
    with ContextVarSession("rollout", storage=storage, step=0) as root:
        record_trace(name="first")
        root.metadata["step"] = 1
        record_trace(name="second")
    assert [t.metadata["step"] for t in root.llm_calls] == [0, 1]
    assert storage.get_session(root.uid).metadata == {"step": 1}  # the row follows the session's latest view


def test_an_ancestor_known_only_by_uid_has_no_name(storage: Any) -> None:
    storage.add_trace(["far-root", "mid", "leaf"], "leaf-name", Trace(name="t"))
    assert storage.get_session("leaf").name == "leaf-name"
    root = storage.get_session("far-root")
    assert (root.name, root.metadata, root.depth, root.parent_uid) == (None, None, 1, None)
    assert storage.get_session("mid").parent_uid == "far-root"


def test_a_context_restored_later_never_turns_its_parents_row_back(storage_url: str) -> None:
    """A restored session writes its parent's row from the context it came from: a snapshot. The parent's own
    process wrote newer metadata since, and that stays (the snapshot used to overwrite it, and the owner's storage,
    which remembers having written the row, never wrote it again)."""
    from session_storage_sql import SqlSessionStorage

    owner, worker = SqlSessionStorage(storage_url), SqlSessionStorage(storage_url)  # two processes' storages
    try:
        with ContextVarSession("parent", storage=owner, step=1) as parent:
            record_trace(name="step 1")
            ctx = parent.to_context()
            parent.metadata["step"] = 2
            record_trace(name="step 2")
        assert owner.get_session(parent.uid).metadata == {"step": 2}
        with ContextVarSession.from_context(ctx, storage=worker) as child:
            with ContextVarSession("grandchild") as grandchild:
                worker.save_context(grandchild.to_context())  # writes its ancestors' rows too
            record_trace(name="in the worker")
        with ContextVarSession.from_context(ctx, storage=owner) as child2:  # restored in the owner's process
            record_trace(name="in the owner's process")
        for store in (owner, worker):
            record = store.get_session(parent.uid)
            assert (record.name, record.metadata) == ("parent", {"step": 2})
            assert store.get_session(child.uid).metadata == {"step": 1}  # the child's own view: what it inherited
        assert {t.name for t in owner.get_traces(parent.uid)} == {
            "step 1",
            "step 2",
            "in the worker",
            "in the owner's process",
        }
        assert owner.get_session(child2.uid).parent_uid == parent.uid
        with parent:  # the parent's own process still writes every change of its own
            parent.metadata["step"] = 3
            record_trace(name="step 3")
        assert worker.get_session(parent.uid).metadata == {"step": 3}
    finally:
        owner.close()
        worker.close()


def test_a_restored_context_still_names_a_parent_nobody_wrote(storage: Any) -> None:
    """The snapshot a context carries fills in the parent's row where nothing better is known: a parent that never
    recorded a trace, or whose row so far holds only its uid."""
    with ContextVarSession("quiet-parent", storage=storage, step=1) as parent:
        ctx = parent.to_context()
    with ContextVarSession.from_context(ctx, storage=storage):
        record_trace(name="only the child records")
    record = storage.get_session(parent.uid)
    assert (record.name, record.metadata) == ("quiet-parent", {"step": 1})

    storage.add_trace(["linked-only", "x"], "x", Trace(name="writes linked-only as a bare uid"))
    assert storage.get_session("linked-only").name is None
    ctx = {"name": "named-later", "uid_chain": ["linked-only"], "metadata": {"k": "v"}}
    with ContextVarSession.from_context(ctx, storage=storage):
        record_trace(name="t")
    record = storage.get_session("linked-only")
    assert (record.name, record.metadata) == ("named-later", {"k": "v"})


def test_list_sessions_filters(storage: Any) -> None:
    made: dict[str, Any] = {}
    with ContextVarSession("rollout", storage=storage, env="prod", step=1, flags={"a": [1, 2]}) as a:
        record_trace(name="a")
        with ContextVarSession("judge", verdict=True) as j:
            record_trace(name="j")
    middle = time.time()
    with ContextVarSession("rollout", storage=storage, env="dev", step=2, score=1.5, note=None) as b:
        record_trace(name="b")
    made.update(a=a.uid, j=j.uid, b=b.uid)

    def uids(**query: Any) -> list[str]:
        return [r.uid for r in storage.list_sessions(**query)]

    assert uids() == [made["a"], made["j"], made["b"]]  # oldest first
    assert uids(name="rollout") == [made["a"], made["b"]]
    assert uids(name="judge") == [made["j"]]
    assert uids(metadata={"env": "prod"}) == [made["a"], made["j"]]  # the child inherits env
    assert uids(metadata={"env": "prod", "verdict": True}) == [made["j"]]
    assert uids(metadata={"step": 2}) == [made["b"]]
    assert uids(metadata={"step": 2.0}) == [made["b"]]
    assert uids(metadata={"verdict": 1}) == []  # JSON true is not the number 1
    assert uids(metadata={"score": 1.5, "note": None}) == [made["b"]]
    assert uids(metadata={"flags": {"a": [1, 2]}}) == [made["a"], made["j"]]
    assert uids(metadata={"flags": {"a": [1]}}) == []  # equality, not containment
    assert uids(metadata={"missing": None}) == []
    assert uids(roots_only=True) == [made["a"], made["b"]]
    assert uids(since=middle) == [made["b"]]
    assert uids(until=middle) == [made["a"], made["j"]]
    assert uids(since=datetime.datetime.fromtimestamp(middle)) == [made["b"]]
    assert uids(limit=2) == [made["a"], made["j"]]
    assert uids(metadata={"flags": {"a": [1, 2]}}, limit=1) == [made["a"]]
    assert uids(limit=0) == []
    assert uids(newest_first=True) == [made["b"], made["j"], made["a"]]
    assert uids(newest_first=True, limit=2) == [made["b"], made["j"]]  # the latest two
    assert uids(newest_first=True, name="rollout", limit=1) == [made["b"]]
    assert uids(newest_first=True, metadata={"env": "prod"}, limit=1) == [made["j"]]
    with pytest.raises(ValueError, match="limit"):
        storage.list_sessions(limit=-1)
    with pytest.raises(TypeError, match="since"):
        storage.list_sessions(since="yesterday")


def test_session_tree_nests_sessions_with_trace_counts(storage: Any) -> None:
    with ContextVarSession("root", storage=storage) as root:
        record_trace(name="r1")
        with ContextVarSession("a") as a:
            record_trace(name="a1")
            record_trace(name="a2")
            with ContextVarSession("a-deep") as deep:
                record_trace(name="d1")
        with ContextVarSession("b") as b:
            record_trace(name="b1")
    tree = storage.session_tree(root.uid)
    assert isinstance(tree, SessionNode)
    assert (tree.name, tree.trace_count, tree.own_trace_count) == ("root", 5, 1)
    assert [child.name for child in tree.children] == ["a", "b"]
    node_a = tree.find(a.uid)
    assert (node_a.trace_count, node_a.own_trace_count) == (3, 2)
    assert [c.uid for c in node_a.children] == [deep.uid]
    assert tree.find(b.uid).trace_count == 1
    assert [n.name for n in tree.walk()] == ["root", "a", "a-deep", "b"]
    assert len(tree) == 4
    subtree = storage.session_tree(a.uid)
    assert [n.name for n in subtree.walk()] == ["a", "a-deep"]
    assert storage.session_tree("unknown") is None


def test_a_tree_of_remote_children_counts_them(storage: Any) -> None:
    # Three workers continued the root's chain elsewhere; only their traces reached this database.
    for w in range(3):
        storage.add_traces(["root", f"w{w}"], "worker", [Trace(name=f"w{w}-{i}") for i in range(w + 1)])
    tree = storage.session_tree("root")
    assert tree.trace_count == 6 and tree.own_trace_count == 0
    assert sorted((c.uid, c.trace_count) for c in tree.children) == [("w0", 1), ("w1", 2), ("w2", 3)]


def test_save_and_load_context(storage: Any) -> None:
    with ContextVarSession("parent", storage=storage, user="u1") as parent:
        with ContextVarSession("child", big="x" * 100) as child:
            ctx = child.to_context()
    storage.save_context(ctx)
    assert storage.load_context(child.uid) == ctx
    record = storage.get_session(child.uid)
    assert record.metadata == {"user": "u1", "big": "x" * 100} and record.parent_uid == parent.uid
    assert storage.load_context("unknown") is None
    with pytest.raises(InvalidSessionContext):
        storage.save_context({"name": "no chain"})


def test_load_context_rebuilds_one_for_a_session_that_recorded_traces(storage: Any) -> None:
    with ContextVarSession("recorded", storage=storage, k=1) as outer:
        with ContextVarSession("inner") as inner:
            record_trace(name="t")
    ctx = storage.load_context(inner.uid)
    assert ctx["name"] == "inner" and ctx["uid_chain"] == [outer.uid, inner.uid] and ctx["metadata"] == {"k": 1}
    assert ctx["storage_url"] == storage.url


def test_oversized_metadata_travels_by_reference_through_baggage(storage: Any) -> None:
    big = {f"key{i}": "v" * 200 for i in range(60)}  # far over the 8 KB baggage header limit
    with ContextVarSession("big", storage=storage, **big) as s:
        ctx = s.to_context()
        with pytest.raises(ContextTooLarge):
            encode_baggage(ctx)  # no storage: cannot go by reference
        header = encode_baggage(ctx, storage=storage)
    assert len(header) < 1000 and "session.ref=1" in header
    restored = decode_baggage(header, storage=storage, strict=True)
    assert restored is not None
    assert restored["metadata"] == big and restored["uid_chain"] == s.uid_chain


def test_non_finite_metadata_neither_costs_the_trace_nor_breaks_metadata_queries(storage: Any) -> None:
    """NaN and infinities are not JSON: the session's row stores them as JSON's names for them (strings), so
    PostgreSQL accepts the row and SQLite's JSON functions can still read every row."""
    with ContextVarSession("scored", storage=storage, reward=float("nan"), bound=float("-inf"), ok=1) as s:
        record_trace(name="kept")
    assert [t.name for t in storage.get_traces(s.uid)] == ["kept"]
    trace_meta = storage.get_traces(s.uid)[0].metadata
    assert trace_meta["reward"] != trace_meta["reward"] and trace_meta["bound"] == float("-inf")  # the trace: as is
    assert storage.get_session(s.uid).metadata == {"reward": "NaN", "bound": "-Infinity", "ok": 1}
    assert [r.uid for r in storage.list_sessions(metadata={"ok": 1})] == [s.uid]
    assert [r.uid for r in storage.list_sessions(metadata={"reward": "NaN"})] == [s.uid]


def test_nul_characters_and_lone_surrogates_in_names_and_metadata_cost_no_trace(storage: Any) -> None:
    """Baggage can carry ``%00`` into a session's name and metadata; PostgreSQL's text and jsonb cannot hold NUL
    (nor jsonb a lone surrogate), and no database driver encodes a lone surrogate as UTF-8. The traces are kept as
    they were recorded; the session's row and the query columns hold U+FFFD in their place where they must."""
    header = "session.v=1,session.name=a%00b,session.uids=caller,session.m.k=%22x%00y%22"
    ctx = decode_baggage(header)
    assert ctx is not None and ctx["name"] == "a\x00b"
    with ContextVarSession.from_context(ctx, storage=storage) as s:
        record_trace(name="kept")
    with ContextVarSession("odd\udc80name", storage=storage, path="dir/\udc80.txt") as odd:
        record_trace(name="kept too")
    (trace,) = storage.get_traces(s.uid)
    assert (trace.name, trace.session_name, trace.metadata) == ("kept", "a\x00b", {"k": "x\x00y"})
    assert [t.name for t in storage.get_traces(s.uid, "a\x00b")] == ["kept"]
    assert {r.uid for r in storage.list_sessions(name="a\x00b")} == {"caller", s.uid}  # the caller's name too
    (trace,) = storage.get_traces(odd.uid, "odd\udc80name")
    assert (trace.session_name, trace.metadata) == ("odd\udc80name", {"path": "dir/\udc80.txt"})
    assert [r.uid for r in storage.list_sessions(name="odd\udc80name")] == [odd.uid]
    nul = "\ufffd" if storage.dialect == "postgresql" else "\x00"
    assert storage.get_session(s.uid).name == f"a{nul}b"
    assert storage.get_session(s.uid).metadata == {"k": f"x{nul}y"}
    assert storage.get_session(odd.uid).name == "odd\ufffdname"
    storage.save_context({**ctx, "uid_chain": ["caller", "saved"], "metadata": {"k": "\x00"}})
    assert storage.load_context("saved")["metadata"] == {"k": "\x00"}
    storage.clear(s.uid, "a\x00b")
    assert storage.get_traces(s.uid) == []


def test_list_sessions_matches_integers_beyond_64_bits(storage: Any) -> None:
    """JSON integers have no size limit and session metadata keeps them exactly; SQLite cannot bind such an int
    as a query parameter (OverflowError), so the query must not send it there."""
    with ContextVarSession("big", storage=storage, seed=2**70, neg=-(2**64), small=3) as s:
        record_trace(name="t")
    assert [r.uid for r in storage.list_sessions(metadata={"seed": 2**70})] == [s.uid]
    assert [r.uid for r in storage.list_sessions(metadata={"seed": 2**70, "neg": -(2**64), "small": 3})] == [s.uid]
    assert storage.list_sessions(metadata={"seed": 2**70 + 1}) == []
    assert storage.list_sessions(metadata={"small": 2**70}, limit=1) == []


def test_a_session_row_follows_every_metadata_change_json_can_tell_apart(storage: Any) -> None:
    """The storage skips rewriting a session row it already wrote with the same values; "the same" is JSON's
    sameness (True is not 1), and a nested value changed in place is a change."""
    with ContextVarSession("flagged", storage=storage, flag=1, flags=[1], nested={"k": 1}) as s:
        record_trace(name="first")
        s.metadata["flag"] = True
        s.metadata["flags"].append(2)
        s.metadata["nested"]["k"] = 2
        record_trace(name="second")
    assert storage.get_session(s.uid).metadata == {"flag": True, "flags": [1, 2], "nested": {"k": 2}}
    assert type(storage.get_session(s.uid).metadata["flag"]) is bool
    assert [r.uid for r in storage.list_sessions(metadata={"flag": True})] == [s.uid]
    assert storage.list_sessions(metadata={"flag": 1}) == []


def test_list_sessions_finds_metadata_values_the_row_had_to_store_differently(storage: Any) -> None:
    """A session row holds NaN as "NaN", NUL as U+FFFD on PostgreSQL; querying by the value that was recorded
    finds the session on both databases (it raised StorageError on PostgreSQL, and SQLite's json_extract ends a
    string at NUL). A key that is not a string is refused by name."""
    with ContextVarSession("odd", storage=storage, k="x\x00y", r=float("nan"), s="a\udc80b", n=1) as s:
        s.metadata["\x00key\udc80"] = 2
        record_trace(name="kept")
    assert [r.uid for r in storage.list_sessions(metadata={"k": "x\x00y"})] == [s.uid]
    assert [r.uid for r in storage.list_sessions(metadata={"k": "x\x00y", "n": 1}, limit=1)] == [s.uid]
    assert [r.uid for r in storage.list_sessions(metadata={"r": float("nan")})] == [s.uid]
    assert [r.uid for r in storage.list_sessions(metadata={"s": "a\udc80b"})] == [s.uid]
    assert [r.uid for r in storage.list_sessions(metadata={"\x00key\udc80": 2})] == [s.uid]
    assert storage.list_sessions(metadata={"k": "x\x00z"}) == []
    assert storage.list_sessions(metadata={"k": "x"}) == []
    with pytest.raises(TypeError, match="metadata keys"):
        storage.list_sessions(metadata={1: "x"})


def test_save_context_stores_an_active_parent_whose_name_and_metadata_hold_nul(storage: Any) -> None:
    """The parent's row written by `save_context` goes through the same conversion as every other session row
    (it raised StorageError on PostgreSQL, whose text and jsonb cannot hold NUL)."""
    with ContextVarSession("p\x00q", storage=storage, k="a\x00b") as parent:
        with ContextVarSession("child") as child:
            ctx = child.to_context()
            storage.save_context(ctx)
    assert storage.load_context(child.uid) == ctx
    nul = "\ufffd" if storage.dialect == "postgresql" else "\x00"
    record = storage.get_session(parent.uid)
    assert (record.name, record.metadata) == (f"p{nul}q", {"k": f"a{nul}b"})
    assert [r.uid for r in storage.list_sessions(name="p\x00q")] == [parent.uid]


def test_list_sessions_refuses_a_limit_or_a_bound_that_is_not_one(storage: Any) -> None:
    """`limit=1.5` kept 1 session on a SQL filter and 2 on one checked in Python; `limit=True` was 1; a NaN bound
    matched nothing. Each now raises, saying what was wrong."""
    for i in range(3):
        storage.add_trace([f"s{i}"], "n", Trace(name="t"))
    assert len(storage.list_sessions(limit=2)) == 2
    for bad in (1.5, True, "2"):
        with pytest.raises(TypeError, match="limit must be an int"):
            storage.list_sessions(limit=bad)
    for bound in ("since", "until"):
        with pytest.raises(ValueError, match=f"{bound} is NaN"):
            storage.list_sessions(**{bound: float("nan")})
        with pytest.raises(TypeError, match=bound):
            storage.list_sessions(**{bound: True})
    assert len(storage.list_sessions(since=float("-inf"), until=float("inf"))) == 3
    # A limit no database can take as a parameter (SQLite: OverflowError; PostgreSQL: bigint out of range) limits
    # nothing: all sessions, as sys.maxsize gives.
    assert len(storage.list_sessions(limit=2**63)) == len(storage.list_sessions(limit=2**70, newest_first=True)) == 3


def test_list_sessions_bounds_naive_aware_date_and_out_of_range(storage: Any) -> None:
    """An aware datetime is its instant, a naive one local time; a `date` raises a TypeError naming what to give
    (it raised one too, without the way out); a naive ``datetime.min`` raised a bare ``year 0 is out of range``,
    and an int beyond a float's range ``OverflowError``."""
    storage.add_trace(["old"], "n", Trace(name="t"))
    time.sleep(0.02)
    middle = time.time()
    time.sleep(0.02)
    storage.add_trace(["new"], "n", Trace(name="t"))

    def uids(**query: Any) -> list[str]:
        return [r.uid for r in storage.list_sessions(**query)]

    naive = datetime.datetime.fromtimestamp(middle)
    aware = datetime.datetime.fromtimestamp(middle, tz=datetime.timezone(datetime.timedelta(hours=-7)))
    assert uids(since=naive) == uids(since=aware) == uids(since=middle) == ["new"]
    assert uids(until=naive) == uids(until=aware) == uids(until=middle) == ["old"]
    for bound in ("since", "until"):
        with pytest.raises(TypeError, match=rf"{bound} must be a datetime\.datetime .* got date; .*combine"):
            storage.list_sessions(**{bound: datetime.date.today()})
        with pytest.raises(TypeError, match=rf"{bound} must be a datetime\.datetime .* got time$"):
            storage.list_sessions(**{bound: datetime.time(12)})
        with pytest.raises(ValueError, match=rf"{bound}=datetime\.datetime\(1, 1, 1, 0, 0\) has no local time"):
            storage.list_sessions(**{bound: datetime.datetime.min})
    utc = datetime.timezone.utc
    assert uids(since=datetime.datetime.min.replace(tzinfo=utc), until=datetime.datetime.max.replace(tzinfo=utc)) == [
        "old",
        "new",
    ]
    assert uids(since=-(10**400), until=10**400) == ["old", "new"]  # open bounds, as infinities are
    assert uids(since=10**400) == uids(until=-(10**400)) == []


def test_list_sessions_matches_keys_json_writes_escaped(storage: Any) -> None:
    """The session row's JSON is ASCII with escapes (``"caf\\u00e9"``), and SQLite's JSON paths compare a key with
    its escaped text: a non-ASCII key or one holding a control character matched nothing."""
    keys = ["café", "日本", "tab\there", "line\nbreak", "a.b", "it's", "", 'q"uote', "back\\slash"]
    with ContextVarSession("keys", storage=storage) as s:
        for i, key in enumerate(keys):
            s.metadata[key] = i
        s.metadata["value"] = "naïve\t日本"
        record_trace(name="t")
    for i, key in enumerate(keys):
        assert [r.uid for r in storage.list_sessions(metadata={key: i})] == [s.uid], key
        assert storage.list_sessions(metadata={key: i + 100}) == [], key
    assert [r.uid for r in storage.list_sessions(metadata={"value": "naïve\t日本", "café": 0}, limit=1)] == [s.uid]
