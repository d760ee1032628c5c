"""A distributed RL-style rollout, end to end: the demo `nox -s demo` runs.

Three parts talk over real HTTP on 127.0.0.1 and a real local Ray:

- a fake OpenAI-compatible **model server** (ASGI under uvicorn, ``/v1/chat/completions``) behind
  ``SessionMiddleware``, recording every completion as a ``Trace`` into the shared storage;
- an **agent service** (WSGI, behind ``SessionWSGIMiddleware``) that receives a task, asks the model for a plan,
  fans tool work out to **Ray tasks** that call the model too, and asks for the final answer;
- a **driver** running N rollouts concurrently, each in its own session (``task_id``, ``rollout_idx``).

At the end it prints a table of sessions, one rollout's session tree, and checks that every expected trace
reached its rollout's root session with no cross-talk (exit status 1 if anything is missing).

Run: ``python docs/examples/demo.py [--rollouts 32] [--tools 2] [--storage-url URL] [--ray-address ADDR] [--otel]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import httpx
import ray
import requests
import uvicorn

import session_http
import session_ray
from session_core import ContextVarSession, get_current_metadata, open_storage, record_trace, restore_session

ANSWERS = [
    "Let me break this down step by step.",
    "The tool says the answer is within reach.",
    "Combining the results, the answer is 42.",
    "I would check the edge cases first.",
    "A quick search turned up two candidates.",
]


# -- the model server (ASGI) ------------------------------------------------------------------------------
async def model_app(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    """A fake chat-completions endpoint with canned but varied answers; records each call as a Trace."""
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"] != "/v1/chat/completions":
        await _respond(send, 404, {"error": "not found"})
        return
    request = json.loads(body)
    started = time.perf_counter()
    prompt = request["messages"][-1]["content"]
    answer = ANSWERS[sum(map(ord, prompt)) % len(ANSWERS)]
    await asyncio.sleep(0.002)  # "inference"
    usage = {"prompt": len(prompt.split()), "completion": len(answer.split())}
    usage["total"] = usage["prompt"] + usage["completion"]
    record_trace(
        name="chat.completions",
        model=request.get("model", "fake-model"),
        input=request["messages"],
        output=answer,
        tokens=usage,
        latency_ms=(time.perf_counter() - started) * 1000,
    )
    await _respond(
        send,
        200,
        {
            "object": "chat.completion",
            "model": request.get("model", "fake-model"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": usage["prompt"], "completion_tokens": usage["completion"]},
        },
    )


async def _respond(send: Callable[..., Any], status: int, payload: dict[str, Any]) -> None:
    data = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


def chat(model_url: str, prompt: str) -> str:
    """One chat completion over HTTP; the session travels in the instrumented client's baggage header."""
    response = requests.post(
        f"{model_url}/v1/chat/completions",
        json={"model": "fake-model", "messages": [{"role": "user", "content": prompt}]},
        timeout=30,
    )
    response.raise_for_status()
    return str(response.json()["choices"][0]["message"]["content"])


# -- tool work on Ray ---------------------------------------------------------------------------------------
@session_ray.remote(num_cpus=0.25, scheduling_strategy="SPREAD")
def tool_task(model_url: str, prompt: str) -> str:
    """Runs in a Ray worker, inside a child of the agent request's session (restored by session_ray)."""
    session_http.instrument_requests()  # idempotent: this worker's requests carry the session too
    node = ray.get_runtime_context().get_node_id()
    with ContextVarSession(service="ray-tool", worker_pid=os.getpid(), node=node):
        return chat(model_url, prompt)


# -- the agent service (WSGI) -------------------------------------------------------------------------------
def make_agent_app(model_url: str) -> Callable[..., Any]:
    def agent_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        if environ["PATH_INFO"] != "/solve" or environ["REQUEST_METHOD"] != "POST":
            start_response("404 Not Found", [("Content-Type", "application/json")])
            return [b'{"error": "not found"}']
        length = int(environ.get("CONTENT_LENGTH") or 0)
        task = json.loads(environ["wsgi.input"].read(length))
        plan = chat(model_url, f"plan for {task['task']}")
        refs = [tool_task.remote(model_url, f"tool {i} for {task['task']}") for i in range(task["tools"])]
        tools = ray.get(refs)
        answer = chat(model_url, f"answer {task['task']} given {len(tools)} tool results")
        body = json.dumps({"plan": plan, "tools": tools, "answer": answer, "seen": get_current_metadata()})
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body.encode()]

    return agent_app


