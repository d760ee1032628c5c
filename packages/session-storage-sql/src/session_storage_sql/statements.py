"""The hot-path SQL: compiled once per engine from the Core tables, run with the driver's ``executemany``.

Recording and reading traces is what an application does thousands of times a second, so those statements skip
SQLAlchemy's per-call execution machinery: they are rendered once for the engine's dialect (and its
``schema_translate_map``) and executed on the pooled DBAPI connection with parameter rows built in place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ARRAY, Column, Engine, MetaData, String, Table, bindparam, select
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import Insert
from sqlalchemy.sql.expression import ClauseElement, func

from session_storage_sql.schema import Tables

__all__ = [
    "SESSION_COLUMNS",
    "BulkStatements",
    "HotStatements",
    "Prepared",
    "hot_statements",
    "prepare",
    "session_upserts",
]


@dataclass(frozen=True)
class Prepared:
    """A rendered statement and how to pass it parameter rows given as tuples in `names` order."""

    sql: str
    names: tuple[str, ...]
    positional: bool
    index: tuple[int, ...] | None  # reordering for a positional paramstyle whose order differs from `names`

    def params(self, rows: list[tuple[Any, ...]]) -> list[Any]:
        if self.positional:
            index = self.index
            return rows if index is None else [tuple(row[i] for i in index) for row in rows]
        names = self.names
        return [dict(zip(names, row)) for row in rows]

    def param(self, row: tuple[Any, ...]) -> Any:
        return self.params([row])[0]


def prepare(stmt: ClauseElement, engine: Engine, names: Sequence[str]) -> Prepared:
    """Render `stmt` for `engine`; parameters will be given as tuples in `names` order."""
    translate = engine.get_execution_options().get("schema_translate_map")
    compiled = stmt.compile(
        dialect=engine.dialect, schema_translate_map=translate, render_schema_translate=bool(translate)
    )
    names = tuple(names)
    assert isinstance(compiled, SQLCompiler)
    if compiled.positional:
        order = tuple(compiled.positiontup or ())
        missing = set(order) - set(names)
        if missing:
            raise RuntimeError(f"statement needs parameters {sorted(missing)} not in {names}")
        index = None if order == names else tuple(names.index(name) for name in order)
        return Prepared(compiled.string, names, True, index)
    return Prepared(compiled.string, names, False, None)


@dataclass(frozen=True)
class BulkStatements:
    """PostgreSQL's bulk path: rows are copied (``COPY``) into a temporary table, then inserted and linked from it
    with one statement each, which is about twice as fast as ``executemany`` for thousands of rows."""

    create: str  # the session's temporary table, emptied at every commit
    copy: str  # COPY ... FROM STDIN into it, columns in TRACE_COLUMNS order
    insert_traces: str  # its rows into traces, existing trace_ids skipped
    link: Prepared  # every row under every uid of the chain, with the timestamp and seq stored for its trace_id


@dataclass(frozen=True)
class HotStatements:
    insert_trace: Prepared
    link_values: Prepared
    link_copy: Prepared
    upsert_session: Prepared  # a row as the session's own process knows it
    fill_session: Prepared  # a row known by hearsay: name and metadata only where the row has none
    select_traces: Prepared
    select_traces_named: Prepared
    bulk: BulkStatements | None  # PostgreSQL only


TRACE_COLUMNS = ("trace_id", "seq", "session_uid", "session_name", "timestamp", "data")
LINK_COLUMNS = ("session_uid", "timestamp", "seq", "trace_id")
SESSION_COLUMNS = ("uid", "parent_uid", "root_uid", "depth", "name", "metadata", "context", "created_at")


def session_upserts(tables: Tables, dialect: str) -> tuple[Insert, Insert, Insert]:
    """Upserts of a session row: one that sets name and metadata when given (never blanks them), for what the
    session's own process writes; one that fills them in only where the row has none, for what a process knows
    only by hearsay (the parent a context was restored from: a snapshot, older than what its owner may have
    written since); and one that replaces name, metadata and the saved context (`save_context`)."""
    insert = sqlite_dialect.insert if dialect == "sqlite" else pg_dialect.insert
    s = tables.sessions
    upsert = insert(s)
    excluded = upsert.excluded
    fill = upsert.on_conflict_do_update(
        index_elements=[s.c.uid],
        set_={
            "name": func.coalesce(excluded.name, s.c.name),
            "metadata": func.coalesce(excluded.metadata, s.c.metadata),
        },
        where=excluded.name.is_not(None) | excluded.metadata.is_not(None),
    )
    fill_missing = upsert.on_conflict_do_update(
        index_elements=[s.c.uid],
        set_={
            "name": func.coalesce(s.c.name, excluded.name),
            "metadata": func.coalesce(s.c.metadata, excluded.metadata),
        },
        where=(s.c.name.is_(None) & excluded.name.is_not(None))
        | (s.c.metadata.is_(None) & excluded.metadata.is_not(None)),
    )
    replace = upsert.on_conflict_do_update(
        index_elements=[s.c.uid],
        set_={"name": excluded.name, "metadata": excluded.metadata, "context": excluded.context},
    )
    return fill, fill_missing, replace


def hot_statements(tables: Tables, engine: Engine) -> HotStatements:
    """The statements `SqlSessionStorage` runs on every add and get, rendered for `engine`."""
    dialect = engine.dialect.name
    insert = sqlite_dialect.insert if dialect == "sqlite" else pg_dialect.insert
    t, j = tables.traces, tables.trace_sessions
    upsert_session, fill_session, _ = session_upserts(tables, dialect)
    # A trace that already existed is linked with the timestamp and seq it was stored with, so linking it
    # again (a re-add, possibly under another chain) never makes a second junction row for the same uid.
    copy = select(bindparam("session_uid", type_=String()), t.c.timestamp, t.c.seq, t.c.trace_id).where(
        t.c.trace_id == bindparam("trace_id", type_=String())
    )
    link_copy = insert(j).from_select(list(LINK_COLUMNS), copy).on_conflict_do_nothing()
    joined = (
        select(t.c.data).join_from(j, t, tables.linked()).where(j.c.session_uid == bindparam("uid", type_=String()))
    )
    order = (j.c.timestamp, j.c.seq, j.c.trace_id)
    named = joined.where(t.c.session_name == bindparam("name", type_=String()))
    return HotStatements(
        bulk=_bulk_statements(tables, engine) if dialect == "postgresql" else None,
        insert_trace=prepare(insert(t).on_conflict_do_nothing(), engine, TRACE_COLUMNS),
        link_values=prepare(insert(j).on_conflict_do_nothing(), engine, LINK_COLUMNS),
        link_copy=prepare(link_copy, engine, ("session_uid", "trace_id")),
        upsert_session=prepare(upsert_session, engine, SESSION_COLUMNS),
        fill_session=prepare(fill_session, engine, SESSION_COLUMNS),
        select_traces=prepare(joined.order_by(*order), engine, ("uid",)),
        select_traces_named=prepare(named.order_by(*order), engine, ("uid", "name")),
    )


INCOMING = "session_storage_incoming"


def _bulk_statements(tables: Tables, engine: Engine) -> BulkStatements:
    """The COPY path's statements. The temporary table is named in ``pg_temp``, so a ``schema_translate_map``
    (which moves the tables without a schema) leaves it where PostgreSQL keeps temporary tables."""
    t, j = tables.traces, tables.trace_sessions
    incoming = Table(
        INCOMING,
        MetaData(),
        *(Column(c.name, c.type) for c in (t.c[name] for name in TRACE_COLUMNS)),
        schema="pg_temp",
    )
    create = (
        f"CREATE TEMPORARY TABLE IF NOT EXISTS {INCOMING} "
        "(trace_id TEXT, seq BIGINT, session_uid TEXT, session_name TEXT, timestamp DOUBLE PRECISION, data TEXT) "
        "ON COMMIT DELETE ROWS"
    )
    copy = f"COPY pg_temp.{INCOMING} ({', '.join(TRACE_COLUMNS)}) FROM STDIN"
    insert_traces = pg_dialect.insert(t).from_select(list(TRACE_COLUMNS), select(incoming)).on_conflict_do_nothing()
    # Each chain uid (unnest in the select list: one row per element) with the stored timestamp and seq, so a
    # trace that was already there is linked as it was first stored, never twice.
    chain = func.unnest(bindparam("chain", type_=ARRAY(String())))
    linked = select(chain, t.c.timestamp, t.c.seq, t.c.trace_id).join_from(
        incoming, t, incoming.c.trace_id == t.c.trace_id
    )
    link = pg_dialect.insert(j).from_select(list(LINK_COLUMNS), linked).on_conflict_do_nothing()
    return BulkStatements(
        create=create,
        copy=copy,
        insert_traces=prepare(insert_traces, engine, ()).sql,
        link=prepare(link, engine, ("chain",)),
    )
