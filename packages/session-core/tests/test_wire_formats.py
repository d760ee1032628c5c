"""The context dict, W3C baggage and URL slug codecs: round trips, limits, hostile input, signing."""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import json
import logging
import math
import pickle
import string
from urllib.parse import quote_plus, unquote_plus, urljoin, urlsplit

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from session_core import (
    ContextTooLarge,
    ContextVarSession,
    InMemoryStorage,
    InvalidSessionContext,
    assemble_routing_metadata,
    baggage,
    build_proxied_base_url,
    context_from_baggage_items,
    context_from_routing_metadata,
    context_to_baggage_items,
    decode_baggage,
    decode_metadata_slug,
    encode_baggage,
    encode_metadata_slug,
    extract_metadata_from_path,
    get_current_metadata,
    make_context,
    session_baggage,
    sign_context,
    strip_session_members,
    validate_context,
    verify_context,
)
from session_core.baggage import MAX_HEADER_BYTES
from session_core.errors import SignatureError, UnserializableMetadata

HUGE = 10**5000  # str() and json.dumps raise ValueError past 4300 digits (sys.set_int_max_str_digits)
LONG = 10**700  # over MAX_INT_DIGITS (640), still printable (hypothesis prints the examples it runs)
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**53), 2**53), st.floats(allow_nan=False, allow_infinity=False), st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=6,
)
uids = st.text(alphabet=string.hexdigits.lower() + "_-", min_size=1, max_size=32)
contexts = st.builds(
    lambda name, chain, meta: {"v": 1, "name": name, "uid_chain": chain, "metadata": meta},
    st.text(min_size=1, max_size=40),
    st.lists(uids, min_size=1, max_size=5),
    st.dictionaries(st.text(min_size=1, max_size=20).filter(lambda k: k == k.strip()), json_values, max_size=6),
)


def same_json(a, b):
    """``a == b`` with JSON types told apart: 1, True and 1.0 differ, and so do 0.0 and -0.0."""
    if type(a) is not type(b):
        return False
    if type(a) is dict:
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if type(a) is list:
        return len(a) == len(b) and all(map(same_json, a, b))
    if type(a) is float:
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    return a == b


