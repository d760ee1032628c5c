"""`remote`: a drop-in for ``ray.remote`` whose tasks and actors run inside the caller's session.

Functions become genuine Ray remote functions and actor handles stay genuine Ray actor handles: the caller's
context is added by a Ray invocation decorator at each ``.remote()`` (so ``.options(...)``, pickled handles and
``ray.get_actor`` handles propagate too), and the worker-side wrapper restores it around the call, each call in a
`contextvars.Context` of its own. Under Ray Client, which applies invocation decorators in its server instead of
the driver, `session_ray.client` adds the context in the driver.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any, overload

from session_core import MissingOptionalDependency
from session_ray.capture import compose, inject_checked, inject_unchecked, with_context
from session_ray.client import client_mode, follow_client_calls, session_client_handle
from session_ray.entrypoint import entrypoint_target, make_wrapper, refuse_process_local

__all__ = ["SessionActorClass", "remote"]

_DECORATOR_ATTR = "__ray_invocation_decorator__"
_WRAPPED_DUNDERS = frozenset({"__init__", "__call__"})


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise MissingOptionalDependency("session_ray.remote", "ray", "session-ray", "ray") from exc
    return ray


def _decorate(wrapper: Callable[..., Any], fn: Callable[..., Any], checked: bool) -> None:
    inject = inject_checked if checked else inject_unchecked
    setattr(wrapper, _DECORATOR_ATTR, compose(inject, getattr(fn, _DECORATOR_ATTR, None)))


def task_function(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The worker-side function `remote` hands to ``ray.remote`` for the task `fn`."""
    refuse_process_local(fn)
    original, storage, own = entrypoint_target(fn)
    wrapper = make_wrapper(original, storage=storage, isolate=True)
    _decorate(wrapper, original, checked=not own)
    return wrapper


def _default_init(self: Any) -> None:
    """Stands in for a class without ``__init__`` of its own, so actor creation can carry a context."""


def _methods(cls: type) -> dict[str, Any]:
    """Instance, static and class methods of `cls` (inherited too) that Ray exposes on a handle, by name (the
    function inside a ``staticmethod`` or ``classmethod``)."""
    found: dict[str, Any] = {}
    for name in dir(cls):
        if name.startswith("__") and name not in _WRAPPED_DUNDERS:
            continue
        try:
            raw = inspect.getattr_static(cls, name)
        except AttributeError:
            continue
        if isinstance(raw, (staticmethod, classmethod)):
            raw = raw.__func__
        if inspect.isfunction(raw):
            found[name] = raw
    if "__init__" not in found:
        found["__init__"] = _default_init
    return found


def session_actor_class(cls: type) -> type:
    """A subclass of `cls` whose methods restore the caller's context, for ``ray.remote`` to turn into an actor."""
    namespace: dict[str, Any] = {}
    for name, method in _methods(cls).items():
        refuse_process_local(method)
        original, storage, own = entrypoint_target(method)
        wrapper = make_wrapper(original, storage=storage, isolate=True, keep_wrapped=False)
        if name == "__init__" and original is _default_init:
            wrapper.__qualname__ = f"{cls.__qualname__}.__init__"
        _decorate(wrapper, original, checked=not own)
        raw = inspect.getattr_static(cls, name, None)
        if isinstance(raw, staticmethod):
            namespace[name] = staticmethod(wrapper)
        elif isinstance(raw, classmethod):
            namespace[name] = classmethod(wrapper)
        else:
            namespace[name] = wrapper
    namespace["__module__"] = cls.__module__
    namespace["__qualname__"] = cls.__qualname__
    namespace["__doc__"] = cls.__doc__
    namespace["__session_ray_class__"] = cls
    return type(cls.__name__, (cls,), namespace)


logger = logging.getLogger(__name__)
_bind_warned: list[bool] = []


@functools.cache
def _class_node_type() -> type:
    from ray.dag.class_node import ClassNode

    class SessionClassNode(ClassNode):
        """A ``.bind()`` actor creation whose ``__init__`` runs in the session current at each ``execute()``
        (Ray creates it with ``ActorClass.remote``, past `SessionActorClass`, and applies no decorator there)."""

        _session_checked = True

        def _copy_impl(self, *args: Any, **kwargs: Any) -> Any:
            return _session_class_node(super()._copy_impl(*args, **kwargs), self._session_checked)

        def _execute_impl(self, *args: Any, **kwargs: Any) -> Any:
            bound = self._bound_kwargs
            self._bound_kwargs = with_context(bound, self._session_checked)
            try:
                return super()._execute_impl(*args, **kwargs)  # type: ignore[no-untyped-call]
            finally:
                self._bound_kwargs = bound

    return SessionClassNode


def _session_class_node(node: Any, checked: bool) -> Any:
    node.__class__ = _class_node_type()
    node._session_checked = checked
    return node


