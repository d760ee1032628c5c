"""One wire format: what OTelSession puts in OTel baggage is session-core's, in both directions."""

from __future__ import annotations

import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import baggage, propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context, attach, detach

import session_core
from session_core import (
    ContextVarSession,
    InMemoryStorage,
    context_to_baggage_items,
    decode_baggage,
    encode_baggage,
    get_active_session_uids,
    get_current_metadata,
    get_current_session_name,
)
from session_otel import (
    OTelSession,
    baggage_context,
    get_current_otel_session,
    get_otel_metadata,
    get_otel_session_name,
)
from session_otel.attributes import attribute_value

# Keys OTel's own propagator round-trips unchanged: it strips edge whitespace from keys (str.strip), and writes a
# space as '+', which session-core reads back as '+' in keys (see test_keys_with_spaces_...: our global
# propagator writes session-core's encoding, where any key survives).
KEYS = st.text(st.characters(codec="utf-8", exclude_characters=" "), min_size=1, max_size=8).filter(
    lambda k: k == k.strip() and k not in ("name", "storage", "tracer")  # those are the session's parameters
)
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
METADATA = st.dictionaries(KEYS, JSON, max_size=5)
NAMES = st.text(min_size=1, max_size=24).filter(lambda n: n.strip(" \t") == n or n[:1] != '"')


def _enter(otel_ctx: Context):
    return attach(otel_ctx)


def test_the_baggage_while_active_is_exactly_session_cores_members():
    with OTelSession("exact", n=1, s="two words", l=[1, "x"], d={"k": None}) as s:
        items = {k: v for k, v in baggage.get_all().items() if k.startswith("session.")}
        assert items == context_to_baggage_items(s.to_context())
        assert items == s.baggage_items


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=NAMES, metadata=METADATA)
def test_otels_own_baggage_propagator_writes_what_decode_baggage_reads(name, metadata):
    with OTelSession(name, storage=InMemoryStorage(), **metadata) as s:
        carrier: dict[str, str] = {}
        W3CBaggagePropagator().inject(carrier)
        chain = s.uid_chain
    ctx = decode_baggage(carrier["baggage"], strict=True)
    assert ctx == {"v": 1, "name": name, "uid_chain": chain, "metadata": metadata}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=NAMES, metadata=METADATA)
def test_encode_baggage_extracted_by_otel_gives_the_same_metadata_with_types_intact(name, metadata):
    ctx = {"v": 1, "name": name, "uid_chain": ["a1", "b2"], "metadata": metadata}
    header = encode_baggage(ctx)
    token = attach(propagate.extract({"baggage": header}, context=Context()))
    try:
        assert get_otel_metadata() == metadata
        assert get_otel_session_name() == name
        assert get_current_metadata() == metadata
        assert get_active_session_uids() == ["a1", "b2"]
        assert get_current_otel_session() is None
    finally:
        detach(token)


def test_keys_with_spaces_travel_through_the_global_propagator():
    # The global propagator writes session members with session-core's encoder, so any key survives.
    with OTelSession("spaced", **{"a key": 1, "plus+key": "x y", " edge ": True}) as s:
        headers: dict[str, str] = {}
        propagate.inject(headers)
    assert decode_baggage(headers["baggage"], strict=True)["metadata"] == s.metadata


def test_text_utf8_cannot_encode_travels_through_both_propagators(caplog):
    """A lone surrogate (``os.fsdecode`` of a non-UTF-8 file name) made both propagators leave the whole session
    out of the carrier; name and values now arrive exactly, a key with its escape written out."""
    name, path = "caf\udce9", "/data/caf\udce9.jsonl"
    with caplog.at_level(logging.WARNING):
        with OTelSession(name, path=path, files=[path], **{"k\udce9": 1}) as s:
            ours: dict[str, str] = {}
            propagate.inject(ours)
            theirs: dict[str, str] = {}
            W3CBaggagePropagator().inject(theirs)
            chain = s.uid_chain
    assert "left out of an outgoing carrier" not in caplog.text
    for carrier in (ours, theirs):
        ctx = decode_baggage(carrier["baggage"], strict=True)
        assert ctx == {
            "v": 1,
            "name": name,
            "uid_chain": chain,
            "metadata": {"path": path, "files": [path], "k\\udce9": 1},
        }


