"""Changing a session's metadata while it is open: every later read sees it (traces, helpers, contexts, headers),
in the session and its descendants, and leaving a session still restores the outer view exactly."""

from __future__ import annotations

import copy
import json
import pickle

from session_core import (
    ContextVarSession,
    InMemoryStorage,
    decode_baggage,
    get_current_metadata,
    record_trace,
    restore_session,
    session_baggage,
)
from session_core.session import SessionMetadata, metadata_version


def test_a_step_counter_updated_in_place_labels_each_trace():
    with ContextVarSession("rollout", storage=InMemoryStorage(), step=0) as rollout:
        for step in range(3):
            rollout.metadata["step"] = step
            record_trace(name="llm")
    assert [t.metadata["step"] for t in rollout.llm_calls] == [0, 1, 2]


def test_descendants_see_an_ancestors_change_and_leaving_restores_the_outer_view():
    with ContextVarSession("outer", a=1, b=1) as outer:
        with ContextVarSession("inner", b=2) as inner:
            assert get_current_metadata() == {"a": 1, "b": 2}
            outer.metadata["a"] = 10
            outer.metadata["b"] = 10  # overridden below: the inner value still wins
            assert get_current_metadata() == {"a": 10, "b": 2}
            assert inner.to_context()["metadata"] == {"a": 10, "b": 2}
            inner.metadata["c"] = 3
            assert inner.merged_metadata() == {"a": 10, "b": 2, "c": 3}
        assert get_current_metadata() == {"a": 10, "b": 10}


def test_every_way_of_changing_the_dict_is_seen():
    with ContextVarSession("ops", a=1, b=2, c=3) as s:
        expected = {"a": 1, "b": 2, "c": 3}
        changes = [
            lambda m: m.__delitem__("a"),
            lambda m: m.update(d=4),
            lambda m: m.update({"e": 5}, f=6),
            lambda m: m.pop("b"),
            lambda m: m.pop("missing", None),
            lambda m: m.setdefault("g", 7),
            lambda m: m.popitem(),
            lambda m: m.__ior__({"h": 8}),
        ]
        for change in changes:
            before = metadata_version()
            change(s.metadata)
            change(expected)
            assert metadata_version() != before
            assert get_current_metadata() == expected
        s.metadata.clear()
        assert get_current_metadata() == {}
        s.metadata = {"new": True}  # replacing the dict is seen too, and the new one is tracked
        assert get_current_metadata() == {"new": True}
        s.metadata["more"] = 1
        assert get_current_metadata() == {"new": True, "more": 1}
        assert isinstance(s.metadata, SessionMetadata)


def test_outgoing_headers_and_restored_sessions_carry_the_change():
    with ContextVarSession("sender", phase="plan") as s:
        first = decode_baggage(session_baggage(s))
        s.metadata["phase"] = "act"
        second = decode_baggage(session_baggage(s))
        ctx = s.to_context()
    assert first["metadata"] == {"phase": "plan"} and second["metadata"] == {"phase": "act"}
    child = restore_session(ctx)
    with child:
        child.metadata["worker"] = 1
        assert get_current_metadata() == {"phase": "act", "worker": 1}


def test_the_metadata_is_still_a_plain_dict_to_everything_else():
    with ContextVarSession("plain", a=1, nested=[1]) as s:
        meta = s.metadata
        assert isinstance(meta, dict) and meta == {"a": 1, "nested": [1]}
        assert json.loads(json.dumps(meta)) == {"a": 1, "nested": [1]}
        assert type(pickle.loads(pickle.dumps(meta))) is dict  # unpickles without session-core's class
        assert type(copy.copy(meta)) is dict and type(copy.deepcopy(meta)) is dict
        assert type(meta | {"b": 2}) is dict
        before = metadata_version()
        assert meta.get("a") == 1 and list(meta) == ["a", "nested"]  # reading changes nothing
        assert metadata_version() == before


def test_threads_asking_for_the_metadata_at_once_share_one_dict():
    """The contract behind the lock in `BaseSession.metadata`. On a GIL build the unlocked window is a few
    bytecodes, too narrow to hit here; without a GIL (3.13t) it is not."""
    import threading

    for _ in range(20):
        session = ContextVarSession("shared", n=0)
        barrier = threading.Barrier(8)

        def write(i: int, s: ContextVarSession = session, b: threading.Barrier = barrier) -> None:
            b.wait()
            s.metadata[f"k{i}"] = i  # the first access from eight threads at once

        threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert session.merged_metadata() == {"n": 0, **{f"k{i}": i for i in range(8)}}  # no write lost