# -- servers that start on free ports and stop cleanly ------------------------------------------------------
class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def serve_asgi(app: Any) -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the model server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@contextmanager
def serve_wsgi(app: Any) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


# -- the driver ---------------------------------------------------------------------------------------------
class Progress:
    def __init__(self, total: int) -> None:
        self.total, self.done, self._lock = total, 0, threading.Lock()

    def step(self) -> None:
        with self._lock:
            self.done += 1
            filled = 30 * self.done // self.total
            bar = f"rollouts [{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total}"
            if sys.stderr.isatty():
                print(f"\r{bar}", end="\n" if self.done == self.total else "", file=sys.stderr, flush=True)
            elif self.done == self.total or self.done % max(1, self.total // 4) == 0:
                print(bar, file=sys.stderr, flush=True)


def run_rollout(index: int, agent_url: str, tools: int, storage: Any, session_cls: Any, progress: Progress) -> dict:
    task_id = f"task-{index % 8}"
    with session_cls("rollout", storage=storage, task_id=task_id, rollout_idx=index) as session:
        response = httpx.post(f"{agent_url}/solve", json={"task": task_id, "tools": tools}, timeout=120)
        response.raise_for_status()
        reply = response.json()
        reward = float(reply["answer"].endswith("42."))
        record_trace(name="rollout.result", input=task_id, output=reply["answer"], metadata={"reward": reward})
        result = {"uid": session.uid, "task_id": task_id, "rollout_idx": index, "reply": reply}
        result["otel_trace_id"] = getattr(session, "trace_id", None)
    progress.step()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A distributed rollout with session tracking.")
    parser.add_argument("--rollouts", type=int, default=32)
    parser.add_argument("--tools", type=int, default=2, help="Ray tool calls per rollout")
    parser.add_argument("--storage-url", default=None, help="default: sqlite:///session-demo.db in this directory")
    parser.add_argument("--ray-address", default=None, help="an existing Ray cluster (default: a local one)")
    parser.add_argument("--otel", action="store_true", help="use OTelSession; print each rollout's OTel trace id")
    args = parser.parse_args(argv)

    url = args.storage_url or f"sqlite:///{Path('session-demo.db').resolve()}"
    os.environ["SESSION_STORAGE_URL"] = url  # services and Ray workers open the same storage
    storage = open_storage(url)
    session_cls: Any = ContextVarSession
    exporter = None
    if args.otel:
        exporter = _setup_otel()
        from session_otel import OTelSession

        session_cls = OTelSession

    print(f"storage: {storage!r}")
    if args.ray_address:
        ray.init(address=args.ray_address, log_to_driver=False)
    else:
        ray.init(
            address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=100 * 1024**2
        )
    session_http.instrument_requests()
    session_http.instrument_httpx()
    try:
        model = session_http.SessionMiddleware(model_app, storage=storage, session_factory=_labelled("model-server"))
        with serve_asgi(model) as model_url:
            app = session_http.SessionWSGIMiddleware(
                make_agent_app(model_url), storage=storage, session_factory=_labelled("agent")
            )
            with serve_wsgi(app) as agent:
                print(
                    f"model server {model_url}, agent service {agent}, Ray {ray.get_runtime_context().get_node_id()[:8]}"
                )
                progress = Progress(args.rollouts)
                started = time.perf_counter()
                with ThreadPoolExecutor(8) as pool:
                    results = list(
                        pool.map(
                            lambda i: run_rollout(i, agent, args.tools, storage, session_cls, progress),
                            range(args.rollouts),
                        )
                    )
                elapsed = time.perf_counter() - started
    finally:
        session_http.uninstrument_httpx()
        session_http.uninstrument_requests()
        ray.shutdown()
    return report(results, storage, args.tools, elapsed, exporter)


def _labelled(service: str) -> Callable[[dict[str, Any], Any], Any]:
    """A middleware session factory: the caller's child session, tagged with the service it ran in."""
    return lambda ctx, storage: restore_session(ctx, storage, service=service)


def _setup_otel() -> Any:
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from session_otel import init_otel_distributed_tracing

    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "session-demo"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    init_otel_distributed_tracing("session-demo")
    return exporter


def report(results: list[dict], storage: Any, tools: int, elapsed: float, exporter: Any) -> int:
    expected = 3 + tools  # plan + one per tool + answer (model server) + the driver's rollout.result
    problems = []
    print(f"\n{len(results)} rollouts in {elapsed:.1f} s\n")
    print(f"{'rollout':>7}  {'task':<7} {'session uid':<12} {'traces':>6} {'latency ms':>10}  {'sessions':>8}")
    for r in results:
        traces = storage.get_traces(r["uid"])
        tree = storage.session_tree(r["uid"]) if hasattr(storage, "session_tree") else None
        latency = sum(t.latency_ms or 0 for t in traces) / max(len(traces), 1)
        n_sessions = len(tree) if tree is not None else "-"
        print(
            f"{r['rollout_idx']:>7}  {r['task_id']:<7} {r['uid'][:12]:<12} {len(traces):>6} {latency:>10.2f}  "
            f"{n_sessions:>8}"
        )
        if len(traces) != expected:
            problems.append(f"rollout {r['rollout_idx']}: {len(traces)} traces, expected {expected}")
        strangers = [t for t in traces if t.metadata.get("rollout_idx") != r["rollout_idx"]]
        if strangers:
            problems.append(f"rollout {r['rollout_idx']}: {len(strangers)} traces of another rollout")
        if r["reply"]["seen"].get("rollout_idx") != r["rollout_idx"]:
            problems.append(f"rollout {r['rollout_idx']}: the agent saw metadata {r['reply']['seen']}")
    if hasattr(storage, "session_tree") and results:
        print(f"\nsession tree of rollout {results[0]['rollout_idx']}:")
        _print_tree(storage.session_tree(results[0]["uid"]), storage)
    if exporter is not None:
        problems += _check_otel(results, exporter)
    total = sum(len(storage.get_traces(r["uid"])) for r in results)
    print(f"\n{total} traces in {len(results)} rollouts; expected {expected * len(results)}")
    for problem in problems:
        print(f"MISSING/WRONG: {problem}", file=sys.stderr)
    print("all traces accounted for" if not problems else f"{len(problems)} problems", flush=True)
    return 1 if problems else 0


def _print_tree(node: Any, storage: Any, prefix: str = "", last: bool = True) -> None:
    record = node.session
    meta = record.metadata or {}
    label = f"{record.name or 'rollout'} {record.uid[:12]} ({node.own_trace_count} own / {node.trace_count} traces)"
    if record.is_root:
        label += f" task_id={meta.get('task_id')} rollout_idx={meta.get('rollout_idx')}"
    else:
        # A session the database only knows from its descendants' uid chains: here, a Ray task's session,
        # restored in a worker that recorded nothing itself.
        label += f" [{meta.get('service')}]" if record.name else " [ray task]"
    print(f"{prefix}{'└── ' if last else '├── '}{label}" if prefix or not record.is_root else label)
    child_prefix = prefix + ("    " if last else "│   ")
    below = {t.trace_id for child in node.children for t in storage.get_traces(child.uid)}
    own = [t for t in storage.get_traces(record.uid) if t.trace_id not in below] if node.own_trace_count else []
    for t in own:
        prompt = t.input[-1]["content"] if isinstance(t.input, list) else t.input
        print(f"{child_prefix}• {t.name} {t.model or ''}: {str(prompt)[:40]!r} → {str(t.output)[:30]!r}")
    for i, child in enumerate(node.children):
        _print_tree(child, storage, child_prefix, i == len(node.children) - 1)


def _check_otel(results: list[dict], exporter: Any) -> list[str]:
    spans = exporter.get_finished_spans()
    problems = []
    for r in results:
        mine = [s for s in spans if r["uid"] in (s.attributes or {}).get("session.uid_chain", ())]
        trace_ids = {format(s.context.trace_id, "032x") for s in mine}
        if trace_ids != {r["otel_trace_id"]}:
            problems.append(f"rollout {r['rollout_idx']}: spans in OTel traces {sorted(trace_ids)}")
    first = results[0]
    print(
        f"\nrollout {first['rollout_idx']}: one OTel trace {first['otel_trace_id']} "
        f"({sum(1 for s in spans if format(s.context.trace_id, '032x') == first['otel_trace_id'])} spans here)"
    )
    return problems


if __name__ == "__main__":
    sys.exit(main())
