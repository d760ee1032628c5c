"""Engines tuned for many writers: SQLite in WAL mode with a busy timeout, PostgreSQL with a pre-pinged pool.

SQLite connections run with the driver's implicit transactions turned off; the storage begins each transaction
itself (``BEGIN IMMEDIATE`` for writes, so a writer waits for the lock up front instead of failing to upgrade a
read lock half-way).
"""

from __future__ import annotations

import logging
import sqlite3
import weakref
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.pool import PoolProxiedConnection, StaticPool

from session_core import MissingOptionalDependency
from session_storage_sql.urls import StorageURL, fill_credentials

__all__ = [
    "APPLICATION_NAME",
    "BEGIN_OPTION",
    "configure_sqlite_engine",
    "is_read_only_error",
    "make_engine",
    "prepare_sqlite",
    "require_driver",
]

logger = logging.getLogger(__name__)

APPLICATION_NAME = "session-storage-sql"
BEGIN_OPTION = "session_sql_begin"  # execution option: "IMMEDIATE" for write transactions on SQLite
_READY = "session_sql_ready"
_KEPT_JOURNAL_MODES = ("wal", "memory")  # WAL already, or an in-memory database: nothing to switch
_SQLITE_READONLY = 8  # the primary result code; extended codes (SQLITE_READONLY_*) share its low byte
_configured: weakref.WeakSet[Engine] = weakref.WeakSet()


def require_driver(parsed: StorageURL) -> None:
    """Import the DB driver now, so a missing extra fails where the storage is created, naming the extra."""
    if parsed.dialect != "postgresql":
        return
    driver = parsed.engine_url.get_driver_name()
    if driver != "psycopg":
        return
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        raise MissingOptionalDependency(
            "session_storage_sql PostgreSQL storage", "psycopg", "session-storage-sql", "postgres"
        ) from exc


def make_engine(parsed: StorageURL, *, busy_timeout: float) -> Engine:
    """A new engine for `parsed`, with credentials filled in on this side (see `fill_credentials`)."""
    if parsed.dialect == "sqlite":
        connect_args: dict[str, Any] = {"timeout": busy_timeout, "check_same_thread": False}
        if parsed.is_memory:
            # One shared connection: every thread sees the same in-memory database.
            engine = create_engine(
                parsed.engine_url, connect_args=connect_args, poolclass=StaticPool, hide_parameters=True
            )
        else:
            engine = create_engine(
                parsed.engine_url, connect_args=connect_args, pool_size=8, max_overflow=16, hide_parameters=True
            )
        configure_sqlite_engine(engine, busy_timeout=busy_timeout)
        return engine
    url = fill_credentials(parsed.engine_url)
    pg_args: dict[str, Any] = {}
    if "application_name" not in url.query:
        pg_args["application_name"] = APPLICATION_NAME
    if "connect_timeout" not in url.query:
        pg_args["connect_timeout"] = 10
    return create_engine(
        url,
        connect_args=pg_args,
        pool_pre_ping=True,
        pool_size=5,
        max_overflow=10,
        pool_recycle=1800,
        hide_parameters=True,
    )


def configure_sqlite_engine(engine: Engine, *, busy_timeout: float) -> None:
    """Make `engine`'s connections WAL-mode, busy-waiting, with transactions begun by us (idempotent)."""
    if engine in _configured:
        return
    busy_ms = int(busy_timeout * 1000)

    def begin(conn: Connection) -> None:
        prepare_sqlite(conn.connection, busy_ms)
        mode = conn.get_execution_options().get(BEGIN_OPTION, "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")

    event.listen(engine, "begin", begin)
    _configured.add(engine)


def prepare_sqlite(fairy: PoolProxiedConnection, busy_ms: int) -> None:
    """Once per pooled SQLite connection: our own transaction control, busy timeout, WAL, synchronous=NORMAL.

    Switching to WAL is the one write here; a read-only connection (``mode=ro``, a read-only file) leaves a
    database in another journal mode as it is, and reads it in that mode.
    """
    info = fairy.info
    if info.get(_READY):
        return
    dbapi_conn: Any = fairy.dbapi_connection
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {busy_ms:d}")
        row = cursor.execute("PRAGMA journal_mode").fetchone()
        mode = str(row[0]).lower() if row else ""
        if mode not in _KEPT_JOURNAL_MODES:
            try:
                row = cursor.execute("PRAGMA journal_mode = WAL").fetchone()
            except sqlite3.OperationalError as exc:
                if not is_read_only_error(exc):
                    raise
                logger.debug("read-only SQLite connection: journal_mode=%s left as it is", mode)
            else:
                if row and str(row[0]).lower() not in _KEPT_JOURNAL_MODES:
                    logger.warning(
                        "SQLite refused WAL mode (journal_mode=%s); concurrent writers will wait longer", row[0]
                    )
        cursor.execute("PRAGMA synchronous = NORMAL")  # a setting of this connection, not a write
    finally:
        cursor.close()
    info[_READY] = True


def is_read_only_error(exc: sqlite3.Error) -> bool:
    """Whether SQLite refused a write because the connection or the file is read-only (SQLITE_READONLY)."""
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if isinstance(code, int):
        return code & 0xFF == _SQLITE_READONLY
    return "readonly database" in str(exc)
