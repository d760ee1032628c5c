"""session-ray: what following the session costs a Ray task or actor call.

- Round trips (full run only: it starts a local Ray): ``ray.get(f.remote())`` of a no-op task through
  `session_ray.remote` inside a session (SQLite storage, 5 metadata keys) against two floors: the same no-op
  through plain ``ray.remote`` with no argument, and plain ``ray.remote`` passing the same context dict by hand
  as a keyword (Ray charges for any argument, so this is the floor of any context passing); the same for an
  actor method. Batches alternate; figures and floors are best batch means (the least noisy estimates).
- Per-call pieces, in-process: the caller side (capture the context and add it to the call's kwargs) and the
  worker side (restore the context as a child session, enter and leave it, in a Context of its own).
"""

from __future__ import annotations

import gc
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _harness import Result, per_call

from session_core import ContextVarSession
from session_ray import ray_entrypoint
from session_ray.capture import inject_checked
from session_ray.entrypoint import make_wrapper

AREA = "ray"
METADATA = {"experiment": "exp-42", "arm": "b", "step": 17, "user": "alice", "seed": 1234}


def _noop() -> None:
    return None


def _storage(tmp: Path) -> Any:
    from session_storage_sql import SqliteSessionStorage

    return SqliteSessionStorage(str(tmp / "bench-ray.db"))


def _pieces(quick: bool, storage: Any) -> list[Result]:
    number = 2000 if quick else 30000
    invoke = inject_checked(lambda args, kwargs: kwargs)
    isolated = make_wrapper(_noop, isolate=True)
    plain_entry = ray_entrypoint(_noop)
    with ContextVarSession("bench-ray", storage=storage, **METADATA) as session:
        ctx = session.to_context()
        invoke((), {})
        isolated(_session_ctx=ctx)  # opens the storage once, as a worker does on its first call
        caller = per_call(lambda: invoke((), {}), number=number) * 1e6
        to_context = per_call(session.to_context, number=number) * 1e6
    worker = per_call(lambda: isolated(_session_ctx=ctx), number=number) * 1e6
    unchanged = per_call(plain_entry, number=number) * 1e6
    bare = per_call(_noop, number=number) * 1e6
    return [
        Result(
            AREA,
            "caller side per .remote(): capture the session's context into the call's kwargs",
            caller,
            "us",
            "session.to_context()",
            to_context,
            "<= 15 us",
            caller <= 15.0,
        ),
        Result(
            AREA,
            "worker side per call: restore the context, enter/leave the child session, own Context",
            worker,
            "us",
            "the bare no-op call",
            bare,
            "<= 30 us",
            worker <= 30.0,
        ),
        Result(
            AREA,
            "ray_entrypoint function called without a context",
            unchanged,
            "us",
            "the bare no-op call",
            bare,
            "<= 1 us",
            unchanged <= 1.0,
        ),
    ]


def _alternate(calls: dict[str, Any], rounds: int, batch: int) -> dict[str, float]:
    """Best batch mean (seconds per call) of each callable, batches alternating in order."""
    best = dict.fromkeys(calls, float("inf"))
    names = list(calls)
    gc.collect()
    gc.disable()
    try:
        for i in range(rounds):
            for name in names if i % 2 == 0 else reversed(names):
                fn = calls[name]
                start = time.perf_counter()
                for _ in range(batch):
                    fn()
                best[name] = min(best[name], (time.perf_counter() - start) / batch)
    finally:
        gc.enable()
    return best


def _noop_with(ctx: Any = None) -> None:
    return None


def _round_trips(storage: Any) -> list[Result]:
    import ray
    import ray.cloudpickle

    import session_ray

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    started = not ray.is_initialized()
    if started:
        os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
        ray.init(
            address="local",  # a cluster of its own, never one a `ray start` elsewhere on the machine left up
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            object_store_memory=100 * 1024 * 1024,
            _node_ip_address="127.0.0.1",
        )
    try:

        class Actor:
            def noop(self) -> None:
                return None

            def noop_with(self, ctx: Any = None) -> None:
                return None

        plain_task = ray.remote(_noop)
        carrying_task = ray.remote(_noop_with)
        session_task = session_ray.remote(_noop)
        plain_actor = ray.remote(Actor).remote()
        session_actor = session_ray.remote(Actor).remote()
        with ContextVarSession("bench-ray", storage=storage, **METADATA) as session:
            ctx = session.to_context()
            tasks = {
                "plain": lambda: ray.get(plain_task.remote()),
                "carrying": lambda: ray.get(carrying_task.remote(ctx=ctx)),
                "session": lambda: ray.get(session_task.remote()),
            }
            actors = {
                "plain": lambda: ray.get(plain_actor.noop.remote()),
                "carrying": lambda: ray.get(plain_actor.noop_with.remote(ctx=ctx)),
                "session": lambda: ray.get(session_actor.noop.remote()),
            }
            for fn in [*tasks.values(), *actors.values()]:  # export, start workers, open the storage there
                for _ in range(200):
                    fn()
            task_times = _alternate(tasks, rounds=24, batch=150)
            actor_times = _alternate(actors, rounds=24, batch=300)
    finally:
        if started:
            ray.shutdown()
    results = []
    for kind, times, limit in (("task", task_times, 1.05), ("actor method", actor_times, 1.10)):
        figure, plain, carrying = (times[k] * 1e3 for k in ("session", "plain", "carrying"))
        what = "no-op task" if kind == "task" else "no-op actor method"
        results += [
            Result(
                AREA,
                f"{what} round trip, session_ray.remote inside a session (SQLite storage)",
                figure,
                "ms",
                f"same no-op via plain ray.remote (no argument); Ray alone charges {carrying / plain:.2f}x for "
                "passing any one argument",
                plain,
                f"<= {limit:.2f}x floor",
                figure <= limit * plain,
            ),
            Result(
                AREA,
                f"{what} round trip, session_ray.remote inside a session, against the context passed by hand",
                figure,
                "ms",
                "plain ray.remote passing the same context dict as a keyword argument",
                carrying,
                f"<= {limit:.2f}x floor",
                figure <= limit * carrying,
            ),
        ]
    return results


def run(quick: bool) -> list[Result]:
    with tempfile.TemporaryDirectory() as tmp:
        storage = _storage(Path(tmp))
        results = _pieces(quick, storage)
        if not quick:
            results += _round_trips(storage)
    return results


if __name__ == "__main__":
    for result in run("--quick" in sys.argv):
        ratio = f"{result.ratio:.3f}x" if result.ratio is not None else "-"
        print(
            f"{result.operation}: {result.figure:.3f} {result.unit} (floor {result.floor:.3f}, {ratio}) "
            f"target {result.target}: {'PASS' if result.passed else 'FAIL'}"
        )