typed_scalars = st.one_of(
    json_scalars,
    st.sampled_from([0, 0.0, -0.0, 1, 1.0, True, False, 2**63, -(2**63), 10**30, 1e16, 5e-324, "", "\x00", '"']),
)
typed_values = st.recursive(
    typed_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.tuples(inner) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
odd_keys = st.text(max_size=12) | st.sampled_from(["", "=", ",", ";", "%41", "+", " a", "session.m.x", "\u00e9"])
typed_contexts = st.builds(
    lambda name, chain, meta: {"v": 1, "name": name, "uid_chain": chain, "metadata": meta},
    st.text(min_size=1, max_size=40) | st.sampled_from([" ", '"a"', "a,b", "%", "+ +", "\x00"]),
    st.lists(uids, min_size=1, max_size=4),
    st.dictionaries(odd_keys.filter(lambda k: not baggage._unencodable(k)), typed_values, max_size=8),
)


def ctx_of(**metadata):
    with ContextVarSession("wire", **metadata) as s:
        with ContextVarSession() as inner:
            return s, inner, inner.to_context()


class TestBaggage:
    def test_members_are_readable_and_typed(self):
        _, inner, ctx = ctx_of(task_id=7, user="alice", ratio=0.5, ok=True)
        header = encode_baggage(ctx)
        assert "session.name=wire" in header
        assert "session.m.task_id=7" in header
        assert f"session.uids={'.'.join(inner.uid_chain)}" in header
        back = decode_baggage(header)
        assert back == {**ctx, "metadata": ctx["metadata"]}
        assert type(back["metadata"]["task_id"]) is int

    @settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
    @given(contexts)
    def test_round_trip(self, ctx):
        try:
            header = encode_baggage(ctx)
        except ContextTooLarge:
            return
        assert decode_baggage(header, strict=True) == validate_context(ctx)

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        typed_contexts,
        st.sampled_from([None, "vendor=x;p=1", "session.m.z=1,k=v", "%20session.name=evil", "a=%C3%A9", "v=caf\u00e9"]),
    )
    @example({"v": 1, "name": "n", "uid_chain": ["a"], "metadata": {"t": True, "i": 1, "f": 1.0, "z": -0.0}}, None)
    def test_round_trip_keeps_json_types_signed_or_not(self, ctx, existing):
        """Name, uid chain and metadata come back with their JSON types (1, True, 1.0 and -0.0 apart), whatever
        `existing` held, signed or not; `existing`'s other members stay in front, verbatim."""
        valid = validate_context(ctx)
        for key in (None, "k3y"):
            try:
                header = encode_baggage(ctx, existing=existing, signing_key=key)
            except ContextTooLarge:
                return
            back = decode_baggage(header, strict=True, signing_key=key)
            assert back["name"] == valid["name"] and back["uid_chain"] == valid["uid_chain"]
            assert same_json(back["metadata"], valid["metadata"])
            assert header.startswith(strip_session_members(existing))

    @settings(max_examples=300)
    @given(contexts)
    def test_round_trip_through_opentelemetry_style_encoding(self, ctx):
        """OTel's propagator writes items with quote_plus and reads with unquote_plus: same context."""
        items = context_to_baggage_items(ctx)
        header = ",".join(f"{quote_plus(k)}={quote_plus(v)}" for k, v in items.items())
        if len(header) > MAX_HEADER_BYTES or any(len(m) > 4096 for m in header.split(",")):
            return
        assert decode_baggage(header, strict=True) == validate_context(ctx)
        # and what we write, OTel reads back as the same items
        ours = encode_baggage(ctx)
        otel_items = {}
        for member in ours.split(","):
            k, v = member.split("=", 1)
            otel_items[unquote_plus(k).strip()] = unquote_plus(v).strip()
        assert context_from_baggage_items(otel_items, strict=True) == validate_context(ctx)

    @settings(max_examples=2000)
    @given(st.one_of(st.text(max_size=300), st.binary(max_size=300), st.none(), st.integers()))
    def test_decoding_is_total(self, header):
        decode_baggage(header)  # returns a context or None, never raises

    @settings(max_examples=1000)
    @given(
        st.lists(
            st.sampled_from(
                [
                    "session.v=1",
                    "session.name=x",
                    "session.uids=ab.cd",
                    "session.m.k=1",
                    "session.m.k=%zz",
                    "session.m.j={",
                    "session.uids=!",
                    ",",
                    ";p=1",
                    "=",
                    "session.sig=x",
                    "session.ts=a",
                    "other=1",
                    " ",
                    "%",
                    "session.ref=1",
                    "session.v=2",
                    "session.name=%FF",
                ]
            ),
            max_size=10,
        )
    )
    def test_adversarial_member_soup_is_total(self, members):
        header = ",".join(members)
        result = decode_baggage(header)
        assert result is None or isinstance(result, dict)
        try:
            decode_baggage(header, strict=True)
        except InvalidSessionContext:
            pass

    def test_merges_into_existing_header_and_replaces_old_session_members(self):
        _, _, ctx = ctx_of(a=1)
        first = encode_baggage(ctx, existing="vendor=x;prop=1,other=2")
        assert first.startswith("vendor=x;prop=1,other=2,")
        again = encode_baggage(ctx, existing=first)
        assert again.count("session.name=") == 1
        assert strip_session_members(again) == "vendor=x;prop=1,other=2"

    @pytest.mark.parametrize(
        "member",
        [
            "%20session.m.admin=true",
            "+session.m.admin=true",
            "session.m.admin%20=true",
            "%09session.ref=1",
            "%73ession.m.admin=true",
        ],
    )
    def test_existing_members_opentelemetry_reads_as_session_members_are_replaced(self, member):
        """OpenTelemetry's propagator reads a key as ``unquote_plus(key).strip()``, so ``%20session.m.admin`` is
        ``session.m.admin`` to it: kept in `existing`, it reached an OTel-reading service as the session's metadata."""
        _, _, ctx = ctx_of(a=1)
        header = encode_baggage(ctx, existing=f"vendor=x,{member},other=2")
        assert strip_session_members(header) == "vendor=x,other=2"
        otel_items = {}
        for raw in header.split(","):
            k, v = raw.split("=", 1)
            otel_items[unquote_plus(k).strip()] = unquote_plus(v).strip()
        assert context_from_baggage_items(otel_items, strict=True) == ctx
        with ContextVarSession("s", a=1) as s:
            assert strip_session_members(session_baggage(s, existing=f"vendor=x,{member}")) == "vendor=x"

    @pytest.mark.parametrize("other", ["vendor=café", "vendör=1", "k=\u2603;p=\u00e9"])
    def test_another_vendors_non_ascii_member_costs_the_session_nothing(self, other):
        """A non-ASCII member anywhere in the header (W3C baggage is ASCII) refused the whole session, where
        OpenTelemetry's propagator leaves that member out: a service lost the caller's session whenever an upstream
        hop had put such a member in, and `encode_baggage(existing=...)` keeps it verbatim."""
        _, _, ctx = ctx_of(a=1)
        header = encode_baggage(ctx, existing=other)
        assert decode_baggage(header, strict=True) == ctx
        for raw in (header.encode("utf-8"), header.encode("latin-1", "replace")):
            assert decode_baggage(raw, strict=True) == ctx  # bytes as a server hands them over

    @pytest.mark.parametrize("member", ["session.m.café=1", "session.m.k=%22caf\u00e9%22", "session.name=\u00e9"])
    def test_a_non_ascii_member_of_ours_is_refused_naming_it(self, member):
        header = f"vendor=1,session.v=1,session.uids=ab,{member}" + ("" if "name" in member else ",session.name=x")
        with pytest.raises(InvalidSessionContext, match=r"non-ASCII|malformed"):
            decode_baggage(header, strict=True)
        assert decode_baggage(header.encode("utf-8")) is None

    @pytest.mark.parametrize(
        ("header", "problem"),
        [
            ("session.v=1,session.name=x", "'session.uids' is missing"),
            ("session.uids=ab,session.name=x,session.m.k=%7B", "not JSON"),
            ("session.uids=ab,session.name=x,session.m.k=%zz", "malformed value"),
            ("session.uids=ab,session.name=%FF", "invalid UTF-8"),
            ("session.uids=a!b,session.name=x", "not a dot-separated"),
            ("session.uids=ab,session.name=x,session.uids=cd", "appears twice"),
            ("session.v=9,session.uids=ab,session.name=x", "unsupported wire version"),
            ("session.uids=ab,session.name=x,session.m.k", "no '='"),
            ("session.uids=ab,session.name=x,session%2Em%2Ek", "no '='"),
            ("session.uids=ab,session.name=x,session.ref=1", "by reference"),
            ("session.uids=ab,session.name=" + "x" * 9000, "over the limit"),
            (",".join(f"k{i}=v" for i in range(200)) + ",session.uids=ab,session.name=x", "members"),
        ],
    )
    def test_malformed_headers_warn_once_naming_problem(self, header, problem, caplog):
        with caplog.at_level(logging.WARNING, logger="session_core.baggage"):
            assert decode_baggage(header) is None
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert problem in warnings[0].getMessage()
        assert len(warnings[0].getMessage()) < 400  # never the whole header
        with pytest.raises(InvalidSessionContext, match=problem.split("'")[0] or "."):
            decode_baggage(header, strict=True)

    def test_another_vendors_malformed_member_is_left_out_not_the_session(self, caplog):
        """A member without '=' is skipped by OpenTelemetry's propagator too: it must not cost the session."""
        _, _, ctx = ctx_of(k=1)
        header = encode_baggage(ctx)
        with caplog.at_level(logging.WARNING):
            for got in (
                decode_baggage(f"novalue,{header}, ;p=1 ,other=2", strict=True),
                decode_baggage(f"{header},vendor;prop"),
            ):
                assert (got["uid_chain"], got["metadata"]) == (ctx["uid_chain"], {"k": 1})
        assert caplog.records == []

    def test_no_session_members_is_none_without_warning(self, caplog):
        with caplog.at_level(logging.WARNING):
            assert decode_baggage("vendor=1,other=2") is None
            assert decode_baggage("") is None
        assert caplog.records == []

    def test_oversized_metadata_raises_context_too_large(self):
        _, _, ctx = ctx_of(blob="x" * 5000)
        with pytest.raises(ContextTooLarge) as info:
            encode_baggage(ctx)
        assert info.value.limit == 4096 and info.value.size > 4096
        assert isinstance(info.value, ValueError)
        many = {f"k{i}": "y" * 100 for i in range(100)}
        _, _, ctx = ctx_of(**many)
        with pytest.raises(ContextTooLarge, match="limit of 8192"):
            encode_baggage(ctx)

    def test_oversized_metadata_travels_by_reference(self, jsonl_storage):
        big = {f"k{i}": "y" * 100 for i in range(100)}
        with ContextVarSession("big", storage=jsonl_storage, **big) as s:
            ctx = s.to_context()
        header = encode_baggage(ctx, storage=jsonl_storage)
        assert "session.ref=1" in header and len(header) < 300
        restored = decode_baggage(header, storage=jsonl_storage)
        assert restored["metadata"] == big  # never truncated
        assert restored["uid_chain"] == [s.uid]
        # an in-process store is not addressable: no reference, a clear error instead
        with pytest.raises(ContextTooLarge):
            encode_baggage(ctx, storage=InMemoryStorage())

    def test_too_many_members_in_all_is_refused_by_the_sender_not_the_receivers(self, jsonl_storage):
        """By reference, the header was checked for its size only: with 178 members in `existing` it went out with
        182, which every receiver refuses. And without a storage the error named bytes (under the byte limit)."""
        ctx = {"v": 1, "name": "n", "uid_chain": ["a"], "metadata": {"k": 1}}
        existing = ",".join(f"o{i}=1" for i in range(178))
        with pytest.raises(ContextTooLarge, match="182 members of baggage, over the limit of 180") as info:
            encode_baggage(ctx, existing=existing, storage=jsonl_storage)
        assert (info.value.size, info.value.limit, info.value.unit) == (182, 180, "members")
        with pytest.raises(ContextTooLarge, match="182 members of baggage, over the limit of 180"):
            encode_baggage(ctx, existing=existing)
        fits = ",".join(f"o{i}=1" for i in range(176))
        header = encode_baggage(
            {**ctx, "metadata": {f"k{i}": i for i in range(10)}}, existing=fits, storage=jsonl_storage
        )
        assert "session.ref=1" in header and header.count(",") + 1 == 180
        assert decode_baggage(header, storage=jsonl_storage, strict=True)["metadata"] == {f"k{i}": i for i in range(10)}

    def test_a_reference_is_written_once_per_context_not_once_per_header(self, jsonl_storage):
        """Every request a session sends encodes its baggage: the context is saved when it changes only."""

        def saved() -> list[dict]:
            return [rec["context"] for rec in jsonl_storage._records() if "context" in rec]

        big = {f"k{i}": "y" * 100 for i in range(100)}
        with ContextVarSession("big", storage=jsonl_storage, **big) as s:
            ctx = s.to_context()
        for _ in range(5):
            assert "session.ref=1" in encode_baggage(ctx, storage=jsonl_storage)
        assert len(saved()) == 1
        changed = {**ctx, "metadata": {**big, "k0": "z" * 100}}
        header = encode_baggage(changed, storage=jsonl_storage)
        assert len(saved()) == 2
        assert decode_baggage(header, storage=jsonl_storage)["metadata"]["k0"] == "z" * 100
        encode_baggage(ctx, storage=jsonl_storage, signing_key="k")  # back to the first: saved again
        assert len(saved()) == 3 and saved()[-1]["metadata"] == big

    @pytest.mark.parametrize(("before", "after"), [(1, True), (1, 1.0), (0.0, -0.0), ([0], [False])])
    def test_a_reference_is_saved_again_when_a_value_changes_type_only(self, jsonl_storage, before, after):
        """The last-saved check used ``==``, which takes 1, True and 1.0 for one value: the storage kept the old
        type, and every receiver of the reference read it."""
        big = {f"k{i}": "y" * 100 for i in range(100)}
        with ContextVarSession("big", storage=jsonl_storage, **big, t=before) as s:
            first = encode_baggage(s.to_context(), storage=jsonl_storage)
            s.metadata["t"] = after
            header = encode_baggage(s.to_context(), storage=jsonl_storage)
        assert "session.ref=1" in first and "session.ref=1" in header
        assert repr(decode_baggage(header, storage=jsonl_storage)["metadata"]["t"]) == repr(after)


