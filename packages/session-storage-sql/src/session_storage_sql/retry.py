"""Which database errors are worth retrying, and how long to keep trying before telling the caller.

Transient: SQLite ``database is locked`` / ``busy`` (another process holds the write lock past the busy
timeout), and on PostgreSQL dropped, terminated, refused or timed-out connections, a server starting up or
shutting down, serialization failures and deadlocks. Every write is idempotent by ``trace_id``, so retrying a
transaction whose COMMIT may or may not have reached the server never duplicates anything.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from sqlalchemy.exc import DBAPIError

__all__ = ["ConnectionLost", "RetryPolicy", "describe", "is_connection_error", "is_transient"]

# SQLSTATE classes and codes that a retry can cure.
_PG_TRANSIENT_CLASSES = ("08",)  # connection exceptions
_PG_TRANSIENT_CODES = frozenset(
    {
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "57P01",  # admin_shutdown (pg_terminate_backend, server stop)
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now (server starting)
        "53300",  # too_many_connections
        "55P03",  # lock_not_available
    }
)
_SQLITE_TRANSIENT = ("database is locked", "database table is locked", "database is busy", "busy")
_DISCONNECT_WORDS = (
    "terminating connection",
    "server closed the connection",
    "connection is closed",
    "connection already closed",
    "consuming input failed",
    "connection refused",
    "could not receive data",
    "could not send data",
    "ssl connection has been closed",
    "the connection is lost",
    "connection reset",
    "timeout expired",  # psycopg's ConnectionTimeout: a server that accepted the connection but never answered
    "timed out",
    "no route to host",
    "network is unreachable",
)
_DBAPI_CONNECTION_ERRORS = ("OperationalError", "InterfaceError")


def _driver_connection_error(exc: BaseException) -> bool:
    """Whether `exc` is a DB-API ``OperationalError`` or ``InterfaceError`` (or a subclass, such as psycopg's
    client-side ``ConnectionTimeout``) that is not SQLite's."""
    if type(exc).__module__.startswith("sqlite3"):
        return False
    return any(cls.__name__ in _DBAPI_CONNECTION_ERRORS for cls in type(exc).__mro__)


class ConnectionLost(Exception):
    """Internal: the DBAPI connection broke during a transaction; the transaction is retried on a fresh one."""

    def __init__(self, orig: BaseException) -> None:
        super().__init__(str(orig))
        self.orig = orig


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a failed transaction is retried (exponential backoff with jitter).

    The defaults ride out a PostgreSQL restart or a long SQLite write lock (each SQLite attempt already waits up
    to the storage's ``busy_timeout`` inside SQLite) before the caller sees a `StorageError`.
    """

    attempts: int = 8
    initial_delay: float = 0.02
    max_delay: float = 2.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"RetryPolicy.attempts must be at least 1, got {self.attempts}")
        if self.initial_delay < 0 or self.max_delay < 0:
            raise ValueError("RetryPolicy delays must not be negative")

    def delay(self, attempt: int) -> float:
        """Seconds to sleep after failed attempt number `attempt` (1-based)."""
        base = min(self.max_delay, self.initial_delay * 2.0 ** (attempt - 1))
        return base * random.uniform(0.5, 1.5)


def _sqlstate(orig: BaseException | None) -> str | None:
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return code if isinstance(code, str) else None


def _chain(exc: BaseException) -> list[BaseException]:
    """`exc`, the driver error it wraps, and the errors it was raised from or during (a few levels)."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo and len(seen) < 8:
        item = todo.pop(0)
        if item is None or any(item is s for s in seen):
            continue
        seen.append(item)
        todo.extend([getattr(item, "orig", None), item.__cause__, item.__context__])
    return seen


def _transient_one(exc: BaseException) -> bool:
    if isinstance(exc, ConnectionLost):
        return True
    if isinstance(exc, DBAPIError):
        return exc.connection_invalidated
    state = _sqlstate(exc)
    if state is not None:
        return state in _PG_TRANSIENT_CODES or state.startswith(_PG_TRANSIENT_CLASSES)
    message = str(exc).lower()
    name = type(exc).__name__
    if name == "OperationalError" and type(exc).__module__ == "sqlite3":
        return any(word in message for word in _SQLITE_TRANSIENT)
    if _driver_connection_error(exc):
        return any(word in message for word in _DISCONNECT_WORDS)
    return False


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the whole transaction may succeed where this attempt failed.

    The whole chain counts: psycopg reports a backend killed mid-pipeline as "cannot exit pipeline mode while
    busy", raised while handling the server's ``57P01 terminating connection``.
    """
    return any(_transient_one(item) for item in _chain(exc))


def is_connection_error(exc: BaseException) -> bool:
    """Whether the error says the connection itself failed (so it must not go back to the pool)."""
    for item in _chain(exc):
        state = _sqlstate(item)
        if state is not None:  # the server's own error: its SQLSTATE says (a statement timeout leaves it usable)
            if state.startswith(_PG_TRANSIENT_CLASSES) or state.startswith("57P"):
                return True
        elif _driver_connection_error(item):
            return True
    return False


def describe(exc: BaseException) -> str:
    """The driver's own error (no SQL statement, no parameters), e.g. ``OperationalError: database is locked``."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(orig).__name__}: {first}" if first else type(orig).__name__
