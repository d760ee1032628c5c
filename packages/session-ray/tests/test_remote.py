"""`session_ray.remote` on a real local Ray: tasks, actors (sync, async, threaded), nesting, options, isolation."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
import pickle
import signal
import threading
from typing import Any

import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("session_storage_sql")

import session_ray  # noqa: E402
from session_core import (  # noqa: E402
    ContextVarSession,
    InMemoryStorage,
    StorageError,
    StorageNotAddressable,
    get_active_session_uids,
    get_current_metadata,
    get_current_session,
    get_current_session_name,
    record_trace,
)

pytestmark = pytest.mark.usefixtures("local_ray")


# -- remote functions and actors under test (defined once: Ray exports each once) ---------------------------------


@session_ray.remote
def record(label: str, **extra: Any) -> dict[str, Any]:
    """Record one trace and report what the worker saw."""
    trace = record_trace(name=label, input=extra or None)
    return {
        "name": get_current_session_name(),
        "uids": get_active_session_uids(),
        "metadata": get_current_metadata(),
        "recorded": trace is not None,
        "pid": os.getpid(),
    }


@session_ray.remote(num_cpus=0.5, max_retries=0)
def record_with_options(label: str) -> str | None:
    record_trace(name=label)
    return get_current_session_name()


@session_ray.remote
def fan_out(labels: list[str]) -> list[dict[str, Any]]:
    """A task that records, then starts one nested task per label from inside the worker."""
    record_trace(name="fan_out")
    return ray.get([record.remote(label) for label in labels])


@session_ray.remote
def nested_twice() -> list[str]:
    record_trace(name="level1")
    inner: dict[str, Any] = ray.get(fan_out.remote(["level3"]))[0]
    return [str(len(get_active_session_uids())), str(len(inner["uids"]))]


@session_ray.remote
def call_actor(handle: Any, label: str) -> str | None:
    """Call an actor method from inside a task: the task's own (restored) session goes along."""
    ray.get(handle.work.remote(label))
    return get_current_session_name()


@session_ray.remote
def create_actor_inside(label: str) -> dict[str, Any]:
    """Create an actor from inside a task and call it: both run in the task's restored session."""
    actor = Recorder.remote(f"{label}:init")
    seen: dict[str, Any] = ray.get(actor.work.remote(f"{label}:work"))
    return {**seen, "creator": ray.get(actor.creator.remote()), "task_depth": len(get_active_session_uids())}


@session_ray.remote(max_retries=0)
def die_after_trace(label: str) -> None:
    record_trace(name=label)
    os._exit(1)


@session_ray.remote
def steps(count: int) -> Any:
    for i in range(count):
        record_trace(name=f"step{i}")
        yield get_current_session_name()


@session_ray.remote
class Recorder:
    """A plain (one call at a time) actor."""

    def __init__(self, label: str = "init") -> None:
        self.created_in = get_current_session_name()
        self.var: contextvars.ContextVar[str] = contextvars.ContextVar("user_var", default="unset")
        record_trace(name=label)

    def work(self, label: str) -> dict[str, Any]:
        record_trace(name=label)
        return {"name": get_current_session_name(), "uids": get_active_session_uids()}

    def creator(self) -> str | None:
        return self.created_in

    def set_var(self, value: str) -> None:
        self.var.set(value)  # never reset: a leak would show in a later call

    def get_var(self) -> str:
        return self.var.get()

    def die(self, label: str) -> None:
        record_trace(name=label)
        os.kill(os.getpid(), signal.SIGKILL)

    @staticmethod
    def static_work(label: str) -> str | None:
        record_trace(name=label)
        return get_current_session_name()

    @classmethod
    def class_work(cls, label: str) -> tuple[str, str | None]:
        record_trace(name=label)
        return cls.__name__, get_current_session_name()


@session_ray.remote
class AsyncRecorder:
    """An asyncio actor: calls interleave on one event loop."""

    async def work(self, label: str, pause: float) -> dict[str, Any]:
        record_trace(name=f"{label}:before")
        await asyncio.sleep(pause)
        record_trace(name=f"{label}:after")
        return {"name": get_current_session_name(), "uids": get_active_session_uids()}

    def sync_work(self, label: str) -> str | None:
        record_trace(name=label)
        return get_current_session_name()

    async def stream(self, count: int) -> Any:
        for i in range(count):
            await asyncio.sleep(0)
            record_trace(name=f"item{i}")
            yield get_current_session_name()