class TestSigning:
    KEY = "k3y-for-tests"

    def test_signed_round_trip(self):
        _, _, ctx = ctx_of(a=1)
        header = encode_baggage(ctx, signing_key=self.KEY)
        assert "session.sig=" in header and self.KEY not in header
        back = decode_baggage(header, signing_key=self.KEY, strict=True)
        assert back["metadata"] == {"a": 1}

    def test_unsigned_forged_tampered_replayed_are_refused(self):
        _, _, ctx = ctx_of(a=1)
        unsigned = encode_baggage(ctx)
        forged = encode_baggage(ctx, signing_key="attacker")
        good = encode_baggage(ctx, signing_key=self.KEY)
        tampered = good.replace("session.m.a=1", "session.m.a=2")
        _, _, other = ctx_of(a=1)
        replayed = encode_baggage(other).split(",")
        sig_members = [m for m in good.split(",") if m.startswith(("session.sig", "session.ts"))]
        replayed = ",".join([m for m in replayed if not m.startswith("session.sig")] + sig_members)
        for header, why in [
            (unsigned, "not signed"),
            (forged, "does not match"),
            (tampered, "does not match"),
            (replayed, "does not match"),
        ]:
            assert decode_baggage(header, signing_key=self.KEY) is None
            with pytest.raises(SignatureError if False else InvalidSessionContext, match=why):
                decode_baggage(header, signing_key=self.KEY, strict=True)

    @pytest.mark.parametrize("sig", ["%C3%A9", "%E2%80%AE" * 8, "%F0%9F%94%91"])
    def test_non_ascii_signature_is_refused_not_raised(self, sig, caplog):
        # A percent-encoded non-ASCII session.sig reached hmac.compare_digest as a str, which raises TypeError for
        # non-ASCII text: decoding was no longer total, and with a key configured any caller could make
        # extract() or an OTel server's get_current_metadata() raise.
        _, _, ctx = ctx_of(a=1)
        good = encode_baggage(ctx, signing_key=self.KEY)
        header = ",".join(m if not m.startswith("session.sig=") else f"session.sig={sig}" for m in good.split(","))
        with caplog.at_level(logging.WARNING, logger="session_core.baggage"):
            assert decode_baggage(header, signing_key=self.KEY) is None
        assert "does not match" in caplog.text
        with pytest.raises(InvalidSessionContext, match="does not match"):
            decode_baggage(header, signing_key=self.KEY, strict=True)
        items = {**context_to_baggage_items(sign_context(ctx, self.KEY)), "session.sig": unquote_plus(sig)}
        assert context_from_baggage_items(items, signing_key=self.KEY) is None
        with pytest.raises(SignatureError, match="does not match"):
            verify_context({**sign_context(ctx, self.KEY), "sig": unquote_plus(sig)}, self.KEY)

    def test_env_key_and_expiry(self, monkeypatch):
        monkeypatch.setenv("SESSION_SIGNING_KEY", self.KEY)
        _, _, ctx = ctx_of(a=1)
        signed = sign_context(ctx, self.KEY, now=1_000_000)
        with pytest.raises(SignatureError, match="expired"):
            verify_context(signed, self.KEY, max_age=60, now=1_000_100)
        assert verify_context(signed, self.KEY, max_age=None, now=2_000_000) is signed
        assert decode_baggage(encode_baggage(ctx)) is not None  # env key used on both sides

    def test_signed_dict_context(self):
        _, _, ctx = ctx_of(a=1)
        signed = sign_context(ctx, self.KEY)
        valid = validate_context(json.loads(json.dumps(signed)))
        verify_context(valid, self.KEY)
        with pytest.raises(SignatureError):
            verify_context({**valid, "uid_chain": ["ffff"]}, self.KEY)

    @pytest.mark.parametrize(
        "change",
        [
            {"storage_url": "postgresql://attacker.example/traces"},
            {"storage_url": None},
            {"backend": "contextvar"},
            {"otel": {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}},
            {"otel": None},
            {"later_field": 1},
        ],
        ids=["storage-redirected", "storage-removed", "backend", "otel-replaced", "otel-removed", "new-field"],
    )
    def test_every_field_of_a_signed_context_is_covered(self, change):
        """The signature covered only the name, uid chain and metadata: a signed context's ``storage_url`` could
        be pointed at another database (where a worker would write the session's traces) and still verify."""
        ctx = make_context("n", ["a", "b"], {"k": 1}, storage_url="sqlite:////srv/traces.db")
        ctx.update(backend="otel", otel={"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"})
        signed = sign_context(ctx, self.KEY)
        assert verify_context(validate_context(json.loads(json.dumps(signed))), self.KEY)
        tampered = {k: v for k, v in {**signed, **change}.items() if v is not None}
        with pytest.raises(SignatureError, match="does not match"):
            verify_context(tampered, self.KEY)

    def test_a_context_of_name_chain_and_metadata_is_signed_as_before(self):
        """What a baggage header carries is signed exactly as before the other fields were covered, so receivers
        of either version verify each other's headers; and a context with a storage_url still goes out signed."""
        ctx = {"v": 1, "name": "n", "uid_chain": ["a", "b"], "metadata": {"k": 1}}
        payload = json.dumps(["n", ["a", "b"], {"k": 1}, 1_000], sort_keys=True, separators=(",", ":")).encode()
        expected = base64.urlsafe_b64encode(hmac.new(self.KEY.encode(), payload, hashlib.sha256).digest())
        assert sign_context(ctx, self.KEY, now=1_000)["sig"] == expected.rstrip(b"=").decode()
        header = encode_baggage({**ctx, "storage_url": "sqlite:///t.db", "backend": "otel"}, signing_key=self.KEY)
        assert decode_baggage(header, signing_key=self.KEY, strict=True)["uid_chain"] == ["a", "b"]


