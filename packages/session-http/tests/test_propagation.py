"""inject / extract and the propagate_to allow-list, without a network (but for one stdlib server)."""

from __future__ import annotations

import logging

import pytest

from session_core import (
    ContextTooLarge,
    ContextVarSession,
    InvalidSessionContext,
    decode_baggage,
    encode_baggage,
    sign_context,
)
from session_http import HostAllowList, extract, inject, propagation


def _members(header: str) -> list[str]:
    return [m.split("=", 1)[0] for m in header.split(",")]


def test_outside_a_session_nothing_is_added():
    assert inject() == {}
    headers = {"baggage": "userId=alice", "accept": "*/*"}
    assert inject(headers) is headers and headers == {"baggage": "userId=alice", "accept": "*/*"}


def test_round_trip_keeps_chain_name_and_metadata_types():
    meta = {"i": 7, "f": 0.5, "b": True, "n": None, "s": "a b,c;d=é", "l": [1, "x"], "d": {"k": [False]}}
    with ContextVarSession("round trip", **meta) as session:
        headers = inject()
    ctx = extract(headers)
    assert ctx is not None
    assert ctx["name"] == "round trip" and ctx["uid_chain"] == session.uid_chain
    assert ctx["metadata"] == meta
    assert type(ctx["metadata"]["i"]) is int and type(ctx["metadata"]["f"]) is float


def test_merges_into_an_existing_header_case_insensitively():
    with ContextVarSession("m", k=1) as session:
        headers = inject({"Baggage": "userId=alice, tenant=acme;prop=1"})
    assert list(headers) == ["Baggage"]
    value = headers["Baggage"]
    assert value.startswith("userId=alice,tenant=acme;prop=1,session.v=1")
    assert extract(headers)["uid_chain"] == session.uid_chain  # type: ignore[index]


def test_session_members_already_there_are_replaced_not_duplicated():
    """As when session-otel's instrumentation already put the (or another) session into the header."""
    with ContextVarSession("stale", old=True):
        stale = inject({"baggage": "a=1"})["baggage"]
    with ContextVarSession("fresh", new=1) as fresh:
        headers = inject({"baggage": stale + ",b=2"})
    names = _members(headers["baggage"])
    assert names.count("session.uids") == 1 and names.count("session.v") == 1
    assert names[:2] == ["a", "b"]
    ctx = extract(headers)
    assert ctx is not None and ctx["uid_chain"] == fresh.uid_chain and ctx["metadata"] == {"new": 1}


def test_header_filled_by_opentelemetrys_propagator_carries_the_session_once():
    from opentelemetry import baggage, context
    from opentelemetry.baggage.propagation import W3CBaggagePropagator

    with ContextVarSession("otel-too", team="x") as session:
        items = {"session.v": "1", "session.name": "otel-too", "session.uids": ".".join(session.uid_chain)}
        otel_ctx = context.get_current()
        for key, value in {**items, "session.m.team": '"x"', "userId": "bob"}.items():
            otel_ctx = baggage.set_baggage(key, value, otel_ctx)
        carrier: dict[str, str] = {}
        W3CBaggagePropagator().inject(carrier, otel_ctx)
        assert "session.uids" in carrier["baggage"]
        inject(carrier)
    names = _members(carrier["baggage"])
    assert names.count("session.uids") == 1 and "userId" in names
    assert extract(carrier)["metadata"] == {"team": "x"}  # type: ignore[index]


def test_outside_a_session_a_header_given_by_the_caller_is_left_alone():
    with ContextVarSession("forwarded") as session:
        headers = inject({"baggage": "keep=1"})
    assert inject(dict(headers)) == headers  # e.g. a context forwarded on purpose
    assert extract(headers)["uid_chain"] == session.uid_chain  # type: ignore[index]
    assert inject(dict(headers), url="http://elsewhere/", propagate_to=[]) == {"baggage": "keep=1"}


def test_cached_header_follows_nesting_renaming_and_mutation():
    with ContextVarSession("outer", a=1) as outer:
        first = extract(inject())
        with ContextVarSession(b=[1]) as inner:
            nested = extract(inject())
            inner.metadata["b"].append(2)  # nested values are read live, as to_context() does
            mutated = extract(inject())
        outer.name = "renamed"
        renamed = extract(inject())
    assert first["uid_chain"] == outer.uid_chain  # type: ignore[index]
    assert nested["uid_chain"] == inner.uid_chain and nested["metadata"] == {"a": 1, "b": [1]}  # type: ignore[index]
    assert mutated["metadata"] == {"a": 1, "b": [1, 2]}  # type: ignore[index]
    assert renamed["name"] == "renamed"  # type: ignore[index]