def test_other_baggage_members_are_untouched_and_restored_on_exit():
    token = attach(baggage.set_baggage("tenant", "acme corp", baggage.set_baggage("region", "eu")))
    try:
        with OTelSession("outer", a=1):
            with OTelSession("inner", b=2):
                headers: dict[str, str] = {}
                propagate.inject(headers)
                assert baggage.get_baggage("tenant") == "acme corp"
            assert baggage.get_baggage("session.m.b") is None
            assert baggage.get_baggage("session.m.a") == "1"
        assert dict(baggage.get_all()) == {"tenant": "acme corp", "region": "eu"}
    finally:
        detach(token)
    extracted = W3CBaggagePropagator().extract(headers, context=Context())
    assert baggage.get_baggage("tenant", extracted) == "acme corp"
    assert baggage.get_baggage("region", extracted) == "eu"
    assert decode_baggage(headers["baggage"])["metadata"] == {"a": 1, "b": 2}


def test_the_innermost_session_of_any_backend_is_what_propagates():
    with OTelSession("otel", a=1), ContextVarSession("plain", b=2) as plain:
        headers: dict[str, str] = {}
        propagate.inject(headers)
        assert get_otel_metadata() == {"a": 1, "b": 2}
        assert get_otel_session_name() == "plain"
    ctx = decode_baggage(headers["baggage"])
    assert ctx["uid_chain"] == plain.uid_chain
    assert ctx["metadata"] == {"a": 1, "b": 2}
    assert ctx["name"] == "plain"


def test_the_ambient_provider_reads_baggage_with_no_session_object():
    header = encode_baggage({"name": "remote", "uid_chain": ["r00t", "c0de"], "metadata": {"user": "u1", "n": 7}})
    assert baggage_context() is None
    token = attach(W3CBaggagePropagator().extract({"baggage": header}, context=Context()))
    try:
        assert get_current_session_name() == "remote"
        assert session_core.current_context() == {
            "v": 1,
            "name": "remote",
            "uid_chain": ["r00t", "c0de"],
            "metadata": {"user": "u1", "n": 7},
        }
        with OTelSession(step=1) as child:  # continues the caller's session
            assert child.name == "remote"
            assert child.uid_chain[:2] == ["r00t", "c0de"]
            assert get_current_metadata() == {"user": "u1", "n": 7, "step": 1}
            assert baggage.get_baggage("session.uids") == "r00t.c0de." + child.uid
        assert get_current_metadata() == {"user": "u1", "n": 7}
    finally:
        detach(token)
    assert get_current_metadata() == {}


def test_a_thread_that_attached_the_otel_context_continues_the_session_object():
    import threading

    storage = InMemoryStorage()
    with OTelSession("carried", storage=storage, k=1) as parent:
        from opentelemetry.context import get_current

        otel_ctx = get_current()
        seen: list = []

        def worker() -> None:
            token = attach(otel_ctx)  # what OTel's threading instrumentation does
            try:
                seen.append((get_current_otel_session(), get_current_metadata()))
                with OTelSession(step=2) as child:
                    session_core.record_trace(name="in-thread")
                    seen.append(child.uid_chain)
            finally:
                detach(token)

        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
        assert seen[0] == (parent, {"k": 1})
        assert seen[1][0] == parent.uid
        assert [t.name for t in parent.llm_calls] == ["in-thread"]


def test_malformed_session_baggage_is_ignored_with_one_warning(caplog):
    token = attach(baggage.set_baggage("session.uids", "not valid!", baggage.set_baggage("session.name", "x")))
    try:
        with caplog.at_level(logging.WARNING, logger="session_core"):
            for _ in range(5):
                assert get_current_metadata() == {}
                assert get_otel_metadata() == {}
        assert caplog.text.count("session baggage ignored") == 1
        with OTelSession("fresh") as s:  # a fresh root, and the bad members are not forwarded
            assert s.uid_chain == [s.uid]
            assert baggage.get_baggage("session.uids") == s.uid
    finally:
        detach(token)


def test_signed_contexts_are_signed_on_the_way_out_and_checked_on_the_way_in(monkeypatch):
    monkeypatch.setenv("SESSION_SIGNING_KEY", "test-key")
    with OTelSession("signed", n=1) as s:
        headers: dict[str, str] = {}
        propagate.inject(headers)
    assert "session.sig=" in headers["baggage"]
    assert decode_baggage(headers["baggage"], signing_key="test-key", strict=True)["uid_chain"] == s.uid_chain
    forged = headers["baggage"].replace("session.m.n=1", "session.m.n=2")
    token = attach(W3CBaggagePropagator().extract({"baggage": forged}, context=Context()))
    try:
        assert get_current_metadata() == {}  # refused: tampered
    finally:
        detach(token)
    token = attach(W3CBaggagePropagator().extract(headers, context=Context()))
    try:
        assert get_current_metadata() == {"n": 1}
    finally:
        detach(token)


