"""Outgoing instrumentation with real requests and httpx (sync and async) clients against a live echo server.

The echo server (no middleware) answers with the ``baggage`` header it received. "127.0.0.1" and "localhost"
reach the same server under two host names, so one is allowed and the other is not.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import pytest

from session_core import ContextVarSession, MissingOptionalDependency, decode_baggage
from session_http import (
    inject,
    instrument_httpx,
    instrument_requests,
    uninstrument_httpx,
    uninstrument_requests,
)

HAVE_REQUESTS = importlib.util.find_spec("requests") is not None
HAVE_HTTPX = importlib.util.find_spec("httpx") is not None


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Echo the baggage header; ``/redirect?to=URL`` answers 307 to URL."""
    if scope["type"] != "http":
        return
    headers = dict(scope["headers"])
    if scope["path"] == "/redirect":
        target = parse_qs(scope["query_string"].decode())["to"][0]
        await send({"type": "http.response.start", "status": 307, "headers": [(b"location", target.encode())]})
        await send({"type": "http.response.body", "body": b""})
        return
    baggage = headers.get(b"baggage")
    body = json.dumps({"baggage": None if baggage is None else baggage.decode()}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
def echo_port(serve_asgi) -> int:
    return serve_asgi(echo).port  # type: ignore[no-any-return]


@pytest.fixture(autouse=True)
def _uninstrument() -> Iterator[None]:
    yield
    uninstrument_requests()
    uninstrument_httpx()


def _has_session(answer: dict[str, Any]) -> bool:
    return answer["baggage"] is not None and "session.uids=" in answer["baggage"]


# -- missing extras -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("function", "module", "extra"),
    [("instrument_requests", "requests", "requests"), ("instrument_httpx", "httpx", "httpx")],
)
def test_missing_library_names_the_extra_to_install(function, module, extra):
    """Run where the library cannot be imported (blocked in a subprocess, so this runs in every variant)."""
    code = (
        f"import sys; sys.modules[{module!r}] = None\n"
        "import session_http\n"
        "from session_core import MissingOptionalDependency\n"
        "try:\n"
        f"    session_http.{function}()\n"
        "except MissingOptionalDependency as exc:\n"
        "    print(exc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert f'pip install "session-http[{extra}]"' in proc.stdout
    assert f"session_http.{function} requires the optional dependency {module!r}" in proc.stdout


@pytest.mark.skipif(HAVE_REQUESTS, reason="requests is installed in this variant")
def test_bare_instrument_requests_raises_missing_optional_dependency():
    with pytest.raises(MissingOptionalDependency, match=r'pip install "session-http\[requests\]"'):
        instrument_requests()
    uninstrument_requests()  # harmless without requests


@pytest.mark.skipif(HAVE_HTTPX, reason="httpx is installed in this variant")
def test_bare_instrument_httpx_raises_missing_optional_dependency():
    with pytest.raises(MissingOptionalDependency, match=r'pip install "session-http\[httpx\]"'):
        instrument_httpx()


# -- requests -----------------------------------------------------------------------------------------------
def test_requests_every_session_and_the_allow_list(echo_port):
    requests = pytest.importorskip("requests")
    original = requests.Session.send
    instrument_requests(propagate_to=["127.0.0.1"])
    with ContextVarSession("req", k=1):
        allowed = requests.get(f"http://127.0.0.1:{echo_port}/", headers={"baggage": "userId=7"}).json()
        denied = requests.get(f"http://localhost:{echo_port}/", headers={"baggage": "userId=7"}).json()
        with requests.Session() as client:
            again = client.get(f"http://127.0.0.1:{echo_port}/").json()
    outside = requests.get(f"http://127.0.0.1:{echo_port}/").json()
    assert _has_session(allowed) and allowed["baggage"].startswith("userId=7,session.v=1")
    assert denied == {"baggage": "userId=7"}
    assert _has_session(again)
    assert outside == {"baggage": None}
    uninstrument_requests()
    assert requests.Session.send is original
    with ContextVarSession("after"):
        assert requests.get(f"http://127.0.0.1:{echo_port}/").json() == {"baggage": None}


def test_requests_with_a_bytes_baggage_header_still_sends_the_session(echo_port, caplog):
    """requests takes header values as bytes too: the session merges into them (or is stripped from them)."""
    requests = pytest.importorskip("requests")
    instrument_requests(propagate_to=["127.0.0.1"])
    with ContextVarSession("bytes", k=1):
        stale = inject({"baggage": "userId=7"})["baggage"].encode()
        allowed = requests.get(f"http://127.0.0.1:{echo_port}/", headers={"baggage": b"userId=7"}).json()
        denied = requests.get(f"http://localhost:{echo_port}/", headers={"baggage": stale}).json()
    assert _has_session(allowed) and allowed["baggage"].startswith("userId=7,session.v=1")
    assert denied == {"baggage": "userId=7"}
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_requests_redirect_to_a_host_outside_the_allow_list_loses_the_session(echo_port):
    requests = pytest.importorskip("requests")
    instrument_requests(propagate_to=["127.0.0.1"])
    target = f"http://localhost:{echo_port}/final"
    with ContextVarSession("redirect"):
        answer = requests.get(f"http://127.0.0.1:{echo_port}/redirect", params={"to": target}).json()
        same_host = requests.get(
            f"http://127.0.0.1:{echo_port}/redirect", params={"to": f"http://127.0.0.1:{echo_port}/final"}
        ).json()
    assert answer == {"baggage": None}
    assert _has_session(same_host)


def test_a_url_clients_read_two_ways_never_carries_the_session(echo_port):
    """``http://localhost:PORT\\@127.0.0.1/`` is 127.0.0.1 to urllib's parser (and httpx's) but localhost to
    requests, which sends it there: with only 127.0.0.1 allowed, neither `inject(url=...)` nor the instrumented
    client may put the session on it."""
    requests = pytest.importorskip("requests")
    from session_http import inject

    tricky = f"http://localhost:{echo_port}\\@127.0.0.1/"
    with ContextVarSession("differential"):
        headers = inject({"baggage": "userId=7"}, url=tricky, propagate_to=["127.0.0.1"])
        by_hand = requests.get(tricky, headers=headers).json()
        instrument_requests(propagate_to=["127.0.0.1"])
        instrumented = requests.get(tricky, headers={"baggage": "userId=7"}).json()
    assert headers == {"baggage": "userId=7"}
    assert by_hand == instrumented == {"baggage": "userId=7"}


def test_requests_one_session_only(echo_port):
    requests = pytest.importorskip("requests")
    with requests.Session() as mine, requests.Session() as other:
        instrument_requests(mine)
        with ContextVarSession("one"):
            assert _has_session(mine.get(f"http://127.0.0.1:{echo_port}/").json())
            assert other.get(f"http://127.0.0.1:{echo_port}/").json() == {"baggage": None}
            assert requests.get(f"http://127.0.0.1:{echo_port}/").json() == {"baggage": None}
            uninstrument_requests(mine)
            assert mine.get(f"http://127.0.0.1:{echo_port}/").json() == {"baggage": None}
    with pytest.raises(TypeError, match=r"requests\.Session"):
        instrument_requests(object())


def test_uninstrumenting_one_client_stops_it_while_every_client_is_instrumented(echo_port):
    """``uninstrument_*(client)`` stops that client propagating even when every client is instrumented: it
    used to drop only the client's own configuration, so the global one kept sending its session."""
    requests = pytest.importorskip("requests")
    httpx = pytest.importorskip("httpx")
    url = f"http://127.0.0.1:{echo_port}/"
    instrument_requests()
    instrument_httpx()
    with requests.Session() as mine, requests.Session() as other, httpx.Client() as client, httpx.Client() as peer:
        with ContextVarSession("switched-off"):
            uninstrument_requests(mine)
            uninstrument_httpx(client)
            assert mine.get(url).json() == {"baggage": None}
            assert client.get(url).json() == {"baggage": None}
            assert _has_session(other.get(url).json()) and _has_session(peer.get(url).json())
            instrument_requests(mine)  # on again, with a configuration of its own
            instrument_httpx(client)
            assert _has_session(mine.get(url).json()) and _has_session(client.get(url).json())
            uninstrument_requests(mine)
            uninstrument_requests()  # everything off, and then on again: the client follows the global setting
            instrument_requests()
            assert _has_session(mine.get(url).json())


def test_requests_too_large_context_is_not_sent_but_the_request_is(echo_port, caplog):
    requests = pytest.importorskip("requests")
    caplog.set_level(logging.WARNING)
    instrument_requests()
    with ContextVarSession("huge", blob="x" * 9000):
        answer = requests.get(f"http://127.0.0.1:{echo_port}/", headers={"baggage": "keep=1"}).json()
    assert answer == {"baggage": "keep=1"}
    assert any("not propagated" in r.getMessage() for r in caplog.records)


def test_requests_a_context_that_cannot_travel_is_reported_once_per_session(echo_port, caplog):
    """Metadata over the context limit (128 keys): every request still goes out, without the session, and the
    reason is logged once per session, not once per request."""
    requests = pytest.importorskip("requests")
    caplog.set_level(logging.WARNING)
    instrument_requests()
    for _ in range(2):
        with ContextVarSession("wide", **{f"k{i}": i for i in range(200)}):
            answers = [requests.get(f"http://127.0.0.1:{echo_port}/", headers={"baggage": "keep=1"}).json()]
            answers += [requests.get(f"http://127.0.0.1:{echo_port}/").json() for _ in range(3)]
        assert answers == [{"baggage": "keep=1"}] + [{"baggage": None}] * 3
    said = [r.getMessage() for r in caplog.records if "not propagated" in r.getMessage()]
    assert len(said) == 2 and all("over the limit of 128" in m for m in said)  # one per session


def test_requests_metadata_json_cannot_carry_is_left_out_not_the_session(echo_port, caplog):
    """A value that cannot cross a process boundary stays local; the request still carries the session."""
    requests = pytest.importorskip("requests")
    caplog.set_level(logging.WARNING)
    instrument_requests()
    with ContextVarSession("odd", handle=object(), step=3) as session:
        answer = requests.get(f"http://127.0.0.1:{echo_port}/", headers={"baggage": "keep=1"}).json()
    got = decode_baggage(answer["baggage"])
    assert got is not None and got["uid_chain"] == session.uid_chain and got["metadata"] == {"step": 3}
    assert answer["baggage"].startswith("keep=1,")
    assert any("metadata['handle']" in r.getMessage() for r in caplog.records)


# -- httpx --------------------------------------------------------------------------------------------------
def test_httpx_sync_every_client_allow_list_and_redirects(echo_port):
    httpx = pytest.importorskip("httpx")
    instrument_httpx(propagate_to=["127.0.0.1"])
    with ContextVarSession("hx", k=2), httpx.Client() as client:
        allowed = client.get(f"http://127.0.0.1:{echo_port}/", headers={"baggage": "u=1"}).json()
        denied = client.get(f"http://localhost:{echo_port}/", headers={"baggage": "u=1"}).json()
        redirected = client.get(
            f"http://127.0.0.1:{echo_port}/redirect",
            params={"to": f"http://localhost:{echo_port}/final"},
            follow_redirects=True,
        ).json()
        module_level = httpx.get(f"http://127.0.0.1:{echo_port}/").json()
    assert _has_session(allowed) and allowed["baggage"].startswith("u=1,")
    assert denied == {"baggage": "u=1"}
    assert redirected == {"baggage": None}
    assert _has_session(module_level)


async def test_httpx_async_client(echo_port):
    httpx = pytest.importorskip("httpx")
    instrument_httpx(propagate_to="127.0.0.1")
    async with httpx.AsyncClient() as client:
        async with ContextVarSession("async", n=3) as session:
            allowed = (await client.get(f"http://127.0.0.1:{echo_port}/")).json()
            denied = (await client.get(f"http://localhost:{echo_port}/")).json()
        outside = (await client.get(f"http://127.0.0.1:{echo_port}/")).json()
    assert _has_session(allowed) and ".".join(session.uid_chain) in allowed["baggage"]
    assert denied == {"baggage": None} and outside == {"baggage": None}


async def test_httpx_one_client_only_and_uninstrument(echo_port):
    httpx = pytest.importorskip("httpx")
    originals = (httpx.Client._send_single_request, httpx.AsyncClient._send_single_request)
    async with httpx.AsyncClient() as mine, httpx.AsyncClient() as other:
        instrument_httpx(mine)
        with ContextVarSession("mine"):
            assert _has_session((await mine.get(f"http://127.0.0.1:{echo_port}/")).json())
            assert (await other.get(f"http://127.0.0.1:{echo_port}/")).json() == {"baggage": None}
    uninstrument_httpx()
    assert (httpx.Client._send_single_request, httpx.AsyncClient._send_single_request) == originals
    with pytest.raises(TypeError, match=r"httpx\.Client"):
        instrument_httpx(object())
