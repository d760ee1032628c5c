"""`session_baggage`: a session's outgoing header, the same as `encode_baggage` of its context, cached per
session object without ever going stale, and never refused for metadata JSON cannot carry."""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from session_core import (
    ContextTooLarge,
    ContextVarSession,
    InMemoryStorage,
    decode_baggage,
    encode_baggage,
    portable_metadata,
    session_baggage,
    strip_session_members,
)
from session_core import outgoing as _outgoing


def test_the_header_is_the_encoded_context_and_is_reused_while_nothing_changes():
    with ContextVarSession("out", a=1, nested={"k": [1, "two"]}, f=1.5) as s:
        first = session_baggage(s)
        assert first == encode_baggage(s.to_context())
        assert session_baggage(s) is first  # cached: not encoded again
        assert decode_baggage(first)["metadata"] == {"a": 1, "nested": {"k": [1, "two"]}, "f": 1.5}


def test_text_utf8_cannot_encode_does_not_stop_the_session_travelling():
    """A lone surrogate (``os.fsdecode`` of a non-UTF-8 file name) raised UnicodeEncodeError here, so every
    instrumented client and OTel's propagator sent no session at all."""
    with ContextVarSession("caf\udce9", path="/data/caf\udce9") as s:
        header = session_baggage(s)
        assert header == encode_baggage(s.to_context()) and header.isascii()
    assert decode_baggage(header, strict=True) == s.to_context()


def test_the_cached_header_follows_nesting_renaming_and_mutation():
    with ContextVarSession("outer", a=1) as outer:
        before = session_baggage(outer)
        with ContextVarSession(b=[1]) as inner:
            nested = decode_baggage(session_baggage(inner))
            inner.metadata["b"].append(2)  # a nested value changed in place is seen, as to_context sees it
            mutated = decode_baggage(session_baggage(inner))
        outer.name = "renamed"
        renamed = decode_baggage(session_baggage(outer))
        outer.metadata["a"] = 2
        changed = decode_baggage(session_baggage(outer))
        assert changed["metadata"] == outer.to_context()["metadata"] == {"a": 2}
    assert decode_baggage(before)["uid_chain"] == outer.uid_chain
    assert nested["uid_chain"] == inner.uid_chain and nested["metadata"] == {"a": 1, "b": [1]}
    assert mutated["metadata"] == {"a": 1, "b": [1, 2]}
    assert renamed["name"] == "renamed"


def test_a_session_entered_under_another_parent_gets_its_new_chain():
    child = ContextVarSession("child")
    with ContextVarSession("first") as first, child:
        assert decode_baggage(session_baggage(child))["uid_chain"] == [first.uid, child.uid]
    with ContextVarSession("second") as second, child:
        assert decode_baggage(session_baggage(child))["uid_chain"] == [second.uid, child.uid]


def test_existing_members_are_kept_and_old_session_members_replaced():
    with ContextVarSession("old") as old:
        stale = session_baggage(old, existing="tenant=acme")
    with ContextVarSession("new", k="v") as s:
        header = session_baggage(s, existing=f" {stale} , other=1")
        assert header.startswith("tenant=acme,other=1,session.")
        assert header.count("session.uids=") == 1
        assert decode_baggage(header)["uid_chain"] == [s.uid]
        assert strip_session_members(header) == "tenant=acme,other=1"


@pytest.mark.parametrize("member", ["%73ession.m.admin=true", "%73ession.m.k=%22x%22", "%73ession.name=evil"])
def test_percent_encoded_session_members_of_existing_are_replaced_too(member):
    """`%73ession.m.admin` reads as ``session.m.admin`` (to us and to OpenTelemetry): session_baggage's shortcut for
    headers without ``session.`` kept it, so whoever wrote `existing` added metadata to the session (or, with a key
    the session has, got the whole context refused as a duplicate), where encode_baggage replaced it."""
    with ContextVarSession("s", k="v") as s:
        header = session_baggage(s, existing=f"tenant=acme,{member}")
        assert header == encode_baggage(s.to_context(), existing=f"tenant=acme,{member}")
        assert strip_session_members(header) == "tenant=acme"
        assert decode_baggage(header, strict=True) == s.to_context()