def test_without_a_span_provider_baggage_still_propagates():
    with OTelSession("api-only", tracer=trace.NoOpTracer(), k="v") as s:
        headers: dict[str, str] = {}
        propagate.inject(headers)
    assert decode_baggage(headers["baggage"])["uid_chain"] == [s.uid]


@pytest.mark.parametrize("value", [0.0, -0.0, 1, True, "1", [1], {"a": 1}, None])
def test_members_are_exact_for_values_that_compare_equal(value):
    with OTelSession("eq", v=value):
        member = baggage.get_baggage("session.m.v")
    expected = context_to_baggage_items({"name": "eq", "uid_chain": ["u"], "metadata": {"v": value}})["session.m.v"]
    assert member == expected


def test_oversized_metadata_without_an_addressable_storage_is_not_sent(caplog):
    token = attach(baggage.set_baggage("tenant", "acme"))
    try:
        with caplog.at_level(logging.WARNING, logger="session_otel"):
            with OTelSession("big", storage=InMemoryStorage(), blob="x" * 9000):
                first: dict[str, str] = {}
                propagate.inject(first)
                second: dict[str, str] = {}
                propagate.inject(second)
    finally:
        detach(token)
    assert first["baggage"] == second["baggage"] == "tenant=acme"  # never a truncated session
    assert caplog.text.count("not propagated") == 1


def test_oversized_metadata_travels_by_reference_through_shared_storage(tmp_path, monkeypatch):
    sql = pytest.importorskip("session_storage_sql")
    storage = sql.SqliteSessionStorage(tmp_path / "contexts.db")
    meta = {"blob": "x" * 9000, "n": 1}
    with OTelSession("big", storage=storage, **meta) as s:
        headers: dict[str, str] = {}
        propagate.inject(headers)
    assert "session.ref=1" in headers["baggage"]
    assert len(headers["baggage"]) < 1000
    monkeypatch.setenv("SESSION_STORAGE_URL", storage.url)  # the receiver is configured with the same store
    token = attach(W3CBaggagePropagator().extract(headers, context=Context()))
    try:
        assert get_current_metadata() == meta
        assert get_active_session_uids() == [s.uid]
    finally:
        detach(token)


def test_sessions_sharing_a_template_never_mix_up_equal_values():
    """Members and attributes are built from a template cached per name and metadata: values that compare
    equal but encode differently (1, True, 1.0; 0.0 and -0.0) must each get their own, in any order, twice."""
    values = [1, True, 1.0, 0.0, -0.0, "1", (1,), [1], None, 1, True, -0.0, 0.0]
    for _ in range(2):
        for value in values:
            with OTelSession("tmpl", v=value) as s:
                member = baggage.get_baggage("session.m.v")
                attrs = s.span_attributes()
            expected = context_to_baggage_items({"name": "tmpl", "uid_chain": ["u"], "metadata": {"v": value}})
            assert member == expected["session.m.v"], value
            assert attrs["session.id"] == s.uid and attrs["session.uid_chain"] == (s.uid,)
            if value is not None:
                got = attrs["session.metadata.v"]
                assert type(got) is type(value if not isinstance(value, list) else tuple(value)), value


_CONTAINERS = [
    [1], [True], [1.0], (1,), [0.0], [-0.0], [[1]], [[True]], ["x" * 300], [1, "a"], [], {},
    {"a": 1}, {"a": True}, {"a": 1.0}, {"a": 1, "b": 2}, {"b": 2, "a": 1}, {"1": 1}, {1: 1},
    {"a": [1, {"b": None}]}, {"a": [1, {"b": False}]}, list(range(100)), [[[[[1]]]]], [[[[[True]]]]],
]  # fmt: skip