def test_allow_list_strips_session_data_for_other_hosts():
    with ContextVarSession("allow"):
        allowed = inject(url="https://api.internal/v1", propagate_to=["api.internal"])
        denied = inject({"baggage": "keep=1"}, url="https://evil.example/x", propagate_to=["api.internal"])
        only_ours = inject({"baggage": encode_baggage({"name": "x", "uid_chain": ["u1"]})}, url="http://evil/")
        assert "baggage" in allowed and denied == {"baggage": "keep=1"}
        assert "session.uids" in only_ours["baggage"]  # default: every host
        stripped = inject(
            {"baggage": encode_baggage({"name": "x", "uid_chain": ["u1"]})}, url="http://evil/", propagate_to=[]
        )
    assert stripped == {}


def test_allow_list_default_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("SESSION_PROPAGATE_TO", "*.svc.internal, api.example.com")
    with ContextVarSession("env"):
        assert "baggage" in inject(url="http://a.b.svc.internal:8080/x")
        assert "baggage" in inject(url="https://API.example.com/")
        assert inject(url="https://svc.internal/") == {}  # a wildcard matches subdomains only
        assert inject(url="https://example.com/") == {}
        assert "baggage" in inject(url="https://example.com/", propagate_to="*")


def test_without_a_url_an_allow_list_in_force_keeps_the_session_in_with_one_warning(monkeypatch, caplog):
    """The target cannot be checked, so it is treated as a host outside the list (session-otel's propagator
    does the same for a target it does not know); no allow-list, or ``"*"``, sends as before."""
    monkeypatch.setattr(propagation, "_said_no_url", False)
    with caplog.at_level(logging.WARNING, logger="session_http"), ContextVarSession("no-url") as s:
        assert "session.uids" in inject()["baggage"]  # no allow-list in force: every host
        assert inject({"baggage": "keep=1"}, propagate_to=["api.internal"]) == {"baggage": "keep=1"}
        monkeypatch.setenv("SESSION_PROPAGATE_TO", "api.internal")
        assert inject() == {} and inject() == {}
        queued = inject(propagate_to="*")  # e.g. a message queue's headers: said explicitly
        assert extract(queued)["uid_chain"] == s.uid_chain  # type: ignore[index]
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "without url=" in warning and "api.internal" in warning and "propagate_to='*'" in warning


def test_host_allow_list_parsing():
    allow = HostAllowList(["Api.Example.com.", "*.svc", "::1", "[::2]"])
    assert allow.allows("api.example.com") and allow.allows("API.EXAMPLE.COM.")
    assert allow.allows("a.svc") and allow.allows("a.b.svc") and not allow.allows("svc")
    assert allow.allows("::1") and allow.allows("::2") and not allow.allows(None)
    assert allow.allows_url("http://[::1]:8000/x") and not allow.allows_url("http://[::3]/")
    assert HostAllowList(None).allows(None) and HostAllowList.from_setting("a, ,b").patterns == ("a", "b")
    for bad in ["https://api.example.com", "host:8080", "a*b.com", "user@host"]:
        with pytest.raises(ValueError, match="propagate_to entry"):
            HostAllowList([bad])
    with pytest.raises(TypeError):
        HostAllowList("a,b")  # type: ignore[arg-type]


def test_signing_on_the_way_out_and_checking_on_the_way_in(monkeypatch, caplog):
    caplog.set_level(logging.WARNING)
    with ContextVarSession("signed", x=1) as session:
        signed = inject(signing_key="k1")
        monkeypatch.setenv("SESSION_SIGNING_KEY", "k2")
        from_env = inject()
        monkeypatch.delenv("SESSION_SIGNING_KEY")
        unsigned = inject()
    assert "session.sig" in signed["baggage"] and "session.sig" in from_env["baggage"]
    assert extract(signed, signing_key="k1")["uid_chain"] == session.uid_chain  # type: ignore[index]
    assert extract(from_env, signing_key="k2") is not None
    assert extract(signed, signing_key="k2") is None
    assert extract(unsigned, signing_key="k1") is None
    with pytest.raises(InvalidSessionContext, match="not signed"):
        extract(unsigned, signing_key="k1", strict=True)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2