@session_ray.remote(max_concurrency=4)
class ThreadedRecorder:
    """A threaded actor: up to four calls at once on a thread pool."""

    def __init__(self) -> None:
        self.barrier = threading.Barrier(4, timeout=60)
        self.var: contextvars.ContextVar[str] = contextvars.ContextVar("user_var", default="unset")

    def work_together(self, label: str) -> dict[str, Any]:
        record_trace(name=f"{label}:before")
        self.barrier.wait()  # four calls from four sessions are inside at the same time
        record_trace(name=f"{label}:after")
        return {"name": get_current_session_name(), "uids": get_active_session_uids()}

    def who(self) -> str | None:
        return get_current_session_name()

    def set_var(self, value: str) -> None:
        self.var.set(value)

    def get_var(self) -> str:
        return self.var.get()


# -- tasks ----------------------------------------------------------------------------------------------------------


def test_task_trace_lands_in_driver_session(storage: Any) -> None:
    with ContextVarSession("driver", storage=storage, run=7, arm="b") as session:
        seen = ray.get(record.remote("in-task", question="q"))
    assert seen["name"] == "driver"
    assert seen["recorded"] is True
    assert seen["pid"] != os.getpid()
    assert seen["uids"][:-1] == session.uid_chain  # a child session continuing the driver's chain
    assert seen["metadata"] == {"run": 7, "arm": "b"}  # types kept: the int stays an int
    [trace] = session.llm_calls
    assert (trace.name, trace.session_name, trace.input) == ("in-task", "driver", {"question": "q"})
    assert trace.metadata["run"] == 7


def test_task_outside_any_session_runs_with_none(storage: Any) -> None:
    with ContextVarSession("before", storage=storage) as session:
        ray.get(record.remote("inside"))
    seen = ray.get(record.remote("outside"))
    assert (seen["name"], seen["uids"], seen["metadata"], seen["recorded"]) == (None, [], {}, False)
    assert [t.name for t in session.llm_calls] == ["inside"]


def test_options_and_decorator_options_keep_the_session(storage: Any) -> None:
    with ContextVarSession("opts", storage=storage) as session:
        names = ray.get(
            [
                record_with_options.remote("decorated"),
                record_with_options.options(num_cpus=1, name="renamed").remote("options"),
            ]
        )
        seen = ray.get(record.options(max_retries=1).remote("record-options"))
    assert names == ["opts", "opts"]
    assert seen["name"] == "opts"
    assert sorted(t.name for t in session.llm_calls) == ["decorated", "options", "record-options"]


def test_nested_tasks_land_in_the_driver_session(storage: Any) -> None:
    with ContextVarSession("root", storage=storage) as session:
        inner = ray.get(fan_out.remote(["a", "b"]))
        depths = ray.get(nested_twice.remote())
    assert all(seen["name"] == "root" for seen in inner)
    assert all(seen["uids"][: len(session.uid_chain)] == session.uid_chain for seen in inner)
    assert all(len(seen["uids"]) == len(session.uid_chain) + 2 for seen in inner)  # driver -> task -> nested task
    depth = len(session.uid_chain)
    assert depths == [str(depth + 1), str(depth + 3)]
    names = sorted(t.name for t in session.llm_calls)
    assert names == sorted(["fan_out", "a", "b", "level1", "fan_out", "level3"])


def test_explicit_context_wins_over_the_current_session(storage: Any) -> None:
    with ContextVarSession("elsewhere", storage=storage) as other:
        pass
    with ContextVarSession("current", storage=storage) as current:
        seen = ray.get(record.remote("explicit", _session_ctx=other.to_context()))
    assert seen["name"] == "elsewhere"
    assert [t.name for t in other.llm_calls] == ["explicit"]
    assert current.llm_calls == []


def test_an_explicit_none_runs_the_call_outside_any_session(storage: Any) -> None:
    with ContextVarSession("current", storage=storage) as current:
        seen = ray.get(record.remote("opted out", _session_ctx=None))
        kept = ray.get(record.remote("in the session"))
    assert (seen["name"], seen["uids"], seen["recorded"]) == (None, [], False)
    assert kept["name"] == "current"
    assert [t.name for t in current.llm_calls] == ["in the session"]


