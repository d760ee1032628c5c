"""Ray Client (``ray.init("ray://…")``): capture the caller's session in the driver, where the session is open.

Under Ray Client a ``.remote()`` made in the driver is sent over gRPC to a server process on the cluster, and Ray
applies a function's or actor method's invocation decorator there, in that server, where no session of the driver
is active: left alone, every call would arrive without one. So the objects `session_ray.remote` returns add the
context on the client side themselves, and only while Ray would hand the call to the client
(``client_mode_should_convert``, the test Ray itself makes); the server-side decorator then finds the context
already there and keeps it, and calls from inside workers (plain Ray, not client calls) work as before.

- Remote functions: in front of ``RemoteFunction._remote``, which ``.remote()`` and ``.options(...).remote()``
  both reach, and where Ray converts the call into a client call.
- Actors: the handle ``SessionActorClass.remote`` returns in the client becomes a `ClientActorHandle` subclass
  whose methods add the context. Handles the client gets any other way (``ray.get_actor``, a task's return
  value) are Ray's own and carry no session from the driver; pass ``_session_ctx=capture_context()`` to those.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from session_ray.capture import with_context

__all__ = ["ClientMethod", "client_mode", "follow_client_calls", "session_client_handle"]

logger = logging.getLogger(__name__)


def _never() -> bool:
    return False


@functools.cache
def _client_mode_check() -> Callable[[], bool]:
    """Ray's own test for "this call goes through Ray Client" (private to Ray, so looked up defensively: a Ray
    without it, or with another signature, gets no Ray Client support rather than broken ``.remote()`` calls)."""
    try:
        from ray._private.client_mode_hook import client_mode_should_convert

        client_mode_should_convert()  # type: ignore[no-untyped-call]
    except Exception:  # ImportError, or a TypeError from an older signature
        logger.info("this Ray has no client_mode_should_convert(); session_ray does not follow Ray Client calls")
        return _never
    return client_mode_should_convert


def client_mode() -> bool:
    """Whether a ``.remote()`` made here right now goes through Ray Client."""
    return _client_mode_check()()


def follow_client_calls(remote_function: Any, checked: bool) -> Any:
    """`remote_function` (Ray's ``RemoteFunction``), adding the caller's context itself under Ray Client."""
    submit = remote_function._remote
    converts = _client_mode_check()

    def _remote(args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        if converts():
            kwargs = with_context(kwargs, checked)
        return submit(args=args, kwargs=kwargs, **options)

    remote_function._remote = _remote
    return remote_function


class ClientMethod:
    """``handle.method`` of a Ray Client actor handle: ``.remote()`` and ``.options(...).remote()`` add the context."""

    __slots__ = ("_checked", "_method")

    def __init__(self, method: Any, checked: bool) -> None:
        self._method = method
        self._checked = checked

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        return self._method.remote(*args, **with_context(kwargs, self._checked))

    def options(self, **options: Any) -> ClientMethod:
        return ClientMethod(self._method.options(**options), self._checked)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._method(*args, **kwargs)  # Ray's own "use .remote()" error

    def __getattr__(self, name: str) -> Any:
        return getattr(self._method, name)

    def __repr__(self) -> str:
        return f"ClientMethod({self._method!r})"


_UNCHECKED = "_session_ray_unchecked"


@functools.cache
def _handle_class() -> type:
    from ray.util.client.common import ClientActorHandle  # imports grpc: only ever reached under Ray Client

    class SessionClientActorHandle(ClientActorHandle):
        """A Ray Client actor handle whose method calls carry the caller's session."""

        def __getattr__(self, name: str) -> Any:
            method = super().__getattr__(name)  # type: ignore[no-untyped-call]
            return ClientMethod(method, name not in self.__dict__.get(_UNCHECKED, ()))

    return SessionClientActorHandle


def session_client_handle(handle: Any, unchecked: frozenset[str]) -> Any:
    """The Ray Client actor `handle`, its methods now adding the caller's context (`unchecked`: methods that bring
    their own storage). Still a ``ClientActorHandle``: ``ray.kill`` and passing it into tasks work as before."""
    handle.__class__ = _handle_class()
    handle.__dict__[_UNCHECKED] = unchecked
    return handle