FS_NAME = "caf\udce9"  # os.fsdecode(b"caf\xe9"): a non-UTF-8 file name on a UTF-8 system (a lone surrogate)
FS_KEY_SENT = "caf\\udce9"  # how a metadata key holding it travels: the surrogate as a backslash escape


class Field(str, enum.Enum):
    TASK = "task"


def test_str_enum_keys_become_plain_str_as_values_do():
    """A str-valued enum as a metadata key stayed in the context (values became plain str), so a pickled context
    named the enum's class and failed to unpickle where it cannot be imported (a spawned worker of a notebook)."""
    raw = {"v": 1, "name": "n", "uid_chain": ["a"], "metadata": {Field.TASK: Field.TASK, "x": [{Field.TASK: 1}]}}
    with ContextVarSession("n", **{Field.TASK: 1}) as s:
        contexts = [validate_context(raw), s.to_context()]
    for ctx in contexts:
        keys = [*ctx["metadata"], *(k for item in ctx["metadata"].get("x", []) for k in item)]
        assert keys and all(type(k) is str for k in keys)
        assert b"Field" not in pickle.dumps(ctx)


@pytest.mark.parametrize(
    "change",
    [
        {"name": None},
        {"uid_chain": None},
        {"uid_chain": 7},
        {"metadata": {"k": object()}},
        {"metadata": {1: "a", "b": 2}},
        {"metadata": {"k": float("nan")}},
    ],
)
def test_verify_context_refuses_what_is_no_context_with_signature_error(change):
    """A signed dict stripped of its name or uid chain, or given metadata JSON cannot write, made `verify_context`
    raise KeyError / TypeError / ValueError instead of refusing it."""
    signed = sign_context({"name": "n", "uid_chain": ["a"], "metadata": {"k": 1}}, "key")
    tampered = {k: v for k, v in {**signed, **change}.items() if v is not None}
    with pytest.raises(SignatureError, match="does not match"):
        verify_context(tampered, "key")


