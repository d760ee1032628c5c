"""SessionWSGIMiddleware under real WSGI servers: a plain WSGI app on wsgiref, Flask on werkzeug."""

from __future__ import annotations

import contextvars
import logging
import threading
from typing import Any

import pytest

from session_core import (
    ContextVarSession,
    InMemoryStorage,
    assemble_routing_metadata,
    build_proxied_base_url,
    get_active_sessions,
    get_current_session,
    record_trace,
)
from session_http import SessionWSGIMiddleware, inject


@pytest.mark.parametrize("kind", ["wsgiref", "werkzeug"])
def test_plain_wsgi_request_runs_in_a_child_session(serve_wsgi, probe_apps, fetch_json, kind):
    storage = InMemoryStorage()
    server = serve_wsgi(SessionWSGIMiddleware(probe_apps[1], storage=storage), kind=kind)
    with ContextVarSession("wsgi", storage=storage, run=4, score=0.25, tags=["x"]) as root:
        status, info = fetch_json(server.url + "/job/record", inject())
    assert status == 200
    assert info["active"] == 1 and info["session"]["uid_chain"][:-1] == root.uid_chain
    assert info["metadata"] == {"run": 4, "score": 0.25, "tags": ["x"]}
    assert [t.name for t in root.llm_calls] == ["probe"]
    status, bare = fetch_json(server.url + "/job/record", {"baggage": "other=1"})
    assert bare["session"] is None and bare["metadata"] == {} and bare["baggage"] == "other=1"
    assert len(root.llm_calls) == 1


def test_slug_rewrites_path_info_and_request_uri(serve_wsgi, probe_apps, fetch_json):
    storage = InMemoryStorage()
    server = serve_wsgi(SessionWSGIMiddleware(probe_apps[1], storage=storage))
    with ContextVarSession("slug", storage=storage, arm="a") as root:
        base = build_proxied_base_url(server.url + "/v1", assemble_routing_metadata())
    _, info = fetch_json(base + "/chat/completions/record?x=1")
    assert info["path"] == "/v1/chat/completions/record"
    assert info["raw_path"] == "/v1/chat/completions/record?x=1"
    assert info["metadata"] == {"arm": "a"}
    assert [t.input for t in root.llm_calls] == ["/v1/chat/completions/record"]


def test_a_percent_encoded_slug_is_stripped_from_request_uri_too(serve_wsgi, probe_apps, fetch_json):
    """A client that percent-encodes the rLLM slug's ':' (``rllm1%3A…``): PATH_INFO holds it decoded, the raw
    REQUEST_URI encoded; both lose it, as ``path`` and ``raw_path`` do under ASGI."""
    server = serve_wsgi(SessionWSGIMiddleware(probe_apps[1]))
    with ContextVarSession("encoded", arm="d"):
        slug = build_proxied_base_url("/v1", assemble_routing_metadata()).split("/")[2]
    encoded = "rllm1%3A" + slug[len("v1.") :]
    _, info = fetch_json(f"{server.url}/meta/{encoded}/v1/a%20b?x=/meta/{encoded}")
    assert info["metadata"] == {"arm": "d"}
    assert info["path"] == "/v1/a b" and info["raw_path"] == f"/v1/a%20b?x=/meta/{encoded}"


def test_a_slug_behind_an_apps_own_meta_route_rewrites_the_right_segment(serve_wsgi, probe_apps, fetch_json):
    server = serve_wsgi(SessionWSGIMiddleware(probe_apps[1]))
    with ContextVarSession("mounted", arm="c"):
        base = build_proxied_base_url(server.url + "/meta/e30x/v1", assemble_routing_metadata())
    _, info = fetch_json(base + "/models?x=1")
    assert info["path"] == "/meta/e30x/v1/models" and info["raw_path"] == "/meta/e30x/v1/models?x=1"
    assert info["metadata"] == {"arm": "c"}
    # the app's own "e30x" starts like the unprefixed slug "e30" after it: only the slug's segment is stripped
    _, info = fetch_json(server.url + "/meta/e30x/meta/e30/v1/models?x=1")
    assert info["path"] == "/meta/e30x/v1/models" and info["raw_path"] == "/meta/e30x/v1/models?x=1"


def test_streamed_body_is_produced_inside_the_session_and_the_thread_stays_clean(serve_wsgi, fetch_json):
    after: list[Any] = []

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "text/plain")])

        def body():  # type: ignore[no-untyped-def]
            for i in range(3):
                record_trace(name=f"chunk-{i}")
                yield f"{len(get_active_sessions())};".encode()

        return body()

    class Checked:
        """Outermost: what the server thread's own context holds once the response is done."""

        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
            yield from self.inner(environ, start_response)
            after.append(get_current_session())

    storage = InMemoryStorage()
    server = serve_wsgi(Checked(SessionWSGIMiddleware(app, storage=storage)), kind="wsgiref")
    with ContextVarSession("stream", storage=storage) as root:
        status, body = fetch_json(server.url + "/", inject())
    assert status == 200 and body == "1;1;1;"
    assert [t.name for t in root.llm_calls] == ["chunk-0", "chunk-1", "chunk-2"]
    assert after == [None]


