"""Signing on: forged, tampered, unsigned and replayed contexts are refused by a live server; signed ones pass."""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.request
from typing import Any

import pytest

from session_core import (
    ContextVarSession,
    InMemoryStorage,
    assemble_routing_metadata,
    build_proxied_base_url,
    get_current_session,
)
from session_http import SessionMiddleware, SessionWSGIMiddleware, inject

KEY = "s3cret-signing-key"


def _bad_headers() -> dict[str, dict[str, str]]:
    with ContextVarSession("victim", tier="free") as victim:
        signed = inject(signing_key=KEY)["baggage"]
        unsigned = inject()["baggage"]  # no key given and none in the environment
        forged = inject(signing_key="another-key")["baggage"]
    tampered = signed.replace("session.m.tier=%22free%22", "session.m.tier=%22premium%22")
    assert tampered != signed
    with ContextVarSession("attacker") as attacker:
        own = inject(signing_key=KEY)["baggage"]
    own_items = dict(m.split("=", 1) for m in own.split(","))
    victim_items = dict(m.split("=", 1) for m in signed.split(","))
    replayed_items = {**own_items, "session.uids": victim_items["session.uids"]}  # signature moved to a chain
    replayed = ",".join(f"{k}={v}" for k, v in replayed_items.items())
    assert victim.uid_chain != attacker.uid_chain
    return {
        "unsigned": {"baggage": unsigned},
        "forged": {"baggage": forged},
        "tampered": {"baggage": tampered},
        "replayed": {"baggage": replayed},
    }


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_signed_passes_and_everything_else_is_refused(serve_asgi, serve_wsgi, probe_apps, fetch_json, caplog, kind):
    caplog.set_level(logging.WARNING)
    storage = InMemoryStorage()
    if kind == "asgi":
        server = serve_asgi(SessionMiddleware(probe_apps[0], storage=storage, signing_key=KEY))
    else:
        server = serve_wsgi(SessionWSGIMiddleware(probe_apps[1], storage=storage, signing_key=KEY), kind="wsgiref")
    with ContextVarSession("legit", storage=storage, tier="pro") as root:
        status, info = fetch_json(server.url + "/record", inject(signing_key=KEY))
    assert status == 200 and info["session"]["uid_chain"][:-1] == root.uid_chain
    assert info["metadata"] == {"tier": "pro"} and len(root.llm_calls) == 1

    for name, headers in _bad_headers().items():
        caplog.clear()
        status, info = fetch_json(server.url + "/record", headers)
        assert status == 200, name
        assert info["session"] is None and info["metadata"] == {}, name
        warnings = [r.getMessage() for r in caplog.records if r.name.startswith("session_http")]
        assert len(warnings) == 1, (name, warnings)
        assert KEY not in warnings[0]
    assert len(storage) == 1  # no refused request attached a trace to anyone's session


def test_strict_answers_400_to_every_refused_context(serve_asgi, probe_apps, fetch_json):
    server = serve_asgi(SessionMiddleware(probe_apps[0], signing_key=KEY, strict=True))
    for name, headers in _bad_headers().items():
        status, body = fetch_json(server.url + "/", headers)
        assert status == 400, name
        assert body.startswith("invalid session context:") and KEY not in body
    with ContextVarSession("ok"):
        status, _ = fetch_json(server.url + "/", inject(signing_key=KEY))
    assert status == 200


def test_slug_contexts_carry_no_signature_so_signing_refuses_them(serve_asgi, probe_apps, fetch_json, caplog):
    caplog.set_level(logging.WARNING)
    server = serve_asgi(SessionMiddleware(probe_apps[0], signing_key=KEY))
    with ContextVarSession("slugged"):
        base = build_proxied_base_url(server.url + "/v1", assemble_routing_metadata())
    _, info = fetch_json(base + "/models")
    assert info["path"] == "/v1/models" and info["session"] is None
    assert any("not signed" in r.getMessage() for r in caplog.records)


def test_environment_key_on_both_sides_across_two_hops(serve_asgi, monkeypatch):
    monkeypatch.setenv("SESSION_SIGNING_KEY", KEY)
    storage = InMemoryStorage()
    seen: dict[str, Any] = {}

    async def second(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen["chain"] = get_current_session().uid_chain
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    b = serve_asgi(SessionMiddleware(second, storage=storage))

    async def first(scope: dict[str, Any], receive: Any, send: Any) -> None:
        request = urllib.request.Request(b.url + "/", headers=inject())  # signed again, with A's own chain
        await asyncio.to_thread(lambda: urllib.request.urlopen(request, timeout=30).read())
        seen["a"] = get_current_session().uid_chain
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": json.dumps(seen).encode()})

    a = serve_asgi(SessionMiddleware(first, storage=storage))
    with ContextVarSession("env-signed", storage=storage) as root:
        headers = inject()
        urllib.request.urlopen(urllib.request.Request(a.url + "/", headers=headers), timeout=30).read()
    assert "session.sig=" in headers["baggage"]
    assert seen["a"][:-1] == root.uid_chain and seen["chain"][:-1] == seen["a"]  # B verified A's re-signed context
