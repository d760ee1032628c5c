"""The caller side: capture the current session's context at each ``.remote()`` call.

The hooks here are Ray invocation decorators (``__ray_invocation_decorator__``): Ray applies them on the calling
side of every ``.remote()`` of a remote function or actor method, ``.options(...)`` included, and keeps them on
actor handles that are pickled or looked up by name, so the objects `session_ray.remote` returns stay genuine
Ray objects.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from session_core import StorageNotAddressable
from session_core.registry import ambient_context
from session_core.stack import ACTIVE
from session_ray.worker import CONTEXT_KWARG, LEGACY_CONTEXT_KWARG

__all__ = ["capture_context", "compose", "inject_checked", "inject_unchecked", "with_context"]

Invocation = Callable[[Any, Any], Any]


def _not_addressable(session: Any) -> StorageNotAddressable:
    return StorageNotAddressable(
        f"session_ray: the current session {session.name!r} keeps its traces in {session.storage!r}, which lives "
        "in this process only, so traces recorded by Ray tasks and actors would be lost. Give the session an "
        "addressable storage every worker can open, e.g. "
        "ContextVarSession(storage=session_storage_sql.SqliteSessionStorage('traces.db')) or "
        "$SESSION_STORAGE_URL='sqlite:///traces.db' (PostgreSQL for clusters spanning machines)."
    )


def capture_context(*, check_storage: bool = True) -> dict[str, Any] | None:
    """The context to send with a call: the innermost session's, else an ambient one, else None.

    With `check_storage`, a session whose storage has no URL raises `StorageNotAddressable` here, in the caller,
    instead of the worker failing (or the traces vanishing) later.
    """
    stack = ACTIVE.get()
    if stack:
        session = stack[-1]
        ctx: dict[str, Any] = session.to_context()
        if check_storage and "storage_url" not in ctx:
            raise _not_addressable(session)
        return ctx
    return ambient_context()


def with_context(kwargs: Any, check_storage: bool) -> Any:
    if kwargs and (CONTEXT_KWARG in kwargs or LEGACY_CONTEXT_KWARG in kwargs):
        return kwargs  # the caller passed a context explicitly: it wins
    ctx = capture_context(check_storage=check_storage)
    if ctx is None:
        return kwargs
    if kwargs:
        return {**kwargs, CONTEXT_KWARG: ctx}
    return {CONTEXT_KWARG: ctx}


def inject_checked(invocation: Invocation) -> Invocation:
    """Ray invocation decorator: add the caller's context; refuse a session whose storage is process-local."""

    def invoke(args: Any, kwargs: Any) -> Any:
        return invocation(args, with_context(kwargs, True))

    return invoke


def inject_unchecked(invocation: Invocation) -> Invocation:
    """Ray invocation decorator for functions that bring their own storage (``ray_entrypoint(storage=...)``)."""

    def invoke(args: Any, kwargs: Any) -> Any:
        return invocation(args, with_context(kwargs, False))

    return invoke


def compose(outer: Callable[[Invocation], Invocation], inner: Any) -> Callable[[Invocation], Invocation]:
    """`outer` applied over a user's own invocation decorator `inner` (if any)."""
    if inner is None:
        return outer

    def decorator(invocation: Invocation) -> Invocation:
        return outer(inner(invocation))

    return decorator