def test_generator_task_keeps_the_session_for_every_step(storage: Any) -> None:
    with ContextVarSession("stream", storage=storage) as session:
        names = [ray.get(ref) for ref in steps.remote(3)]
    assert names == ["stream"] * 3
    assert [t.name for t in session.llm_calls] == ["step0", "step1", "step2"]


def test_many_driver_sessions_at_once_stay_apart(storage: Any) -> None:
    """100 concurrent tasks from 10 driver sessions (10 threads): each trace lands in its own session only."""
    results: dict[int, Any] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(10, timeout=60)

    def driver(i: int) -> None:
        try:
            with ContextVarSession(f"driver-{i}", storage=storage, driver=i) as session:
                start.wait()
                refs = [record.remote(f"d{i}-t{j}") for j in range(10)]
                seen = ray.get(refs)
            results[i] = (session, seen)
        except BaseException as exc:  # reported below, with the thread's name
            errors.append(exc)

    threads = [threading.Thread(target=driver, args=(i,), name=f"driver-{i}") for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    all_ids: set[str] = set()
    for i, (session, seen) in results.items():
        assert {s["name"] for s in seen} == {f"driver-{i}"}
        assert {s["metadata"]["driver"] for s in seen} == {i}
        traces = session.llm_calls
        assert sorted(t.name for t in traces) == sorted(f"d{i}-t{j}" for j in range(10))
        assert {t.session_name for t in traces} == {f"driver-{i}"}
        all_ids.update(t.trace_id for t in traces)
    assert len(all_ids) == 100


def test_captured_context_is_small_and_picklable(storage: Any) -> None:
    with ContextVarSession("a-typical-session-name", storage=storage, user="u-123", arm="treatment", step=12):
        with ContextVarSession(attempt=2):
            ctx = session_ray.capture_context()
    assert ctx is not None
    assert len(pickle.dumps(ctx)) < 512
    assert pickle.loads(pickle.dumps(ctx)) == ctx
    assert ctx["storage_url"] == storage.url


@session_ray.remote
def otel_view() -> tuple[str, str, list[str]]:
    session: Any = get_current_session()
    record_trace(name="otel-task")
    return type(session).__name__, session.trace_id, session.uid_chain


def test_an_otel_session_continues_as_an_otel_session_in_the_worker(storage: Any) -> None:
    """The worker never imported session_otel; core's backend registry finds OTelSession for the context."""
    otel = pytest.importorskip("session_otel")
    otel.init_otel_distributed_tracing("session-ray-driver")
    with otel.OTelSession("otel-driver", storage=storage, arm="a") as session:
        kind, trace_id, chain = ray.get(otel_view.remote())
    assert (kind, trace_id, chain[:-1]) == ("OTelSession", session.trace_id, session.uid_chain)
    assert [(t.name, t.metadata["arm"]) for t in session.llm_calls] == [("otel-task", "a")]


# -- storage that workers cannot reach --------------------------------------------------------------------------------


def test_process_local_storage_is_refused_at_remote_time() -> None:
    with ContextVarSession("memory-only", storage=InMemoryStorage()):
        with pytest.raises(StorageNotAddressable, match="addressable storage"):
            record.remote("never")
        with pytest.raises(StorageNotAddressable, match="lives in this process only"):
            Recorder.remote()
    actor = Recorder.remote()
    with ContextVarSession("memory-only", storage=InMemoryStorage()):
        with pytest.raises(StorageNotAddressable):
            actor.work.remote("never")


def _record_plain(label: str) -> str | None:
    record_trace(name=label)
    return get_current_session_name()


class _PlainRecorder:
    def work(self, label: str) -> None:
        record_trace(name=label)


def test_a_process_local_entrypoint_storage_is_refused_before_it_reaches_ray(storage: Any) -> None:
    """``ray_entrypoint(storage=InMemoryStorage())`` cannot travel to a worker (it would be a copy, its traces
    lost): a clear `StorageNotAddressable` in the caller, not Ray's pickling `TypeError`; it names the fix."""
    local = session_ray.ray_entrypoint(_record_plain, storage=InMemoryStorage())
    with ContextVarSession("sender", storage=storage) as session:
        ctx = session.to_context()
    plain = ray.remote(max_retries=0)(local)  # Ray pickles the function, storage and all, at the first .remote()
    with pytest.raises(StorageNotAddressable, match="cannot travel to Ray workers") as info:
        plain.remote("never", _session_ctx=ctx)
    assert "storage with a URL" in str(info.value) and "SqliteSessionStorage" in str(info.value)
    with pytest.raises(StorageNotAddressable, match="cannot travel to Ray workers"):
        session_ray.remote(local)  # session_ray.remote knows at once
    method = session_ray.ray_entrypoint(storage=InMemoryStorage())(_PlainRecorder.work)
    with pytest.raises(StorageNotAddressable, match="cannot travel to Ray workers"):
        session_ray.remote(type("Recorder", (), {"work": method}))
    assert local("in-process", _session_ctx=ctx) == "sender"  # in this process the storage still works
    assert session.llm_calls == []


def test_context_without_reachable_storage_fails_in_the_task() -> None:
    ctx = {"v": 1, "name": "lost", "uid_chain": ["abc"], "metadata": {}}
    with pytest.raises(ray.exceptions.RayTaskError) as info:
        ray.get(record.options(max_retries=0).remote("x", _session_ctx=ctx))
    assert isinstance(info.value.cause, StorageNotAddressable)
    assert "$SESSION_STORAGE_URL" in str(info.value.cause)

    unknown = {**ctx, "storage_url": "nosuchdb://somewhere/traces"}
    with pytest.raises(ray.exceptions.RayTaskError) as info:
        ray.get(record.options(max_retries=0).remote("x", _session_ctx=unknown))
    assert isinstance(info.value.cause, StorageError)
    assert "nosuchdb://somewhere/traces" in str(info.value.cause)


def test_worker_environment_supplies_storage_for_a_context_without_url(storage: Any) -> None:
    ctx = {"v": 1, "name": "ambient", "uid_chain": ["ambientroot"], "metadata": {"k": 1}}
    env_task = record.options(runtime_env={"env_vars": {"SESSION_STORAGE_URL": storage.url}})
    seen = ray.get(env_task.remote("via-env", _session_ctx=ctx))
    assert seen["name"] == "ambient"
    assert [t.name for t in storage.get_traces("ambientroot")] == ["via-env"]


# -- actors ---------------------------------------------------------------------------------------------------------


def test_sync_actor_methods_follow_each_callers_session(storage: Any) -> None:
    with ContextVarSession("creator", storage=storage) as creator:
        actor = Recorder.remote("created")
    with ContextVarSession("caller-a", storage=storage) as a:
        seen_a = ray.get(actor.work.remote("from-a"))
    with ContextVarSession("caller-b", storage=storage) as b:
        seen_b = ray.get(actor.work.options(name="renamed").remote("from-b"))
    outside = ray.get(actor.work.remote("from-nowhere"))
    assert ray.get(actor.creator.remote()) == "creator"
    assert [t.name for t in creator.llm_calls] == ["created"]
    assert (seen_a["name"], [t.name for t in a.llm_calls]) == ("caller-a", ["from-a"])
    assert (seen_b["name"], [t.name for t in b.llm_calls]) == ("caller-b", ["from-b"])
    assert seen_a["uids"][:-1] == a.uid_chain
    assert (outside["name"], outside["uids"]) == (None, [])


def test_static_methods_called_on_a_handle_follow_the_callers_session(storage: Any) -> None:
    actor = Recorder.remote()
    with ContextVarSession("static-caller", storage=storage) as session:
        assert ray.get(actor.static_work.remote("static")) == "static-caller"
    assert ray.get(actor.static_work.remote("outside")) is None
    assert [t.name for t in session.llm_calls] == ["static"]


def test_class_methods_called_on_a_handle_follow_the_callers_session(storage: Any) -> None:
    """Ray exposes class methods on a handle too: they ran outside the session, their traces lost silently."""
    actor = Recorder.remote()
    with ContextVarSession("class-caller", storage=storage) as session:
        assert ray.get(actor.class_work.remote("classmethod")) == ("Recorder", "class-caller")
    assert ray.get(actor.class_work.remote("outside")) == ("Recorder", None)
    assert [t.name for t in session.llm_calls] == ["classmethod"]


def test_async_actor_interleaved_calls_keep_their_sessions(storage: Any) -> None:
    actor = AsyncRecorder.remote()
    refs = []
    sessions = []
    for i in range(4):
        with ContextVarSession(f"async-{i}", storage=storage) as session:
            refs.append(actor.work.remote(f"call{i}", 0.2 - 0.05 * i))  # later calls finish first
            sessions.append(session)
    with ContextVarSession("async-sync", storage=storage) as sync_session:
        sync_name = ray.get(actor.sync_work.remote("sync"))
    results = ray.get(refs)
    for i, (seen, session) in enumerate(zip(results, sessions)):
        assert seen["name"] == f"async-{i}"
        assert seen["uids"][:-1] == session.uid_chain
        assert sorted(t.name for t in session.llm_calls) == [f"call{i}:after", f"call{i}:before"]
    assert sync_name == "async-sync"
    assert [t.name for t in sync_session.llm_calls] == ["sync"]
    assert ray.get(actor.work.remote("none", 0))["name"] is None
    with ContextVarSession("async-stream", storage=storage) as stream_session:
        streamed = [ray.get(ref) for ref in actor.stream.remote(2)]
    assert streamed == ["async-stream", "async-stream"]
    assert [t.name for t in stream_session.llm_calls] == ["item0", "item1"]


def test_threaded_actor_concurrent_calls_keep_their_sessions(storage: Any) -> None:
    actor = ThreadedRecorder.remote()
    refs = []
    sessions = []
    for i in range(4):
        with ContextVarSession(f"thread-{i}", storage=storage) as session:
            refs.append(actor.work_together.remote(f"call{i}"))
            sessions.append(session)
    results = ray.get(refs)
    for i, (seen, session) in enumerate(zip(results, sessions)):
        assert seen["name"] == f"thread-{i}"
        assert seen["uids"][:-1] == session.uid_chain
        assert sorted(t.name for t in session.llm_calls) == [f"call{i}:after", f"call{i}:before"]
    # The pool threads ran session calls; calls from outside any session must see none (no leak, #34327).
    assert set(ray.get([actor.who.remote() for _ in range(16)])) == {None}


@pytest.mark.parametrize("actor_class", ["Recorder", "ThreadedRecorder"])
def test_each_call_runs_in_its_own_contextvars_context(actor_class: str) -> None:
    actor = globals()[actor_class].remote()
    ray.get([actor.set_var.remote(f"leaked-{i}") for i in range(16)])
    assert set(ray.get([actor.get_var.remote() for _ in range(16)])) == {"unset"}


def test_handles_passed_into_tasks_and_named_handles_carry_the_session(storage: Any) -> None:
    actor = Recorder.options(name="recorder-by-name").remote()
    with ContextVarSession("through-task", storage=storage) as session:
        assert ray.get(call_actor.remote(actor, "nested-actor-call")) == "through-task"
        by_name = ray.get_actor("recorder-by-name")
        assert ray.get(by_name.work.remote("by-name"))["name"] == "through-task"
    assert sorted(t.name for t in session.llm_calls) == ["by-name", "nested-actor-call"]
    assert isinstance(actor, ray.actor.ActorHandle)  # a genuine handle: ray.kill and friends accept it
    ray.kill(actor)


def test_actor_created_inside_a_task_follows_the_task_session(storage: Any) -> None:
    with ContextVarSession("outer-creator", storage=storage) as session:
        seen = ray.get(create_actor_inside.remote("inner"))
    assert (seen["name"], seen["creator"]) == ("outer-creator", "outer-creator")
    assert len(seen["uids"]) == seen["task_depth"] + 1 == len(session.uid_chain) + 2
    assert sorted(t.name for t in session.llm_calls) == ["inner:init", "inner:work"]


@session_ray.remote
def pair(label: str) -> tuple[str | None, int]:
    record_trace(name=label)
    return get_current_session_name(), len(get_active_session_uids())


@pytest.mark.filterwarnings("ignore:DAGNode.execute:DeprecationWarning")
def test_bound_dags_run_in_the_session_current_at_execute(storage: Any) -> None:
    """``.bind()`` builds a Ray DAG: every node (actor creation included) follows the session of ``execute()``."""
    creation = Recorder.options(max_restarts=0).bind("dag:init")
    method = creation.work.bind("dag:work")
    function = pair.bind("dag:task")
    with ContextVarSession("dag", storage=storage) as session:
        seen = ray.get(method.execute())
        task = ray.get(function.execute())
        actor = creation.execute()
        assert ray.get(actor.creator.remote()) == "dag"
    assert seen["name"] == "dag" and seen["uids"][:-1] == session.uid_chain
    assert task == ("dag", len(session.uid_chain) + 1)
    assert sorted(t.name for t in session.llm_calls) == ["dag:init", "dag:init", "dag:task", "dag:work"]
    with ContextVarSession("again", storage=storage) as again:  # a DAG runs in each execute()'s own session
        assert ray.get(creation.execute().creator.remote()) == "again"
    assert [t.name for t in again.llm_calls] == ["dag:init"]


# -- failures -------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_traces_committed_before_the_worker_dies_stay(storage: Any) -> None:
    with ContextVarSession("dying", storage=storage) as session:
        with pytest.raises(ray.exceptions.WorkerCrashedError):
            ray.get(die_after_trace.remote("before-exit"))
        actor = Recorder.options(max_restarts=0).remote()
        with pytest.raises(ray.exceptions.RayActorError):
            ray.get(actor.die.remote("before-sigkill"))
    assert sorted(t.name for t in session.llm_calls) == ["before-exit", "before-sigkill", "init"]


class _Callable:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def __call__(self, label: str) -> str | None:
        record_trace(name=f"{self.prefix}{label}")
        return get_current_session_name()


class _AsyncCallable(_Callable):
    async def __call__(self, label: str) -> str | None:  # type: ignore[override]
        await asyncio.sleep(0)
        return super().__call__(label)


def _add(a: int, b: int) -> tuple[str | None, int]:
    record_trace(name=f"add{a + b}")
    return get_current_session_name(), a + b


def test_partials_and_callable_instances_follow_the_session(storage: Any) -> None:
    """An async ``__call__`` was taken for a sync one: its task failed in the worker with "cannot pickle
    'coroutine' object"; it now meets Ray's own refusal of ``async def`` tasks, as an async function does."""
    partial = session_ray.remote(functools.partial(_add, 1))
    sync_callable = session_ray.remote(_Callable("sync:"))
    with ContextVarSession("callables", storage=storage) as session:
        seen = ray.get([partial.remote(2), sync_callable.remote("a")])
    assert seen == [("callables", 3), "callables"]
    assert sorted(t.name for t in session.llm_calls) == ["add3", "sync:a"]
    with pytest.raises(ValueError, match="'async def' should not be used for remote tasks"):
        session_ray.remote(_AsyncCallable("async:"))


def _task_name(prefix: str) -> str:
    return f"{prefix}{ray.get_runtime_context().get_task_name()}"


class _TaskName:
    def __call__(self) -> str:
        return _task_name("")


def test_partials_and_callable_instances_are_named_after_what_they_call() -> None:
    """Ray names a task after its function: these were all "isolated_wrapper" (in errors, the dashboard, state)."""
    partial = session_ray.remote(functools.partial(_task_name, "p:"))
    instance = session_ray.remote(_TaskName())
    assert ray.get([partial.remote(), instance.remote()]) == ["p:_task_name", "_TaskName"]


def _blocking(fn: Any) -> Any:
    """Ray's advice for an async function as a task: a sync function running it with ``asyncio.run``."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        return asyncio.run(fn(*args, **kwargs))

    return run


def _collected(fn: Any) -> Any:
    """A sync function returning a generator function's items as a list."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> list[Any]:
        return list(fn(*args, **kwargs))

    return run


async def _fetch(label: str) -> str | None:
    await asyncio.sleep(0)
    record_trace(name=label)
    return get_current_session_name()


def _items(label: str) -> Any:
    record_trace(name=label)
    yield get_current_session_name()
    yield label


class _Collecting:
    @_collected
    def items(self, label: str) -> Any:
        return _items(label)


def test_a_sync_wrapper_of_an_async_or_generator_function_stays_sync(storage: Any) -> None:
    """Ray decides by the function itself: ``functools.wraps`` on a sync function around an ``async def`` or a
    generator made session_ray refuse Ray's own ``asyncio.run`` advice, and turn a list into a generator task."""
    blocking = session_ray.remote(_blocking(_fetch))
    collected = session_ray.remote(_collected(_items))
    actor = session_ray.remote(_Collecting).remote()
    with ContextVarSession("wrapped", storage=storage) as session:
        seen = ray.get([blocking.remote("async"), collected.remote("gen"), actor.items.remote("method")])
    assert seen == ["wrapped", ["wrapped", "gen"], ["wrapped", "method"]]
    assert sorted(t.name for t in session.llm_calls) == ["async", "gen", "method"]


def test_remote_rejects_ray_objects_and_non_callables() -> None:
    with pytest.raises(TypeError, match=r"not to ray\.remote's result"):
        session_ray.remote(ray.remote(lambda: None))
    with pytest.raises(TypeError, match="function or a class"):
        session_ray.remote(42)
