"""`SessionProtocol`, the shared `BaseSession` machinery and `ContextVarSession`."""

from __future__ import annotations

import copy
import itertools
import os
import threading
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, Protocol, TypeVar, runtime_checkable

from session_core import stack as _stack
from session_core._ids import new_session_name, new_uid
from session_core.context import MAX_METADATA_KEYS, _flat_plain, _new_context, make_context, validate_context
from session_core.errors import SessionStateError, _not_addressable
from session_core.storage import InMemoryStorage
from session_core.trace import Trace

__all__ = [
    "BaseSession",
    "ContextVarSession",
    "SessionMetadata",
    "SessionProtocol",
    "default_storage",
    "metadata_version",
]

STORAGE_URL_ENV = "SESSION_STORAGE_URL"
_ACTIVE = _stack.ACTIVE
_S = TypeVar("_S", bound="BaseSession")
_changes = itertools.count(1)
_wrap_lock = threading.Lock()
_epoch = 0  # a new, never-repeated number after every change to any session's metadata


def _changed() -> None:
    global _epoch
    _epoch = next(_changes)  # unique values: a reader that noted an older one always sees a difference


def metadata_version() -> int:
    """A number that changes whenever any session's metadata changes (see `SessionMetadata`): a cache of values
    derived from metadata (an adapter's baggage members, span attributes) notes it and compares it before reuse."""
    return _epoch


class SessionMetadata(dict):  # type: ignore[type-arg]
    """A session's own metadata: a dict whose changes the session and its descendants see on their next read.

    ``session.metadata["step"] = 3`` inside a session is what `record_trace`, `get_current_metadata`,
    `to_context` and the outgoing headers then carry. Merged views are cached, and any change to any session's
    metadata invalidates every cached view (changes are rare; reads are constant). Values changed in place (an
    item appended to a list value) are seen without this, as every merged view shares them.
    """

    __slots__ = ()

    def __setitem__(self, key: str, value: Any) -> None:
        dict.__setitem__(self, key, value)
        _changed()

    def __delitem__(self, key: str) -> None:
        dict.__delitem__(self, key)
        _changed()

    def __ior__(self, other: Any) -> SessionMetadata:  # type: ignore[misc]
        dict.update(self, other)
        _changed()
        return self

    def update(self, *args: Any, **kwargs: Any) -> None:
        dict.update(self, *args, **kwargs)
        _changed()

    def setdefault(self, key: str, default: Any = None) -> Any:
        value = dict.setdefault(self, key, default)
        _changed()
        return value

    def pop(self, *args: Any) -> Any:
        value = dict.pop(self, *args)
        _changed()
        return value

    def popitem(self) -> tuple[str, Any]:
        item = dict.popitem(self)
        _changed()
        return item

    def clear(self) -> None:
        dict.clear(self)
        _changed()

    def __reduce__(self) -> tuple[Any, ...]:  # pickles and copies as a plain dict
        return (dict, (dict(self),))


@runtime_checkable
class SessionProtocol(Protocol):
    """What every session class offers; `ContextVarSession` and session-otel's `OTelSession` implement it."""

    name: str
    metadata: dict[str, Any]

    @property
    def uid(self) -> str: ...

    @property
    def uid_chain(self) -> list[str]: ...

    @property
    def storage(self) -> Any: ...

    @property
    def llm_calls(self) -> list[Trace]: ...

    def clear_calls(self) -> None: ...

    def __len__(self) -> int: ...

    def __enter__(self) -> Any: ...

    def __exit__(self, *exc: Any) -> Any: ...

    async def __aenter__(self) -> Any: ...

    async def __aexit__(self, *exc: Any) -> Any: ...

    def to_context(self) -> dict[str, Any]: ...


def default_storage() -> Any:
    """`open_storage($SESSION_STORAGE_URL)` when that is set, else a new `InMemoryStorage`."""
    url = os.environ.get(STORAGE_URL_ENV)
    if url:
        from session_core.registry import open_storage

        return open_storage(url)
    return InMemoryStorage()


