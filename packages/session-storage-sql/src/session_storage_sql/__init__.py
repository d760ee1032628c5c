"""session-storage-sql: session traces in SQLite (embedded, the default) or PostgreSQL (across machines).

``SqlSessionStorage(url)`` implements session-core's storage protocol on SQLAlchemy 2 Core. Writes are
idempotent by trace id and retried through locks and dropped connections, so many threads and processes can
write one database at once with nothing lost. Importing this package needs no database driver beyond sqlite3;
PostgreSQL needs the ``postgres`` extra (psycopg 3).
"""

from __future__ import annotations

from session_storage_sql._version import __version__
from session_storage_sql.errors import InvalidSessionUid, InvalidStorageURL, SchemaVersionError
from session_storage_sql.records import SessionNode, SessionRecord
from session_storage_sql.retry import RetryPolicy
from session_storage_sql.schema import SCHEMA_VERSION
from session_storage_sql.storage import SqliteSessionStorage, SqlSessionStorage
from session_storage_sql.urls import STORAGE_URL_ENV, default_url, fill_credentials, sqlite_url

__all__ = [
    "SqlSessionStorage",
    "SqliteSessionStorage",
    "SessionRecord",
    "SessionNode",
    "RetryPolicy",
    "SCHEMA_VERSION",
    "InvalidSessionUid",
    "InvalidStorageURL",
    "SchemaVersionError",
    "STORAGE_URL_ENV",
    "default_url",
    "fill_credentials",
    "sqlite_url",
    "__version__",
]
