"""A user's journey across packages: an HTTP service called from a Ray task and from a process-pool worker.

The driver opens one session on a SQLite file; a Starlette model server (behind `SessionMiddleware`, opening the
same file by its URL, as a separate service would) is called from a `session_ray.remote` task and from a
`bind_session` worker in a spawned `ProcessPoolExecutor`, each sending the session with `inject()`. Every
trace — the workers' own and the server's — must be in the driver's session, with the metadata the driver had
set when the work was sent.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import socket
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")
httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("starlette")
pytest.importorskip("session_storage_sql")

from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402

import session_ray  # noqa: E402
from session_core import ContextVarSession, bind_session, open_storage, record_trace  # noqa: E402
from session_http import SessionMiddleware, inject  # noqa: E402
from session_storage_sql import SqliteSessionStorage  # noqa: E402

os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")

_POOL_MODULE = textwrap.dedent(
    """
    import json
    import urllib.request

    from session_core import record_trace
    from session_http import inject


    def ask(url, prompt):
        record_trace(name="pool.call", input=prompt)
        headers = inject({"content-type": "application/json"}, url=url)
        body = json.dumps({"prompt": prompt}).encode()
        with urllib.request.urlopen(urllib.request.Request(url, data=body, headers=headers), timeout=20) as r:
            return json.loads(r.read())
    """
)


@session_ray.remote
def ray_ask(url: str, prompt: str) -> dict[str, Any]:
    record_trace(name="ray.call", input=prompt)
    return httpx.post(url, json={"prompt": prompt}, headers=inject(url=url), timeout=20).json()  # type: ignore[no-any-return]


async def _generate(request: Request) -> JSONResponse:
    prompt = (await request.json())["prompt"]
    record_trace(name="model.generate", input=prompt, output="ok", model="tiny")
    return JSONResponse({"seen": request.state.session_metadata})


@pytest.fixture
def model_url(tmp_path: Path) -> Iterator[tuple[str, SqliteSessionStorage]]:
    """A model server on 127.0.0.1 writing to a SQLite file it opens by URL; the driver's storage on that file."""
    storage = SqliteSessionStorage(tmp_path / "traces.db")
    app = SessionMiddleware(
        Starlette(routes=[Route("/v1/generate", _generate, methods=["POST"])]), storage=open_storage(storage.url)
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the model server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1/generate", storage
    finally:
        server.should_exit = True
        thread.join()


@pytest.fixture
def pool_module(tmp_path: Path) -> Iterator[Any]:
    """The process-pool worker's function, in a module a spawned worker can import."""
    (tmp_path / "journey_pool.py").write_text(_POOL_MODULE)
    sys.path.insert(0, str(tmp_path))
    try:
        import journey_pool  # type: ignore[import-not-found]  # written just above

        yield journey_pool
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("journey_pool", None)


@pytest.mark.slow
def test_ray_task_and_pool_worker_calling_a_service_land_in_the_driver_session(
    model_url: tuple[str, SqliteSessionStorage], pool_module: Any, tmp_path: Path
) -> None:
    url, storage = model_url
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # pytest's importlib mode: not importable
    ray.init(
        address="local",  # a new local cluster, never one a `ray start` elsewhere on the machine left up
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
    )
    try:
        with ContextVarSession("rollout", storage=storage, task_id=7) as root:
            root.metadata["step"] = 1
            from_ray = ray.get([ray_ask.remote(url, f"ray-{i}") for i in range(2)])
            root.metadata["step"] = 2
            spawn = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(
                2, mp_context=spawn, initializer=sys.path.insert, initargs=(0, str(tmp_path))
            ) as pool:
                from_pool = list(pool.map(bind_session(pool_module.ask), [url] * 2, ["pool-0", "pool-1"]))
    finally:
        ray.shutdown()

    assert [r["seen"] for r in from_ray] == [{"task_id": 7, "step": 1}] * 2
    assert [r["seen"] for r in from_pool] == [{"task_id": 7, "step": 2}] * 2
    calls = root.llm_calls
    by_input = {t.input: t for t in calls if t.name == "model.generate"}
    assert sorted(by_input) == ["pool-0", "pool-1", "ray-0", "ray-1"]
    assert sorted(t.name for t in calls) == ["model.generate"] * 4 + ["pool.call"] * 2 + ["ray.call"] * 2
    assert by_input["ray-0"].metadata == {"task_id": 7, "step": 1}
    assert by_input["pool-1"].metadata == {"task_id": 7, "step": 2}
    # the server's session sits under the worker's: root → worker child → request child (depth = chain length)
    tree = storage.session_tree(root.uid)
    assert tree is not None and tree.trace_count == 8
    assert max(node.session.depth for node in tree.walk()) == 3