def test_signature_cannot_be_moved_onto_another_session():
    with ContextVarSession("victim") as victim:
        ctx = victim.to_context()
    with ContextVarSession("attacker") as attacker:
        mine = sign_context(attacker.to_context(), "key")
    replayed = encode_baggage(ctx) + f",session.ts={mine['ts']},session.sig={mine['sig']}"
    assert decode_baggage(replayed, signing_key="key") is None
    genuine = encode_baggage(attacker.to_context(), signing_key="key")
    assert decode_baggage(genuine, signing_key="key")["uid_chain"] == attacker.uid_chain  # type: ignore[index]


def test_extract_reads_mappings_and_asgi_pairs():
    with ContextVarSession("pairs") as session:
        value = inject()["baggage"]
    raw = value.encode()
    half = value.index(",session.uids")
    assert extract([(b"host", b"x"), (b"baggage", raw)])["uid_chain"] == session.uid_chain  # type: ignore[index]
    split = [(b"baggage", raw[:half]), (b"baggage", raw[half + 1 :])]  # several headers combine
    assert extract(split)["uid_chain"] == session.uid_chain  # type: ignore[index]
    assert extract({"BAGGAGE": value})["name"] == "pairs"  # type: ignore[index]
    assert extract({b"baggage": raw})["name"] == "pairs"  # type: ignore[index]
    assert extract({}) is None and extract([]) is None and extract({"baggage": "a=1"}) is None


def test_too_large_context_raises_on_inject():
    with ContextVarSession("big", blob="x" * 5000), pytest.raises(ContextTooLarge, match="limit"):
        inject()


def test_merged_header_over_the_limit_falls_back_to_the_encoder():
    others = ",".join(f"k{i}=" + "v" * 60 for i in range(120))  # ~7.9 KB of someone else's baggage
    with ContextVarSession("near-limit", note="y" * 600), pytest.raises(ContextTooLarge):
        inject({"baggage": others})
    with ContextVarSession("fits", n=1) as session:
        merged = inject({"baggage": others[:2000]})
    assert extract(merged)["uid_chain"] == session.uid_chain  # type: ignore[index]


def test_extract_reads_a_stdlib_servers_headers_every_baggage_header_combined():
    """``http.server``'s ``self.headers`` (an ``email.message.Message``: mapping-like, not a `Mapping`)."""
    import http.client
    import http.server
    import threading

    seen: list[object] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            try:
                seen.append(extract(self.headers))
            except Exception as exc:
                seen.append(exc)
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        with ContextVarSession("stdlib", k=1) as session:
            value = inject()["baggage"]
        conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=30)
        conn.putrequest("GET", "/")
        conn.putheader("Baggage", value)
        conn.putheader("baggage", "other=1")
        conn.endheaders()
        assert conn.getresponse().status == 204
        conn.close()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
    assert len(seen) == 1 and isinstance(seen[0], dict), seen
    assert seen[0]["uid_chain"] == session.uid_chain and seen[0]["metadata"] == {"k": 1}


def test_extract_combines_every_baggage_header_of_an_aiohttp_style_multidict():
    """aiohttp's ``request.headers`` is a ``CIMultiDictProxy``: ``get`` answers the first header, ``getall`` all."""
    multidict = pytest.importorskip("multidict")
    with ContextVarSession("multi", k=1) as session:
        value = inject()["baggage"]
    for headers in (
        multidict.CIMultiDict([("Baggage", "other=1"), ("baggage", value)]),
        multidict.CIMultiDictProxy(multidict.CIMultiDict([("BAGGAGE", "other=1"), ("Baggage", value)])),
        multidict.CIMultiDict([("baggage", value), ("baggage", "other=1")]),
    ):
        found = extract(headers)
        assert found is not None and found["uid_chain"] == session.uid_chain and found["metadata"] == {"k": 1}
    assert extract(multidict.CIMultiDict([("host", "x")])) is None  # no baggage header: no KeyError
    assert extract(multidict.MultiDict([("Baggage", value)]))["name"] == "multi"  # type: ignore[index]
    assert extract(multidict.CIMultiDict([("baggage", "a=1"), ("baggage", "b=2")])) is None


def test_extract_of_something_that_is_no_headers_says_so():
    with pytest.raises(TypeError, match="mapping of headers or"):
        extract(["baggage"])  # type: ignore[list-item]
