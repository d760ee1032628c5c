"""SessionMiddleware under uvicorn: a plain ASGI app, Starlette and FastAPI; slug mode; lifespan and websockets."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from typing import Any

import pytest

from session_core import (
    ContextVarSession,
    InMemoryStorage,
    assemble_routing_metadata,
    build_proxied_base_url,
    encode_metadata_slug,
    get_active_session_uids,
    get_current_session,
    open_storage,
    record_trace,
)
from session_http import SessionMiddleware, inject


def test_plain_asgi_request_runs_in_a_child_of_the_callers_session(serve_asgi, probe_apps, fetch_json, caplog):
    caplog.set_level(logging.WARNING)
    storage = InMemoryStorage()
    server = serve_asgi(SessionMiddleware(probe_apps[0], storage=storage))
    with ContextVarSession(
        "rollout", storage=storage, experiment="exp-1", step=3, ratio=0.5, flags=[1, "a", True]
    ) as root:
        status, info = fetch_json(server.url + "/work/record", inject())
    assert status == 200
    assert info["active"] == 1
    session = info["session"]
    assert session["class"] == "ContextVarSession"
    assert session["name"] == "rollout"
    assert session["uid_chain"][:-1] == root.uid_chain and len(session["uid_chain"]) == 2
    expected = {"experiment": "exp-1", "step": 3, "ratio": 0.5, "flags": [1, "a", True]}
    assert info["metadata"] == expected and session["metadata"] == expected
    assert [t.name for t in root.llm_calls] == ["probe"]
    trace = root.llm_calls[0]
    assert trace.metadata == expected and trace.session_name == "rollout"
    assert [r for r in caplog.records if r.name.startswith("session_http")] == []


def test_without_context_the_request_runs_without_a_session(serve_asgi, probe_apps, fetch_json, caplog):
    caplog.set_level(logging.WARNING)
    server = serve_asgi(SessionMiddleware(probe_apps[0]))
    status, info = fetch_json(server.url + "/x", {"baggage": "userId=alice,tenant=acme"})
    assert status == 200
    assert info["session"] is None and info["active"] == 0
    assert info["metadata"] == {}
    assert info["baggage"] == "userId=alice,tenant=acme"  # other baggage reaches the app untouched
    assert [r for r in caplog.records if r.name.startswith("session_http")] == []


def test_each_request_gets_its_own_child_and_none_leaks_between_requests(serve_asgi, probe_apps, fetch_json):
    storage = InMemoryStorage()
    server = serve_asgi(SessionMiddleware(probe_apps[0], storage=storage))
    with ContextVarSession("a", storage=storage) as a:
        headers = inject()
    uids = set()
    for _ in range(5):
        _, info = fetch_json(server.url + "/record", headers)
        uids.add(info["session"]["uid_chain"][-1])
        _, bare = fetch_json(server.url + "/record")
        assert bare["session"] is None and bare["active"] == 0
    assert len(uids) == 5
    assert len(a.llm_calls) == 5  # the requests without a context recorded nothing anywhere
    assert len(storage) == 5


def test_default_storage_is_the_storage_url_or_one_in_memory_storage_per_middleware(monkeypatch):
    async def app(scope: Any, receive: Any, send: Any) -> None:
        pass

    monkeypatch.delenv("SESSION_STORAGE_URL", raising=False)
    one, two = SessionMiddleware(app), SessionMiddleware(app)
    assert isinstance(one.storage, InMemoryStorage) and one.storage is not two.storage
    monkeypatch.setenv("SESSION_STORAGE_URL", "memory://session-http-tests")
    assert SessionMiddleware(app).storage is open_storage("memory://session-http-tests")


def test_storage_url_from_the_environment_receives_the_traces(serve_asgi, probe_apps, fetch_json, monkeypatch):
    monkeypatch.setenv("SESSION_STORAGE_URL", "memory://session-http-env")
    server = serve_asgi(SessionMiddleware(probe_apps[0]))
    monkeypatch.delenv("SESSION_STORAGE_URL")
    with ContextVarSession("env", storage=open_storage("memory://session-http-env")) as root:
        fetch_json(server.url + "/record", inject())
    assert [t.name for t in root.llm_calls] == ["probe"]


def test_session_factory_builds_the_session(serve_asgi, probe_apps, fetch_json):
    storage = InMemoryStorage()
    seen: list[tuple[dict[str, Any], Any]] = []

    def factory(ctx: dict[str, Any], store: Any) -> ContextVarSession:
        seen.append((ctx, store))
        return ContextVarSession.from_context(ctx, storage=store, service="b", hop=2)

    server = serve_asgi(SessionMiddleware(probe_apps[0], storage=storage, session_factory=factory))
    with ContextVarSession("f", storage=storage, tier="gold") as root:
        _, info = fetch_json(server.url + "/record", inject())
    assert seen[0][1] is storage and seen[0][0]["uid_chain"] == root.uid_chain
    assert info["metadata"] == {"tier": "gold", "service": "b", "hop": 2}
    assert root.llm_calls[0].metadata == {"tier": "gold", "service": "b", "hop": 2}


def test_streaming_response_is_produced_inside_the_session(serve_asgi, fetch_json):
    async def streaming(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for i in range(3):
            await asyncio.sleep(0.01)
            session = get_current_session()
            record_trace(name=f"chunk-{i}")
            await send({"type": "http.response.body", "body": f"{session is not None};".encode(), "more_body": True})
        await send({"type": "http.response.body", "body": b"end"})

    storage = InMemoryStorage()
    server = serve_asgi(SessionMiddleware(streaming, storage=storage))
    with ContextVarSession("stream", storage=storage) as root:
        status, body = fetch_json(server.url + "/", inject())
    assert status == 200 and body == "True;True;True;end"
    assert [t.name for t in root.llm_calls] == ["chunk-0", "chunk-1", "chunk-2"]


# -- slug mode ----------------------------------------------------------------------------------------------
def test_slug_path_is_read_and_stripped_from_path_and_raw_path(serve_asgi, probe_apps, fetch_json):
    storage = InMemoryStorage()
    server = serve_asgi(SessionMiddleware(probe_apps[0], storage=storage))
    with ContextVarSession("slugged", storage=storage, arm="b", step=7) as root:
        base = build_proxied_base_url(server.url + "/v1", assemble_routing_metadata())
    status, info = fetch_json(base + "/chat/completions/record?stream=false")
    assert status == 200
    assert info["path"] == "/v1/chat/completions/record"
    assert info["raw_path"] == "/v1/chat/completions/record"
    assert info["metadata"] == {"arm": "b", "step": 7}
    assert info["session"]["uid_chain"][:-1] == root.uid_chain
    assert [t.input for t in root.llm_calls] == ["/v1/chat/completions/record"]


def test_an_rllm_sdk_client_slug_is_read(serve_asgi, probe_apps, fetch_json):
    """A client still on rLLM's SDK puts ``/meta/rllm1:<base64url JSON>`` in its base URL."""
    storage = InMemoryStorage()
    server = serve_asgi(SessionMiddleware(probe_apps[0], storage=storage))
    with ContextVarSession("rllm-client", storage=storage, arm="a") as root:
        routing = assemble_routing_metadata()
    body = json.dumps(routing, separators=(",", ":"), sort_keys=True).encode()
    slug = "rllm1:" + base64.urlsafe_b64encode(body).rstrip(b"=").decode()
    status, info = fetch_json(f"{server.url}/meta/{slug}/v1/chat/completions/record")
    assert status == 200 and info["path"] == "/v1/chat/completions/record"
    assert info["metadata"] == {"arm": "a"} and info["session"]["uid_chain"][:-1] == root.uid_chain
    assert [t.input for t in root.llm_calls] == ["/v1/chat/completions/record"]


