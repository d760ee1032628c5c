"""Two services, one session: the caller's session follows an httpx request into a Starlette service.

Needs: session-http[httpx], starlette, uvicorn. Runs a real uvicorn server on 127.0.0.1 in a background thread.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from session_core import ContextVarSession, InMemoryStorage, get_current_session, record_trace
from session_http import SessionMiddleware, instrument_httpx, uninstrument_httpx

# Both sides share one storage object here because they share a process; across processes or machines give
# both the same addressable storage instead, e.g. SESSION_STORAGE_URL=sqlite:///traces.db (session-storage-sql).
storage = InMemoryStorage()


# --- the service: any ASGI app, wrapped once --------------------------------------------------------------
async def generate(request: Request) -> JSONResponse:
    session = get_current_session()  # a child of the caller's session, for the whole request
    record_trace(name="llm", model="tiny", input=(await request.json())["prompt"], output="...")
    return JSONResponse({"session": session.name, "metadata": request.state.session_metadata})


app = SessionMiddleware(Starlette(routes=[Route("/generate", generate, methods=["POST"])]), storage=storage)


def serve(app: object) -> tuple[uvicorn.Server, threading.Thread, int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    return server, thread, sock.getsockname()[1]


server, thread, port = serve(app)

# --- the caller: instrument the client once; every request inside a session carries it -------------------
instrument_httpx(propagate_to=["127.0.0.1"])  # only this host receives session data
try:
    with ContextVarSession("rollout-1", storage=storage, experiment="ab-test", arm="b", step=3) as rollout:
        answer = httpx.post(f"http://127.0.0.1:{port}/generate", json={"prompt": "hello"}).json()
finally:
    uninstrument_httpx()
    server.should_exit = True
    thread.join()

print(answer)
assert answer == {"session": "rollout-1", "metadata": {"experiment": "ab-test", "arm": "b", "step": 3}}
calls = rollout.llm_calls  # the service's trace, attributed to the caller's session
print([(t.name, t.session_name, t.metadata) for t in calls])
assert len(calls) == 1
assert calls[0].metadata == {"experiment": "ab-test", "arm": "b", "step": 3}