class TestTextUtf8CannotEncode:
    """Lone surrogates in a session's name, metadata keys or values: the session still travels (it raised
    UnicodeEncodeError, so a client or OTel's propagator sent no session at all)."""

    KEY = "k3y-for-tests"

    def test_name_and_values_read_back_exactly_with_nothing_to_warn_about(self, caplog):
        with ContextVarSession(FS_NAME, path=FS_NAME, paths=[FS_NAME, "é"], nested={FS_NAME: FS_NAME}) as s:
            ctx = s.to_context()
        with caplog.at_level(logging.WARNING):
            header = encode_baggage(ctx)
            assert header.isascii()
            assert decode_baggage(header, strict=True) == ctx
            items = context_to_baggage_items(ctx)  # what OTel's propagator sends, with quote_plus
            otel_header = ",".join(f"{quote_plus(k)}={quote_plus(v)}" for k, v in items.items())
            assert decode_baggage(otel_header, strict=True) == ctx
            assert context_from_baggage_items(items, strict=True) == ctx
        assert caplog.records == []

    @settings(max_examples=200)
    @given(st.text(st.characters(categories=("Cs", "L", "P", "Zs")), min_size=1, max_size=20), json_values)
    def test_any_name_and_string_value_read_back_exactly(self, name, value):
        ctx = {"v": 1, "name": name, "uid_chain": ["ab"], "metadata": {"k": name, "v": value}}
        assert decode_baggage(encode_baggage(ctx), strict=True) == ctx
        assert context_from_baggage_items(context_to_baggage_items(ctx), strict=True) == ctx

    def test_text_utf8_can_encode_is_sent_as_before(self):
        header = encode_baggage({"v": 1, "name": "café", "uid_chain": ["ab"], "metadata": {"k": "é", "é": 1}})
        assert (
            header == "session.v=1,session.name=caf%C3%A9,session.uids=ab,session.m.k=%22%C3%A9%22,session.m.%C3%A9=1"
        )

    def test_a_key_travels_escaped_with_one_warning(self, caplog, monkeypatch):
        monkeypatch.setattr(baggage, "_escaped_keys", set())  # warnings are once per key and process
        ctx = {
            "v": 1,
            "name": "n",
            "uid_chain": ["ab"],
            "metadata": {FS_NAME: 1, "other": 2, FS_NAME + "[]": [1], "é" + FS_NAME: 3},
        }
        sent = {FS_KEY_SENT: 1, "other": 2, FS_KEY_SENT + "[]": [1], "é" + FS_KEY_SENT: 3}
        with caplog.at_level(logging.WARNING, logger="session_core.baggage"):
            header = encode_baggage(ctx)
            assert encode_baggage(ctx) == header
            items = context_to_baggage_items(ctx)
        assert decode_baggage(header, strict=True)["metadata"] == sent
        assert context_from_baggage_items(items, strict=True)["metadata"] == sent
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 3 and repr(FS_NAME) in warnings[0] and "UTF-8" in warnings[0]

    def test_an_escaped_key_never_duplicates_a_key_already_there(self, caplog, monkeypatch):
        monkeypatch.setattr(baggage, "_escaped_keys", set())
        # two members with one key would make every receiver refuse the whole context
        ctx = {"v": 1, "name": "n", "uid_chain": ["ab"], "metadata": {FS_NAME: 1, FS_KEY_SENT: 2}}
        with caplog.at_level(logging.WARNING, logger="session_core.baggage"):
            header = encode_baggage(ctx)
            items = context_to_baggage_items(ctx)
        assert decode_baggage(header, strict=True)["metadata"] == {FS_KEY_SENT: 2}
        assert context_from_baggage_items(items, strict=True)["metadata"] == {FS_KEY_SENT: 2}
        assert "left out" in caplog.text

    def test_signed(self):
        ctx = {"v": 1, "name": FS_NAME, "uid_chain": ["ab"], "metadata": {FS_NAME: FS_NAME}}
        back = decode_baggage(encode_baggage(ctx, signing_key=self.KEY), signing_key=self.KEY, strict=True)
        assert back["name"] == FS_NAME and back["metadata"] == {FS_KEY_SENT: FS_NAME}

    def test_context_dicts_carry_it_exactly_as_json_and_pickle(self):
        with ContextVarSession(FS_NAME, **{FS_NAME: FS_NAME}) as s:
            ctx = s.to_context()
        text = json.dumps(ctx)
        assert text.isascii()  # json's default escapes it; ensure_ascii=False would give text UTF-8 cannot encode
        for copy in (json.loads(text), pickle.loads(pickle.dumps(ctx))):
            with ContextVarSession.from_context(copy) as child:
                assert child.name == FS_NAME and get_current_metadata() == {FS_NAME: FS_NAME}
        signed = sign_context(ctx, self.KEY)
        verify_context(validate_context(json.loads(json.dumps(signed))), self.KEY)


