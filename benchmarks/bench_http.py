"""session-http: what the middleware adds to a real uvicorn request, and what outgoing injection costs.

- Latency: one uvicorn server process serves the same ASGI app on two routes, ``/plain`` directly and
  ``/session`` through `SessionMiddleware`; a keep-alive client (stdlib ``http.client``, Nagle off) alternates
  between them, every request carrying the same session baggage header (10 metadata members). Same process,
  loop and connection for both, so the only difference is the middleware. Figure = median latency through the
  middleware; floor = median of the plain route, interleaved in the same run.
- With OpenTelemetry set up in the server (SDK, no exporter), the middleware opens an `OTelSession` per request,
  whose span records: reported against the bare app and against OpenTelemetry's own ASGI middleware.
- Injection: `inject()` of the current 10-member session into a fresh headers dict, per call.
"""

from __future__ import annotations

import gc
import http.client
import importlib
import os
import socket
import statistics
import subprocess
import sys
import time

from _harness import Result, per_call

from session_core import ContextVarSession, encode_baggage
from session_http import inject

AREA = "http"
METADATA = {
    "experiment": "exp-42",
    "arm": "b",
    "step": 17,
    "epoch": 3,
    "temperature": 0.7,
    "user": "alice",
    "greedy": False,
    "tags": ["rl", "eval"],
    "seed": 1234,
    "run": {"id": "r-9", "attempt": 2},
}

_SERVER = r"""
import asyncio, socket, sys
import uvicorn
from session_core import InMemoryStorage
from session_http import SessionMiddleware

if sys.argv[1:] == ["otel"]:  # OpenTelemetry set up (SDK, no exporter): the middleware opens OTelSessions
    from session_otel import init_otel_distributed_tracing

    init_otel_distributed_tracing("bench-http")

async def app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})

wrapped = SessionMiddleware(app, storage=InMemoryStorage())
table = {"/plain": app, "/session": wrapped}
try:  # a typical framework app too, when Starlette is installed
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def ok(request):
        return PlainTextResponse("ok")

    starlette_app = Starlette(routes=[Route("/starlette/plain", ok), Route("/starlette/session", ok)])
    table["/starlette/plain"] = starlette_app
    table["/starlette/session"] = SessionMiddleware(starlette_app, storage=InMemoryStorage())
except ImportError:
    pass
try:  # OpenTelemetry's own ASGI instrumentation: what a server span per request costs by itself
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    table["/otel/plain"] = app
    table["/otel/session"] = OpenTelemetryMiddleware(app)
except ImportError:
    pass

async def routes(scope, receive, send):
    if scope["type"] != "http":
        return
    await table[scope["path"]](scope, receive, send)

# proto=IPPROTO_TCP: asyncio turns Nagle off on accepted connections only for sockets that say they are TCP
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
sock.bind(("127.0.0.1", 0))
print(sock.getsockname()[1], flush=True)
config = uvicorn.Config(routes, log_level="warning", access_log=False, lifespan="off")
asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))
"""


def _connect(port: int) -> http.client.HTTPConnection:
    """A keep-alive connection with Nagle off (else delayed ACKs, not the server, set the latency)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.connect()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
    assert conn.sock is not None
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


class _Server:
    """The bench server in a subprocess (``otel``: with OpenTelemetry set up) and one keep-alive client."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _SERVER, *args], stdout=subprocess.PIPE, text=True, env=os.environ
        )
        try:
            assert self.process.stdout is not None
            self.conn = _connect(int(self.process.stdout.readline()))
        except BaseException:
            self.close()
            raise

    def hit(self, path: str, headers: dict[str, str]) -> float:
        start = time.perf_counter()
        self.conn.request("GET", path, headers=headers)
        response = self.conn.getresponse()
        body = response.read()
        elapsed = time.perf_counter() - start
        if response.status != 200 or body != b"ok":
            raise RuntimeError(f"{path} answered {response.status}: {body[:200]!r}")
        return elapsed

    def compare(self, headers: dict[str, str], prefix: str, quick: bool) -> tuple[float, float]:
        """Median microseconds of ``<prefix>/session`` and of ``<prefix>/plain``, requests interleaved."""
        plain, session = prefix + "/plain", prefix + "/session"
        for _ in range(100 if quick else 1000):  # warm up: keep-alive, caches, the decoded-header cache
            self.hit(plain, headers)
            self.hit(session, headers)
        times: dict[str, list[float]] = {plain: [], session: []}
        gc.collect()
        gc.disable()
        try:
            for i in range(300 if quick else 8000):
                for path in (plain, session) if i % 2 == 0 else (session, plain):
                    times[path].append(self.hit(path, headers))
        finally:
            gc.enable()
        return statistics.median(times[session]) * 1e6, statistics.median(times[plain]) * 1e6

    def close(self) -> None:
        if getattr(self, "conn", None) is not None:
            self.conn.close()
        self.process.terminate()
        self.process.wait(10)


