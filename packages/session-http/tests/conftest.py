"""Real servers on 127.0.0.1 for session-http's tests: uvicorn (ASGI) and werkzeug / wsgiref (WSGI) in threads."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.request
import wsgiref.simple_server
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest

from session_core import get_active_sessions, get_current_session, record_trace

STARTUP_TIMEOUT = 20.0


def _tcp_socket() -> socket.socket:
    # proto=IPPROTO_TCP so asyncio turns Nagle off on accepted connections (else 40 ms delayed-ACK stalls)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class UvicornServer:
    """uvicorn serving `app` on a free 127.0.0.1 port in a background thread, with a real startup wait."""

    def __init__(self, app: Any, **config: Any) -> None:
        import uvicorn

        self.sock = _tcp_socket()
        self.port = self.sock.getsockname()[1]
        config.setdefault("log_config", None)  # leave logging alone: uvicorn's errors reach the root logger
        config.setdefault("log_level", "warning")
        config.setdefault("access_log", False)
        config.setdefault("lifespan", "off")
        self.server = uvicorn.Server(uvicorn.Config(app, **config))
        self.thread = threading.Thread(target=self._run, name=f"uvicorn-{self.port}", daemon=True)
        self.error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        try:
            asyncio.run(self.server.serve(sockets=[self.sock]))
        except BaseException as exc:  # surfaced by start()/stop()
            self.error = exc

    def start(self) -> UvicornServer:
        self.thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError(f"uvicorn exited during startup: {self.error!r}")
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start in time")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(STARTUP_TIMEOUT)
        self.sock.close()
        if self.thread.is_alive():
            raise RuntimeError("uvicorn did not shut down in time")


class WSGIServer:
    """werkzeug's threaded dev server (or wsgiref when werkzeug is absent) on a free 127.0.0.1 port."""

    def __init__(self, app: Callable[..., Any], *, kind: str = "werkzeug") -> None:
        self.kind = kind
        if kind == "werkzeug":
            from werkzeug.serving import make_server

            self.server: Any = make_server("127.0.0.1", 0, app, threaded=True)
        else:

            class _QuietHandler(wsgiref.simple_server.WSGIRequestHandler):
                def log_message(self, format: str, *args: Any) -> None:
                    pass

            self.server = wsgiref.simple_server.make_server("127.0.0.1", 0, app, handler_class=_QuietHandler)
        self.port = self.server.server_port
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"wsgi-{self.port}", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> WSGIServer:
        self.thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:  # serve_forever is listening once a connection succeeds
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("WSGI server did not start in time") from None
                time.sleep(0.005)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(STARTUP_TIMEOUT)


@pytest.fixture
def serve_asgi() -> Iterator[Callable[..., UvicornServer]]:
    """Start uvicorn servers for the test: ``server = serve_asgi(app, **uvicorn_config)``; stopped afterwards."""
    started: list[UvicornServer] = []

    def start(app: Any, **config: Any) -> UvicornServer:
        server = UvicornServer(app, **config).start()
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        server.stop()


@pytest.fixture
def serve_wsgi() -> Iterator[Callable[..., WSGIServer]]:
    """Start WSGI servers for the test: ``server = serve_wsgi(app, kind="werkzeug"|"wsgiref")``."""
    started: list[WSGIServer] = []

    def start(app: Any, *, kind: str = "werkzeug") -> WSGIServer:
        server = WSGIServer(app, kind=kind).start()
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        server.stop()


class ErrorCollector(logging.Handler):
    """Collects ERROR records (e.g. uvicorn's "Exception in ASGI application") from any logger."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def server_errors() -> Iterator[ErrorCollector]:
    collector = ErrorCollector()
    root = logging.getLogger()
    root.addHandler(collector)
    try:
        yield collector
    finally:
        root.removeHandler(collector)


def http_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The warnings session-http logged (one per refused request)."""
    return [r.getMessage() for r in caplog.records if r.name.startswith("session_http") and r.levelname == "WARNING"]


@pytest.fixture
def http_warning_messages(caplog: pytest.LogCaptureFixture) -> Callable[[], list[str]]:
    caplog.set_level(logging.WARNING)
    return lambda: http_warnings(caplog)


# -- probe applications: they report what the middleware made of the request ------------------------------
def describe(path: str, raw_path: str, metadata: Any, baggage: str | None) -> dict[str, Any]:
    """What the application sees: path, metadata, the active session (and records a trace on /record)."""
    session = get_current_session()
    if path.endswith("/record"):
        record_trace(name="probe", input=path, output="ok", model="probe-model")
    return {
        "path": path,
        "raw_path": raw_path,
        "metadata": metadata,
        "baggage": baggage,
        "active": len(get_active_sessions()),
        "session": None
        if session is None
        else {
            "class": type(session).__name__,
            "name": session.name,
            "uid_chain": session.uid_chain,
            "metadata": session.merged_metadata(),
        },
    }


async def probe_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A plain ASGI app (no framework)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    assert scope["type"] == "http"
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    headers = dict(scope["headers"])
    baggage = headers.get(b"baggage")
    info = describe(
        scope["path"],
        scope.get("raw_path", b"").decode("latin-1"),
        scope["state"]["session_metadata"],
        baggage.decode("latin-1") if baggage is not None else None,
    )
    body = json.dumps(info).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def probe_wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """A plain WSGI app (no framework)."""
    info = describe(
        environ["PATH_INFO"],
        environ.get("REQUEST_URI", environ.get("RAW_URI", "")),
        environ["session.metadata"],
        environ.get("HTTP_BAGGAGE"),
    )
    body = json.dumps(info).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def fetch(url: str, headers: dict[str, str] | None = None, data: bytes | None = None) -> tuple[int, Any]:
    """``(status, JSON body or text)`` of a request with the stdlib client (works in every test variant)."""
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode("utf-8", "replace")


@pytest.fixture
def fetch_json() -> Callable[..., tuple[int, Any]]:
    return fetch


@pytest.fixture
def probe_apps() -> tuple[Any, Any]:
    """``(probe_asgi, probe_wsgi)``."""
    return probe_asgi, probe_wsgi
