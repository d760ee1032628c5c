"""Ray tasks and actors that record into the driver's session, with nothing passed by hand.

Run it: ``python docs/examples/ray_sessions.py`` (needs ``session-ray[ray]`` and ``session-storage-sql``).
"""

from __future__ import annotations

import os
import tempfile

import ray

import session_ray
from session_core import ContextVarSession, get_current_session_name, record_trace
from session_storage_sql import SqliteSessionStorage

os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")


def call_llm(prompt: str) -> str:
    """Stands in for a real model call; every call is recorded in whatever session is current."""
    answer = prompt.upper()
    record_trace(name="llm", input=prompt, output=answer, model="demo-model")
    return answer


@session_ray.remote  # instead of @ray.remote
def solve(prompt: str) -> str:
    return call_llm(prompt)


@session_ray.remote
def plan_and_solve(topic: str) -> list[str]:
    call_llm(f"plan {topic}")
    return ray.get([solve.remote(f"{topic} step {i}") for i in range(2)])  # nested tasks: same session


@session_ray.remote
class Critic:
    """An actor: each method call runs in the session of whoever called it (async and threaded actors too)."""

    def review(self, text: str) -> str:
        return call_llm(f"review {text}") + f" (session {get_current_session_name()})"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        storage = SqliteSessionStorage(os.path.join(tmp, "traces.db"))  # every worker opens it by URL
        ray.init(
            address="local",  # a cluster of its own: the SQLite file in `tmp` is on this machine only
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            object_store_memory=100 * 1024 * 1024,
            _node_ip_address="127.0.0.1",
        )
        try:
            critic = Critic.remote()
            with ContextVarSession("rollout-7", storage=storage, experiment="ray-demo", episode=7) as rollout:
                answers = ray.get(plan_and_solve.remote("sort a list"))
                review = ray.get(critic.review.remote(answers[0]))

            # A second session using the same actor: each call carries its caller's session.
            with ContextVarSession("rollout-8", storage=storage) as other:
                ray.get(critic.review.remote("another answer"))

            # Outside any session, nothing is recorded.
            ray.get(solve.remote("not recorded"))
        finally:
            ray.shutdown()

        traces = rollout.llm_calls
        assert len(traces) == 4, [t.input for t in traces]  # the plan, two steps, the review
        assert {t.session_name for t in traces} == {"rollout-7"}
        assert {t.metadata["episode"] for t in traces} == {7}
        assert review.endswith("(session rollout-7)")
        assert [t.input for t in other.llm_calls] == ["review another answer"]
        for trace in traces:
            print(f"{trace.session_name}  {trace.input!r:40} -> {trace.output!r}")


if __name__ == "__main__":
    main()