def _latency(quick: bool) -> list[Result]:
    with ContextVarSession("bench-http", **METADATA) as session:
        header = encode_baggage(session.to_context())
    server = _Server()
    try:
        with_session, floor = server.compare({"baggage": header}, "", quick)
        no_session, floor_bare = server.compare({"baggage": "userId=alice"}, "", quick)
        try:
            framework: tuple[float, float] | None = server.compare({"baggage": header}, "/starlette", quick)
        except RuntimeError:  # Starlette is not installed in the server: no such route
            framework = None
    finally:
        server.close()
    results = [
        Result(
            AREA,
            "uvicorn request through SessionMiddleware, 10-member session baggage (median)",
            with_session,
            "us",
            "same app without the middleware",
            floor,
            "<= 1.03x floor",
            with_session <= 1.03 * floor,
        ),
        Result(
            AREA,
            "uvicorn request through SessionMiddleware, baggage without a session (median)",
            no_session,
            "us",
            "same app without the middleware",
            floor_bare,
            "<= 1.03x floor",
            no_session <= 1.03 * floor_bare,
        ),
    ]
    if framework is not None:
        results.append(
            Result(
                AREA,
                "the same with a Starlette app behind the middleware (median)",
                framework[0],
                "us",
                "the Starlette app without the middleware",
                framework[1],
                "<= 1.03x floor",
                framework[0] <= 1.03 * framework[1],
            )
        )
    return results + _latency_otel(header, quick)


def _latency_otel(header: str, quick: bool) -> list[Result]:
    """A server where OpenTelemetry is set up: each request with session baggage gets an OTelSession (its span
    recording, no exporter). Reported against the bare app and against OpenTelemetry's own ASGI middleware,
    which also starts a recording span per request."""
    try:
        for module in ("session_otel", "opentelemetry.sdk", "opentelemetry.instrumentation.asgi"):
            importlib.import_module(module)
    except ImportError:
        return []
    server = _Server("otel")
    try:
        ours, bare = server.compare({"baggage": header}, "", quick)
        theirs, bare_again = server.compare({"baggage": header}, "/otel", quick)
    finally:
        server.close()
    return [
        Result(
            AREA,
            "uvicorn request through SessionMiddleware with OpenTelemetry set up: an OTelSession per request (median)",
            ours,
            "us",
            "same app without the middleware",
            bare,
            "reported",
            True,
        ),
        Result(
            AREA,
            "the same, against OpenTelemetry's own ASGI middleware (a server span per request)",
            ours,
            "us",
            f"OpenTelemetryMiddleware around the same app ({theirs / bare_again:.2f}x the bare app)",
            theirs,
            "reported",
            True,
        ),
    ]


def _inject(quick: bool) -> list[Result]:
    number = 2000 if quick else 50000
    with ContextVarSession("bench-http", **METADATA) as session:
        inject({})
        per_inject = per_call(lambda: inject({}), number=number) * 1e6
        ctx = session.to_context()
        uncached = per_call(lambda: encode_baggage(ctx), number=number // 5) * 1e6
        existing = {"baggage": "userId=alice,tenant=acme"}
        per_merge = per_call(lambda: inject(dict(existing)), number=number) * 1e6
    return [
        Result(
            AREA,
            "inject() of a 10-member session into a new headers dict",
            per_inject,
            "us",
            "encode_baggage of the context (uncached)",
            uncached,
            "<= 10 us",
            per_inject <= 10.0,
        ),
        Result(
            AREA,
            "inject() merging into an existing baggage header",
            per_merge,
            "us",
            "encode_baggage of the context (uncached)",
            uncached,
            "<= 10 us",
            per_merge <= 10.0,
        ),
    ]


def run(quick: bool) -> list[Result]:
    return [*_latency(quick), *_inject(quick)]


if __name__ == "__main__":
    for result in run("--quick" in sys.argv):
        ratio = f"{result.ratio:.3f}x" if result.ratio is not None else "-"
        print(
            f"{result.operation}: {result.figure:.2f} {result.unit} (floor {result.floor:.2f}, {ratio}) "
            f"target {result.target}: {'PASS' if result.passed else 'FAIL'}"
        )