class TestSlug:
    @settings(max_examples=300)
    @given(st.dictionaries(st.text(max_size=20), json_values, max_size=6))
    def test_round_trip(self, meta):
        assert decode_metadata_slug(encode_metadata_slug(meta)) == json.loads(json.dumps(meta))

    @settings(max_examples=2000)
    @given(st.text(max_size=200))
    def test_decoding_raises_only_value_error(self, slug):
        try:
            result = decode_metadata_slug(slug)
        except ValueError:
            return
        assert isinstance(result, dict)

    @pytest.mark.parametrize(
        ("slug", "problem"),
        [
            ("v1.", "empty"),
            ("v1.!!", "base64url"),
            ("v1.bm90IGpzb24", "JSON"),
            ("v1.WzFd", "not an object"),
            ("v1." + "A" * 7000, "limit"),
        ],
    )
    def test_malformed_slugs(self, slug, problem):
        with pytest.raises(ValueError, match=problem):
            decode_metadata_slug(slug)

    @pytest.mark.parametrize(
        "meta",
        [{"k": "\ud800"}, {"k": ["ok", {"deep": "a\udfffb"}]}, {"\udc80": 1}, {"caf\udce9": "caf\udce9 \u00e9"}],
    )
    def test_lone_surrogates_travel_as_json_escapes_and_read_back_exactly(self, meta):
        """Text UTF-8 cannot encode (os.fsdecode of a non-UTF-8 file name) raised UnicodeEncodeError."""
        slug = encode_metadata_slug(meta)
        assert decode_metadata_slug(slug) == meta
        url = build_proxied_base_url("http://h/v1", meta)
        clean, got = extract_metadata_from_path(url[len("http://h") :] + "/chat/completions")
        assert clean == "/v1/chat/completions" and got == meta

    def test_proxied_base_url_and_extraction(self):
        url = build_proxied_base_url("http://127.0.0.1:8000/v1", {"task": 1})
        assert url.startswith("http://127.0.0.1:8000/meta/v1.") and url.endswith("/v1")
        path = url[len("http://127.0.0.1:8000") :] + "/chat/completions"
        clean, meta = extract_metadata_from_path(path)
        assert clean == "/v1/chat/completions" and meta == {"task": 1}
        assert extract_metadata_from_path("/v1/chat/completions") is None
        assert build_proxied_base_url("http://h/api", {}).endswith("/api/meta/v1.e30")
        assert extract_metadata_from_path("/meta/%%%/v1") is None  # not a slug: an app's own /meta/ route

    def test_proxied_base_url_keeps_query_and_fragment_out_of_the_path(self):
        url = build_proxied_base_url("https://h:8443/api/v1/?key=1&b=/v1#frag", {"task": 1})
        slug = encode_metadata_slug({"task": 1})
        assert url == f"https://h:8443/api/meta/{slug}/v1/?key=1&b=/v1#frag"
        assert build_proxied_base_url("http://h?x=1", {}) == "http://h/meta/v1.e30?x=1"

    @pytest.mark.parametrize(
        ("base", "expected"),
        [
            ("http://h/v1/", "http://h/meta/v1.e30/v1/"),
            ("http://h/v1", "http://h/meta/v1.e30/v1"),
            ("http://h/api/", "http://h/api/meta/v1.e30/"),
            ("http://h/api", "http://h/api/meta/v1.e30"),
            ("http://h/", "http://h/meta/v1.e30/"),
            ("http://h", "http://h/meta/v1.e30"),
        ],
    )
    def test_proxied_base_url_keeps_a_trailing_slash(self, base, expected):
        """A base URL given with a trailing '/' keeps it, so relative joining (`urljoin`) still lands under it."""
        url = build_proxied_base_url(base, {})
        assert url == expected
        if base.endswith("/"):
            assert urljoin(url, "chat/completions") == expected + "chat/completions"

    def test_an_apps_own_meta_route_is_not_a_slug(self):
        """A ``/meta/`` segment whose next segment is neither a slug nor prefixed like one is the app's own route:
        left alone, and a slug of ours further on is still found."""
        slug = encode_metadata_slug({"task": 1})
        assert extract_metadata_from_path("/api/meta/users/x") is None
        assert extract_metadata_from_path("/meta/users") is None
        assert extract_metadata_from_path("/meta/") is None
        assert extract_metadata_from_path(f"/api/meta/users/meta/{slug}/v1") == ("/api/meta/users/v1", {"task": 1})
        assert extract_metadata_from_path(f"/meta/meta/{slug}") == ("/meta", {"task": 1})
        base = build_proxied_base_url("http://h/meta/api/v1", {"task": 1})
        assert extract_metadata_from_path(urlsplit(base).path + "/models") == ("/meta/api/v1/models", {"task": 1})

    @pytest.mark.parametrize("segment", ["v1.bm90LWpzb24", "v1.", "v1.!!", "rllm1:WzFd"])
    def test_a_malformed_slug_of_ours_still_raises(self, segment):
        """A segment carrying our prefix is ours: malformed, it raises, even behind an app's own /meta/ route."""
        with pytest.raises(ValueError, match="metadata slug"):
            extract_metadata_from_path(f"/meta/{segment}/v1")
        with pytest.raises(ValueError, match="metadata slug"):
            extract_metadata_from_path(f"/api/meta/users/meta/{segment}/v1")

    def test_rllm_sdk_slugs_decode(self):
        """rLLM's SDK writes ``rllm1:`` + base64url of sorted compact JSON; its clients keep working."""
        meta = {"session_name": "rollout", "session_uids": ["0b6f3c1e-4a1d-4f7e-9a57-2d1c3b4a5e6f"], "step": 2}
        body = json.dumps(meta, separators=(",", ":"), sort_keys=True).encode()
        slug = "rllm1:" + base64.urlsafe_b64encode(body).rstrip(b"=").decode()
        assert decode_metadata_slug(slug) == meta
        clean, found = extract_metadata_from_path(f"/meta/{slug}/v1/chat/completions")
        assert clean == "/v1/chat/completions" and found == meta
        ctx = context_from_routing_metadata(found)
        assert ctx["uid_chain"] == meta["session_uids"] and ctx["metadata"] == {"step": 2}
        with pytest.raises(ValueError, match="empty"):
            decode_metadata_slug("rllm1:")


