"""The database side of ``session-sql``: open a session database for reading only, resolve uid prefixes, and
the few aggregate queries the commands need beyond `SqlSessionStorage`'s own.

Inspecting never creates or changes anything: a SQLite file is checked to exist and opened read-only
(``mode=ro``), and any database is checked to hold the session tables before a query runs, so a mistyped
path or URL is an error rather than a new empty database.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import URL, Engine, create_engine, func, inspect, select, text
from sqlalchemy.exc import SQLAlchemyError

from session_storage_sql.cli_args import CliError
from session_storage_sql.errors import InvalidStorageURL, SchemaVersionError
from session_storage_sql.records import SessionRecord
from session_storage_sql.retry import describe, is_transient
from session_storage_sql.schema import Tables, build_tables
from session_storage_sql.storage import SqlSessionStorage
from session_storage_sql.urls import parse_storage_url, sqlite_url

__all__ = ["MIN_PREFIX", "Database", "DatabaseStats", "open_database"]

MIN_PREFIX = 6
"""The shortest uid prefix accepted in place of a whole uid (like git's abbreviated commit ids)."""

_META_TABLE = "session_storage_meta"
_CHUNK = 500  # uids per IN (...) list
_SHOWN_CANDIDATES = 5
_MAX_LIMIT = 2**63 - 1  # the largest LIMIT a 64-bit integer parameter holds; more ranks every name anyway
LOCK_WAIT = 5.0  # seconds a read waits for a SQLite file another process holds locked


@dataclass
class DatabaseStats:
    """What ``session-sql stats`` reports."""

    url: str
    dialect: str
    size_bytes: int | None
    schema_version: int
    sessions: int
    roots: int
    unnamed: int
    traces: int
    first_session_at: float | None
    last_session_at: float | None
    first_trace_at: float | None
    last_trace_at: float | None
    top_names: list[tuple[str | None, int]] = field(default_factory=list)


class Database:
    """An open session database: the storage for the public queries, plus the CLI's own read-only queries."""

    def __init__(self, storage: SqlSessionStorage, url: str, path: Path | None, engine: Engine | None) -> None:
        self.storage = storage
        self.url = url  # as shown to the user: never a password
        self.path = path  # the SQLite file, or None
        self._own_engine = engine
        self._tables: Tables = build_tables()

    @property
    def dialect(self) -> str:
        return self.storage.dialect

    def close(self) -> None:
        self.storage.close()
        if self._own_engine is not None:
            self._own_engine.dispose()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- uids ----------------------------------------------------------------------------------------------
    def find_session(self, given: str) -> SessionRecord:
        """The session whose uid is `given`, or the one session whose uid starts with it (at least 6 characters)."""
        wanted = given.strip()
        if not wanted:
            raise CliError("empty session uid; give a uid or a unique prefix of one (see session-sql ls)")
        record = self.storage.get_session(wanted)
        if record is not None:
            return record
        if len(wanted) < MIN_PREFIX:
            raise CliError(
                f"no session with uid {wanted!r} in {self.url}; a uid prefix needs at least {MIN_PREFIX} characters"
            )
        matches = self.uids_starting_with(wanted, limit=_SHOWN_CANDIDATES + 1)
        if not matches:
            raise CliError(f"no session with uid or uid prefix {wanted!r} in {self.url} (see session-sql ls)")
        if len(matches) > 1:
            shown = ", ".join(matches[:_SHOWN_CANDIDATES]) + (", ..." if len(matches) > _SHOWN_CANDIDATES else "")
            raise CliError(f"uid prefix {wanted!r} is ambiguous: it matches {shown}; give more characters")
        found = self.storage.get_session(matches[0])
        if found is None:  # deleted between the two queries
            raise CliError(f"no session with uid or uid prefix {wanted!r} in {self.url}")
        return found

    def uids_starting_with(self, prefix: str, *, limit: int) -> list[str]:
        """Up to `limit` session uids that start with `prefix` (case-sensitive), in uid order; none for a prefix
        no uid column can hold (NUL, or a lone surrogate: bytes of a command line that are not UTF-8)."""
        if "\x00" in prefix or not _encodable(prefix):
            return []
        uid = self._tables.sessions.c.uid
        if self.dialect == "sqlite":
            # A range on the primary key (binary collation): exact and indexed, no LIKE escaping needed.
            condition = uid >= prefix
            upper = _prefix_upper_bound(prefix)
            if upper is not None:
                condition = condition & (uid < upper)
        else:
            condition = uid.startswith(prefix, autoescape=True)
        query = select(uid).where(condition).order_by(uid).limit(limit)
        rows = self._read(lambda conn: conn.execute(query).scalars().all())
        return [u for u in rows if u.startswith(prefix)]

    # -- counts ----------------------------------------------------------------------------------------------
    def trace_counts(self, uids: Iterable[str]) -> dict[str, int]:
        """The number of traces of each session and its descendants (sessions with none are left out)."""
        t, j = self._tables.traces, self._tables.trace_sessions
        wanted = list(dict.fromkeys(uids))
        counts: dict[str, int] = {}
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start : start + _CHUNK]
            query = (
                select(j.c.session_uid, func.count())
                .join_from(j, t, self._tables.linked())
                .where(j.c.session_uid.in_(chunk))
                .group_by(j.c.session_uid)
            )
            for uid, count in self._read(lambda conn, q=query: conn.execute(q).all()):
                counts[uid] = int(count)
        return counts

    def recording_sessions(self, uid: str) -> dict[str, str]:
        """For each trace visible from session `uid`: the uid of the session that recorded it."""
        t, j = self._tables.traces, self._tables.trace_sessions
        query = select(t.c.trace_id, t.c.session_uid).join_from(j, t, self._tables.linked())
        query = query.where(j.c.session_uid == uid)
        return {trace_id: owner for trace_id, owner in self._read(lambda conn: conn.execute(query).all())}

    def stats(self, top: int) -> DatabaseStats:
        """Counts, time span, the most common session names and the size of the database."""
        version = self.storage.schema_version
        s, t = self._tables.sessions, self._tables.traces
        sessions_q = select(
            func.count(),
            func.count(s.c.parent_uid),
            func.count(s.c.name),
            func.min(s.c.created_at),
            func.max(s.c.created_at),
        )
        traces_q = select(func.count(), func.min(t.c.timestamp), func.max(t.c.timestamp))
        names_q = (
            select(s.c.name, func.count().label("n"))
            .group_by(s.c.name)
            .order_by(func.count().desc(), s.c.name)
            .limit(min(max(top, 0), _MAX_LIMIT))  # a larger LIMIT is no parameter SQLite (or PostgreSQL) takes
        )

        def read(conn: Any) -> tuple[Any, Any, list[Any]]:
            return conn.execute(sessions_q).one(), conn.execute(traces_q).one(), conn.execute(names_q).all()

        sessions, traces, names = self._read(read)
        total = int(sessions[0])
        return DatabaseStats(
            url=self.url,
            dialect=self.dialect,
            size_bytes=self.size_bytes(),
            schema_version=version,
            sessions=total,
            roots=total - int(sessions[1]),
            unnamed=total - int(sessions[2]),
            traces=int(traces[0]),
            first_session_at=_float(sessions[3]),
            last_session_at=_float(sessions[4]),
            first_trace_at=_float(traces[1]),
            last_trace_at=_float(traces[2]),
            top_names=[(name, int(n)) for name, n in names] if top > 0 else [],
        )

    def size_bytes(self) -> int | None:
        """The SQLite file with its write-ahead log, or the PostgreSQL tables with their indexes and TOAST."""
        if self.path is not None:
            return sum(os.path.getsize(p) for p in (self.path, Path(f"{self.path}-wal")) if os.path.exists(p))
        if self.dialect != "postgresql":
            return None
        names = [table.name for table in self._tables.metadata.sorted_tables]
        sql = text(
            "SELECT COALESCE(SUM(pg_total_relation_size(to_regclass(name))), 0) FROM unnest(CAST(:names AS text[])) "
            "AS name"
        )
        return int(self._read(lambda conn: conn.execute(sql, {"names": names}).scalar_one()))

    # -- plumbing ----------------------------------------------------------------------------------------------
    def _read(self, op: Any, *, failure: str | None = None, status: int = 1) -> Any:
        """`op(connection)` in a read transaction; a database error becomes a one-line `CliError`, with exit
        status `status`, or 1 when the database failed for now (locked, busy, its server down or gone)."""
        try:
            with self.storage.engine.connect() as conn:
                return op(conn)
        except (SQLAlchemyError, sqlite3.Error) as exc:
            status = 1 if is_transient(exc) else status
            raise CliError(f"{failure or f'reading {self.url} failed'}: {describe(exc)}", status=status) from exc