class BaseSession:
    """Name, uid chain, merged metadata, storage and the stack protocol, shared by every session class.

    Everything derived (uid, chain, merged metadata, default name and storage) is computed on first use, so
    entering and leaving a session costs two `ContextVar.set` calls.
    """

    __slots__ = (
        "__weakref__",  # sessions can be weakly referenced (registries, caches keyed by session)
        "_active",
        "_chain",
        "_ctx",
        "_merged",
        "_merged_at",
        "_meta",
        "_name",
        "_parent",
        "_plain_merged",
        "_storage",
        "_uid",
    )

    backend_name = "contextvar"

    def __init__(self, name: str | None = None, storage: Any = None, **metadata: Any) -> None:
        if name is not None and not isinstance(name, str):
            raise TypeError(f"session name must be a str, got {type(name).__name__}")
        self._name = name
        self._storage = storage
        self._meta: dict[str, Any] = metadata  # the caller's fresh kwargs: a SessionMetadata once handed out
        stack = _ACTIVE.get()
        self._parent = stack[-1] if stack else None
        self._ctx: dict[str, Any] | None = None
        self._uid: str | None = None
        self._chain: tuple[str, ...] | None = None
        self._merged: dict[str, Any] | None = None
        self._merged_at = 0
        self._plain_merged: dict[str, Any] | None = None  # `_merged` once checked to be flat plain scalars
        self._active = False

    # -- construction from a context -------------------------------------------------------------------
    @classmethod
    def from_context(cls: type[_S], ctx: Mapping[str, Any], storage: Any = None, **metadata: Any) -> _S:
        """A not-yet-entered session continuing `ctx`'s uid chain with its merged metadata inherited.

        Storage: `storage`, else the one named by the context's ``storage_url``, else the default.
        Raises `InvalidSessionContext` when `ctx` is malformed.
        """
        return cls._from_valid_context(validate_context(ctx), storage, **metadata)

    @classmethod
    def _from_valid_context(cls: type[_S], valid: dict[str, Any], storage: Any = None, **metadata: Any) -> _S:
        """`from_context` for a context `validate_context` already returned (skips checking it twice)."""
        session = cls.__new__(cls)
        BaseSession.__init__(session, valid["name"], storage, **metadata)
        session._parent = None
        session._ctx = valid
        session._init_backend_from_context(valid)
        return session

    def _init_backend_from_context(self, ctx: dict[str, Any]) -> None:
        """Hook for subclasses that carry backend fields (e.g. an OTel traceparent)."""

    @classmethod
    def backend_initialized(cls) -> bool:
        """Whether this session class's backend is set up in this process, so that a server should open the
        sessions of incoming requests with it (session-http asks before handing a request to an adapter's
        class). Always true here; `OTelSession` answers whether OpenTelemetry is set up."""
        return True

    # -- derived state ---------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        name = self._name
        if name is None:
            parent = self._parent
            name = parent.name if parent is not None else new_session_name()
            self._name = name
        return name

    @name.setter
    def name(self, value: str) -> None:
        self._name = value

    @property
    def uid(self) -> str:
        uid = self._uid
        if uid is None:
            uid = self._uid = new_uid()
        return uid

    def _chain_tuple(self) -> tuple[str, ...]:
        chain = self._chain
        if chain is None:
            if self._ctx is not None:
                base: tuple[str, ...] = tuple(self._ctx["uid_chain"])
            elif self._parent is not None:
                parent = self._parent
                base = parent._chain_tuple() if isinstance(parent, BaseSession) else tuple(parent.uid_chain)
            else:
                base = ()
            chain = self._chain = (*base, self.uid)
        return chain

    @property
    def uid_chain(self) -> list[str]:
        """Uids from the root session to this one (root first, `uid` last)."""
        return list(self._chain_tuple())

    @property
    def depth(self) -> int:
        return len(self._chain_tuple())

    def merged_metadata(self) -> dict[str, Any]:
        """Metadata merged outer → inner (a fresh dict each call)."""
        return dict(self._merged_view())

    @property
    def metadata(self) -> SessionMetadata:
        """This session's own metadata (not its ancestors'); changes are seen on the next read, see
        `SessionMetadata`."""
        meta = self._meta
        if type(meta) is not SessionMetadata:  # first handed out: from now on, changes are tracked
            with _wrap_lock:  # two threads asking at once must get the same dict, or one's changes would be lost
                meta = self._meta
                if type(meta) is not SessionMetadata:
                    meta = self._meta = SessionMetadata(meta)
        return meta

    @metadata.setter
    def metadata(self, value: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> None:
        self._meta = SessionMetadata(value)
        _changed()

    def _merged_view(self) -> dict[str, Any]:
        merged = self._merged
        if merged is None or self._merged_at != _epoch:
            self._merged_at = _epoch  # noted before reading: a change made while merging is seen next time
            if self._ctx is not None:
                outer: Mapping[str, Any] = self._ctx["metadata"]
            elif self._parent is not None:
                parent = self._parent
                outer = parent._merged_view() if isinstance(parent, BaseSession) else parent.merged_metadata()
            else:
                outer = {}
            merged = self._merged = {**outer, **self._meta} if outer else dict(self._meta)
        return merged

    @property
    def storage(self) -> Any:
        storage = self._storage
        if storage is None:
            if self._parent is not None:
                storage = self._parent.storage
            elif self._ctx is not None and "storage_url" in self._ctx:
                from session_core.registry import open_storage

                storage = open_storage(self._ctx["storage_url"])
            else:
                storage = default_storage()
            self._storage = storage
        return storage

    @property
    def storage_url(self) -> str | None:
        return getattr(self.storage, "url", None)

    @property
    def origin_context(self) -> dict[str, Any] | None:
        """The validated context this session was restored from (its parent's, sent from elsewhere), or None."""
        return self._ctx

    @property
    def parent(self) -> Any:
        """The enclosing session object in this process (None for a root or a restored context)."""
        return self._parent

    # -- traces ----------------------------------------------------------------------------------------
    @property
    def llm_calls(self) -> list[Trace]:
        """Traces recorded in this session and every descendant, wherever they ran."""
        return self.storage.get_traces(self.uid)  # type: ignore[no-any-return]

    def clear_calls(self) -> None:
        self.storage.clear(self.uid)

    def __len__(self) -> int:
        return len(self.llm_calls)

    def __bool__(self) -> bool:  # a session with no traces yet is still a session
        return True

    # -- context ---------------------------------------------------------------------------------------
    def to_context(self) -> dict[str, Any]:
        """The JSON-serializable, picklable context: name, uid chain, merged metadata, storage URL."""
        merged = self._merged_view()
        if merged is not self._plain_merged:
            if len(merged) > MAX_METADATA_KEYS or not _flat_plain(merged):
                return make_context(self.name, self._chain_tuple(), merged, self.storage_url)
            self._plain_merged = merged  # never changes once computed, nor do its (immutable) values
        return _new_context(self.name, self._chain_tuple(), dict(merged), self.storage_url)

    # -- the stack -------------------------------------------------------------------------------------
    def _enter_stack(self) -> None:
        if self._active:
            raise SessionStateError(
                f"{self!r} is already active; a session object can be entered once at a time. "
                "Open a new session (or restore its context) for concurrent work."
            )
        stack = _ACTIVE.get()
        if self._ctx is None:
            top = stack[-1] if stack else None
            if top is not self._parent:  # created in one place, entered in another: adopt the new parent
                self._parent = top
                self._chain = None
                self._merged = None
        self._active = True
        _ACTIVE.set((*stack, self))

    def _exit_stack(self) -> None:
        self._active = False
        stack = _ACTIVE.get()
        if stack and stack[-1] is self:
            _ACTIVE.set(stack[:-1])
        else:
            _stack.pop_session(self)

    def __enter__(self: _S) -> _S:
        self._enter_stack()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exit_stack()

    async def __aenter__(self: _S) -> _S:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    @property
    def is_active(self) -> bool:
        return self._active

    # -- copies and pickles ----------------------------------------------------------------------------
    def _fix_identity(self) -> None:
        """Draw the name, uids and storage now (this session's and its ancestors'), so that a copy and the
        original agree on them."""
        self._chain_tuple()
        _ = self.name, self.storage

    def __copy__(self: _S) -> _S:
        """The same session (name, uid, parent, storage, metadata dict), not entered: a copy can be entered
        while the original is."""
        self._fix_identity()
        new = type(self).__new__(type(self))
        for cls in type(self).__mro__:
            for slot in cls.__dict__.get("__slots__", ()):
                if slot != "__weakref__" and hasattr(self, slot):
                    object.__setattr__(new, slot, getattr(self, slot))
        instance_dict = getattr(self, "__dict__", None)
        if instance_dict:
            new.__dict__.update(instance_dict)
        new._active = False
        return new

    def __deepcopy__(self: _S, memo: dict[int, Any]) -> _S:
        """`copy` with its own metadata (copied deeply); the storage and the enclosing session are shared, being
        this process's resources rather than the session's values."""
        new = self.__copy__()
        memo[id(self)] = new
        new._meta = type(self._meta)(copy.deepcopy(dict(self._meta), memo))
        new._ctx = copy.deepcopy(self._ctx, memo)
        new._merged = new._plain_merged = None
        return new

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled, a session is the same session in another process: same name, uid, uid chain (its
        enclosing sessions travel as their context, as `from_context` takes them), metadata and storage — not
        entered, and without its span or other in-process state. Its storage must be one the other process can
        open (it has a ``url``); an in-memory storage raises `StorageNotAddressable` rather than lose the
        traces recorded there."""
        self._fix_identity()
        storage = self._storage
        if getattr(storage, "url", None) is None:
            raise _not_addressable(f"pickling {self!r}: its storage", "by the copy")
        parent = self._parent
        ctx = validate_context(parent.to_context()) if parent is not None else self._ctx
        return (_unpickle_session, (type(self), self.name, self.uid, ctx, dict(self._meta), storage))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, uid={self.uid!r}, depth={self.depth}, storage={self.storage!r})"
        )


def _unpickle_session(
    cls: type[_S], name: str, uid: str, ctx: dict[str, Any] | None, meta: dict[str, Any], storage: Any
) -> _S:
    """`BaseSession.__reduce__`'s other half."""
    if ctx is None:
        session = cls.__new__(cls)
        BaseSession.__init__(session, name, storage)
        session._parent = None  # a root wherever it is entered, as in the process it came from
    else:
        session = cls._from_valid_context(ctx, storage)
        session._name = name
    session._meta = meta
    session._uid = uid
    return session


class ContextVarSession(BaseSession):
    """A session kept in a `ContextVar`: asyncio tasks inherit it, threads do not unless bound."""

    __slots__ = ()
