"""With Ray's (alpha) OpenTelemetry tracing hook on, sessions still follow tasks and actors.

session-ray does not use the hook; this checks the two coexist: Ray adds its own ``_ray_trace_ctx`` keyword to
the same functions and methods that session-ray wraps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("opentelemetry.sdk")
pytest.importorskip("session_storage_sql")

import session_ray  # noqa: E402
from session_core import ContextVarSession, get_active_session_uids, get_current_session_name, record_trace  # noqa: E402

pytestmark = pytest.mark.slow

HOOK = "ray.util.tracing.setup_local_tmp_tracing:setup_tracing"


@pytest.fixture(scope="module", autouse=True)
def traced_ray(ray_init_kwargs: Callable[..., dict[str, Any]], ship_module: Callable[[str], None]) -> Iterator[Any]:
    ship_module(__name__)
    if ray.is_initialized():
        ray.shutdown()
    ray.init(**ray_init_kwargs(_tracing_startup_hook=HOOK))
    yield ray
    ray.shutdown()
    # Ray leaves its hook on in this (driver) process after shutdown: every later ray.init here would wrap tasks
    # for tracing, which then fail in workers started without the hook. Later suites in this process get it off.
    from ray.util.tracing import tracing_helper

    tracing_helper._global_is_tracing_enabled = False
    tracing_helper._opentelemetry = None


def _tracing_on() -> bool:
    from ray.util.tracing.tracing_helper import _is_tracing_enabled

    return bool(_is_tracing_enabled())


@session_ray.remote
def traced(label: str) -> dict[str, Any]:
    record_trace(name=label)
    return {"name": get_current_session_name(), "depth": len(get_active_session_uids()), "tracing": _tracing_on()}


@session_ray.remote
def traced_outer() -> dict[str, Any]:
    record_trace(name="outer")
    return ray.get(traced.remote("inner"))  # type: ignore[no-any-return]


@session_ray.remote
class TracedActor:
    def work(self, label: str) -> str | None:
        record_trace(name=label)
        return get_current_session_name()

    async def awork(self, label: str) -> str | None:
        record_trace(name=label)
        return get_current_session_name()


@session_ray.remote(max_concurrency=2)
class TracedThreadedActor:
    def work(self, label: str) -> str | None:
        record_trace(name=label)
        return get_current_session_name()


def test_tasks_and_nested_tasks_keep_the_session_with_tracing_on(storage: Any) -> None:
    assert _tracing_on()
    with ContextVarSession("traced-driver", storage=storage) as session:
        direct = ray.get(traced.remote("direct"))
        nested = ray.get(traced_outer.remote())
    assert direct == {"name": "traced-driver", "depth": len(session.uid_chain) + 1, "tracing": True}
    assert nested == {"name": "traced-driver", "depth": len(session.uid_chain) + 2, "tracing": True}
    assert sorted(t.name for t in session.llm_calls) == ["direct", "inner", "outer"]
    assert ray.get(traced.remote("no-session"))["name"] is None


def test_actor_methods_keep_the_session_with_tracing_on(storage: Any) -> None:
    actor = TracedActor.remote()
    threaded = TracedThreadedActor.remote()
    with ContextVarSession("traced-actors", storage=storage) as session:
        names = ray.get([actor.work.remote("sync"), actor.awork.remote("async"), threaded.work.remote("threaded")])
    assert names == ["traced-actors"] * 3
    assert sorted(t.name for t in session.llm_calls) == ["async", "sync", "threaded"]
    assert ray.get(actor.work.remote("none")) is None
