"""Slug mode end to end: an OpenAI-style client that only takes a base URL reaches /v1/chat/completions with
the session, through ``build_proxied_base_url``.

Clients: the ``openai`` package when installed, httpx posting to ``base_url + "/chat/completions"`` (as the
OpenAI SDK does) in the variant with httpx, and urllib everywhere.
"""

from __future__ import annotations

import importlib.util
import json
import urllib.request
from typing import Any

import pytest

from session_core import (
    ContextVarSession,
    InMemoryStorage,
    assemble_routing_metadata,
    build_proxied_base_url,
    get_current_session,
    record_trace,
)
from session_http import SessionMiddleware


async def fake_llm(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A minimal OpenAI-compatible chat completions endpoint that records what it served."""
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    if scope["path"] != "/v1/chat/completions":
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": scope["path"].encode()})
        return
    request = json.loads(body)
    prompt = request["messages"][-1]["content"]
    session = get_current_session()
    record_trace(name="chat.completions", model=request["model"], input=prompt, output="pong", tokens=3)
    answer = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": request["model"],
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": json.dumps(session.uid_chain if session else None)},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3},
        "metadata_seen": scope["state"]["session_metadata"],
    }
    data = json.dumps(answer).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": data})


def _urllib_chat(base_url: str) -> tuple[list[str], dict[str, Any]]:
    payload = json.dumps({"model": "m", "messages": [{"role": "user", "content": "ping"}]}).encode()
    request = urllib.request.Request(
        base_url + "/chat/completions", data=payload, headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = json.loads(response.read())
    return json.loads(answer["choices"][0]["message"]["content"]), answer["metadata_seen"]


def _httpx_chat(base_url: str) -> tuple[list[str], dict[str, Any]]:
    httpx = pytest.importorskip("httpx")
    payload = {"model": "m", "messages": [{"role": "user", "content": "ping"}]}
    answer = httpx.post(base_url + "/chat/completions", json=payload, timeout=30).json()
    return json.loads(answer["choices"][0]["message"]["content"]), answer["metadata_seen"]


def _openai_chat(base_url: str) -> tuple[list[str], dict[str, Any]]:
    if importlib.util.find_spec("openai") is None:
        pytest.skip("the openai package is not installed (it is no dependency of session-http's tests)")
    import openai

    client = openai.OpenAI(base_url=base_url, api_key="not-needed", max_retries=0)
    completion = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "ping"}])
    extra = completion.model_extra or {}
    return json.loads(completion.choices[0].message.content or "null"), extra["metadata_seen"]


@pytest.mark.parametrize("chat", [_urllib_chat, _httpx_chat, _openai_chat], ids=["urllib", "httpx", "openai"])
def test_openai_style_client_reaches_chat_completions_with_the_session(serve_asgi, chat):
    storage = InMemoryStorage()
    server = serve_asgi(SessionMiddleware(fake_llm, storage=storage))
    with ContextVarSession("rollout-7", storage=storage, task_id=7, arm="b") as root:
        with ContextVarSession(turn=2):
            base_url = build_proxied_base_url(server.url + "/v1", assemble_routing_metadata())
        assert "/meta/v1." in base_url and base_url.endswith("/v1")
    chain, seen = chat(base_url)  # the client runs anywhere, with no session of its own
    assert seen == {"task_id": 7, "arm": "b", "turn": 2}
    assert chain[0] == root.uid_chain[0] and len(chain) == 3
    calls = root.llm_calls
    assert [(t.name, t.model, t.input) for t in calls] == [("chat.completions", "m", "ping")]
    assert calls[0].metadata == {"task_id": 7, "arm": "b", "turn": 2} and calls[0].session_name == "rollout-7"
