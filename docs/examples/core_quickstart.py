"""Quickstart: nested sessions, metadata merging, traces from threads and asyncio tasks.

Run: python docs/examples/core_quickstart.py
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from session_core import (
    ContextVarSession,
    bind_session,
    get_current_metadata,
    record_trace,
)


def call_llm(prompt: str) -> str:
    answer = prompt.upper()
    record_trace(name="llm.call", input=prompt, output=answer, model="fake-1", tokens=3)
    return answer


async def agent_step(i: int) -> str:
    async with ContextVarSession(step=i):  # asyncio tasks inherit the enclosing session
        return call_llm(f"step {i}")


with ContextVarSession("rollout", task_id=42, policy="v3") as rollout:
    with ContextVarSession("episode", episode=1) as episode:
        assert get_current_metadata() == {"task_id": 42, "policy": "v3", "episode": 1}
        call_llm("hello")

        # Threads start with no session: bind_session carries it over.
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(bind_session(call_llm), ["a", "b", "c"]))

        async def main() -> list[str]:
            return await asyncio.gather(*(agent_step(i) for i in range(3)))

        asyncio.run(main())

    call_llm("outside the episode")

# The root sees every trace of every descendant; the episode sees its own subtree.
assert len(rollout.llm_calls) == 8
assert len(episode.llm_calls) == 7
assert {t.metadata["task_id"] for t in rollout.llm_calls} == {42}
print(f"rollout {rollout.uid}: {len(rollout)} traces; episode {episode.uid}: {len(episode)} traces")
