"""Exceptions of the SQL storage; all are `session_core.StorageError`, so callers catch one class."""

from __future__ import annotations

from session_core import StorageError

__all__ = ["InvalidStorageURL", "SchemaVersionError"]


class InvalidStorageURL(StorageError, ValueError):
    """A storage URL cannot be parsed or names a database this package does not support."""


class SchemaVersionError(StorageError):
    """The database records a schema version this session-storage-sql cannot use: a newer one (written by a newer
    session-storage-sql), or a value no version ever writes (0, negative, not an integer), shown as found (`repr`).
    """

    def __init__(self, url: str, found: int | str, supported: int) -> None:
        self.found = found
        self.supported = supported
        if isinstance(found, int) and found > supported:
            message = (
                f"the session database {url} has schema version {found}, which this session-storage-sql does not "
                f"understand (it reads version {supported}); upgrade session-storage-sql in this environment "
                "(pip install -U session-storage-sql) rather than writing to the database with an older version"
            )
        else:
            message = (
                f"the session database {url} records schema version {found}, which no session-storage-sql writes "
                f"(expected a whole number, 1 or more; this one reads version {supported}); its session_storage_meta "
                "table was changed by hand or by another program, so the database is left untouched: restore it "
                "from a backup or use another database"
            )
        super().__init__(message)