def test_baggage_wins_over_the_slug(serve_asgi, probe_apps, fetch_json):
    server = serve_asgi(SessionMiddleware(probe_apps[0]))
    with ContextVarSession("from-slug", source="slug") as slug_session:
        base = build_proxied_base_url(server.url + "/v1", assemble_routing_metadata())
    with ContextVarSession("from-baggage", source="baggage") as baggage_session:
        _, info = fetch_json(base + "/models", inject())
    assert info["path"] == "/v1/models"
    assert info["metadata"] == {"source": "baggage"}
    assert info["session"]["uid_chain"][:-1] == baggage_session.uid_chain != slug_session.uid_chain


@pytest.mark.parametrize("baggage", ["app.session.id=abc", "userId=7,page=session.html", "ai.session%2Eid=1"])
def test_baggage_without_session_members_leaves_the_slug_in_charge(serve_asgi, probe_apps, fetch_json, baggage):
    """Another vendor's baggage whose text merely contains ``session.`` (a key such as ``app.session.id``, a
    value) holds no context: the slug's session is used, not dropped while its segment is stripped."""
    storage = InMemoryStorage()
    server = serve_asgi(SessionMiddleware(probe_apps[0], storage=storage))
    with ContextVarSession("slug-with-baggage", storage=storage, arm="c") as root:
        base = build_proxied_base_url(server.url + "/v1", assemble_routing_metadata())
    status, info = fetch_json(base + "/models/record", {"baggage": baggage})
    assert status == 200 and info["path"] == "/v1/models/record"
    assert info["metadata"] == {"arm": "c"}
    assert info["session"] is not None and info["session"]["uid_chain"][:-1] == root.uid_chain
    assert [t.input for t in root.llm_calls] == ["/v1/models/record"]