existing_members = st.lists(
    st.sampled_from(["a=1", "%73ession.m.k=1", "%73ession.m.q=1", "x=%2C;p=1", "session.m.q=2", "%41=%42", " b = c "]),
    max_size=4,
).map(",".join)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.sampled_from(["k", "q", "n"]), st.integers() | st.text(max_size=5), max_size=3),
    existing_members,
)
@example({"k": 1}, "%73ession.m.q=1")
@example({"k": 1}, "%73ession.m.k=1")
def test_session_baggage_decodes_as_encode_baggage_whatever_existing_holds(metadata, existing):
    with ContextVarSession("s", **metadata) as s:
        ours = session_baggage(s, existing=existing)
        theirs = encode_baggage(s.to_context(), existing=existing)
    assert strip_session_members(ours) == strip_session_members(theirs)
    assert decode_baggage(ours) == decode_baggage(theirs) == s.to_context()


def test_non_ascii_members_of_existing_count_in_utf8_bytes():
    """`existing` was measured in characters: with non-ASCII text in it (kept verbatim) the header went out over
    8192 bytes, and every receiver refused it, so the session was lost without a word to the sender."""
    existing = "v=" + "\u00e9" * 4060  # 4062 characters, 8122 bytes
    with ContextVarSession("n", k=1) as s:
        with pytest.raises(ContextTooLarge):
            session_baggage(s, existing=existing)
        with pytest.raises(ContextTooLarge):
            encode_baggage(s.to_context(), existing=existing)
        fits = session_baggage(s, existing="v=" + "\u00e9" * 4000)  # 8002 bytes: still room for the session
    assert len(fits.encode()) <= 8192 and decode_baggage(fits)["uid_chain"] == s.uid_chain


@pytest.mark.parametrize(
    ("before", "after"),
    [(1, True), (True, 1), (1, 1.0), (0, False), (0.0, -0.0), (-0.0, 0.0), ([1], [True]), ({"x": 1}, {"x": 1.0})],
)
def test_a_value_changed_to_an_equal_one_of_another_type_is_sent_as_changed(before, after):
    """The cached header was checked with ``==``, which takes 1, True and 1.0 (and 0.0 and -0.0) for one value:
    after ``metadata["k"] = True`` the header still said 1, so the service read an int where the session had a bool.
    """
    with ContextVarSession("n", k=before) as s:
        first = decode_baggage(session_baggage(s))["metadata"]["k"]
        s.metadata["k"] = after
        second = decode_baggage(session_baggage(s))["metadata"]["k"]
        assert repr(first) == repr(before) and repr(second) == repr(after)
        assert session_baggage(s) == encode_baggage(s.to_context())


def test_a_nested_value_changed_in_place_to_another_type_is_sent_as_changed():
    with ContextVarSession("n", k=[1, {"x": 0.0}]) as s:
        session_baggage(s)
        s.metadata["k"][0] = True  # in place: no metadata change is noted
        s.metadata["k"][1]["x"] = -0.0
        assert repr(decode_baggage(session_baggage(s))["metadata"]["k"]) == "[True, {'x': -0.0}]"


def test_containers_without_numbers_are_compared_by_value_alone_and_still_follow_changes():
    """Only a container holding a number or a bool can change type behind ``==``; one of strings is checked by
    ``==`` alone (so the header stays cached), and a number it gains later is watched from then on."""
    with ContextVarSession("n", tags=["rl"]) as s:
        first = session_baggage(s)
        assert session_baggage(s) is first  # cached: no type walk needed for strings
        s.metadata["tags"].append("eval")  # in place
        assert decode_baggage(session_baggage(s))["metadata"]["tags"] == ["rl", "eval"]
        s.metadata["tags"].append(1)
        assert decode_baggage(session_baggage(s))["metadata"]["tags"] == ["rl", "eval", 1]
        s.metadata["tags"][2] = True  # equal to 1: only the type changed
        assert repr(decode_baggage(session_baggage(s))["metadata"]["tags"]) == "['rl', 'eval', True]"


def test_tuple_metadata_is_cached_and_what_it_holds_is_still_followed():
    """A tuple value (sent as a JSON list) never equalled the list in the checked metadata, so a session with one
    encoded its header again on every request. Tuples of scalars cannot change; what a tuple holds can."""
    with ContextVarSession("n", tags=("rl", "eval")) as s:
        first = session_baggage(s)
        assert session_baggage(s) is first
        assert decode_baggage(first)["metadata"]["tags"] == ["rl", "eval"]
    with ContextVarSession("n", pair=("x", [1])) as s:
        session_baggage(s)
        assert session_baggage(s) is session_baggage(s)
        s.metadata["pair"][1].append(2)  # in place, inside the tuple
        assert decode_baggage(session_baggage(s))["metadata"]["pair"] == ["x", [1, 2]]
    with ContextVarSession("n", points=[(1, 2)]) as s:
        session_baggage(s)
        s.metadata["points"][0] = (True, 2)  # equal to (1, 2): only a type inside the tuple changed
        assert repr(decode_baggage(session_baggage(s))["metadata"]["points"]) == "[[True, 2]]"


