"""`ray_entrypoint`: a function that restores a session context passed as ``_session_ctx=`` around its call.

The same wrapper builder serves `session_ray.remote`, which adds per-call isolation: every call runs in its own
copy of the worker's `contextvars.Context`, so nothing set by one call (a session, or any ContextVar) leaks into
the next call on a reused worker or a threaded actor's thread (Ray issue #34327).
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Generator
from typing import Any, TypeVar, overload

from session_core import StorageNotAddressable
from session_ray.worker import CONTEXT_KWARG, LEGACY_CONTEXT_KWARG, restore_for_call

__all__ = ["entrypoint_target", "make_wrapper", "ray_entrypoint", "refuse_process_local"]

F = TypeVar("F", bound=Callable[..., Any])

_MARK = "__session_ray_entrypoint__"  # (original function, storage) on every wrapper built here
_Kind = str  # "sync" | "async" | "gen" | "asyncgen"


def _kind(fn: Callable[..., Any], *, unwrap: bool) -> _Kind:
    """How `fn` behaves when called, looking into the ``__call__`` of a callable instance. With `unwrap`, also
    through decorators that hide a coroutine or generator function; without it, by `fn` itself, as Ray decides
    whether a task or actor method is async or a generator (a sync ``functools.wraps`` wrapper running an
    ``async def`` with ``asyncio.run``, or returning a generator's items as a list, stays sync)."""
    candidates = [fn, inspect.getattr_static(type(fn), "__call__", None)]
    if unwrap:
        candidates.append(inspect.unwrap(fn))
    if any(inspect.iscoroutinefunction(c) for c in candidates):
        return "async"
    if any(inspect.isasyncgenfunction(c) for c in candidates):
        return "asyncgen"
    if any(inspect.isgeneratorfunction(c) for c in candidates):
        return "gen"
    return "sync"


def _signature_with_context(fn: Callable[..., Any]) -> inspect.Signature | None:
    """`fn`'s signature plus the keyword-only context parameters, so Ray's argument check accepts them."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    params = list(sig.parameters.values())
    names = {p.name for p in params}
    extra = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None)
        for name in (CONTEXT_KWARG, LEGACY_CONTEXT_KWARG)
        if name not in names
    ]
    if not extra:
        return sig
    if params and params[-1].kind is inspect.Parameter.VAR_KEYWORD:
        params[-1:-1] = extra
    else:
        params.extend(extra)
    try:
        return sig.replace(parameters=params)
    except ValueError:
        return None


def _where(fn: Callable[..., Any]) -> str:
    return f"session_ray ({getattr(fn, '__qualname__', repr(fn))})"


def _local_storage_error(storage: Any, where: str) -> StorageNotAddressable:
    return StorageNotAddressable(
        f"{where}: ray_entrypoint(storage={storage!r}) is a storage object in this process only (it has no URL), "
        "so it cannot travel to Ray workers or other processes: each would write to its own copy and the traces "
        "would be lost. Pass a storage with a URL that every worker can open instead, e.g. "
        "storage=session_storage_sql.SqliteSessionStorage('traces.db') or storage='sqlite:///traces.db' "
        "(PostgreSQL for clusters spanning machines), or leave storage= out to use the session's own storage."
    )


class _ProcessLocal:
    """A ``storage=`` object without a URL, as a wrapper holds it: used as is in this process; pickling it (Ray
    does, with the function, at the first ``.remote()``) raises `StorageNotAddressable` saying what to use."""

    __slots__ = ("storage", "where")

    def __init__(self, storage: Any, where: str) -> None:
        self.storage = storage
        self.where = where

    def __reduce__(self) -> tuple[Any, ...]:
        raise _local_storage_error(self.storage, self.where)


def _hold(storage: Any, where: str) -> Any:
    if storage is None or isinstance(storage, str) or getattr(storage, "url", None):
        return storage
    return _ProcessLocal(storage, where)


def _unhold(storage: Any) -> Any:
    return storage.storage if isinstance(storage, _ProcessLocal) else storage


def refuse_process_local(fn: Callable[..., Any]) -> None:
    """Raise `StorageNotAddressable` when `fn` is a `ray_entrypoint` whose ``storage=`` object has no URL."""
    mark = getattr(fn, _MARK, None)
    if mark is not None and isinstance(mark[1], _ProcessLocal):
        raise _local_storage_error(mark[1].storage, mark[1].where)


def _run(fn: Callable[..., Any], ctx: Any, storage: Any, where: str, args: Any, kwargs: Any) -> Any:
    if ctx is None:
        return fn(*args, **kwargs)
    with restore_for_call(ctx, _unhold(storage), where=where):
        return fn(*args, **kwargs)


def _isolated(ctx: Any, storage: Any, where: str) -> tuple[Callable[..., Any], Any]:
    """The `run` of a new `contextvars.Context`, and the session restored from `ctx` and entered in it (None
    without a context)."""
    run = contextvars.copy_context().run
    session = run(restore_for_call, ctx, _unhold(storage), where=where) if ctx is not None else None
    if session is not None:
        run(session.__enter__)
    return run, session


def _steps(
    fn: Callable[..., Any], ctx: Any, storage: Any, where: str, args: Any, kwargs: Any
) -> Generator[Any, Any, Any]:
    """Drive the generator `fn(*args, **kwargs)` in a Context of its own, inside the restored session.

    Every step runs in that one Context, so the session never shows in the consumer's context between steps.
    """
    run, session = _isolated(ctx, storage, where)
    gen: Any = None
    try:
        gen = run(fn, *args, **kwargs)
        while True:
            try:
                item = run(next, gen)
            except StopIteration as stop:
                return stop.value
            yield item
    finally:
        try:
            if gen is not None:
                run(gen.close)  # a consumer that stops early: the generator's own cleanup still sees the session
        finally:
            if session is not None:
                run(session.__exit__, *sys.exc_info())


class _InContext:
    """`awaitable`, with each of its steps run by `run` (a `contextvars.Context.run`), whoever awaits it."""

    __slots__ = ("_awaitable", "_run")

    def __init__(self, run: Callable[..., Any], awaitable: Awaitable[Any]) -> None:
        self._run = run
        self._awaitable = awaitable

    def __await__(self) -> Generator[Any, Any, Any]:
        run = self._run
        steps = self._awaitable.__await__()
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                signal = run(steps.send, value) if error is None else run(steps.throw, error)
            except StopIteration as stop:
                return stop.value
            try:
                value, error = (yield signal), None
            except BaseException as exc:  # a cancellation or close: delivered to the step, as await would
                value, error = None, exc


async def _async_steps(
    fn: Callable[..., Any], ctx: Any, storage: Any, where: str, args: Any, kwargs: Any
) -> AsyncGenerator[Any, None]:
    """`_steps` for an async generator: every step runs in one Context of its own, inside the restored session.

    An async generator otherwise runs in its consumer's context, which would see the session between steps and
    keep it for good when it stops early (the generator's cleanup then runs in another task's context).
    """
    run, session = _isolated(ctx, storage, where)
    agen: Any = None
    try:
        agen = run(fn, *args, **kwargs)
        while True:
            try:
                item = await _InContext(run, agen.__anext__())
            except StopAsyncIteration:
                return
            yield item
    finally:
        try:
            if agen is not None:
                await _InContext(run, agen.aclose())
        finally:
            if session is not None:
                run(session.__exit__, *sys.exc_info())


def make_wrapper(
    fn: Callable[..., Any],
    *,
    storage: Any = None,
    isolate: bool,
    keep_wrapped: bool = True,
) -> Callable[..., Any]:
    """The function that takes ``_session_ctx=`` (or ``_otel_ctx=``) and runs `fn` inside that context.

    `isolate`: run each call in its own copy of the current `contextvars.Context` (Ray workers, actors).
    `keep_wrapped`: keep ``__wrapped__`` (Ray unwraps actor methods to read their signature, so the method
    wrappers built for actors drop it and carry ``__signature__`` alone).
    """
    kind = _kind(fn, unwrap=not isolate)  # `isolate`: a wrapper `session_ray.remote` hands to Ray
    where = _where(fn)
    storage = _hold(storage, where)  # what the wrapper's closure carries when Ray pickles it
    wrapper: Callable[..., Any]

    if kind == "async":

        async def async_wrapper(*args: Any, _session_ctx: Any = None, _otel_ctx: Any = None, **kwargs: Any) -> Any:
            ctx = _session_ctx if _session_ctx is not None else _otel_ctx
            if ctx is None:
                return await fn(*args, **kwargs)
            async with restore_for_call(ctx, _unhold(storage), where=where):
                return await fn(*args, **kwargs)

        wrapper = async_wrapper

    elif kind == "asyncgen":

        async def asyncgen_wrapper(
            *args: Any, _session_ctx: Any = None, _otel_ctx: Any = None, **kwargs: Any
        ) -> AsyncIterator[Any]:
            ctx = _session_ctx if _session_ctx is not None else _otel_ctx
            if ctx is None and not isolate:
                async for item in fn(*args, **kwargs):
                    yield item
                return
            steps = _async_steps(fn, ctx, storage, where, args, kwargs)
            try:
                async for item in steps:
                    yield item
            finally:
                await steps.aclose()  # `async for` does not pass a close on, as `yield from` does

        wrapper = asyncgen_wrapper

    elif kind == "gen":

        def gen_wrapper(
            *args: Any, _session_ctx: Any = None, _otel_ctx: Any = None, **kwargs: Any
        ) -> Generator[Any, Any, Any]:
            ctx = _session_ctx if _session_ctx is not None else _otel_ctx
            if ctx is None and not isolate:
                return (yield from fn(*args, **kwargs))
            return (yield from _steps(fn, ctx, storage, where, args, kwargs))

        wrapper = gen_wrapper

    elif isolate:

        def isolated_wrapper(*args: Any, _session_ctx: Any = None, _otel_ctx: Any = None, **kwargs: Any) -> Any:
            ctx = _session_ctx if _session_ctx is not None else _otel_ctx
            return contextvars.copy_context().run(_run, fn, ctx, storage, where, args, kwargs)

        wrapper = isolated_wrapper

    else:

        def sync_wrapper(*args: Any, _session_ctx: Any = None, _otel_ctx: Any = None, **kwargs: Any) -> Any:
            ctx = _session_ctx if _session_ctx is not None else _otel_ctx
            if ctx is None:
                return fn(*args, **kwargs)
            return contextvars.copy_context().run(_run, fn, ctx, storage, where, args, kwargs)

        wrapper = sync_wrapper

    functools.update_wrapper(wrapper, fn)
    if not hasattr(fn, "__qualname__"):  # a partial or a callable instance: named after what it calls, as Ray shows
        named = fn.func if isinstance(fn, functools.partial) else type(fn)
        wrapper.__name__ = getattr(named, "__name__", wrapper.__name__)
        wrapper.__qualname__ = getattr(named, "__qualname__", wrapper.__qualname__)
    if not keep_wrapped:
        delattr(wrapper, "__wrapped__")
    signature = _signature_with_context(fn)
    if signature is not None:
        setattr(wrapper, "__signature__", signature)  # noqa: B010  (functions have no declared __signature__)
    setattr(wrapper, _MARK, (fn, storage))
    return wrapper


def entrypoint_target(fn: Callable[..., Any]) -> tuple[Callable[..., Any], Any, bool]:
    """``(original function, storage, had storage)`` of a `ray_entrypoint` wrapper, or `fn` itself."""
    mark = getattr(fn, _MARK, None)
    if mark is not None:
        original, storage = mark
        return original, _unhold(storage), storage is not None
    return fn, None, False


@overload
def ray_entrypoint(fn: F, /, *, storage: Any = None) -> F: ...


@overload
def ray_entrypoint(fn: None = None, /, *, storage: Any = None) -> Callable[[F], F]: ...


def ray_entrypoint(fn: Callable[..., Any] | None = None, /, *, storage: Any = None) -> Any:
    """Make `fn` restore a session context passed as ``_session_ctx=`` (or ``_otel_ctx=``) around its call.

    Traces go to `storage` (a storage object or URL) when given, else the context's storage, opened by URL
    once per process. Called without a context, `fn` runs unchanged. Works for sync and async functions, with
    Ray (``ray.remote(ray_entrypoint(fn))``), plain calls and `multiprocessing` alike. A `storage` object without
    a URL (`InMemoryStorage`) serves this process only: the function then refuses to be pickled for Ray with
    `StorageNotAddressable`, and `session_ray.remote` refuses it at once.
    """
    if fn is None:
        return functools.partial(ray_entrypoint, storage=storage)
    if not callable(fn):
        raise TypeError(f"ray_entrypoint expects a function, got {type(fn).__name__}")
    original, own_storage, _ = entrypoint_target(fn)
    return make_wrapper(original, storage=storage if storage is not None else own_storage, isolate=False)