def test_slug_without_a_session_exposes_its_metadata_only(serve_asgi, probe_apps, fetch_json):
    server = serve_asgi(SessionMiddleware(probe_apps[0]))
    base = build_proxied_base_url(server.url + "/v1", {"team": "search", "budget": 12})
    _, info = fetch_json(base + "/models")
    assert info["path"] == "/v1/models"
    assert info["metadata"] == {"team": "search", "budget": 12}
    assert info["session"] is None


def test_an_apps_own_meta_route_is_left_alone(serve_asgi, probe_apps, fetch_json, caplog):
    caplog.set_level(logging.WARNING)
    server = serve_asgi(SessionMiddleware(probe_apps[0], strict=True))
    status, info = fetch_json(server.url + "/api/meta/users/42")
    assert status == 200 and info["path"] == "/api/meta/users/42" and info["metadata"] == {}
    assert [r for r in caplog.records if r.name.startswith("session_http")] == []


def test_a_refused_reference_tells_the_caller_nothing_about_the_storage(serve_asgi, probe_apps, fetch_json, tmp_path):
    """``session.ref=1`` naming a session the storage does not hold: a strict server answers 400, and the body
    (which the caller reads) names neither the database file nor its type."""
    sql = pytest.importorskip("session_storage_sql")
    storage = sql.SqliteSessionStorage(tmp_path / "private-name.db")
    server = serve_asgi(SessionMiddleware(probe_apps[0], storage=storage, strict=True))
    header = "session.v=1,session.name=a,session.uids=nobody0123,session.ref=1"
    status, body = fetch_json(server.url + "/", {"baggage": header})
    storage.close()
    assert status == 400 and "is not in this service's storage" in body
    assert "private-name" not in body and str(tmp_path) not in body and "Sqlite" not in body


def test_a_slug_behind_an_apps_own_meta_route_is_read(serve_asgi, probe_apps, fetch_json):
    """A service mounted under a route named ``meta``: its ``/meta/api`` is left, the slug after it is ours."""
    storage = InMemoryStorage()
    server = serve_asgi(SessionMiddleware(probe_apps[0], storage=storage, strict=True))
    with ContextVarSession("mounted", storage=storage, arm="c") as root:
        base = build_proxied_base_url(server.url + "/meta/api/v1", assemble_routing_metadata())
    status, info = fetch_json(base + "/models/record")
    assert status == 200 and info["path"] == "/meta/api/v1/models/record"
    assert info["raw_path"] == "/meta/api/v1/models/record" and info["metadata"] == {"arm": "c"}
    assert [t.input for t in root.llm_calls] == ["/meta/api/v1/models/record"]
    # the app's own "e30x" starts like the unprefixed slug "e30" after it: only the slug's segment is stripped
    status, info = fetch_json(server.url + "/meta/e30x/meta/e30/v1/models")
    assert status == 200 and info["path"] == info["raw_path"] == "/meta/e30x/v1/models" and info["metadata"] == {}


@pytest.mark.parametrize("strict", [False, True])
def test_a_malformed_slug_behind_an_apps_own_meta_route_is_refused(serve_asgi, probe_apps, fetch_json, caplog, strict):
    caplog.set_level(logging.WARNING)
    server = serve_asgi(SessionMiddleware(probe_apps[0], strict=strict))
    status, info = fetch_json(server.url + "/meta/api/meta/v1.bm90LWpzb24/v1/models")
    warnings = [r.getMessage() for r in caplog.records if r.name.startswith("session_http")]
    assert len(warnings) == 1 and "slug" in warnings[0]
    if strict:
        assert status == 400 and "invalid session context" in info
    else:
        assert status == 200 and info["path"] == "/meta/api/v1/models" and info["session"] is None


