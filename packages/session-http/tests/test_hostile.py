"""Hostile input: random and adversarial baggage headers and paths never become a 5xx or an exception.

Against live servers (uvicorn + SessionMiddleware, wsgiref + SessionWSGIMiddleware) with one persistent
keep-alive client, and directly against the ASGI callable with byte strings no HTTP client would send.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from session_core import ContextVarSession, encode_baggage, encode_metadata_slug, get_current_session
from session_http import SessionMiddleware, SessionWSGIMiddleware


def _fuzz(examples: int) -> settings:
    """Reproducible (derandomized, no example database) and free of timing health checks: a live server."""
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    )


with ContextVarSession("valid", experiment="e", step=3, tags=["a"]) as _valid:
    VALID_BAGGAGE = encode_baggage(_valid.to_context())
    VALID_SLUG = encode_metadata_slug({"session_name": "valid", "session_uids": _valid.uid_chain, "k": 1})

# -- strategies ---------------------------------------------------------------------------------------------
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=200)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
nasty_values = st.sampled_from(
    [
        "",
        "%",
        "%z",
        "%zz",
        "%e9",
        "%C3%28",
        "%00",
        '"',
        '"unterminated',
        "[1,2",
        '{"a":',
        "1e999",
        "-0",
        "NaN",
        "Infinity",
        "null",
        "true",
        "[" * 2000 + "]" * 2000,
        "x" * 5000,
        "a;b",
        "%22%5C%22",
        "+",
        "++%2B",
        "0" * 5000,
        "-" * 70,
        "abc..def",
        "." * 64,
        "\\u0000",
        '"\\ud800"',
    ]
)
uid_chains = st.lists(st.text("0123456789abcdefXYZ_-", min_size=1, max_size=70), min_size=0, max_size=70).map(".".join)
member_keys = st.sampled_from(
    [
        "session.v",
        "session.name",
        "session.uids",
        "session.m.k",
        "session.m.",
        "session.ref",
        "session.ts",
        "session.sig",
        "session%2Euids",
        "session.m.%zz",
        "session.m.k%20x",
        "other",
        "",
        " session.uids",
    ]
) | header_text.filter(lambda t: "," not in t and "=" not in t)
member_values = (
    nasty_values | uid_chains | json_values.map(lambda v: quote(json.dumps(v), safe="")) | header_text.map(quote)
)
members = st.builds(
    lambda k, v, p: f"{k}={v}{p}", member_keys, member_values, st.sampled_from(["", ";p=1", ";", ";;=;", "=="])
)


def _mutate(base: str, at: int, cut: int, insert: str) -> str:
    at %= len(base) + 1
    return base[:at] + insert + base[at + cut :]


baggage_headers = st.one_of(
    st.lists(members, max_size=14).map(",".join),
    header_text,
    st.builds(_mutate, st.just(VALID_BAGGAGE), st.integers(0, 10_000), st.integers(0, 40), header_text),
    st.just(VALID_BAGGAGE + "," + ",".join(f"session.m.k{i}=1" for i in range(200))),
    st.just("session.uids=abc," * 600),
)
routing = st.fixed_dictionaries(
    {},
    optional={
        "session_uids": st.one_of(
            st.lists(st.text("0123456789abcdef", min_size=1, max_size=40), max_size=5), json_values
        ),
        "session_name": st.one_of(st.text(max_size=30), json_values),
        "k": json_values,
    },
)
slug_segments = st.one_of(
    routing.map(encode_metadata_slug),
    st.text("ABCDEFabcdef0123456789-_", max_size=120).map(lambda s: "v1." + s),
    st.builds(_mutate, st.just(VALID_SLUG), st.integers(0, 500), st.integers(0, 5), st.text("A_-.!", max_size=3)),
    header_text.map(lambda t: quote(t, safe="")),
)
paths = st.one_of(
    st.builds(
        lambda pre, seg, post: f"{pre}/meta/{seg}{post}",
        st.sampled_from(["", "/api", "/meta"]),
        slug_segments,
        st.sampled_from(["", "/", "/v1/chat/completions", "/meta/v1.e30/x"]),
    ),
    header_text.map(lambda t: "/" + quote(t, safe="/%:@!$&'()*+,;=")),
)


# -- live servers -------------------------------------------------------------------------------------------
class Client:
    """One keep-alive connection; reconnects when the server closed it (e.g. after its own 400)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.statuses: list[int] = []

    def get(self, path: str, baggage: str) -> tuple[int, bytes]:
        for attempt in range(2):
            try:
                self.conn.request("GET", path, headers={"baggage": baggage})
                response = self.conn.getresponse()
                body = response.read()
                self.statuses.append(response.status)
                return response.status, body
            except (ConnectionError, http.client.HTTPException):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                if attempt:
                    raise
        raise AssertionError("unreachable")


