"""The database schema (version 1), built per dialect, and the version check run when a database is opened.

Tables::

    session_storage_meta  key/value; ``schema_version`` says which layout the database holds
    sessions              one row per session uid: parent, root, depth, name, merged metadata, context, created
    traces                one row per trace_id (primary key): innermost session uid and name, timestamp, JSON
    trace_sessions        (session_uid, timestamp, seq, trace_id) for every uid of the chain a trace was
                          recorded in: the traces of a session and all its descendants, oldest first, are one
                          ordered range scan of this primary key, however deep the tree; a junction row
                          joins its trace on (trace_id, seq), see `Tables.linked`

``seq`` orders traces that share a timestamp (in the order one process added them); the junction copies a
trace's ``timestamp`` and ``seq`` from its ``traces`` row, so a trace added twice is linked once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    ColumnElement,
    Connection,
    Float,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    and_,
    inspect,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from session_storage_sql.errors import SchemaVersionError

__all__ = ["SCHEMA_VERSION", "Tables", "build_tables", "ensure_schema"]

SCHEMA_VERSION = 1
"""The layout this version of the package reads and writes. Bump it (and add a migration) on any change."""

_VERSION_TEXT = re.compile(r"[1-9][0-9]*", re.ASCII)  # a recorded schema version: 1, 2, ... as str() writes it
_ADVISORY_LOCK_KEY = 0x5E5510_5C4E  # serializes concurrent schema creation on PostgreSQL


@dataclass(frozen=True)
class Tables:
    """The four tables of one dialect."""

    metadata: MetaData
    meta: Table
    sessions: Table
    traces: Table
    trace_sessions: Table

    def linked(self) -> ColumnElement[bool]:
        """The join condition of a junction row and the trace row it was made for.

        It matches ``seq`` as well as ``trace_id``: a trace added under a second chain is linked there too, and
        `clear` removes only the links of chains it can name, so a link may outlive its trace. Matching ``seq``
        (new on every insert) keeps such a link from ever matching the same trace_id added again later.
        """
        t, j = self.traces, self.trace_sessions
        return and_(j.c.trace_id == t.c.trace_id, j.c.seq == t.c.seq)


def build_tables() -> Tables:
    """The schema as SQLAlchemy Core tables (one definition for SQLite and PostgreSQL)."""
    md = MetaData()
    json_type = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
    meta = Table(
        "session_storage_meta",
        md,
        Column("key", String(64), primary_key=True),
        Column("value", Text, nullable=False),
    )
    sessions = Table(
        "sessions",
        md,
        Column("uid", String(64), primary_key=True),
        Column("parent_uid", String(64), nullable=True),
        Column("root_uid", String(64), nullable=False),
        Column("depth", Integer, nullable=False),
        Column("name", Text, nullable=True),
        Column("metadata", json_type, nullable=True),
        Column("context", Text, nullable=True),
        Column("created_at", Float, nullable=False),
        Index("ix_sessions_parent_uid", "parent_uid"),
        Index("ix_sessions_root_uid", "root_uid"),
        Index("ix_sessions_name", "name"),
        Index("ix_sessions_created_at", "created_at"),
    )
    traces = Table(
        "traces",
        md,
        Column("trace_id", String, primary_key=True),
        Column("seq", BigInteger, nullable=False),
        Column("session_uid", String(64), nullable=False),
        Column("session_name", Text, nullable=True),
        Column("timestamp", Float, nullable=False),
        Column("data", Text, nullable=False),
    )
    trace_sessions = Table(
        "trace_sessions",
        md,
        Column("session_uid", String(64), nullable=False),
        Column("timestamp", Float, nullable=False),
        Column("seq", BigInteger, nullable=False),
        Column("trace_id", String, nullable=False),
        PrimaryKeyConstraint("session_uid", "timestamp", "seq", "trace_id", name="pk_trace_sessions"),
        sqlite_with_rowid=False,
    )
    return Tables(md, meta, sessions, traces, trace_sessions)


def ensure_schema(conn: Connection, tables: Tables, url: str) -> int:
    """Check the recorded version, then create missing tables, inside the caller's transaction; return the version.

    Raises `SchemaVersionError` when the database holds a newer schema version, or a value that is no version
    (0, negative, not a whole number as ``str()`` writes it), before creating or writing anything in it.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK_KEY})
    meta = tables.meta
    found = None
    translate = conn.get_execution_options().get("schema_translate_map") or {}
    if inspect(conn).has_table(meta.name, schema=translate.get(meta.schema)):
        found = conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).scalar_one_or_none()
    version = SCHEMA_VERSION
    if found is not None:
        # Only what `str(version)` writes: "0", "-1", "01", " 1", "1.0" or "abc" is no version of ours.
        try:
            if not (isinstance(found, str) and _VERSION_TEXT.fullmatch(found)):
                raise ValueError(found)
            version = int(found)  # ValueError past int's digit limit (Python 3.11+)
        except ValueError:
            raise SchemaVersionError(url, repr(found), SCHEMA_VERSION) from None
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(url, version, SCHEMA_VERSION)
        # version < SCHEMA_VERSION cannot happen yet: 1 is the first. Migrations go here (see the README's plan).
    tables.metadata.create_all(conn, checkfirst=True)
    if found is None:
        conn.execute(meta.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
    return version
