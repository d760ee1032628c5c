"""`bind_session`: carry the current session into threads, process pools and other processes."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import Any

from session_core import errors
from session_core.errors import StorageNotAddressable
from session_core.helpers import current_context, get_current_session
from session_core.restore import restore_session

__all__ = ["BoundSessionCallable", "bind_session"]


def _not_addressable(storage: Any, where: str) -> StorageNotAddressable:
    return errors._not_addressable(f"bind_session: the session's storage {storage!r}", where)


class BoundSessionCallable:
    """A picklable callable running `fn` inside a child of the session that was current when it was bound.

    In the binding process the child writes to the very same storage object; in another process it opens the
    storage by the context's URL, and refuses (rather than lose traces) when the storage has none.
    """

    __slots__ = ("__wrapped__", "_ctx", "_is_async", "_pid", "_storage")

    def __init__(self, fn: Callable[..., Any], ctx: dict[str, Any] | None, storage: Any) -> None:
        self.__wrapped__ = fn
        self._ctx = ctx
        self._storage = storage
        self._pid = os.getpid()
        self._is_async = inspect.iscoroutinefunction(fn)

    @property
    def context(self) -> dict[str, Any] | None:
        return self._ctx

    def _child(self) -> Any:
        ctx = self._ctx
        assert ctx is not None
        if self._pid == os.getpid() and self._storage is not None:
            return restore_session(ctx, storage=self._storage)
        if "storage_url" not in ctx and self._storage is not None:
            raise _not_addressable(self._storage, "in a forked process")
        return restore_session(ctx)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._ctx is None:
            return self.__wrapped__(*args, **kwargs)
        if self._is_async:
            return self._acall(*args, **kwargs)
        with self._child():
            return self.__wrapped__(*args, **kwargs)

    async def _acall(self, *args: Any, **kwargs: Any) -> Any:
        async with self._child():
            return await self.__wrapped__(*args, **kwargs)

    def __reduce__(self) -> tuple[Any, ...]:
        if self._ctx is not None and "storage_url" not in self._ctx and self._storage is not None:
            raise _not_addressable(self._storage, "in another process")
        return (_rebuild, (self.__wrapped__, self._ctx))

    def __repr__(self) -> str:
        name = getattr(self.__wrapped__, "__qualname__", repr(self.__wrapped__))
        where = self._ctx["name"] if self._ctx else None
        return f"<bound to session {where!r}: {name}>"


def _rebuild(fn: Callable[..., Any], ctx: dict[str, Any] | None) -> BoundSessionCallable:
    bound = BoundSessionCallable(fn, ctx, None)
    bound._pid = -1  # unpickled: always open the storage by URL
    return bound


def bind_session(fn: Callable[..., Any]) -> BoundSessionCallable:
    """Bind `fn` to the current session (or ambient context); outside any session it runs `fn` unchanged."""
    session = get_current_session()
    if session is not None:
        bound = BoundSessionCallable(fn, session.to_context(), session.storage)
    else:
        bound = BoundSessionCallable(fn, current_context(), None)
    return bound