def _check(status: int, body: bytes, strict: bool) -> None:
    assert status < 500, body[:300]
    if status == 200:
        info = json.loads(body)
        assert isinstance(info["metadata"], dict)
        assert info["session"] is None or len(info["session"]["uid_chain"]) >= 2
    elif strict:
        assert status in (400, 404, 414, 431), status  # ours, or the server's own refusal


@pytest.mark.parametrize("strict", [False, True])
def test_asgi_live_server_survives_hostile_headers_and_paths(serve_asgi, probe_apps, server_errors, caplog, strict):
    caplog.set_level(logging.ERROR)  # thousands of "refused" warnings are the point; keep them out of memory
    server = serve_asgi(SessionMiddleware(probe_apps[0], strict=strict))
    client = Client(server.port)

    @_fuzz(500)
    @given(path=paths, baggage=baggage_headers)
    def run(path: str, baggage: str) -> None:
        status, body = client.get(path, baggage)
        _check(status, body, strict)

    run()
    assert server_errors.records == []
    assert 200 in client.statuses and (400 in client.statuses) == strict


def test_wsgi_live_server_survives_hostile_headers_and_paths(serve_wsgi, probe_apps, server_errors, caplog):
    caplog.set_level(logging.ERROR)
    server = serve_wsgi(SessionWSGIMiddleware(probe_apps[1]), kind="wsgiref")
    client = Client(server.port)

    @_fuzz(300)
    @given(path=paths, baggage=baggage_headers)
    def run(path: str, baggage: str) -> None:
        status, body = client.get(path, baggage)
        _check(status, body, strict=False)

    run()
    assert server_errors.records == []
    assert 200 in client.statuses


# -- the ASGI callable with raw bytes -----------------------------------------------------------------------
raw_bytes = st.binary(max_size=300) | st.builds(
    lambda b, x: b + x, st.just(VALID_BAGGAGE.encode()), st.binary(max_size=50)
)


@pytest.mark.parametrize("strict", [False, True])
def test_middleware_never_raises_on_raw_bytes(caplog, strict):
    caplog.set_level(logging.ERROR)
    calls: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        calls.append({"metadata": scope["state"]["session_metadata"], "session": get_current_session()})
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    middleware = SessionMiddleware(app, strict=strict)
    loop = asyncio.new_event_loop()

    @_fuzz(800)
    @given(
        baggage=st.lists(raw_bytes, max_size=3),
        traceparent=st.none() | st.binary(max_size=60) | st.just(b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01"),
        path=st.text(max_size=80) | paths,
        raw_path=st.none() | st.binary(max_size=80),
    )
    def run(baggage: list[bytes], traceparent: bytes | None, path: str, raw_path: bytes | None) -> None:
        headers = [(b"baggage", value) for value in baggage]
        if traceparent is not None:
            headers.append((b"traceparent", traceparent))
        scope = {"type": "http", "path": path, "raw_path": raw_path, "headers": headers}
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b""}

        before = len(calls)
        loop.run_until_complete(middleware(scope, receive, send))
        status = sent[0]["status"]
        assert status in ((200, 400) if strict else (200,))
        if status == 200:
            assert len(calls) == before + 1 and isinstance(calls[-1]["metadata"], dict)
        assert get_current_session() is None  # nothing left on the caller's stack

    try:
        run()
    finally:
        loop.close()
    assert calls