@pytest.mark.parametrize("strict", [False, True])
def test_malformed_slug_is_refused_and_stripped(serve_asgi, probe_apps, fetch_json, caplog, strict):
    caplog.set_level(logging.WARNING)
    server = serve_asgi(SessionMiddleware(probe_apps[0], strict=strict))
    status, info = fetch_json(server.url + "/meta/v1.bm90LWpzb24/v1/models")  # base64 of "not-json"
    warnings = [r.getMessage() for r in caplog.records if r.name.startswith("session_http")]
    assert len(warnings) == 1 and "slug" in warnings[0]
    if strict:
        assert status == 400 and "invalid session context" in info
    else:
        assert status == 200 and info["path"] == "/v1/models" and info["session"] is None


def test_slug_with_wrong_types_is_refused(serve_asgi, probe_apps, fetch_json, caplog):
    caplog.set_level(logging.WARNING)
    server = serve_asgi(SessionMiddleware(probe_apps[0]))
    slug = encode_metadata_slug({"session_name": "x", "session_uids": [1, 2]})
    status, info = fetch_json(server.url + f"/meta/{slug}/v1/models")
    assert status == 200 and info["session"] is None and info["path"] == "/v1/models"
    warnings = [r.getMessage() for r in caplog.records if r.name.startswith("session_http")]
    assert len(warnings) == 1 and "uid_chain" in warnings[0]


# -- frameworks ---------------------------------------------------------------------------------------------
def test_starlette_request_state_lifespan_state_and_streaming(serve_asgi, fetch_json):
    starlette = pytest.importorskip("starlette")
    assert starlette
    from contextlib import asynccontextmanager

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    events: list[str] = []

    @asynccontextmanager
    async def lifespan(app: Starlette):  # type: ignore[no-untyped-def]
        events.append("startup")
        yield {"db": "connected"}
        events.append("shutdown")

    async def meta(request: Request) -> JSONResponse:
        record_trace(name="starlette")
        return JSONResponse({"metadata": request.state.session_metadata, "db": request.state.db})

    async def stream(request: Request) -> StreamingResponse:
        async def body():  # type: ignore[no-untyped-def]
            for i in range(2):
                record_trace(name=f"part-{i}")
                yield f"{get_current_session() is not None}\n"

        return StreamingResponse(body())

    app = Starlette(routes=[Route("/meta", meta), Route("/stream", stream)], lifespan=lifespan)
    storage = InMemoryStorage()
    server = serve_asgi(SessionMiddleware(app, storage=storage), lifespan="on")
    assert events == ["startup"]
    with ContextVarSession("star", storage=storage, user="u1", n=5) as root:
        status, info = fetch_json(server.url + "/meta", inject())
        _, streamed = fetch_json(server.url + "/stream", inject())
    assert status == 200 and info == {"metadata": {"user": "u1", "n": 5}, "db": "connected"}
    assert streamed == "True\nTrue\n"
    assert [t.name for t in root.llm_calls] == ["starlette", "part-0", "part-1"]
    _, bare = fetch_json(server.url + "/meta")
    assert bare == {"metadata": {}, "db": "connected"}


# -- passthrough --------------------------------------------------------------------------------------------
def test_lifespan_scopes_pass_through_untouched(serve_asgi, fetch_json):
    seen: dict[str, Any] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            seen["lifespan_scope"] = scope
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    seen["startup"] = True
                    scope["state"]["ready"] = "yes"
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        else:
            body = json.dumps({"state": {k: v for k, v in scope["state"].items()}}).encode()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": body})

    server = serve_asgi(SessionMiddleware(app), lifespan="on")
    assert seen["startup"] is True
    assert "session_http.middleware" not in seen["lifespan_scope"]
    with ContextVarSession("lifespan"):
        headers = inject()
    _, info = fetch_json(server.url + "/", headers)
    assert info["state"]["ready"] == "yes" and info["state"]["session_metadata"] == {}


