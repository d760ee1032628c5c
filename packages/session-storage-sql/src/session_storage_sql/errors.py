"""Exceptions of the SQL storage; all are `session_core.StorageError`, so callers catch one class."""

from __future__ import annotations

from session_core import StorageError

__all__ = ["InvalidStorageURL", "SchemaVersionError"]


class InvalidStorageURL(StorageError, ValueError):
    """A storage URL cannot be parsed or names a database this package does not support."""


class SchemaVersionError(StorageError):
    """The database was written by a newer session-storage-sql whose schema this version does not understand."""

    def __init__(self, url: str, found: int | str, supported: int) -> None:
        self.found = found
        self.supported = supported
        super().__init__(
            f"the session database {url} has schema version {found}, which this session-storage-sql does not "
            f"understand (it reads version {supported}); upgrade session-storage-sql in this environment "
            "(pip install -U session-storage-sql) rather than writing to the database with an older version"
        )
