"""SessionMiddleware and websockets under uvicorn: a websocket connection runs inside the caller's session."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from session_core import (
    ContextVarSession,
    InMemoryStorage,
    assemble_routing_metadata,
    build_proxied_base_url,
    get_active_sessions,
    get_current_metadata,
    get_current_session,
    record_trace,
)
from session_http import SessionMiddleware, inject

websockets_sync = pytest.importorskip("websockets.sync.client")
InvalidStatus = pytest.importorskip("websockets.exceptions").InvalidStatus


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A plain ASGI websocket app: answers each text message with what it sees, recording a trace per message."""
    assert scope["type"] == "websocket"
    message = await receive()
    assert message["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        session = get_current_session()
        record_trace(name="ws", input=message["text"])
        info = {
            "path": scope["path"],
            "raw_path": scope.get("raw_path", b"").decode("latin-1"),
            "state": scope["state"]["session_metadata"],
            "metadata": get_current_metadata(),
            "active": len(get_active_sessions()),
            "uid_chain": None if session is None else session.uid_chain,
        }
        await send({"type": "websocket.send", "text": json.dumps(info)})


def _exchange(url: str, headers: dict[str, str] | None = None, messages: int = 2) -> list[dict[str, Any]]:
    with websockets_sync.connect(url, additional_headers=headers or {}, open_timeout=20) as ws:
        seen = []
        for i in range(messages):
            ws.send(f"m{i}")
            seen.append(json.loads(ws.recv(timeout=20)))
    return seen


def test_a_websocket_connection_runs_in_one_child_of_the_callers_session(serve_asgi, caplog):
    caplog.set_level(logging.WARNING)
    storage = InMemoryStorage()
    server = serve_asgi(SessionMiddleware(echo, storage=storage))
    with ContextVarSession("ws", storage=storage, arm="a", step=3) as root:
        headers = inject()
    first, second = _exchange(f"ws://127.0.0.1:{server.port}/ws", headers)
    assert first["uid_chain"][:-1] == root.uid_chain and len(first["uid_chain"]) == 2
    assert second["uid_chain"] == first["uid_chain"]  # one session for the whole connection
    assert first["active"] == 1
    assert first["metadata"] == first["state"] == {"arm": "a", "step": 3}
    assert [t.input for t in root.llm_calls] == ["m0", "m1"]
    assert [r for r in caplog.records if r.name.startswith("session_http")] == []
    (bare,) = _exchange(f"ws://127.0.0.1:{server.port}/ws", {"baggage": "userId=7"}, messages=1)
    assert bare["uid_chain"] is None and bare["active"] == 0 and bare["state"] == {}


def test_a_websocket_slug_is_read_and_stripped(serve_asgi):
    storage = InMemoryStorage()
    server = serve_asgi(SessionMiddleware(echo, storage=storage))
    with ContextVarSession("ws-slug", storage=storage, arm="b") as root:
        base = build_proxied_base_url(f"ws://127.0.0.1:{server.port}/v1", assemble_routing_metadata())
    (seen,) = _exchange(base + "/realtime", messages=1)
    assert seen["path"] == "/v1/realtime" and seen["raw_path"] == "/v1/realtime"
    assert seen["metadata"] == {"arm": "b"} and seen["uid_chain"][:-1] == root.uid_chain
    assert [t.input for t in root.llm_calls] == ["m0"]


@pytest.mark.parametrize("strict", [False, True])
def test_a_bad_websocket_context_is_refused(serve_asgi, strict, caplog):
    caplog.set_level(logging.WARNING)
    server = serve_asgi(SessionMiddleware(echo, strict=strict))
    bad = {"baggage": "session.uids=abc,session.name=n,session.m.k=%zz"}
    if strict:
        with pytest.raises(InvalidStatus) as info:
            _exchange(f"ws://127.0.0.1:{server.port}/ws", bad)
        response = info.value.response
        assert response.status_code == 400 and response.body.startswith(b"invalid session context:")
    else:
        (seen,) = _exchange(f"ws://127.0.0.1:{server.port}/ws", bad, messages=1)
        assert seen["uid_chain"] is None and seen["state"] == {}
    warnings = [r.getMessage() for r in caplog.records if r.name.startswith("session_http")]
    assert len(warnings) == 1 and "percent-encoding" in warnings[0]


def test_a_bad_websocket_context_is_refused_with_403_when_the_handshake_cannot_get_a_response(serve_asgi):
    """Without ASGI's ``websocket.http.response`` extension, strict mode closes before accepting (the server's
    403)."""

    async def no_response_extension(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await middleware({**scope, "extensions": {}}, receive, send)

    middleware = SessionMiddleware(echo, strict=True)
    server = serve_asgi(no_response_extension)
    bad = {"baggage": "session.uids=abc,session.name=n,session.m.k=%zz"}
    with pytest.raises(InvalidStatus) as info:
        _exchange(f"ws://127.0.0.1:{server.port}/ws", bad)
    assert info.value.response.status_code == 403


def test_starlette_websocket_endpoint_sees_the_session(serve_asgi):
    pytest.importorskip("starlette")
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        text = await websocket.receive_text()
        record_trace(name="starlette-ws", input=text)
        session = get_current_session()
        await websocket.send_json(
            {"state": websocket.state.session_metadata, "uid_chain": None if session is None else session.uid_chain}
        )
        await websocket.close()

    storage = InMemoryStorage()
    app = Starlette(routes=[WebSocketRoute("/ws", endpoint)])
    app.add_middleware(SessionMiddleware, storage=storage)
    server = serve_asgi(app)
    with ContextVarSession("star-ws", storage=storage, user="u1") as root:
        headers = inject()
    with websockets_sync.connect(f"ws://127.0.0.1:{server.port}/ws", additional_headers=headers) as ws:
        ws.send("hello")
        seen = json.loads(ws.recv(timeout=20))
    assert seen["state"] == {"user": "u1"} and seen["uid_chain"][:-1] == root.uid_chain
    assert [t.input for t in root.llm_calls] == ["hello"]
