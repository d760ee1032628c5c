"""`ray_entrypoint`: the explicit hand-off, for code that calls ``ray.remote`` itself or runs without Ray.

The wrapped function takes the context as ``_session_ctx=`` and restores it around the call; here the callee
runs in a spawned process pool, and opens the SQLite storage named in the context. Without ``_session_ctx`` it
runs unchanged. With Ray: ``ray.remote(work).remote(item, _session_ctx=session.to_context())``.

Run it: ``python docs/examples/ray_entrypoint.py`` (needs session-ray and session-storage-sql; Ray is not needed).
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import tempfile

from session_core import ContextVarSession, get_current_session_name, record_trace
from session_ray import ray_entrypoint
from session_storage_sql import SqliteSessionStorage


@ray_entrypoint
def work(item: int) -> str | None:
    record_trace(name="llm", input=item, output=item * item)
    return get_current_session_name()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        storage = SqliteSessionStorage(os.path.join(tmp, "traces.db"))
        with ContextVarSession("batch-3", storage=storage, dataset="demo") as session:
            in_session = functools.partial(work, _session_ctx=session.to_context())
            with multiprocessing.get_context("spawn").Pool(2) as pool:
                names = pool.map(in_session, range(4))
                unchanged = pool.apply(work, (99,))  # no context: runs as a plain function, records nothing

        assert names == ["batch-3"] * 4
        assert unchanged is None
        traces = session.llm_calls
        assert sorted(t.input for t in traces) == [0, 1, 2, 3]
        assert {t.metadata["dataset"] for t in traces} == {"demo"}
        print(f"{len(traces)} traces from {len(set(names))} session in worker processes: {names}")


if __name__ == "__main__":
    main()