def open_database(target: str | Path) -> Database:
    """Open the session database at `target` (a URL, or a SQLite file path) for reading; `CliError` when there
    is none there (nothing is ever created)."""
    if isinstance(target, Path):
        return _open_sqlite_file(target.absolute(), sqlite_url(target))
    try:
        parsed = parse_storage_url(target)
    except InvalidStorageURL as exc:
        raise CliError(str(exc)) from None
    shown = parsed.public
    if shown is None:
        raise CliError(
            "an in-memory SQLite database (sqlite://) lives inside the process that made it and holds nothing to "
            "inspect; give a SQLite file or a PostgreSQL URL"
        )
    database = str(parsed.engine_url.database)
    if parsed.dialect == "sqlite" and not database.startswith("file:"):
        return _open_sqlite_file(Path(database), shown)
    if parsed.dialect == "sqlite":  # a SQLite URI (file:...) written by the user: as given, but read-only
        url = parsed.engine_url.update_query_dict({"mode": "ro", "uri": "true"})
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": LOCK_WAIT}, hide_parameters=True
        )
        return _checked(Database(SqlSessionStorage(engine=engine, busy_timeout=LOCK_WAIT), shown, None, engine))
    return _checked(Database(SqlSessionStorage(target), shown, None, None))


def _open_sqlite_file(path: Path, shown: str) -> Database:
    """A SQLite file, checked to exist and to be a session database before the storage touches it."""
    try:
        mode = path.stat().st_mode
        what = "is a directory" if stat.S_ISDIR(mode) else None if stat.S_ISREG(mode) else "is not a regular file"
    except OSError as exc:  # ENOENT, ENOTDIR; or EACCES, ENAMETOOLONG, ELOOP
        missing = exc.errno in (errno.ENOENT, errno.ENOTDIR)
        what = "does not exist" if missing else f"cannot be read ({exc.strerror or exc})"
    if what is not None:
        raise CliError(
            f"no session database at {path}: the file {what} (session-sql never creates one; pass "
            "--db PATH_OR_URL or set $SESSION_STORAGE_URL)"
        )
    _check_sqlite_file(path, shown)
    # Always read-only, whatever the journal mode: the storage leaves a non-WAL database's mode as it is there.
    engine = _read_only_sqlite_engine(path)
    return _checked(Database(SqlSessionStorage(engine=engine, busy_timeout=LOCK_WAIT), shown, path, engine))


