"""Slug mode: an OpenAI-style client that only takes a base URL still carries the session.

`build_proxied_base_url` puts the session into a ``/meta/<slug>/`` path segment; `SessionMiddleware` in the
model server (or an LLM proxy) reads it and strips it, so the app sees the plain ``/v1/chat/completions``.
Needs: session-http, uvicorn. The client is the stdlib here; any OpenAI SDK given ``base_url`` does the same.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import urllib.request

import uvicorn

from session_core import (
    ContextVarSession,
    InMemoryStorage,
    assemble_routing_metadata,
    build_proxied_base_url,
    record_trace,
)
from session_http import SessionMiddleware

storage = InMemoryStorage()


async def model_server(scope, receive, send):  # type: ignore[no-untyped-def]
    """A minimal OpenAI-compatible /v1/chat/completions."""
    body = json.loads((await receive())["body"])
    assert scope["path"] == "/v1/chat/completions", scope["path"]  # the slug is gone
    record_trace(name="chat.completions", model=body["model"], input=body["messages"][-1]["content"], output="hi")
    answer = {
        "choices": [{"message": {"role": "assistant", "content": "hi"}}],
        "seen": scope["state"]["session_metadata"],
    }
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": json.dumps(answer).encode()})


sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
sock.bind(("127.0.0.1", 0))
server = uvicorn.Server(uvicorn.Config(SessionMiddleware(model_server, storage=storage), log_level="warning"))
thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
thread.start()
while not server.started:
    time.sleep(0.01)

with ContextVarSession("eval-run", storage=storage, task_id=42) as run, ContextVarSession(turn=1):
    base_url = build_proxied_base_url(f"http://127.0.0.1:{sock.getsockname()[1]}/v1", assemble_routing_metadata())
print(base_url)  # http://127.0.0.1:PORT/meta/v1.eyJ0YXNrX2lkIjo0Mi.../v1

# e.g. openai.OpenAI(base_url=base_url, api_key=...).chat.completions.create(...) posts here:
payload = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "hello"}]}).encode()
request = urllib.request.Request(
    base_url + "/chat/completions", data=payload, headers={"content-type": "application/json"}
)
with urllib.request.urlopen(request) as response:
    answer = json.loads(response.read())
server.should_exit = True
thread.join()

assert answer["seen"] == {"task_id": 42, "turn": 1}
assert [(t.name, t.input) for t in run.llm_calls] == [("chat.completions", "hello")]
print("attributed to", run.name, "with", run.llm_calls[0].metadata)
