"""Exceptions shared by every session package."""

from __future__ import annotations

__all__ = [
    "ContextTooLarge",
    "InvalidSessionContext",
    "MissingOptionalDependency",
    "SessionError",
    "SessionStateError",
    "SignatureError",
    "StorageError",
    "StorageNotAddressable",
    "UnknownStorageScheme",
    "UnserializableMetadata",
]


class SessionError(Exception):
    """Base class of every error raised by the session packages."""


class SessionStateError(SessionError, RuntimeError):
    """A session was entered or exited in a way that breaks the active-session stack."""


class InvalidSessionContext(SessionError, ValueError):
    """A context dict, baggage header or slug is malformed; the message names the bad field."""


class ContextTooLarge(SessionError, ValueError):
    """A context does not fit the wire format's size limits and could not travel by reference."""

    def __init__(self, size: int, limit: int, what: str = "baggage", *, unit: str = "bytes") -> None:
        self.size = size
        self.limit = limit
        self.unit = unit
        super().__init__(
            f"session context needs {size} {unit} of {what}, over the limit of {limit}; "
            "use an addressable storage (e.g. session-storage-sql) so metadata travels by reference, "
            "or put less metadata on the session"
        )


class UnserializableMetadata(SessionError, TypeError):
    """Session metadata holds a value that JSON cannot represent, so it cannot cross a boundary."""


class SignatureError(InvalidSessionContext):
    """A signed context is unsigned, forged, tampered with or expired."""


class StorageError(SessionError, RuntimeError):
    """A storage could not complete an operation after its retries; the message names the cause."""


class StorageNotAddressable(SessionError, RuntimeError):
    """A storage that lives in one process only was asked to cross a process boundary."""


def _not_addressable(subject: str, where: str) -> StorageNotAddressable:
    """The error for `subject` (what holds the storage, e.g. "bind_session: the session's storage ...")."""
    return StorageNotAddressable(
        f"{subject} lives in this process only, so traces recorded {where} would be lost. Use an addressable "
        "storage that every process can open, e.g. session_storage_sql.SqliteSessionStorage('traces.db') or "
        "$SESSION_STORAGE_URL='sqlite:///traces.db'"
    )


class UnknownStorageScheme(SessionError, ValueError):
    """`open_storage` was given a URL whose scheme no installed package provides."""


class MissingOptionalDependency(ImportError):
    """An optional dependency of a feature is not installed; the message says what to install."""

    def __init__(self, feature: str, module: str, distribution: str, extra: str) -> None:
        self.feature = feature
        self.module = module
        super().__init__(
            f"{feature} requires the optional dependency {module!r}, which is not installed. "
            f'Install it with: pip install "{distribution}[{extra}]"',
            name=module,
        )
