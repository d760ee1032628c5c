"""A three-service chain A → B → C, each behind the middleware and calling the next with an instrumented
client: the trace recorded in C is in the client's root session, its uid chain 4 deep, metadata merged.

No ``from __future__ import annotations`` here: FastAPI reads endpoint annotations at runtime.

- frameworks (needs requests + httpx): A = FastAPI calling B with ``httpx.AsyncClient``, B = Flask on werkzeug
  calling C with ``requests``, C = Starlette; every client instrumented globally.
- stdlib clients (every variant): A = plain ASGI on uvicorn, B = plain WSGI on wsgiref, C = plain ASGI, each
  calling the next with ``urllib`` and ``inject()``.

Storage: one shared in-memory storage object, or (when session-storage-sql is installed) one SQLite file that
each service opens on its own.
"""

import asyncio
import json
import urllib.request
from typing import Any

import pytest

from session_core import ContextVarSession, InMemoryStorage, record_trace
from session_http import (
    SessionMiddleware,
    SessionWSGIMiddleware,
    inject,
    instrument_httpx,
    instrument_requests,
    uninstrument_httpx,
    uninstrument_requests,
)

ROOT_META = {"experiment": "chain", "step": 3, "tags": ["x", 1], "budget": 0.5}


def _factory(service: str, extra: dict[str, Any]) -> Any:
    def build(ctx: dict[str, Any], storage: Any) -> ContextVarSession:
        return ContextVarSession.from_context(ctx, storage=storage, service=service, **extra)

    return build


@pytest.fixture(params=["memory", "sqlite"])
def storages(request, tmp_path) -> Any:
    """``make()`` returns the storage one service (or the client) uses."""
    if request.param == "memory":
        shared = InMemoryStorage()
        yield lambda: shared
        return
    sql = pytest.importorskip("session_storage_sql")
    path = tmp_path / "traces.db"
    made: list[Any] = []

    def make() -> Any:
        made.append(sql.SqliteSessionStorage(path))
        return made[-1]

    yield make
    for storage in made:
        storage.close()


def _check_chain(root: ContextVarSession, answer: dict[str, Any], storage: Any) -> None:
    a, b, c = answer["a"], answer["b"], answer["c"]
    assert a[:-1] == root.uid_chain and b[:-1] == a and c[:-1] == b
    assert len(c) == 4
    traces = root.llm_calls
    assert [t.name for t in traces] == ["served-by-c"]
    trace = traces[0]
    assert trace.session_name == "chain-root"
    assert trace.metadata == {**ROOT_META, "service": "c", "hop_a": 1, "hop_b": 2.5, "hop_c": True}
    assert type(trace.metadata["step"]) is int and type(trace.metadata["budget"]) is float
    for uid in c:  # every session of the chain, wherever it ran, sees the trace
        assert [t.trace_id for t in storage.get_traces(uid)] == [trace.trace_id]


def test_chain_through_fastapi_flask_and_starlette(serve_asgi, serve_wsgi, storages):
    httpx = pytest.importorskip("httpx")
    requests = pytest.importorskip("requests")
    flask = pytest.importorskip("flask")
    from fastapi import FastAPI, Request
    from starlette.applications import Starlette
    from starlette.requests import Request as StarletteRequest
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def c_endpoint(request: StarletteRequest) -> JSONResponse:
        record_trace(name="served-by-c", model="m", input="hello")
        from session_core import get_current_session

        return JSONResponse({"c": get_current_session().uid_chain, "meta": request.state.session_metadata})

    c_app = SessionMiddleware(
        Starlette(routes=[Route("/c", c_endpoint)]), storage=storages(), session_factory=_factory("c", {"hop_c": True})
    )
    c = serve_asgi(c_app)

    b_app = flask.Flask("service_b")

    @b_app.get("/b")
    def b_endpoint() -> Any:
        from session_core import get_current_session

        answer = requests.get(f"{c.url}/c", timeout=30).json()
        return {**answer, "b": get_current_session().uid_chain}

    b_app.wsgi_app = SessionWSGIMiddleware(
        b_app.wsgi_app, storage=storages(), session_factory=_factory("b", {"hop_b": 2.5})
    )
    b = serve_wsgi(b_app, kind="werkzeug")

    a_app = FastAPI()

    @a_app.get("/a")
    async def a_endpoint(request: Request) -> dict[str, Any]:
        from session_core import get_current_session

        async with httpx.AsyncClient() as client:
            answer = (await client.get(f"{b.url}/b", timeout=30)).json()
        return {**answer, "a": get_current_session().uid_chain, "a_meta": request.state.session_metadata}

    a_app.add_middleware(SessionMiddleware, storage=storages(), session_factory=_factory("a", {"hop_a": 1}))
    a = serve_asgi(a_app)

    instrument_httpx(propagate_to=["127.0.0.1"])
    instrument_requests(propagate_to=["127.0.0.1"])
    try:
        storage = storages()
        with ContextVarSession("chain-root", storage=storage, **ROOT_META) as root:
            with httpx.Client() as client:
                answer = client.get(f"{a.url}/a", timeout=30).json()
    finally:
        uninstrument_httpx()
        uninstrument_requests()
    assert answer["a_meta"] == {**ROOT_META, "service": "a", "hop_a": 1}
    assert answer["meta"] == {**ROOT_META, "service": "c", "hop_a": 1, "hop_b": 2.5, "hop_c": True}
    _check_chain(root, answer, storage)