def test_a_request_mutating_its_metadata_does_not_leak_into_the_next(serve_asgi, fetch_json):
    """Decoded headers are cached; each request still gets its own copy of nested metadata values."""

    async def mutating(scope: dict[str, Any], receive: Any, send: Any) -> None:
        state = scope["state"]["session_metadata"]
        seen = json.loads(json.dumps({"exposed": state, "session": get_current_session().merged_metadata()}))
        state["tags"].append("mutated")
        state["run"]["attempt"] += 1
        get_current_session().merged_metadata()["tags"].append("mutated-too")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": json.dumps(seen).encode()})

    server = serve_asgi(SessionMiddleware(mutating))
    with ContextVarSession("leak", tags=["a"], run={"attempt": 1}, n=1):
        headers = inject()
    answers = [fetch_json(server.url + "/", headers)[1] for _ in range(3)]
    expected = {"tags": ["a"], "run": {"attempt": 1}, "n": 1}
    assert answers == [{"exposed": expected, "session": expected}] * 3


_VALID = "session.v=1,session.name=n,session.uids=abc.def"
BAD_BAGGAGE = {
    "oversized": _VALID + ",session.m.big=%22" + "x" * 9000 + "%22",
    "bad percent-encoding": _VALID + ",session.m.k=%zz",
    "invalid utf-8": _VALID + ",session.m.k=%22%C3%28%22",
    "non-JSON value": _VALID + ",session.m.k={oops",
    "bad uid chain": "session.v=1,session.name=n,session.uids=a..b",
    "missing uids": "session.v=1,session.name=n,session.m.k=1",
    "duplicate member": _VALID + ",session.uids=abc",
    "unknown version": "session.v=9,session.name=n,session.uids=abc",
    "member without '='": _VALID + ",session.m.k",
    "too deep": _VALID + ",session.m.k=" + "%5B" * 40 + "%5D" * 40,
    "non-finite number": _VALID + ",session.m.k=1e999",
}


@pytest.mark.parametrize("strict", [False, True], ids=["lenient", "strict"])
@pytest.mark.parametrize("case", list(BAD_BAGGAGE))
def test_bad_baggage_is_refused_with_one_warning(serve_asgi, probe_apps, fetch_json, caplog, case, strict):
    caplog.set_level(logging.WARNING)
    storage = InMemoryStorage()
    server = serve_asgi(SessionMiddleware(probe_apps[0], storage=storage, strict=strict))
    status, info = fetch_json(server.url + "/record", {"baggage": BAD_BAGGAGE[case]})
    warnings = [r.getMessage() for r in caplog.records if r.name.startswith("session_http")]
    assert len(warnings) == 1, warnings
    assert len(warnings[0]) < 400  # names the problem, never echoes the whole header
    if strict:
        assert status == 400 and info.startswith("invalid session context:")
    else:
        assert status == 200 and info["session"] is None and info["metadata"] == {}
    assert len(storage) == 0


def test_several_baggage_headers_combine(serve_asgi, probe_apps):
    import http.client

    server = serve_asgi(SessionMiddleware(probe_apps[0]))
    with ContextVarSession("split", k=1) as root:
        value = inject()["baggage"]
    cut = value.index(",session.uids")
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.putrequest("GET", "/")
    conn.putheader("baggage", value[:cut])
    conn.putheader("baggage", "other=1")
    conn.putheader("baggage", value[cut + 1 :])
    conn.endheaders()
    info = json.loads(conn.getresponse().read())
    conn.close()
    assert info["session"]["uid_chain"][:-1] == root.uid_chain and info["metadata"] == {"k": 1}


def test_a_session_in_any_of_several_baggage_headers_is_read(serve_asgi, probe_apps):
    """Repeated baggage headers combine (W3C): a session in the first is read even when the last has none."""
    import http.client

    server = serve_asgi(SessionMiddleware(probe_apps[0]))
    with ContextVarSession("first", k=1) as root:
        value = inject()["baggage"]
    for _ in range(2):  # the second time from the cache of decoded headers
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        conn.putrequest("GET", "/")
        conn.putheader("baggage", value)
        conn.putheader("baggage", "other=1")
        conn.endheaders()
        info = json.loads(conn.getresponse().read())
        conn.close()
        assert info["session"]["uid_chain"][:-1] == root.uid_chain and info["metadata"] == {"k": 1}


