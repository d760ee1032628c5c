"""The one active-session stack every session class pushes onto.

It is a tuple in a single `ContextVar`: asyncio tasks inherit a snapshot, threads and child processes (forked
too) start empty unless bound, and a push or pop is one `ContextVar.set`.
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from typing import Any

from session_core.errors import SessionStateError

__all__ = ["ACTIVE", "active_sessions", "pop_session"]

ACTIVE: ContextVar[tuple[Any, ...]] = ContextVar("session_core.active_sessions", default=())


_forked_away: tuple[Any, ...] = ()  # sessions active in the parent when this process was forked from it


def _forget_after_fork() -> None:
    """A forked child starts outside any session, as a spawned child or a thread does (`bind_session` carries
    one in): a reused fork-started pool worker would otherwise record every later call into the session it was
    forked in, and write to its private copy of an `InMemoryStorage` where nobody reads. A child that runs on
    out of the parent's ``with`` blocks leaves those sessions quietly (see `pop_session`)."""
    global _forked_away
    _forked_away = (*_forked_away, *ACTIVE.get())
    ACTIVE.set(())


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


def pop_session(session: Any) -> None:
    """Remove `session`, which must be the innermost one; otherwise raise and keep the stack consistent."""
    stack = ACTIVE.get()
    if stack and stack[-1] is session:
        ACTIVE.set(stack[:-1])
        return
    _pop_out_of_order(stack, session)


def _pop_out_of_order(stack: tuple[Any, ...], session: Any) -> None:
    if any(s is session for s in stack):
        ACTIVE.set(tuple(s for s in stack if s is not session))
        inner = stack[-1]
        raise SessionStateError(
            f"{session!r} exited while {inner!r} inside it was still active; sessions must exit in "
            "reverse order of entry. It was removed from the active-session stack; the inner ones stay."
        )
    if any(s is session for s in _forked_away):
        return  # a forked child leaving a block its parent entered: the child never had it on its stack
    raise SessionStateError(
        f"{session!r} exited in a context where it is not active (was it entered in another thread or "
        "task?). The active-session stack is unchanged."
    )


def active_sessions() -> tuple[Any, ...]:
    """The active sessions of the current context, outermost first."""
    return ACTIVE.get()