def _get(url: str) -> Any:
    request = urllib.request.Request(url, headers=inject(url=url))
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_chain_with_stdlib_clients_and_plain_apps(serve_asgi, serve_wsgi, storages):
    from session_core import get_current_session

    async def c_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        record_trace(name="served-by-c")
        body = json.dumps({"c": get_current_session().uid_chain}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    c = serve_asgi(SessionMiddleware(c_app, storage=storages(), session_factory=_factory("c", {"hop_c": True})))

    def b_app(environ: dict[str, Any], start_response: Any) -> Any:
        answer = {**_get(f"{c.url}/c"), "b": get_current_session().uid_chain}
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(answer).encode()]

    b = serve_wsgi(
        SessionWSGIMiddleware(b_app, storage=storages(), session_factory=_factory("b", {"hop_b": 2.5})),
        kind="wsgiref",
    )

    async def a_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        chain = get_current_session().uid_chain
        answer = await asyncio.to_thread(_get, f"{b.url}/b")  # to_thread copies the context: the session too
        body = json.dumps({**answer, "a": chain}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    a = serve_asgi(SessionMiddleware(a_app, storage=storages(), session_factory=_factory("a", {"hop_a": 1})))
    storage = storages()
    with ContextVarSession("chain-root", storage=storage, **ROOT_META) as root:
        answer = _get(f"{a.url}/a")
    _check_chain(root, answer, storage)


def test_metadata_too_big_for_a_header_travels_by_reference(serve_asgi, tmp_path, fetch_json):
    """With an addressable storage on both sides, oversized metadata rides in the storage, not the header."""
    sql = pytest.importorskip("session_storage_sql")
    path = tmp_path / "ref.db"
    server_storage, client_storage = sql.SqliteSessionStorage(path), sql.SqliteSessionStorage(path)
    blob = "x" * 9000

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        from session_core import get_current_session

        record_trace(name="by-reference")
        meta = scope["state"]["session_metadata"]
        body = json.dumps({"size": len(meta["blob"]), "chain": get_current_session().uid_chain}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    server = serve_asgi(SessionMiddleware(app, storage=server_storage))
    try:
        with ContextVarSession("big", storage=client_storage, blob=blob, n=1) as root:
            headers = inject()
            assert "session.ref=1" in headers["baggage"] and len(headers["baggage"]) < 1000
            status, answer = fetch_json(server.url + "/", headers)
        assert status == 200 and answer["size"] == 9000 and answer["chain"][:-1] == root.uid_chain
        assert [t.name for t in root.llm_calls] == ["by-reference"]
        assert root.llm_calls[0].metadata["blob"] == blob
    finally:
        server_storage.close()
        client_storage.close()


def test_metadata_by_reference_is_read_afresh_when_the_sender_changes_it(serve_asgi, tmp_path, fetch_json):
    """A by-reference header stays byte-identical while the sender changes its metadata (the stored context
    changes, not the header): the server must not serve the first request's metadata from its header cache."""
    sql = pytest.importorskip("session_storage_sql")
    path = tmp_path / "ref.db"
    server_storage, client_storage = sql.SqliteSessionStorage(path), sql.SqliteSessionStorage(path)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        from session_core import get_current_metadata

        record_trace(name="step")
        exposed = scope["state"]["session_metadata"]["step"]
        body = json.dumps({"exposed": exposed, "seen": get_current_metadata()["step"]})
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body.encode()})

    server = serve_asgi(SessionMiddleware(app, storage=server_storage))
    try:
        with ContextVarSession("big", storage=client_storage, blob="x" * 9000, step=1) as root:
            first = inject()
            assert fetch_json(server.url + "/", first) == (200, {"exposed": 1, "seen": 1})
            root.metadata["step"] = 2
            second = inject()
            assert second == first  # same header: the new metadata is in the storage only
            assert fetch_json(server.url + "/", second) == (200, {"exposed": 2, "seen": 2})
        assert [t.metadata["step"] for t in root.llm_calls] == [1, 2]
    finally:
        server_storage.close()
        client_storage.close()
