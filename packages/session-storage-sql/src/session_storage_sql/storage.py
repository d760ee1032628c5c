"""`SqlSessionStorage`: traces and sessions in SQLite or PostgreSQL, safe for many threads and processes at once."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import json
import logging
import math
import numbers
import os
import pickle
import sqlite3
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, Select, bindparam, delete, func, literal, select, true, tuple_, type_coerce
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql.elements import ColumnElement

from session_core import StorageError, Trace, get_active_sessions, make_context, validate_context
from session_core.context import UID_RE
from session_storage_sql.codec import (
    column_json,
    decode_traces,
    encode_trace,
    gc_paused,
    storable_json,
    storable_text,
    to_json,
)
from session_storage_sql.engine import (
    BEGIN_OPTION,
    configure_sqlite_engine,
    make_engine,
    prepare_sqlite,
    require_driver,
)
from session_storage_sql.errors import InvalidSessionUid, SchemaVersionError
from session_storage_sql.records import SessionNode, SessionRecord
from session_storage_sql.retry import ConnectionLost, RetryPolicy, describe, is_connection_error, is_transient
from session_storage_sql.schema import build_tables, ensure_schema
from session_storage_sql.statements import SESSION_COLUMNS, HotStatements, hot_statements, session_upserts
from session_storage_sql.urls import DEFAULT_SQLITE_FILE, default_url, parse_storage_url, sqlite_file_url

__all__ = ["SqlSessionStorage", "SqliteSessionStorage"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
_S = TypeVar("_S", bound="SqlSessionStorage")
_BULK_CHUNK = 5000  # traces per transaction in add_traces: bounded lock time, one executemany each
_COPY_MIN = 500  # on PostgreSQL, batches this large go through COPY and a temporary table (see BulkStatements)
_KNOWN_LIMIT = 100_000  # session rows this process remembers having written
_MAX_DEPTH = 64  # session_core's limit on chain depth: walking up parent links stops here even on bad data
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1  # the integers SQLite takes as parameters
_BUSY_TIMEOUT = 5.0  # the constructors' default busy_timeout (a pickled copy carries another one)
_BUSY_TIMEOUT_MAX = (2**31 - 1) / 1000  # SQLite takes the busy timeout as a C int of milliseconds (24.8 days)

# Name, merged metadata, and whether the session is active here (its own view) or known by hearsay (the parent a
# context was restored from, as that context was sent).
SessionInfo = tuple[str | None, dict[str, Any] | None, bool]
_NO_INFO: SessionInfo = (None, None, True)
# Name and metadata JSON of a session row this process wrote: the value it wrote itself, `_HEARD` where it only
# filled in a value heard of (the row holds one, perhaps another), None where it wrote nothing.
KnownSession = tuple[object, object]
_HEARD = object()
_UID_MATCH = UID_RE.fullmatch

_live: weakref.WeakSet[SqlSessionStorage] = weakref.WeakSet()
_seq_lock = threading.Lock()
_last_seq = 0


def _next_seqs(count: int) -> int:
    """The first of `count` increasing sequence numbers (nanosecond clock, strictly increasing per process)."""
    global _last_seq
    with _seq_lock:
        start = max(time.time_ns(), _last_seq + 1)
        _last_seq = start + count - 1
        return start


def _after_fork_in_child() -> None:
    """Locks held by another thread at fork() time would never be released in the child: replace them."""
    global _seq_lock
    _seq_lock = threading.Lock()
    for storage in list(_live):
        storage._lock = threading.RLock()
        if storage._serial is not None:
            storage._serial = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _connection_lost(engine: Engine, exc: BaseException, dbapi_conn: Any, cursor: Any) -> bool:
    """Whether `exc` left the connection unusable (killed backend, network drop), by the dialect or the driver."""
    if getattr(dbapi_conn, "broken", False) or getattr(dbapi_conn, "closed", False) is True:
        return True  # psycopg marks a connection whose socket died as broken/closed
    if is_connection_error(exc):
        return True
    try:
        return bool(engine.dialect.is_disconnect(exc, dbapi_conn, cursor))  # type: ignore[arg-type]
    except Exception:
        return False


def _is_database_error(exc: BaseException) -> bool:
    if isinstance(exc, (SQLAlchemyError, sqlite3.Error, ConnectionLost)):
        return True
    return type(exc).__module__.partition(".")[0] == "psycopg"


def _timestamp(value: float | datetime.datetime | None, what: str) -> float | None:
    """Unix seconds from a bound of `list_sessions`: a datetime (naive: local time, as `datetime.timestamp` takes
    it) or unix seconds (an infinity, or an int too large for a float, is an open bound)."""
    if value is None:
        return None
    if isinstance(value, datetime.datetime):
        try:
            return value.timestamp()
        except (ValueError, OverflowError, OSError):
            # Only a naive datetime within a day of the calendar's edge (datetime.min): its local time is no date.
            raise ValueError(
                f"{what}={value!r} has no local time (a naive datetime is taken as local time); give an aware "
                "datetime (e.g. tzinfo=datetime.timezone.utc) or unix seconds"
            ) from None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value != value:
            raise ValueError(f"{what} is NaN; give a datetime or unix seconds (an infinity is an open bound)")
        try:
            return float(value)
        except OverflowError:  # an int beyond a float's range: as open a bound as an infinity
            return float("inf") if value > 0 else float("-inf")
    hint = ""
    if isinstance(value, datetime.date):
        hint = (
            "; a date has no time of day: give datetime.datetime.combine(day, datetime.time()) for its local "
            "midnight (or an aware datetime)"
        )
    raise TypeError(
        f"{what} must be a datetime.datetime (naive: local time) or unix seconds (int or float), "
        f"got {type(value).__name__}{hint}"
    )


def _checked_busy_timeout(value: object) -> float:
    """`busy_timeout` as seconds, refused unless a number from 0 to SQLite's limit: a negative one meant no wait at
    all, a larger one wrapped around to none, and NaN or an infinity failed at the first connection."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"busy_timeout must be a number of seconds (int or float), got {type(value).__name__}")
    seconds = float(value)
    if not (math.isfinite(seconds) and 0 <= seconds <= _BUSY_TIMEOUT_MAX):
        raise ValueError(
            f"busy_timeout must be from 0 to {_BUSY_TIMEOUT_MAX:,.3f} seconds (how long a SQLite connection waits for "
            f"another's write lock before retrying; SQLite takes it in milliseconds as a C int), got {value!r}"
        )
    return seconds


