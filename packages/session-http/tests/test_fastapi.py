"""SessionMiddleware in a FastAPI app served by uvicorn.

No ``from __future__ import annotations`` here: FastAPI reads endpoint annotations at runtime.
"""

from typing import Any

import pytest

from session_core import ContextVarSession, InMemoryStorage, get_current_session, record_trace
from session_http import SessionMiddleware, inject

fastapi = pytest.importorskip("fastapi")


def _app(storage: InMemoryStorage) -> Any:
    from fastapi import Depends, FastAPI, Request

    app = FastAPI()

    def session_name() -> str:  # a dependency sees the session too
        session = get_current_session()
        return session.name if session is not None else ""

    @app.get("/async")
    async def async_endpoint(request: Request, name: str = Depends(session_name)) -> dict[str, Any]:
        record_trace(name="async")
        return {"metadata": request.state.session_metadata, "chain": get_current_session().uid_chain, "name": name}

    @app.get("/sync")
    def sync_endpoint(request: Request, name: str = Depends(session_name)) -> dict[str, Any]:
        record_trace(name="sync")  # a sync endpoint runs in a worker thread: the context follows it there
        return {"metadata": request.state.session_metadata, "chain": get_current_session().uid_chain, "name": name}

    @app.get("/none")
    async def no_session(request: Request) -> dict[str, Any]:
        return {"metadata": request.state.session_metadata, "session": get_current_session() is not None}

    app.add_middleware(SessionMiddleware, storage=storage)
    return app


def test_fastapi_async_and_sync_endpoints_run_in_the_session(serve_asgi, fetch_json):
    storage = InMemoryStorage()
    server = serve_asgi(_app(storage))
    with ContextVarSession("fast", storage=storage, model="m", temperature=0.2) as root:
        _, a = fetch_json(server.url + "/async", inject())
        _, s = fetch_json(server.url + "/sync", inject())
    for info in (a, s):
        assert info["metadata"] == {"model": "m", "temperature": 0.2}
        assert info["chain"][:-1] == root.uid_chain and info["name"] == "fast"
    assert sorted(t.name for t in root.llm_calls) == ["async", "sync"]
    assert all(t.metadata == {"model": "m", "temperature": 0.2} for t in root.llm_calls)
    _, bare = fetch_json(server.url + "/none")
    assert bare == {"metadata": {}, "session": False}