@pytest.mark.parametrize("also", [{}, {"n": 7}], ids=["alone", "beside-a-scalar"])
def test_sessions_sharing_a_template_never_mix_up_equal_containers(also):
    """Templates and members are cached for small lists and dicts too, under a copy that keeps every type and
    the order: [1] and [True], {"a": 1, "b": 2} and {"b": 2, "a": 1} each get their own members, twice over."""
    for _ in range(2):
        for value in _CONTAINERS:
            with OTelSession("tmpl-c", v=value, **also) as s:
                members = {k: v for k, v in baggage.get_all().items() if k.startswith("session.m.")}
                attrs = s.span_attributes()
            metadata = {"v": value, **also}
            expected = context_to_baggage_items({"name": "tmpl-c", "uid_chain": ["u"], "metadata": metadata})
            assert members == {k: v for k, v in expected.items() if k.startswith("session.m.")}, value
            assert attrs["session.metadata.v"] == attribute_value(value), value


# Values that compare equal while encoding differently; the template cache must tell them apart wherever they sit
# in lists, tuples and dicts of every size around its limits (64 items, 4 levels, 256-character strings).
_LOOKALIKE = {0: (False, 0.0, -0.0), 1: (True, 1.0), 2.5: (2.5,), "1": ("1",), "x" * 256: ("x" * 256,), None: (None,)}
LEAVES = st.sampled_from([v for twins in _LOOKALIKE.values() for v in twins] + list(_LOOKALIKE) + ["x" * 257])
LOOKALIKES = st.recursive(
    LEAVES,
    lambda inner: (
        st.lists(inner, max_size=70)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(st.sampled_from(["a", "b", "x" * 257]), inner, max_size=3)
    ),
    max_leaves=80,
)


def _twin(value, draw):
    """`value` with every leaf swapped for one that compares equal (1 for True, -0.0 for 0.0, ...)."""
    if isinstance(value, (list, tuple)):
        return type(value)(_twin(item, draw) for item in value)
    if isinstance(value, dict):
        return {k: _twin(v, draw) for k, v in value.items()}
    for plain, twins in _LOOKALIKE.items():
        group = (plain, *twins)
        if repr(value) in map(repr, group):
            return draw(st.sampled_from(group))
    return value


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(metadata=st.dictionaries(st.sampled_from(["v", "w"]), LOOKALIKES, min_size=1, max_size=2), data=st.data())
def test_cached_members_and_attributes_equal_a_fresh_encoding_for_lookalike_values(metadata, data):
    """Sessions whose metadata compare equal but encode differently, one after the other (filling the template
    and member caches for each other): each one's baggage members and span attributes are what session-core and
    the attribute rules give for its own metadata."""
    twins = [metadata, {k: _twin(v, data.draw) for k, v in metadata.items()}]
    for metadata in twins + twins[::-1]:
        with OTelSession("lookalike", **metadata) as s:
            members = {k: v for k, v in baggage.get_all().items() if k.startswith("session.m.")}
            attrs = {k: v for k, v in s.span_attributes().items() if k.startswith("session.metadata.")}
        expected = context_to_baggage_items({"name": "lookalike", "uid_chain": ["u"], "metadata": metadata})
        assert members == {k: v for k, v in expected.items() if k.startswith("session.m.")}, metadata
        want = {f"session.metadata.{k}": attribute_value(v) for k, v in metadata.items()}
        # repr, as == cannot tell 1 from True, or 0.0 from -0.0
        assert repr(attrs) == repr({k: v for k, v in want.items() if v is not None}), metadata


def test_a_list_changed_in_place_between_sessions_is_sent_as_it_is_now():
    def member(tags: list[str]) -> str:
        items = context_to_baggage_items({"name": "mutable", "uid_chain": ["u"], "metadata": {"tags": tags}})
        return str(items["session.m.tags"])

    tags = ["rl"]
    with OTelSession("mutable", tags=tags):
        first = baggage.get_baggage("session.m.tags")
    tags.append("eval")
    with OTelSession("mutable", tags=tags):
        second = baggage.get_baggage("session.m.tags")
    assert first == member(["rl"]) and second == member(["rl", "eval"])


def test_a_list_inside_a_tuple_changed_in_place_is_sent_as_it_is_now_and_a_tuple_of_scalars_as_it_was():
    """A tuple of scalars cannot change, so its session's members are prepared once; a tuple holding a list can,
    through the list, and is prepared again on each entry like a list."""
    inner = [1]
    session = OTelSession("tuples", pair=("a", inner), fixed=("x", 2))
    with session:
        first = baggage.get_baggage("session.m.pair"), baggage.get_baggage("session.m.fixed")
    inner.append(True)
    with session:
        second = baggage.get_baggage("session.m.pair"), baggage.get_baggage("session.m.fixed")
    expected = context_to_baggage_items(
        {"name": "tuples", "uid_chain": ["u"], "metadata": {"pair": ["a", [1, True]], "fixed": ["x", 2]}}
    )
    assert first[1] == second[1] == expected["session.m.fixed"]
    assert first[0] != second[0] == expected["session.m.pair"]


