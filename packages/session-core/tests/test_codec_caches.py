"""The codec's caches (encoded metadata members, decoded header members, parsed values, a session's checked
metadata) never change a result: whatever was cached before, the answer is the uncached one."""

from __future__ import annotations

import logging
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from session_core import (
    ContextVarSession,
    context_to_baggage_items,
    decode_baggage,
    decode_metadata_slug,
    encode_baggage,
    encode_metadata_slug,
    make_context,
    session_baggage,
)
from session_core import baggage as _baggage

# Equal as dict keys (1 == True == 1.0, 0 == False == 0.0 == -0.0), yet each encodes differently.
COLLIDING = [1, True, 1.0, 0, False, 0.0, -0.0, "1", "0", "true", None, 1.5, -1, "-0.0", ""]


def _clear_caches() -> None:
    for cache in (_baggage._member_cache, _baggage._decoded_members, _baggage._parsed_values, _baggage._key_cache):
        cache.clear()


def _uncached_header(ctx: dict) -> str:
    """The header as the general (cache-free) item encoder writes it."""
    return ",".join(_baggage._encode_items(context_to_baggage_items(ctx)))


def _same(a: object, b: object) -> bool:
    """Equal with the same type, and the same sign for zeros."""
    if type(a) is not type(b) or a != b:
        return False
    return not isinstance(a, float) or math.copysign(1, a) == math.copysign(1, b)


def _ctx(**metadata: object) -> dict:
    return make_context("n", ["abc", "def"], metadata)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(COLLIDING), min_size=1, max_size=30), st.booleans())
def test_equal_values_of_different_types_encode_and_decode_as_uncached(values, one_key):
    _clear_caches()
    for i, value in enumerate(values):
        ctx = _ctx(k=value) if one_key else _ctx(**{f"k{i % 3}": value, "z": values[-1 - i]})
        header = encode_baggage(ctx)
        assert header == _uncached_header(ctx)
        back = decode_baggage(header, strict=True)
        assert back is not None
        assert back["metadata"].keys() == ctx["metadata"].keys()
        assert all(_same(back["metadata"][k], v) for k, v in ctx["metadata"].items())


@pytest.mark.parametrize("order", [COLLIDING, COLLIDING[::-1], sorted(COLLIDING, key=repr)])
def test_every_order_of_colliding_values(order):
    _clear_caches()
    for value in order + order:
        ctx = _ctx(k=value)
        assert encode_baggage(ctx) == _uncached_header(ctx)
        assert _same(decode_baggage(encode_baggage(ctx), strict=True)["metadata"]["k"], value)


def test_decoded_value_cache_keeps_types_and_signs():
    _clear_caches()
    texts = {"1": 1, "1.0": 1.0, "true": True, "-0.0": -0.0, "0.0": 0.0, "0": 0, "%221%22": "1", "null": None}
    for _ in range(2):
        for text, expected in texts.items():
            got = decode_baggage(f"session.v=1,session.name=n,session.uids=abc,session.m.k={text}", strict=True)
            assert _same(got["metadata"]["k"], expected)


def test_lists_and_dicts_are_fresh_on_every_decode():
    header = encode_baggage(_ctx(items=[1, 2], nested={"a": [3]}))
    first = decode_baggage(header, strict=True)
    first["metadata"]["items"].append(99)
    first["metadata"]["nested"]["a"].append(99)
    assert decode_baggage(header, strict=True)["metadata"] == {"items": [1, 2], "nested": {"a": [3]}}


BAD_AFTER_GOOD = [
    (",session.m.a=2", "appears twice"),
    (",session.m.c", "no '='"),
    (",session.m.b=%zz", "malformed value"),
    (",session.m.b=NaN", "'metadata'"),
    (",session.m.b=" + "1" * 5000, "over the limit"),
]


@pytest.mark.parametrize(("suffix", "problem"), BAD_AFTER_GOOD)
def test_refusals_are_the_same_once_members_are_cached(suffix, problem, caplog):
    good = encode_baggage(_ctx(a=1, s="x"))
    decode_baggage(good)  # caches its members
    with caplog.at_level(logging.WARNING, logger="session_core.baggage"):
        assert decode_baggage(good + suffix) is None
    assert len(caplog.records) == 1 and problem in caplog.records[0].getMessage()


def test_an_empty_metadata_key_travels_as_contexts_and_slugs_carry_it():
    with ContextVarSession("empty-key", **{"": 1, "k": "v"}) as s:
        header = session_baggage(s)
        ctx = s.to_context()
    assert decode_baggage(header, strict=True)["metadata"] == {"": 1, "k": "v"}
    assert decode_baggage(encode_baggage(ctx), strict=True)["metadata"] == ctx["metadata"] == {"": 1, "k": "v"}
    assert decode_metadata_slug(encode_metadata_slug({"": 1})) == {"": 1}


def test_to_context_copies_and_rechecks():
    with ContextVarSession("outer", a=1) as outer, ContextVarSession("inner", b="x") as inner:
        first = inner.to_context()
        first["metadata"]["b"] = "changed"
        second = inner.to_context()
        assert second["metadata"] == {"a": 1, "b": "x"}
        assert second["metadata"] is not first["metadata"]
        assert second == make_context("inner", inner.uid_chain, {"a": 1, "b": "x"}, inner.storage_url)
        assert outer.to_context()["metadata"] == {"a": 1}
    with ContextVarSession("t", t=(1, 2)) as s:  # not flat: converted by make_context, every time
        assert s.to_context()["metadata"] == {"t": [1, 2]}
        s.to_context()["metadata"]["t"].append(3)
        assert s.to_context()["metadata"] == {"t": [1, 2]}