def _sqlite_comparable(text: str) -> bool:
    """Whether SQLite can compare `text` with a JSON string: json_extract ends a string at NUL, and a lone
    surrogate cannot be a parameter (no UTF-8 encoding exists). Such values are compared in Python."""
    return "\x00" not in text and storable_text(text, postgresql=False) == text


def _same_json(a: Any, b: Any) -> bool:
    """JSON equality where True and 1 differ (Python's == says they are equal)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_json(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_json(x, y) for x, y in zip(a, b))
    return bool(a == b)


class SqlSessionStorage:
    """Traces and sessions in a SQL database (SQLAlchemy 2 Core): SQLite embedded, PostgreSQL across machines.

    `url` defaults to ``$SESSION_STORAGE_URL``, else ``sessions.db`` in the working directory; or pass an
    `engine` you configured yourself. Every write is one transaction, idempotent by ``trace_id``, retried on
    transient errors (a locked SQLite file, a dropped PostgreSQL connection) per `retry`; the caller sees a
    `session_core.StorageError` naming the cause only when the retries are exhausted. `busy_timeout`: seconds a
    SQLite connection waits for another's write lock before a retry, from 0 to 2,147,483.647 (`ValueError`
    outside, `TypeError` for anything but a number).
    """

    def __init__(
        self,
        url: str | URL | None = None,
        *,
        engine: Engine | None = None,
        retry: RetryPolicy | None = None,
        busy_timeout: float = _BUSY_TIMEOUT,
    ) -> None:
        if engine is not None and url is not None:
            raise TypeError("SqlSessionStorage takes a url or an engine, not both")
        self._busy_timeout = _checked_busy_timeout(busy_timeout)  # the arguments first, then the environment
        parsed = parse_storage_url(engine.url if engine is not None else (url if url is not None else default_url()))
        require_driver(parsed)
        self._parsed = parsed
        self._url = parsed.public
        self._sqlite = parsed.dialect == "sqlite"
        self._text = functools.partial(storable_text, postgresql=not self._sqlite)
        self._retry = retry if retry is not None else RetryPolicy()
        self._own_engine = engine is None
        self._engine: Engine | None = engine
        self._engine_pid = os.getpid() if engine is not None else -1
        self._ready_pid = -1
        self._schema_version: int | None = None
        self._hot: HotStatements | None = None
        self._tables = build_tables()
        self._lock = threading.RLock()
        # A shared in-memory SQLite connection must be used by one thread at a time.
        self._serial: threading.Lock | None = threading.Lock() if parsed.is_memory else None
        self._known: dict[str, KnownSession] = {}
        self._emptied = False  # an in-memory database closed: its next use starts an empty one
        if engine is not None and self._sqlite:
            configure_sqlite_engine(engine, busy_timeout=self._busy_timeout)
            if parsed.is_memory and not isinstance(engine.pool, StaticPool):
                logger.warning(
                    "the engine given to SqlSessionStorage is an in-memory SQLite database with a %s: every thread "
                    "gets a database of its own, so writes from other threads fail and reads miss their traces. "
                    "Create it with poolclass=sqlalchemy.pool.StaticPool and connect_args={'check_same_thread': "
                    "False}, or use SqlSessionStorage('sqlite://')",
                    type(engine.pool).__name__,
                )
        _live.add(self)

    # -- properties --------------------------------------------------------------------------------------
    @property
    def url(self) -> str | None:
        """The URL other processes open this storage by (never with a password); None for in-memory SQLite."""
        return self._url

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._parsed.dialect

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine of this process (created on first use, renewed after a fork)."""
        return self._engine_here()

    @property
    def schema_version(self) -> int:
        """The schema version of the database (opening it if not done yet)."""
        self._run("open", lambda conn: None, write=False)
        assert self._schema_version is not None
        return self._schema_version

    def _where(self) -> str:
        return self._url or "an in-memory SQLite database"

    # -- engine, schema, transactions, retries -----------------------------------------------------------
    def _engine_here(self) -> Engine:
        pid = os.getpid()
        engine = self._engine
        if engine is not None and self._engine_pid == pid:
            return engine
        with self._lock:
            if self._engine is None:
                self._engine = make_engine(self._parsed, busy_timeout=self._busy_timeout)
            elif self._engine_pid != pid:
                # Inherited through fork(): the parent's pooled connections are not ours to use or to close.
                self._engine.dispose(close=False)
            self._engine_pid = pid
            return self._engine

    def _ensure_ready(self) -> Engine:
        engine = self._engine_here()
        if self._ready_pid == os.getpid():
            return engine
        with self._lock:
            if self._ready_pid != os.getpid():
                if self._emptied:
                    self._emptied = False
                    logger.warning(
                        "%r is used after close(): closing an in-memory database discarded it with its traces, so "
                        "this starts a new, empty one (use a file, e.g. SqliteSessionStorage('traces.db'), to keep "
                        "traces past close())",
                        self,
                    )
                with engine.connect() as conn:
                    if self._sqlite:
                        conn.execution_options(**{BEGIN_OPTION: "IMMEDIATE"})
                    with conn.begin():
                        self._schema_version = ensure_schema(conn, self._tables, self._where())
                if self._hot is None:
                    self._hot = hot_statements(self._tables, engine)
                self._ready_pid = os.getpid()
        return engine

    def _run(self, what: str, op: Callable[[Connection], _T], *, write: bool) -> _T:
        """Run `op` on a SQLAlchemy connection in one transaction, retried as a whole on transient errors."""

        def attempt() -> _T:
            engine = self._ensure_ready()
            with engine.connect() as conn:
                if write and self._sqlite:
                    conn.execution_options(**{BEGIN_OPTION: "IMMEDIATE"})
                with conn.begin():
                    return op(conn)

        return self._retrying(what, attempt)

    def _run_raw(self, what: str, op: Callable[[Any, HotStatements], _T], *, write: bool) -> _T:
        """Run `op(cursor, statements)` on the pooled DBAPI connection in one transaction, with retries."""

        def attempt() -> _T:
            engine = self._ensure_ready()
            hot = self._hot
            assert hot is not None
            fairy = engine.raw_connection()
            cursor = None
            try:
                if self._sqlite:
                    prepare_sqlite(fairy, int(self._busy_timeout * 1000))
                    cursor = fairy.cursor()
                    if write:
                        cursor.execute("BEGIN IMMEDIATE")
                else:
                    cursor = fairy.cursor()
                try:
                    result = op(cursor, hot)
                    fairy.commit()
                except BaseException:
                    try:
                        fairy.rollback()
                    except Exception:
                        pass
                    raise
                return result
            except Exception as exc:
                dbapi_conn = fairy.dbapi_connection
                lost = (
                    dbapi_conn is not None
                    and _is_database_error(exc)
                    and _connection_lost(engine, exc, dbapi_conn, cursor)
                )
                if lost:
                    fairy.invalidate(exc)  # never back into the pool
                    raise ConnectionLost(exc) from exc
                raise
            finally:
                if cursor is not None:
                    try:
                        cursor.close()
                    except Exception:
                        pass
                fairy.close()

        return self._retrying(what, attempt)

    def _retrying(self, what: str, attempt: Callable[[], _T]) -> _T:
        serial = self._serial
        if serial is not None:
            with serial:
                return self._retry_loop(what, attempt)
        return self._retry_loop(what, attempt)

    def _retry_loop(self, what: str, attempt: Callable[[], _T]) -> _T:
        policy = self._retry
        number = 0
        while True:
            number += 1
            try:
                return attempt()
            except SchemaVersionError:
                raise
            except Exception as exc:
                if not _is_database_error(exc):
                    raise
                transient = is_transient(exc)
                if not transient or number >= policy.attempts:
                    raise self._failure(what, exc, number, transient) from exc
                delay = policy.delay(number)
                logger.info(
                    "%s on %s hit %s; retrying in %.3fs (attempt %d of %d)",
                    what,
                    self._where(),
                    describe(exc),
                    delay,
                    number + 1,
                    policy.attempts,
                )
                time.sleep(delay)

    def _failure(self, what: str, exc: BaseException, attempts: int, transient: bool) -> StorageError:
        tried = f" after {attempts} attempts" if attempts > 1 else ""
        hint = ""
        if transient and self._sqlite:
            hint = (
                "; another connection held the SQLite write lock the whole time: keep transactions on this file "
                "short, or raise busy_timeout / RetryPolicy(attempts=...)"
            )
        elif transient:
            hint = "; the database stayed unreachable: check the server, or raise RetryPolicy(attempts=...)"
        return StorageError(f"{what} failed on {self._where()}{tried}: {describe(exc)}{hint}")

    # -- session rows ------------------------------------------------------------------------------------
    def _session_rows(
        self, chain: Sequence[str], innermost_name: str | None, *, now: float
    ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """Rows to upsert for `chain` (root first), skipping those this process already wrote with these values:
        the rows this process knows first-hand, and those it knows by hearsay (filled in only where empty).

        The innermost session gets its name and, when it is active here, its merged metadata; ancestors get
        what this process knows of them: their own view when active here; for the parent of a restored session,
        what its context said when it was sent (hearsay: it never overwrites what the parent's own process wrote
        since); else uid links only.
        """
        info = _active_session_info(chain)
        last = len(chain) - 1
        root = chain[0]
        known = self._known
        rows: list[tuple[Any, ...]] = []
        heard: list[tuple[Any, ...]] = []
        for i, uid in enumerate(chain):
            name, meta, own = info.get(uid, _NO_INFO)
            seen = known.get(uid)
            if seen is None and (type(uid) is not str or _UID_MATCH(uid) is None):  # checked once per process
                raise InvalidSessionUid(uid)
            if i == last and innermost_name is not None:
                if not own:  # the caller names it first-hand; its metadata is hearsay
                    if meta is not None and (seen is None or seen[1] is None):
                        heard.append((uid, chain[i - 1] if i else None, root, i + 1, None, meta, None, now))
                    meta, own = None, True
                name = innermost_name
            if seen is not None:
                if own:
                    if (name is None or name == seen[0]) and (meta is None or to_json(meta) == seen[1]):
                        continue
                elif (name is None or seen[0] is not None) and (meta is None or seen[1] is not None):
                    continue  # the row has a name and metadata already: hearsay would change nothing
            row = (uid, chain[i - 1] if i else None, root, i + 1, name, meta, None, now)
            if own:
                rows.append(row)
            else:
                heard.append(row)
        return rows, heard

    def _remember(self, rows: Iterable[tuple[Any, ...]], *, heard: bool = False) -> None:
        """Note the name and metadata written for each row's session: metadata as its JSON, a snapshot that tells
        True from 1 (Python's == does not) and that a nested value changed in place since cannot alter. A value
        `heard` of is noted only as "the row has one" (`_HEARD`), for the row may have held another already."""
        known = self._known
        if len(known) > _KNOWN_LIMIT:
            known.clear()
        for row in rows:
            uid, name, meta = row[0], row[4], row[5]
            old_name, old_meta = known.get(uid, (None, None))
            if heard:
                known[uid] = (
                    old_name if old_name is not None or name is None else _HEARD,
                    old_meta if old_meta is not None or meta is None else _HEARD,
                )
            else:
                known[uid] = (name if name is not None else old_name, to_json(meta) if meta is not None else old_meta)

    # -- the SessionStorage protocol ---------------------------------------------------------------------
    def add_trace(self, session_uid_chain: Sequence[str], session_name: str, trace: Trace) -> None:
        """Store `trace` under every uid of `session_uid_chain` (root first), in one transaction; idempotent."""
        self.add_traces(session_uid_chain, session_name, (trace,))

    def add_traces(self, session_uid_chain: Sequence[str], session_name: str, traces: Iterable[Trace]) -> None:
        """Store many traces of one session at once (a transaction per 5,000 traces); idempotent by trace_id.

        Raises `InvalidSessionUid` (a `ValueError`), storing nothing, for a uid that is not 1-64 characters of
        ``[0-9A-Za-z_-]`` (session_core's rule, what sessions make).
        """
        if isinstance(session_uid_chain, str):
            raise TypeError(f"session_uid_chain must be a list of uids (root first), not the str {session_uid_chain!r}")
        try:
            chain = list(dict.fromkeys(session_uid_chain))
        except TypeError:  # an unhashable uid (a list, a dict)
            raise InvalidSessionUid(next(u for u in session_uid_chain if not isinstance(u, str))) from None
        if not chain:
            raise ValueError("session_uid_chain must hold at least one session uid")
        batch = traces if isinstance(traces, (list, tuple)) else list(traces)
        if not batch:
            return
        innermost = chain[-1]
        now = time.time()
        text, pg = self._text, not self._sqlite
        for start in range(0, len(batch), _BULK_CHUNK):
            chunk = batch[start : start + _BULK_CHUNK]
            sessions, heard = self._session_rows(chain, session_name, now=now)  # checks each new uid first
            seq = _next_seqs(len(chunk))
            trace_rows = []
            for offset, trace in enumerate(chunk):
                if trace.session_name is None:
                    trace.session_name = session_name
                try:
                    timestamp = float(trace.timestamp)
                except (TypeError, ValueError):
                    raise TypeError(
                        f"Trace.timestamp must be unix seconds (a float), got {type(trace.timestamp).__name__}"
                    ) from None
                if timestamp != timestamp:  # NaN: SQLite would store NULL (refused), PostgreSQL sort it after all
                    logger.warning(
                        "Trace.timestamp is NaN (trace_id %r); the trace keeps it, ordered by when it was stored",
                        trace.trace_id,
                    )
                    timestamp = now
                trace_rows.append(
                    (trace.trace_id, seq + offset, innermost, text(trace.session_name), timestamp, encode_trace(trace))
                )
            session_rows = [
                (*row[:4], text(row[4]), None if row[5] is None else column_json(row[5], postgresql=pg), *row[6:])
                for row in sessions
            ]
            heard_rows = [
                (*row[:4], text(row[4]), None if row[5] is None else column_json(row[5], postgresql=pg), *row[6:])
                for row in heard
            ]
            self._run_raw(
                "add_traces" if len(batch) > 1 else "add_trace",
                functools.partial(
                    _write_traces, chain=chain, trace_rows=trace_rows, session_rows=session_rows, heard_rows=heard_rows
                ),
                write=True,
            )
            self._remember(sessions)
            if heard:
                self._remember(heard, heard=True)

    def get_traces(self, session_uid: str, session_name: str | None = None) -> list[Trace]:
        """Traces recorded in session `session_uid` or any descendant, oldest first (ties: order added)."""
        if not _findable(session_uid):
            return []

        def op(cursor: Any, hot: HotStatements) -> list[Any]:
            if session_name is None:
                cursor.execute(hot.select_traces.sql, hot.select_traces.param((session_uid,)))
            else:
                stmt = hot.select_traces_named
                cursor.execute(stmt.sql, stmt.param((session_uid, self._text(session_name))))
            return cursor.fetchall()  # type: ignore[no-any-return]

        with gc_paused():
            return decode_traces([row[0] for row in self._run_raw("get_traces", op, write=False)])

    def iter_traces(
        self, session_uid: str, session_name: str | None = None, *, batch_size: int = 1000
    ) -> Iterator[Trace]:
        """The traces `get_traces` returns, in the same order, read `batch_size` at a time: memory bounded by a
        batch rather than by the session, for sessions of millions of traces (``session-sql export`` uses it).

        Each batch is a read of its own, retried like any read, that continues after the last trace of the one
        before (by the position traces are listed in, not by an offset), so no trace is read twice or skipped
        when others are added meanwhile; those added before the position reached are not seen. It is no
        snapshot: a trace cleared and added again during the iteration is a new write, and is read again when
        it lands after the position reached (`get_traces` reads in one statement). The arguments are checked
        when this is called: `batch_size` must be an int of at least 1.
        """
        pages = self._pages(session_uid, session_name, batch_size)

        def traces() -> Iterator[Trace]:
            after: tuple[Any, ...] | None = None
            while pages is not None:
                batch, after = pages(after)
                yield from batch
                if after is None:
                    return

        return traces()

    def async_iter_traces(
        self, session_uid: str, session_name: str | None = None, *, batch_size: int = 1000
    ) -> AsyncIterator[Trace]:
        """`iter_traces` for ``async for``: each batch is read in a worker thread, so the event loop never waits
        on the database."""
        pages = self._pages(session_uid, session_name, batch_size)

        async def traces() -> AsyncIterator[Trace]:
            after: tuple[Any, ...] | None = None
            while pages is not None:
                batch, after = await asyncio.to_thread(pages, after)
                for trace in batch:
                    yield trace
                if after is None:
                    return

        return traces()

    def _pages(
        self, session_uid: str, session_name: str | None, batch_size: int
    ) -> Callable[[tuple[Any, ...] | None], tuple[list[Trace], tuple[Any, ...] | None]] | None:
        """For `iter_traces`: a reader of the batch after a position (None: the first batch) that returns the
        batch and the position it ends at (None after the last); None when `session_uid` finds nothing."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int):
            raise TypeError(f"batch_size must be an int, got {type(batch_size).__name__}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if not _findable(session_uid):
            return None
        t, j = self._tables.traces, self._tables.trace_sessions
        position = (j.c.timestamp, j.c.seq, j.c.trace_id)
        # Joined on trace_id alone, the seq of `Tables.linked` compared here: PostgreSQL's planner took the join on
        # both columns for one row and sorted the whole rest of the session for every batch, where this join lets
        # it read the batch's range of the junction's primary key in order, up to the LIMIT.
        query = select(t.c.data, *position, t.c.seq).join_from(j, t, j.c.trace_id == t.c.trace_id)
        query = query.where(j.c.session_uid == session_uid)
        if session_name is not None:
            query = query.where(t.c.session_name == self._text(session_name))
        # A batch_size beyond 64 bits reads everything at once: neither database takes it as a LIMIT (SQLite
        # raised OverflowError, PostgreSQL "bigint out of range"), and no session holds that many traces.
        limit = min(batch_size, _INT64_MAX)
        query = query.order_by(*position).limit(limit)

        def page(after: tuple[Any, ...] | None) -> tuple[list[Trace], tuple[Any, ...] | None]:
            stmt = query
            if after is not None:
                stmt = query.where(tuple_(*position) > tuple_(*(literal(v, c.type) for v, c in zip(after, position))))
            rows: Sequence[Any] = self._run("iter_traces", functools.partial(_all_rows, stmt), write=False)
            with gc_paused():
                batch = decode_traces([row[0] for row in rows if row[2] == row[4]])  # a stale link: not its trace
            return batch, (tuple(rows[-1][1:4]) if len(rows) == limit else None)

        return page

    def clear(self, session_uid: str, session_name: str | None = None) -> None:
        """Delete the traces visible from `session_uid` (optionally only `session_name`'s) from every session."""
        if not _findable(session_uid):
            return
        t, j = self._tables.traces, self._tables.trace_sessions
        query = select(t.c.trace_id, t.c.session_uid, t.c.timestamp, t.c.seq).join_from(j, t, self._tables.linked())
        query = query.where(j.c.session_uid == session_uid)
        if session_name is not None:
            query = query.where(t.c.session_name == self._text(session_name))
        delete_link = delete(j).where(
            j.c.session_uid == bindparam("s_uid"),
            j.c.timestamp == bindparam("ts"),
            j.c.seq == bindparam("seq"),
            j.c.trace_id == bindparam("t_id"),
        )
        delete_trace = delete(t).where(t.c.trace_id == bindparam("t_id"))

        def op(conn: Connection) -> None:
            doomed = conn.execute(query).all()
            if not doomed:
                return
            chains = {owner: self._chain_of(conn, owner) for owner in {row.session_uid for row in doomed}}
            links = []
            for row in doomed:
                for uid in dict.fromkeys([*chains[row.session_uid], session_uid]):
                    links.append({"s_uid": uid, "ts": row.timestamp, "seq": row.seq, "t_id": row.trace_id})
            conn.execute(delete_link, links)
            conn.execute(delete_trace, [{"t_id": row.trace_id} for row in doomed])

        self._run("clear", op, write=True)

    # -- async -------------------------------------------------------------------------------------------
    async def async_add_trace(self, session_uid_chain: Sequence[str], session_name: str, trace: Trace) -> None:
        """`add_trace` in a worker thread, so the event loop never waits on the database."""
        await asyncio.to_thread(self.add_trace, _chain_copy(session_uid_chain), session_name, trace)

    async def async_add_traces(
        self, session_uid_chain: Sequence[str], session_name: str, traces: Iterable[Trace]
    ) -> None:
        """`add_traces` in a worker thread."""
        await asyncio.to_thread(self.add_traces, _chain_copy(session_uid_chain), session_name, list(traces))

    async def async_get_traces(self, session_uid: str, session_name: str | None = None) -> list[Trace]:
        """`get_traces` in a worker thread."""
        return await asyncio.to_thread(self.get_traces, session_uid, session_name)

    # -- ContextStore: contexts by reference -------------------------------------------------------------
    def save_context(self, context: Mapping[str, Any]) -> None:
        """Keep `context` in its session's row, so oversized metadata can travel by reference (``session.ref``)."""
        valid = validate_context(context)
        chain = valid["uid_chain"]
        now = time.time()
        ancestors, heard = self._session_rows(chain[:-1], None, now=now) if len(chain) > 1 else ([], [])
        row = {
            "uid": chain[-1],
            "parent_uid": chain[-2] if len(chain) > 1 else None,
            "root_uid": chain[0],
            "depth": len(chain),
            "name": self._text(valid["name"]),
            "metadata": storable_json(valid["metadata"], postgresql=not self._sqlite),
            "context": to_json(valid),
            "created_at": now,
        }
        upsert_ancestor, fill_ancestor, save = session_upserts(self._tables, self._parsed.dialect)

        pg = not self._sqlite

        def params(rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
            return [  # as add_traces writes them: text and strict JSON the database can hold
                {
                    **dict(zip(SESSION_COLUMNS, r)),
                    "name": self._text(r[4]),
                    "metadata": None if r[5] is None else json.loads(column_json(r[5], postgresql=pg)),
                }
                for r in rows
            ]

        ancestor_rows, heard_rows = params(ancestors), params(heard)

        def op(conn: Connection) -> None:
            if ancestor_rows:
                conn.execute(upsert_ancestor, ancestor_rows)
            if heard_rows:
                conn.execute(fill_ancestor, heard_rows)
            conn.execute(save, row)

        self._run("save_context", op, write=True)
        self._remember([*ancestors, tuple(row[n] for n in SESSION_COLUMNS)])
        if heard:
            self._remember(heard, heard=True)

    def load_context(self, session_uid: str) -> dict[str, Any] | None:
        """The context saved for `session_uid`, else one rebuilt from its row; None if the session is unknown."""
        if not _findable(session_uid):
            return None
        s = self._tables.sessions

        def op(conn: Connection) -> dict[str, Any] | None:
            row = conn.execute(select(s.c.context, s.c.name, s.c.metadata).where(s.c.uid == session_uid)).one_or_none()
            if row is None:
                return None
            if row.context is not None:
                saved: dict[str, Any] = json.loads(row.context)
                return saved
            if row.name is None:
                return None
            return make_context(row.name, self._chain_of(conn, session_uid), row.metadata or {}, self._url)

        return self._run("load_context", op, write=False)

    # -- queries -----------------------------------------------------------------------------------------
    def get_session(self, uid: str) -> SessionRecord | None:
        """The stored session `uid`, or None."""
        if not _findable(uid):
            return None
        s = self._tables.sessions
        query = select(*_record_columns(s)).where(s.c.uid == uid)
        row = self._run("get_session", lambda conn: conn.execute(query).one_or_none(), write=False)
        return _record(row) if row is not None else None

    def list_sessions(
        self,
        *,
        name: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        since: float | datetime.datetime | None = None,
        until: float | datetime.datetime | None = None,
        roots_only: bool = False,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[SessionRecord]:
        """Sessions oldest first (`newest_first`: newest first, so `limit` keeps the latest), filtered by name, a
        metadata subset (every given key equal), creation time and whether they are roots.

        Creation time: ``since <= created_at < until``, each bound unix seconds (an int or float; an infinity is an
        open bound) or a `datetime.datetime`: an aware one is that instant, a naive one local time (as
        `datetime.datetime.timestamp` takes it). A `datetime.date` raises `TypeError` (a day is no instant: say
        which time of it with `datetime.datetime.combine`), as does any other type.
        """
        s = self._tables.sessions
        query: Select[Any] = select(*_record_columns(s))
        if name is not None:
            query = query.where(s.c.name == self._text(name))
        start, end = _timestamp(since, "since"), _timestamp(until, "until")
        if start is not None:
            query = query.where(s.c.created_at >= start)
        if end is not None:
            query = query.where(s.c.created_at < end)
        if roots_only:
            query = query.where(s.c.parent_uid.is_(None))
        wanted = dict(metadata or {})
        exact = True
        if wanted:
            bad = next((k for k in wanted if not isinstance(k, str)), None)
            if bad is not None:
                raise TypeError(f"metadata keys are strings (session metadata is JSON), got {bad!r}")
            # As the session rows hold them (NaN as "NaN"; NUL as U+FFFD on PostgreSQL): see column_json.
            wanted = json.loads(column_json(wanted, postgresql=not self._sqlite))
            condition, exact = self._metadata_filter(wanted)
            query = query.where(condition)
        if newest_first:
            query = query.order_by(s.c.created_at.desc(), s.c.uid.desc())
        else:
            query = query.order_by(s.c.created_at, s.c.uid)
        if limit is not None:
            if not isinstance(limit, int) or isinstance(limit, bool):
                raise TypeError(f"limit must be an int (or None for no limit), got {type(limit).__name__}")
            if limit < 0:
                raise ValueError(f"limit must be zero or more, got {limit}")
            if exact and limit <= _INT64_MAX:  # a larger one limits nothing, and no database takes it
                query = query.limit(limit)

        def op(conn: Connection) -> list[SessionRecord]:
            out: list[SessionRecord] = []
            if limit == 0:
                return out
            for row in conn.execute(query):
                record = _record(row)
                meta = record.metadata or {}
                if wanted and not all(k in meta and _same_json(meta[k], v) for k, v in wanted.items()):
                    continue
                out.append(record)
                if limit is not None and len(out) >= limit:
                    break
            return out

        return self._run("list_sessions", op, write=False)

    def _metadata_filter(self, wanted: Mapping[str, Any]) -> tuple[ColumnElement[bool], bool]:
        """A SQL pre-filter for a metadata subset and whether it is exact (else rows are re-checked in Python)."""
        column = self._tables.sessions.c.metadata
        scalar = all(v is None or isinstance(v, (str, int, float, bool)) for v in wanted.values())
        if not self._sqlite:
            return type_coerce(column, JSONB).contains(wanted), scalar
        condition: ColumnElement[bool] = true()
        exact = True
        for key, value in wanted.items():
            if not key.isascii() or not key.isprintable() or '"' in key or "\\" in key:
                # The row's JSON holds such a key escaped ("caf\u00e9"), and a JSON path label is compared with
                # that text, never matching: checked in Python.
                exact = False
                continue
            path = f'$."{key}"'
            kind = func.json_type(column, path)
            if value is None:
                condition = condition & (kind == "null")
            elif isinstance(value, bool):
                condition = condition & (kind == ("true" if value else "false"))
            elif isinstance(value, str):
                condition = condition & (kind == "text")
                if _sqlite_comparable(value):
                    condition = condition & (func.json_extract(column, path) == value)
                else:
                    exact = False
            elif isinstance(value, (int, float)):
                condition = condition & kind.in_(("integer", "real"))
                if isinstance(value, float) or _INT64_MIN <= value <= _INT64_MAX:
                    condition = condition & (func.json_extract(column, path) == value)
                else:  # SQLite cannot bind it (OverflowError), nor compare it exactly: checked in Python
                    exact = False
            else:
                condition = condition & (kind == ("object" if isinstance(value, dict) else "array"))
                exact = False
        return condition, exact

    def session_tree(self, uid: str) -> SessionNode | None:
        """Session `uid` and all its descendants as nested `SessionNode`s with trace counts; None if unknown."""
        if not _findable(uid):
            return None
        s, t, j = self._tables.sessions, self._tables.traces, self._tables.trace_sessions
        seed = select(s.c.uid).where(s.c.uid == uid).cte("subtree", recursive=True)
        subtree = seed.union(select(s.c.uid).join_from(s, seed, s.c.parent_uid == seed.c.uid))
        linked = select(func.count()).select_from(j).join(t, self._tables.linked())
        total = linked.where(j.c.session_uid == s.c.uid).scalar_subquery()
        own = linked.where(j.c.session_uid == s.c.uid, t.c.session_uid == s.c.uid).scalar_subquery()
        query = (
            select(*_record_columns(s), total.label("total"), own.label("own"))
            .join_from(s, subtree, s.c.uid == subtree.c.uid)
            .order_by(s.c.depth, s.c.created_at, s.c.uid)
        )
        rows = self._run("session_tree", lambda conn: conn.execute(query).all(), write=False)
        nodes: dict[str, SessionNode] = {}
        for row in rows:
            nodes[row.uid] = SessionNode(_record(row), int(row.total), int(row.own))
        for node in nodes.values():
            parent_uid = node.session.parent_uid
            if node.uid != uid and parent_uid is not None and parent_uid in nodes:
                nodes[parent_uid].children.append(node)
        return nodes.get(uid)

    def _chain_of(self, conn: Connection, uid: str) -> list[str]:
        """The uid chain of a stored session, root first, by walking parent links."""
        s = self._tables.sessions
        chain = [uid]
        current: str | None = uid
        while len(chain) <= _MAX_DEPTH:
            current = conn.execute(select(s.c.parent_uid).where(s.c.uid == current)).scalar_one_or_none()
            if current is None or current in chain:
                break
            chain.append(current)
        chain.reverse()
        return chain

    # -- housekeeping ------------------------------------------------------------------------------------
    def __len__(self) -> int:
        """The number of traces stored."""
        query = select(func.count()).select_from(self._tables.traces)
        return int(self._run("count", lambda conn: conn.execute(query).scalar_one(), write=False))

    def __bool__(self) -> bool:  # an empty storage is still a storage
        return True

    def close(self) -> None:
        """Close this process's pooled connections (an engine you passed in is left open for you)."""
        # The one connection of an in-memory database is closed only between two uses of it by other threads
        # (closing it under a running statement crashed the interpreter); taken before `_lock`, as they take it.
        with self._serial if self._serial is not None else contextlib.nullcontext(), self._lock:
            if self._engine is not None and self._own_engine and self._engine_pid == os.getpid():
                self._engine.dispose()
                self._emptied = self._parsed.is_memory  # its one connection held the whole database
            self._ready_pid = -1

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __reduce__(self) -> tuple[Any, ...]:
        if self._url is None:
            raise TypeError(
                f"{self!r} lives in this process only and cannot be pickled; use a SQLite file or PostgreSQL URL"
            )
        return _reduced(SqlSessionStorage, self._url, self._options())

    def _options(self) -> dict[str, Any]:
        """The constructor options a pickled copy gets: those not at their defaults. Never a secret (the URL
        travels as `url`, without its password); an engine you passed in stays here (the copy opens the URL)."""
        options: dict[str, Any] = {}
        if self._busy_timeout != _BUSY_TIMEOUT:
            options["busy_timeout"] = self._busy_timeout
        retry = self._retry
        if retry != RetryPolicy():
            if type(retry) is not RetryPolicy:  # a subclass of yours, perhaps defined where pickle cannot find it
                try:
                    pickle.dumps(retry)
                except Exception as exc:
                    logger.warning(
                        "%r is pickled without its retry policy %r, which cannot be pickled (%s): the copy retries "
                        "per RetryPolicy()",
                        self,
                        retry,
                        exc,
                    )
                    return options
            options["retry"] = retry
        return options

    def __repr__(self) -> str:
        if self._url is None:
            return f"{type(self).__name__}(url='sqlite://', in_memory=True)"
        return f"{type(self).__name__}(url={self._url!r})"


class SqliteSessionStorage(SqlSessionStorage):
    """A SQLite file: `db_path` (default ``sessions.db`` in the working directory; ``":memory:"`` for this
    process only). Unlike `SqlSessionStorage()` it never reads ``$SESSION_STORAGE_URL``."""

    def __init__(
        self,
        db_path: str | os.PathLike[str] | None = None,
        *,
        retry: RetryPolicy | None = None,
        busy_timeout: float = _BUSY_TIMEOUT,
    ) -> None:
        path = os.fspath(db_path) if db_path is not None else DEFAULT_SQLITE_FILE
        memory = path in ("", ":memory:")
        # A URL object, never a string to parse: ``?``, ``#`` and ``%`` in the path stay part of the file name.
        url: str | URL = "sqlite://" if memory else sqlite_file_url(path)
        super().__init__(url, retry=retry, busy_timeout=busy_timeout)
        self.db_path: str | None = None if memory else self._parsed.engine_url.database

    def __reduce__(self) -> tuple[Any, ...]:
        if self.db_path is None:
            return super().__reduce__()
        return _reduced(SqliteSessionStorage, self.db_path, self._options())

    def __repr__(self) -> str:
        return f"SqliteSessionStorage(db_path={self.db_path or ':memory:'!r})"


# -- helpers -----------------------------------------------------------------------------------------------
def _reduced(cls: type[SqlSessionStorage], target: str, options: dict[str, Any]) -> tuple[Any, ...]:
    """What `__reduce__` returns: ``cls(target)`` as before when every option is at its default (so older
    versions read it), else `_unpickle` with the options."""
    if not options:
        return (cls, (target,))
    return (_unpickle, (cls, target, options))


def _unpickle(cls: type[_S], target: str, options: dict[str, Any]) -> _S:
    """A pickled storage opened again: ``cls(target, **options)``."""
    return cls(target, **options)


def _write_traces(
    cursor: Any,
    hot: HotStatements,
    chain: list[str],
    trace_rows: list[tuple[Any, ...]],
    session_rows: list[tuple[Any, ...]],
    heard_rows: list[tuple[Any, ...]],
) -> None:
    """One add: session rows (first-hand, then hearsay), trace rows, then the junction rows for every uid of the
    chain."""
    if session_rows:
        cursor.executemany(hot.upsert_session.sql, hot.upsert_session.params(session_rows))
    if heard_rows:
        cursor.executemany(hot.fill_session.sql, hot.fill_session.params(heard_rows))
    bulk = hot.bulk
    if bulk is not None and len(trace_rows) >= _COPY_MIN and hasattr(cursor, "copy"):  # PostgreSQL via psycopg 3
        cursor.execute(bulk.create)
        with cursor.copy(bulk.copy) as copy:
            for row in trace_rows:
                copy.write_row(row)
        cursor.execute(bulk.insert_traces)
        cursor.execute(bulk.link.sql, bulk.link.param((chain,)))
        return
    stmt = hot.insert_trace
    cursor.executemany(stmt.sql, stmt.params(trace_rows))
    if cursor.rowcount == len(trace_rows):  # all new: link them with the values we hold
        links = [(uid, row[4], row[1], row[0]) for row in trace_rows for uid in chain]
        cursor.executemany(hot.link_values.sql, hot.link_values.params(links))
    else:  # some were stored before: link with their stored timestamp and seq, never twice
        copies = [(uid, row[0]) for row in trace_rows for uid in chain]
        cursor.executemany(hot.link_copy.sql, hot.link_copy.params(copies))


def _chain_copy(chain: Sequence[str]) -> Sequence[str]:
    """A chain to hand to a worker thread: a copy, but a str as it is (so `add_traces` refuses it, not its letters)."""
    return chain if isinstance(chain, str) else list(chain)


def _all_rows(query: Select[Any], conn: Connection) -> Sequence[Any]:
    return conn.execute(query).all()


def _findable(uid: object) -> bool:
    """Whether a session `uid` to look up may be in the database. Any str a database can take as a parameter is
    looked for (a database written before uids were checked may hold ones outside session_core's rule); one with
    NUL or a lone surrogate finds nothing, as an unknown uid does, rather than raising a database error. A uid
    that is not a str raises `TypeError`."""
    if type(uid) is str and _UID_MATCH(uid) is not None:
        return True
    if not isinstance(uid, str):
        raise TypeError(f"a session uid is a str, got {type(uid).__name__}")
    return "\x00" not in uid and storable_text(uid, postgresql=False) == uid


def _record_columns(s: Any) -> tuple[Any, ...]:
    return (s.c.uid, s.c.parent_uid, s.c.root_uid, s.c.depth, s.c.name, s.c.metadata, s.c.created_at)


def _record(row: Any) -> SessionRecord:
    return SessionRecord(
        uid=row.uid,
        parent_uid=row.parent_uid,
        root_uid=row.root_uid,
        depth=int(row.depth),
        name=row.name,
        metadata=row.metadata,
        created_at=float(row.created_at),
    )


def _active_session_info(chain: Sequence[str]) -> dict[str, SessionInfo]:
    """Name and merged metadata of the chain's sessions active here (first-hand), and of a restored session's
    parent (hearsay: as its context was sent) unless that parent is active here too."""
    active = get_active_sessions()
    if not active:
        return {}
    wanted = set(chain)
    found: dict[str, SessionInfo] = {}
    for session in active:
        uid = session.uid
        if uid in wanted:
            merged = getattr(session, "merged_metadata", None)
            found[uid] = (session.name, merged() if callable(merged) else dict(session.metadata), True)
        # A session restored from a context (another thread or process) knows its parent's name and metadata.
        ctx = getattr(session, "origin_context", None)
        if isinstance(ctx, dict) and ctx.get("uid_chain"):
            parent = ctx["uid_chain"][-1]
            if parent in wanted and parent not in found:
                found[parent] = (ctx.get("name"), ctx.get("metadata"), False)
    return found
