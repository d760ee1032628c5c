"""Exceptions of the SQL storage; all are `session_core.StorageError`, so callers catch one class."""

from __future__ import annotations

from session_core import StorageError

__all__ = ["InvalidSessionUid", "InvalidStorageURL", "SchemaVersionError"]

_SHOWN = 24  # characters of a bad uid a message shows


class InvalidSessionUid(StorageError, ValueError):
    """A session uid given to `add_trace` / `add_traces` is not one: session_core's rule is 1-64 characters of
    ``[0-9A-Za-z_-]`` (what sessions make and contexts carry, and what every database's uid columns hold)."""

    def __init__(self, uid: object) -> None:
        self.uid = uid
        if isinstance(uid, str):
            shown = repr(uid[:_SHOWN]) + (f"... ({len(uid)} characters)" if len(uid) > _SHOWN else "")
        else:
            text = repr(uid)
            shown = f"{text[:_SHOWN]}{'...' if len(text) > _SHOWN else ''} (of type {type(uid).__name__}, not str)"
        super().__init__(
            f"session uid {shown} is not a session uid: a uid is 1-64 characters of [0-9A-Za-z_-] "
            "(session_core.context.UID_RE), as sessions make them; nothing was stored"
        )


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