def test_extract_of_starlette_request_headers_reads_every_baggage_header(serve_asgi):
    """Starlette's ``request.headers`` is a `Mapping` whose ``get`` answers the first of repeated headers only."""
    import http.client

    pytest.importorskip("starlette")
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from session_http import extract

    async def endpoint(request: Any) -> Any:
        return JSONResponse({"ctx": extract(request.headers)})

    server = serve_asgi(Starlette(routes=[Route("/", endpoint)]))
    with ContextVarSession("second", k=1) as root:
        value = inject()["baggage"]
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.putrequest("GET", "/")
    conn.putheader("baggage", "other=1")
    conn.putheader("baggage", value)
    conn.endheaders()
    ctx = json.loads(conn.getresponse().read())["ctx"]
    conn.close()
    assert ctx is not None and ctx["uid_chain"] == root.uid_chain and ctx["metadata"] == {"k": 1}


# -- applied twice ------------------------------------------------------------------------------------------
def test_applied_twice_the_inner_middleware_passes_the_outers_session_through(serve_asgi, probe_apps, fetch_json):
    """A framework adds the middleware and the user adds it too: one session per request, not a nested one."""
    storage = InMemoryStorage()
    app = SessionMiddleware(SessionMiddleware(probe_apps[0], storage=InMemoryStorage()), storage=storage)
    server = serve_asgi(app)
    with ContextVarSession("twice", storage=storage, arm="a") as root:
        _, info = fetch_json(server.url + "/record", inject())
        base = build_proxied_base_url(server.url + "/v1", assemble_routing_metadata())
    _, via_slug = fetch_json(base + "/models/record")
    for seen in (info, via_slug):
        assert seen["active"] == 1
        assert seen["session"]["uid_chain"][:-1] == root.uid_chain and len(seen["session"]["uid_chain"]) == 2
        assert seen["metadata"] == {"arm": "a"}
    assert via_slug["path"] == "/v1/models/record"
    assert [t.input for t in root.llm_calls] == ["/record", "/v1/models/record"]  # the outer's storage
    _, bare = fetch_json(server.url + "/record")
    assert bare["session"] is None and bare["active"] == 0 and bare["metadata"] == {}


def test_applied_twice_an_inner_without_the_outers_signing_key_does_not_bypass_it(serve_asgi, probe_apps, fetch_json):
    app = SessionMiddleware(SessionMiddleware(probe_apps[0]), signing_key="outer-key")
    server = serve_asgi(app)
    with ContextVarSession("unsigned"):
        _, info = fetch_json(server.url + "/record", inject(signing_key=None))  # no $SESSION_SIGNING_KEY: unsigned
    assert info["session"] is None and info["active"] == 0 and info["metadata"] == {}


def test_applied_twice_the_scope_stays_shared_and_an_in_process_app_is_served(serve_asgi, fetch_json):
    """The inner instance is told apart without copying or marking the scope: what the app writes into it (a
    router's ``route``) reaches middlewares further out, and an ASGI app the handler calls in-process, with a
    scope and headers of its own, is served by its middleware as usual."""
    seen: dict[str, Any] = {}

    async def called_in_process(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen["in_process"] = get_active_session_uids()
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    nested = SessionMiddleware(called_in_process, storage=InMemoryStorage())

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scope["route"] = "/things/{id}"
        with ContextVarSession("sub-call") as sub:
            headers = [(k.lower().encode(), v.encode()) for k, v in inject().items()]
            seen["sub"] = sub.uid_chain
        sub_scope = {"type": "http", "method": "GET", "path": "/sub", "raw_path": b"/sub", "headers": headers}
        sent: list[dict[str, Any]] = []

        async def sub_send(message: dict[str, Any]) -> None:
            sent.append(message)

        async def sub_receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        await nested(sub_scope, sub_receive, sub_send)
        body = json.dumps({"uids": get_active_session_uids(), "sub_status": sent[0]["status"]}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})

    class Observer:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
            async def observing_send(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":  # as metrics middlewares read the route
                    seen["route"] = scope.get("route")
                await send(message)

            await self.inner(scope, receive, observing_send)

    server = serve_asgi(Observer(SessionMiddleware(SessionMiddleware(app))))
    with ContextVarSession("caller") as caller:
        _, info = fetch_json(server.url + "/things/1", inject())
    assert info["uids"][:-1] == caller.uid_chain and len(info["uids"]) == 2  # one session, not two
    assert seen["route"] == "/things/{id}"
    assert info["sub_status"] == 204
    assert seen["in_process"][:-1] == seen["sub"] and len(seen["in_process"]) == len(seen["sub"]) + 1