class SessionActorClass:
    """What `remote` returns for a class: Ray's actor class, creating actors inside the caller's session.

    ``.remote(...)`` returns a genuine Ray actor handle whose method calls carry the caller's session;
    ``.options(...)`` returns another `SessionActorClass`; ``.bind(...)`` a Ray DAG node that creates the actor
    inside the session current at ``execute()``; anything else is Ray's actor class attribute.
    `unchecked` names the methods (``__init__`` included) that bring their own storage (``ray_entrypoint(storage=)``).
    """

    __slots__ = ("_actor_class", "_unchecked")

    def __init__(self, actor_class: Any, unchecked: frozenset[str] = frozenset()) -> None:
        self._actor_class = actor_class
        self._unchecked = unchecked

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        """Create the actor; its ``__init__`` runs inside the caller's session."""
        handle = self._actor_class.remote(*args, **with_context(kwargs, "__init__" not in self._unchecked))
        if client_mode():  # a Ray Client handle: Ray applies no invocation decorator in this process
            return session_client_handle(handle, self._unchecked)
        return handle

    def options(self, **actor_options: Any) -> SessionActorClass:
        """Like Ray's ``ActorClass.options``: the same actor class with overridden options."""
        return SessionActorClass(self._actor_class.options(**actor_options), self._unchecked)

    def bind(self, *args: Any, **kwargs: Any) -> Any:
        """Like Ray's ``ActorClass.bind`` (a Ray DAG node); ``execute()`` creates the actor in its own session.

        This rests on Ray's DAG internals (``ClassNode``, a developer API): where they differ, the node is Ray's
        own, whose ``__init__`` runs outside any session, and one warning says so."""
        node = self._actor_class.bind(*args, **kwargs)
        reason = ""
        try:
            _class_node_type()
        except (ImportError, AttributeError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
        if not reason and not all(hasattr(node, a) for a in ("_bound_kwargs", "_copy_impl", "_execute_impl")):
            reason = "its ClassNode lacks the attributes session-ray sets"
        if reason:
            if not _bind_warned:
                _bind_warned.append(True)
                logger.warning(
                    "Ray's DAG nodes are not the ones session-ray knows (%s): actors created by .bind(...) and "
                    "execute() run __init__ outside the session (their methods still follow it)",
                    reason,
                )
            return node
        return _session_class_node(node, "__init__" not in self._unchecked)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._actor_class(*args, **kwargs)  # Ray's own "use .remote()" error

    def __getattr__(self, name: str) -> Any:
        if name in SessionActorClass.__slots__:
            raise AttributeError(name)
        return getattr(self._actor_class, name)

    def __reduce__(self) -> tuple[Any, ...]:
        return (SessionActorClass, (self._actor_class, self._unchecked))

    def __repr__(self) -> str:
        return f"SessionActorClass({self._actor_class!r})"


@overload
def remote(fn_or_class: type, /, **ray_options: Any) -> SessionActorClass: ...


@overload
def remote(fn_or_class: Callable[..., Any], /, **ray_options: Any) -> Any: ...


@overload
def remote(fn_or_class: None = None, /, **ray_options: Any) -> Callable[[Any], Any]: ...


def remote(fn_or_class: Any = None, /, **ray_options: Any) -> Any:
    """Like ``ray.remote`` (``@remote``, ``@remote(num_cpus=1)``, ``remote(fn)``), following the caller's session.

    The session current at each ``.remote()`` call (task, actor creation, actor method, ``.options(...)``, from
    the driver or inside another worker) is restored around the call in the worker; calls made outside any
    session run with none. A session whose storage lives in the calling process only raises
    `session_core.StorageNotAddressable` at ``.remote()``. Raises `session_core.MissingOptionalDependency`
    when Ray is not installed.
    """
    ray = _import_ray()
    if fn_or_class is None:
        return lambda target: remote(target, **ray_options)
    if getattr(fn_or_class, "__ray_metadata__", None) is not None or hasattr(fn_or_class, "_function_descriptor"):
        raise TypeError(
            "session_ray.remote expects a plain function or class; apply it instead of ray.remote, not to "
            "ray.remote's result"
        )
    if inspect.isclass(fn_or_class):
        unchecked = frozenset(name for name, method in _methods(fn_or_class).items() if entrypoint_target(method)[2])
        target = session_actor_class(fn_or_class)
        actor_class = ray.remote(**ray_options)(target) if ray_options else ray.remote(target)
        return SessionActorClass(actor_class, unchecked)
    if not callable(fn_or_class):
        raise TypeError(f"session_ray.remote expects a function or a class, got {type(fn_or_class).__name__}")
    function = task_function(fn_or_class)
    remote_function = ray.remote(**ray_options)(function) if ray_options else ray.remote(function)
    return follow_client_calls(remote_function, checked=not entrypoint_target(fn_or_class)[2])