def test_session_exits_when_the_app_raises():
    seen: list[Any] = []

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        seen.append(get_current_session())
        raise RuntimeError("boom")

    with ContextVarSession("raise") as root:
        headers = inject()
    middleware = SessionWSGIMiddleware(app)
    environ = {"PATH_INFO": "/", "HTTP_BAGGAGE": headers["baggage"], "REQUEST_METHOD": "GET"}
    with pytest.raises(RuntimeError, match="boom"):
        contextvars.copy_context().run(middleware, environ, lambda *a: None)
    assert seen[0].uid_chain[:-1] == root.uid_chain
    assert not seen[0].is_active  # left the stack on the way out


def test_an_exception_raised_while_streaming_the_body_reaches_the_session(serve_wsgi, fetch_json):
    """The app returned a lazy body that raises: the session exits with that exception (an `OTelSession` marks its
    span as failed), as it does when the app itself raises, not as if the request had succeeded."""
    exits: list[Any] = []

    class Recording(ContextVarSession):
        def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
            exits.append(exc)
            super().__exit__(exc_type, exc, tb)

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        def body():  # type: ignore[no-untyped-def]
            start_response("200 OK", [("Content-Type", "text/plain")])
            raise RuntimeError("failed while streaming")
            yield b""

        return body()

    def factory(ctx: dict[str, Any], storage: Any) -> Recording:
        return Recording.from_context(ctx, storage=storage)

    server = serve_wsgi(SessionWSGIMiddleware(app, session_factory=factory), kind="wsgiref")
    with ContextVarSession("streaming-error"):
        status, _ = fetch_json(server.url + "/", inject())
    assert status == 500
    assert len(exits) == 1 and isinstance(exits[0], RuntimeError) and str(exits[0]) == "failed while streaming"


@pytest.mark.parametrize("strict", [False, True])
def test_bad_baggage_under_wsgi(serve_wsgi, probe_apps, fetch_json, caplog, strict):
    caplog.set_level(logging.WARNING)
    server = serve_wsgi(SessionWSGIMiddleware(probe_apps[1], strict=strict), kind="wsgiref")
    status, info = fetch_json(server.url + "/x", {"baggage": "session.uids=abc,session.name=n,session.m.k=%zz"})
    warnings = [r.getMessage() for r in caplog.records if r.name.startswith("session_http")]
    assert len(warnings) == 1 and "percent-encoding" in warnings[0]
    if strict:
        assert status == 400 and info.startswith("invalid session context:")
    else:
        assert status == 200 and info["session"] is None and info["metadata"] == {}


def test_flask_app_on_werkzeug(serve_wsgi, fetch_json):
    flask = pytest.importorskip("flask")
    app = flask.Flask("session_http_test")
    threads: set[str] = set()

    @app.get("/v1/chat/completions")
    def completions() -> Any:
        threads.add(threading.current_thread().name)
        session = get_current_session()
        record_trace(name="flask", model="m")
        return {"metadata": flask.request.environ["session.metadata"], "chain": session.uid_chain}

    @app.get("/stream")
    def stream() -> Any:
        def body():  # type: ignore[no-untyped-def]
            for i in range(2):
                record_trace(name=f"flask-part-{i}")
                yield f"{get_current_session() is not None}\n"

        return flask.Response(flask.stream_with_context(body()), mimetype="text/plain")

    storage = InMemoryStorage()
    app.wsgi_app = SessionWSGIMiddleware(app.wsgi_app, storage=storage)  # type: ignore[method-assign]
    server = serve_wsgi(app, kind="werkzeug")
    with ContextVarSession("flask", storage=storage, user="bob", step=2) as root:
        _, info = fetch_json(server.url + "/v1/chat/completions", inject())
        _, streamed = fetch_json(server.url + "/stream", inject())
        base = build_proxied_base_url(server.url + "/v1", assemble_routing_metadata())
        _, via_slug = fetch_json(base + "/chat/completions")
    assert info["metadata"] == {"user": "bob", "step": 2} and info["chain"][:-1] == root.uid_chain
    assert via_slug["metadata"] == {"user": "bob", "step": 2}
    assert streamed == "True\nTrue\n"
    assert sorted(t.name for t in root.llm_calls) == ["flask", "flask", "flask-part-0", "flask-part-1"]


@pytest.mark.parametrize("kind", ["wsgiref", "werkzeug"])
def test_applied_twice_the_inner_middleware_passes_the_outers_session_through(serve_wsgi, probe_apps, fetch_json, kind):
    """A framework adds the middleware and the user adds it too: one session per request, not a nested one."""
    storage = InMemoryStorage()
    app = SessionWSGIMiddleware(SessionWSGIMiddleware(probe_apps[1], storage=InMemoryStorage()), storage=storage)
    server = serve_wsgi(app, kind=kind)
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