_scalars = st.sampled_from([0, 1, True, False, 1.0, 0.0, -0.0, 2, "1", "", None])
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(st.sampled_from(["a", "b"]), inner, max_size=2)
    ),
    max_leaves=6,
)
_steps = st.lists(
    st.tuples(st.sampled_from(["set", "outer", "append", "item", "retype"]), st.integers(0, 20), _values),
    max_size=8,
)


def _containers(value: Any) -> list[Any]:
    """Every list and dict reachable from `value` (through tuples too), outermost first."""
    found = [value] if isinstance(value, (list, dict)) else []
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else ()
    for item in items:
        found += _containers(item)
    return found


def _equal_of_another_type(old: Any) -> list[Any]:
    """The values == `old` that encode differently (1, True, 1.0; 0, False, 0.0, -0.0)."""
    if type(old) not in (int, float, bool):
        return []
    group = [1, True, 1.0] if old == 1 else [0, False, 0.0, -0.0] if old == 0 else []
    return [v for v in group if repr(v) != repr(old)]


@settings(max_examples=200, deadline=None)
@given(first=_values, steps=_steps)
@example(first={"a": 0, "b": 0}, steps=[("set", 0, {"b": 0, "a": 0}), ("retype", 1, 0)])
def test_the_cached_header_follows_any_sequence_of_changes(first: Any, steps: list[tuple[str, int, Any]]) -> None:
    """Metadata set anew (here and in the enclosing session), and containers changed in place: appended to,
    an item replaced, or an item replaced by an equal value of another type (1 and True, 0.0 and -0.0), which
    only the cache's type check sees. After each step the header carries what the encoded context carries, as if
    never cached: the same values of the same types. (A dict set anew with the same items in another order may
    keep the order it was first sent in: JSON objects have none.)"""

    def carried(header: str) -> str:
        return json.dumps(decode_baggage(header), sort_keys=True)  # tells 1, True, 1.0 and -0.0 apart

    with ContextVarSession("outer", o=1) as outer, ContextVarSession("inner", v=first) as s:
        assert session_baggage(s) == encode_baggage(s.to_context())
        for kind, pick, value in steps:
            containers = [c for v in s.metadata.values() for c in _containers(v)]
            if kind == "set":
                s.metadata[["v", "w"][pick % 2]] = value
            elif kind == "outer":
                outer.metadata["o"] = value
            elif containers:
                target = containers[pick % len(containers)]
                keys = list(target) if isinstance(target, dict) else list(range(len(target)))
                if kind == "append" or not keys:
                    if isinstance(target, list):
                        target.append(value)
                    else:
                        target["a" if "a" not in target else "b"] = value
                else:
                    key = keys[pick % len(keys)]
                    same = _equal_of_another_type(target[key])
                    target[key] = same[pick % len(same)] if kind == "retype" and same else value
            assert carried(session_baggage(s)) == carried(encode_baggage(s.to_context())), (kind, dict(s.metadata))


def test_a_value_whose_comparison_raises_costs_the_cache_not_the_request():
    class Touchy(float):  # JSON writes it as a float; comparing it raises
        def __eq__(self, other: object) -> bool:
            raise RuntimeError("no comparisons")

        def __ne__(self, other: object) -> bool:
            raise RuntimeError("no comparisons")

        __hash__ = float.__hash__

    with ContextVarSession("n", values=[Touchy(1.5)]) as s:
        for _ in range(3):
            assert session_baggage(s) == encode_baggage(s.to_context())


def test_the_header_stays_cached_across_unrelated_metadata_changes():
    with ContextVarSession("n", k=1, t=[1, 2.5]) as s:
        first = session_baggage(s)
        with ContextVarSession("other") as other:
            other.metadata["x"] = 1  # any change rebuilds every merged view
        assert session_baggage(s) == first
        assert session_baggage(s) is session_baggage(s)


def test_metadata_json_cannot_carry_is_left_out_once_with_one_warning(caplog):
    marker = object()
    with caplog.at_level(logging.WARNING, logger="session_core.outgoing"):
        for _ in range(3):
            with ContextVarSession("odd", obj=marker, ok=1, inf=float("inf")) as s:
                ctx = decode_baggage(session_baggage(s))
                assert ctx["uid_chain"] == [s.uid] and ctx["metadata"] == {"ok": 1}
    warnings = [r for r in caplog.records if r.name == "session_core.outgoing"]
    assert len(warnings) == 1  # once per key, not once per request or per session
    assert "metadata['obj']" in warnings[0].getMessage() and "metadata['inf']" in warnings[0].getMessage()