def _checked(db: Database) -> Database:
    """`db` once it is known to hold the session tables and a recorded schema version (closed, and `CliError`,
    otherwise). Checked before the storage touches it: the storage creates missing tables and records a
    missing version, which would be a write (and on a read-only SQLite file, a confusing failure)."""
    try:
        problem = db._read(lambda conn: _schema_problem(conn, db._tables), failure=f"cannot open {db.url}", status=2)
    except CliError:
        db.close()
        raise
    if problem is not None:
        db.close()
        raise CliError(_not_sessions(db.url, problem))
    try:
        _ = db.storage.schema_version  # read now, so that a newer schema is reported under `db.url`
    except SchemaVersionError as exc:
        db.close()
        # The storage names the database by the engine it was given (a read-only SQLite URI, for a file).
        raise CliError(str(SchemaVersionError(db.url, exc.found, exc.supported)), status=1) from None
    return db


def _schema_problem(conn: Any, tables: Tables) -> str | None:
    """Why the database on `conn` is no session database, or None when it is one."""
    inspector = inspect(conn)
    if not inspector.has_table(tables.meta.name):
        return f"it has no {tables.meta.name} table"
    missing = [
        t.name for t in (tables.sessions, tables.traces, tables.trace_sessions) if not inspector.has_table(t.name)
    ]
    if missing:
        return f"it lacks the {', '.join(missing)} table{'s' if len(missing) > 1 else ''}"
    version = conn.execute(select(tables.meta.c.value).where(tables.meta.c.key == "schema_version")).first()
    if version is None:
        return f"its {tables.meta.name} table records no schema_version"
    return None


def _check_sqlite_file(path: Path, shown: str) -> None:
    """Check, without writing, that `path` is a session database (`CliError` otherwise)."""
    uri = f"file:{_quote_file(path)}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=LOCK_WAIT)
        try:
            found = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (_META_TABLE,)
            ).fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise CliError(f"cannot open {shown}: {describe(exc)}", status=1 if is_transient(exc) else 2) from None
    if found is None:
        raise CliError(_not_sessions(shown))


def _not_sessions(shown: str, problem: str = f"it has no {_META_TABLE} table") -> str:
    return f"{shown} is not a session database ({problem}); point --db at the database your sessions write to"


def _read_only_sqlite_engine(path: Path) -> Engine:
    """An engine for the file `path`, built without parsing a URL, whose connections (``mode=ro``) can never
    create or change the file."""
    url = URL.create("sqlite", database="file:" + _quote_file(path), query={"mode": "ro", "uri": "true"})
    return create_engine(url, connect_args={"check_same_thread": False, "timeout": LOCK_WAIT}, hide_parameters=True)


def _quote_file(path: Path) -> str:
    """`path` percent-encoded for a SQLite ``file:`` URI, byte for byte as the file system names it (a name that
    is not UTF-8 reaches Python as lone surrogates, which no text encoding takes)."""
    return quote(os.fsencode(path.as_posix()))


def _prefix_upper_bound(prefix: str) -> str | None:
    """A string above every string that starts with `prefix` (the end of a range scan), or None if none exists."""
    chars = list(prefix)
    while chars:
        code = ord(chars[-1])
        if code < 0x10FFFF:
            code += 1
            chars[-1] = chr(0xE000 if 0xD800 <= code < 0xE000 else code)  # never a lone surrogate
            return "".join(chars)
        chars.pop()
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _float(value: Any) -> float | None:
    return None if value is None else float(value)