def test_the_propagator_sends_what_session_http_sends_for_the_innermost_session(caplog):
    """session-core's `session_baggage` writes the header for both: an inner ContextVarSession is what goes out,
    and metadata JSON cannot carry is left out of the header, not the whole session."""
    with caplog.at_level(logging.WARNING):
        with OTelSession("outer", a=1), ContextVarSession("inner", handle=object(), b=2) as inner:
            headers: dict[str, str] = {}
            propagate.inject(headers)
            assert headers["baggage"] == session_core.session_baggage(inner)
    ctx = decode_baggage(headers["baggage"])
    assert ctx["uid_chain"] == inner.uid_chain and ctx["metadata"] == {"a": 1, "b": 2}
    assert any("metadata['handle']" in r.getMessage() for r in caplog.records)


def test_a_context_that_cannot_travel_is_left_out_and_reported_once_per_session(caplog):
    token = attach(baggage.set_baggage("tenant", "acme"))
    try:
        with caplog.at_level(logging.WARNING, logger="session_otel"):
            for _ in range(2):
                with ContextVarSession("wide", **{f"k{i}": i for i in range(200)}):
                    carriers = []
                    for _ in range(3):
                        headers: dict[str, str] = {}
                        propagate.inject(headers)
                        carriers.append(headers["baggage"])
                assert carriers == ["tenant=acme"] * 3  # other members still go; no session member does
    finally:
        detach(token)
    said = [r for r in caplog.records if "left out of an outgoing carrier" in r.getMessage()]
    assert len(said) == 2 and all("over the limit of 128" in r.getMessage() for r in said)


# -- routing metadata (the URL slug's payload) in every OTel situation ----------------------------------------
def test_routing_metadata_inside_an_otel_session_and_mixed_stacks_in_both_orders():
    with OTelSession("outer-otel", task=1) as outer, ContextVarSession("inner-cv", arm="a") as inner:
        meta = session_core.assemble_routing_metadata({"extra": True})
    assert meta == {
        "task": 1,
        "arm": "a",
        "session_name": "inner-cv",
        "session_uids": [outer.uid, inner.uid],
        "extra": True,
    }
    with ContextVarSession("outer-cv", task=2) as outer, OTelSession("inner-otel", session_name="kept") as inner:
        meta = session_core.assemble_routing_metadata()
    # a session_name already in the metadata is kept, not replaced by the session's name
    assert meta == {"task": 2, "session_name": "kept", "session_uids": [outer.uid, inner.uid]}
    ctx = session_core.context_from_routing_metadata(meta)
    assert ctx is not None and ctx["uid_chain"] == [outer.uid, inner.uid] and ctx["name"] == "kept"


def test_routing_metadata_from_baggage_a_server_extracted_with_no_session_object():
    header = encode_baggage({"name": "caller", "uid_chain": ["c1", "c2"], "metadata": {"k": 1, "f": 0.5}})
    token = attach(propagate.extract({"baggage": header, "traceparent": f"00-{'a' * 32}-{'b' * 16}-01"}))
    try:
        meta = session_core.assemble_routing_metadata()
    finally:
        detach(token)
    assert meta == {"k": 1, "f": 0.5, "session_name": "caller", "session_uids": ["c1", "c2"]}
    assert session_core.assemble_routing_metadata() == {}  # detached: no session anywhere


def test_a_thread_that_attached_the_otel_context_sends_the_sessions_metadata_as_it_changes():
    import threading

    from opentelemetry.context import get_current

    with OTelSession("carried", step=0) as parent:
        captured = get_current()
        sent: list = []

        def worker() -> None:
            token = attach(captured)  # what OTel's threading instrumentation does: no session on this thread's stack
            try:
                for step in range(3):
                    parent.metadata["step"] = step
                    headers: dict[str, str] = {}
                    propagate.inject(headers)  # what an instrumented HTTP client does
                    sent.append(decode_baggage(headers["baggage"], strict=True))
            finally:
                detach(token)

        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
    assert [ctx["metadata"] for ctx in sent] == [{"step": 0}, {"step": 1}, {"step": 2}]
    assert all(ctx["uid_chain"] == parent.uid_chain for ctx in sent)