def test_portable_metadata_leaves_out_what_json_cannot_carry_and_shares_the_once_per_key_warning(caplog):
    handle = object()
    with caplog.at_level(logging.WARNING, logger="session_core.outgoing"):
        kept = portable_metadata({"ok": (1, 2), "handle_only_here": handle, "nan_only_here": float("nan")}, "p")
        assert kept == {"ok": [1, 2]}  # JSON's own shape: tuples are lists
        assert portable_metadata({"handle_only_here": handle}, "p") == {}
        with ContextVarSession("p", handle_only_here=handle, ok=1) as s:
            assert decode_baggage(session_baggage(s))["metadata"] == {"ok": 1}
    (warning,) = [r.getMessage() for r in caplog.records]  # the first call said it; neither later path repeats it
    assert "session 'p'" in warning and "handle_only_here" in warning and "nan_only_here" in warning


def test_signed_members_verify_and_are_signed_again_after_the_ttl(monkeypatch):
    with ContextVarSession("signed", a=1) as s:
        header = session_baggage(s, signing_key="secret")
        assert decode_baggage(header, signing_key="secret")["metadata"] == {"a": 1}
        assert session_baggage(s, signing_key="secret") is header
        assert "session.sig=" not in session_baggage(s)  # another key (none): its own entry
        monkeypatch.setenv("SESSION_SIGNING_KEY", "from-env")
        from_env = session_baggage(s)
        assert decode_baggage(from_env, signing_key="from-env")["uid_chain"] == [s.uid]
        monkeypatch.setattr(_outgoing, "SIGNED_TTL", 0.0)
        again = session_baggage(s, signing_key="secret")
        assert session_baggage(s, signing_key="secret") is not again  # expired at once: signed afresh


def test_too_large_metadata_travels_by_reference_or_raises(jsonl_storage):
    big = {f"k{i}": "y" * 100 for i in range(100)}
    with ContextVarSession("big", storage=jsonl_storage, **big) as s:
        header = session_baggage(s, existing="tenant=acme")
        assert "session.ref=1" in header and header.startswith("tenant=acme,")
        assert decode_baggage(header, storage=jsonl_storage)["metadata"] == big
    with ContextVarSession("big", storage=InMemoryStorage(), **big) as s, pytest.raises(ContextTooLarge):
        session_baggage(s)  # an in-process store cannot be reached by reference: a clear error


def test_a_merge_too_big_for_one_header_moves_the_metadata_by_reference(jsonl_storage):
    existing = ",".join(f"o{i}={'z' * 60}" for i in range(100))  # about 6.6 KB of other members
    meta = {f"k{i}": "y" * 50 for i in range(30)}  # fits alone, not together with `existing`
    with ContextVarSession("merge", storage=jsonl_storage, **meta) as s:
        alone = session_baggage(s)
        assert "session.ref=1" not in alone
        header = session_baggage(s, existing=existing)
    assert header.startswith(existing + ",") and "session.ref=1" in header
    assert decode_baggage(header, storage=jsonl_storage)["metadata"] == meta


class _Foreign:
    """Another SessionProtocol implementation: only the public attributes."""

    def __init__(self) -> None:
        self.name = "foreign"
        self.uid_chain = ["f1", "f2"]
        self.storage = None

    def to_context(self) -> dict[str, Any]:
        return {"v": 1, "name": self.name, "uid_chain": list(self.uid_chain), "metadata": {"x": 1}}


def test_any_session_protocol_implementation_is_encoded():
    header = session_baggage(_Foreign())
    assert decode_baggage(header) == {"v": 1, "name": "foreign", "uid_chain": ["f1", "f2"], "metadata": {"x": 1}}


def test_threads_each_send_their_own_session():
    results: dict[int, tuple[list[str], dict[str, Any]]] = {}
    barrier = threading.Barrier(16)

    def work(i: int) -> None:
        with ContextVarSession(f"t{i}", i=i) as s:
            barrier.wait()
            for _ in range(50):
                ctx = decode_baggage(session_baggage(s))
                assert ctx["uid_chain"] == s.uid_chain
            results[i] = (ctx["uid_chain"], ctx["metadata"])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(16))
    assert all(meta == {"i": i} for i, (_, meta) in results.items())
    assert len({tuple(chain) for chain, _ in results.values()}) == 16