class TestRouting:
    def test_assemble_and_back(self):
        assert assemble_routing_metadata() == {}
        assert assemble_routing_metadata({"x": 1}) == {"x": 1}
        with ContextVarSession("route", task=3) as outer, ContextVarSession(arm="a") as inner:
            meta = assemble_routing_metadata({"extra": True})
        assert meta == {
            "task": 3,
            "arm": "a",
            "session_name": "route",
            "session_uids": [outer.uid, inner.uid],
            "extra": True,
        }
        ctx = context_from_routing_metadata(json.loads(json.dumps(meta)))
        assert ctx["uid_chain"] == [outer.uid, inner.uid] and ctx["metadata"] == {"task": 3, "arm": "a", "extra": True}
        assert context_from_routing_metadata({"x": 1}) is None
        with pytest.raises(InvalidSessionContext):
            context_from_routing_metadata({"session_uids": "nope", "session_name": "x"})


anything = st.recursive(
    st.none() | st.booleans() | st.integers() | st.sampled_from([LONG, -LONG]) | st.floats() | st.text() | st.binary(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
context_like = st.fixed_dictionaries(
    {},
    optional={
        "v": anything,
        "name": anything,
        "uid_chain": anything | st.lists(uids),
        "metadata": anything,
        "storage_url": anything,
        "backend": anything,
        "otel": anything,
        "ts": anything,
        "sig": anything,
    },
)


@settings(max_examples=1500)
@given(context_like | anything)
@example({"v": LONG})
@example({"name": "n", "uid_chain": ["a"], "metadata": {"k": [LONG]}})
@example({"name": "n", "uid_chain": [LONG]})
@example({"name": "n", "uid_chain": ["a"], "ts": -LONG})
@example({"v": 1, "name": "n", "uid_chain": ["a"], "backend": "b"})
def test_validate_context_raises_only_invalid_session_context(ctx):
    try:
        valid = validate_context(ctx)
    except InvalidSessionContext:
        return
    assert validate_context(valid) == valid
    json.dumps(valid)
    # every optional field given is kept (checked), none dropped
    assert all(
        field in valid for field in ("storage_url", "backend", "otel", "ts", "sig") if ctx.get(field) is not None
    )


@pytest.mark.parametrize(
    "extra", [{"storage_url": "sqlite:///traces.db"}, {"backend": "otel"}, {"otel": {"traceparent": "00-x"}}]
)
def test_an_optional_field_is_kept_when_metadata_is_left_out(extra):
    """With ``v``, ``name``, ``uid_chain`` and one optional field but no ``metadata``, the optional field was
    dropped without a word (a worker then wrote to an in-memory storage), and a malformed one was not refused."""
    ctx = {"v": 1, "name": "n", "uid_chain": ["a"], **extra}
    assert validate_context(ctx) == {**ctx, "metadata": {}}
    field = next(iter(extra))
    with pytest.raises(InvalidSessionContext, match=field):
        validate_context({**ctx, field: 5})


@pytest.mark.parametrize(
    ("ctx", "field"),
    [
        ({"v": HUGE}, "'v'"),
        ({"v": -HUGE}, "'v'"),
        ({"uid_chain": [HUGE]}, "'uid_chain'"),
        ({"uid_chain": ["a", "x" * 10_000]}, "'uid_chain'"),
        ({"metadata": {"k": HUGE}}, "'metadata'"),
        ({"metadata": {"k": [{"deep": -HUGE}]}}, "'metadata'"),
        ({"metadata": {HUGE: 1}}, "'metadata'"),
        ({"metadata": {"k": 10**640}}, "'metadata'"),
        ({"ts": HUGE, "sig": "x"}, "'ts'"),
        ({"ts": -(2**63), "sig": "x"}, "'ts'"),
    ],
)
def test_ints_too_long_for_json_text_are_refused_naming_the_field(ctx, field):
    """An int of more than 4300 digits made `validate_context` (and encoders) raise a bare ValueError from str(),
    or return a context json.dumps cannot write; messages stay short."""
    with pytest.raises(InvalidSessionContext, match=field) as info:
        validate_context({"v": 1, "name": "n", "uid_chain": ["a"], **ctx})
    assert len(str(info.value)) < 300


def test_ints_up_to_640_digits_travel_and_longer_ones_are_refused_by_every_encoder(caplog):
    longest = 10**640 - 1  # every Python reads and writes 640 digits, whatever its int_max_str_digits
    ctx = {"v": 1, "name": "n", "uid_chain": ["a"], "metadata": {"k": longest, "neg": -longest}}
    assert decode_baggage(encode_baggage(ctx), strict=True) == validate_context(ctx)
    assert decode_metadata_slug(encode_metadata_slug(ctx["metadata"])) == ctx["metadata"]
    assert json.loads(json.dumps(validate_context(ctx))) == ctx
    too_long = {"v": 1, "name": "n", "uid_chain": ["a"], "metadata": {"k": 10**640}}
    with pytest.raises(InvalidSessionContext, match="640 digits"):
        encode_baggage(too_long)
    with pytest.raises(ValueError, match="640 digits"):
        encode_metadata_slug({"k": HUGE})
    with ContextVarSession("n", k=HUGE, ok=1) as s:
        with pytest.raises(UnserializableMetadata, match="640 digits"):
            s.to_context()
        with caplog.at_level(logging.WARNING):
            assert decode_baggage(session_baggage(s))["metadata"] == {"ok": 1}  # left out, as any value JSON refuses
    # the receiving side: a member holding such an int is refused, not an exception
    header = "session.v=1,session.name=n,session.uids=a,session.m.k=" + "9" * 700
    assert decode_baggage(header) is None
    with pytest.raises(InvalidSessionContext, match="640 digits"):
        decode_baggage(header, strict=True)
    signed = sign_context({"name": "n", "uid_chain": ["a"], "metadata": {}}, "k", now=-(10**30))
    with pytest.raises(SignatureError, match="out of range"):
        verify_context(signed, "k", max_age=10)  # raised OverflowError


@pytest.mark.parametrize("value", ["1e999", "NaN", "-Infinity", "[" * 40 + "]" * 40])
def test_baggage_refuses_json_that_contexts_do_not_allow(value):
    from urllib.parse import quote

    header = f"session.v=1,session.name=n,session.uids=abc,session.m.k={quote(value)}"
    assert decode_baggage(header) is None
    with pytest.raises(InvalidSessionContext, match="metadata"):
        decode_baggage(header, strict=True)


@pytest.mark.parametrize("chain", [["a.b"], ["root", "a.b"], ["a", ""], ["a", "x" * 65], ["a", 1]])
def test_uid_chains_that_would_not_read_back_are_refused(chain):
    """A uid is 1-64 of [0-9A-Za-z_-]: a dot inside one would come back from baggage as two uids."""
    with pytest.raises(InvalidSessionContext, match="uid_chain"):
        validate_context({"v": 1, "name": "n", "uid_chain": chain, "metadata": {}})
