"""Storage URLs: defaults, normalization, and credentials that never travel.

A storage URL crosses process boundaries inside context dicts, so the one a storage reports (`public_url`)
never holds a password. The receiving side supplies credentials itself: `fill_credentials` takes them from
``$SESSION_STORAGE_URL`` when that names the same server and database; otherwise psycopg/libpq reads
``PGPASSWORD`` or ``~/.pgpass`` as usual.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, quote_plus, unquote

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from session_core import redact_url
from session_storage_sql.errors import InvalidStorageURL

__all__ = [
    "DEFAULT_SQLITE_FILE",
    "STORAGE_URL_ENV",
    "StorageURL",
    "default_url",
    "fill_credentials",
    "parse_storage_url",
    "public_url",
    "sqlite_file_url",
    "sqlite_path",
    "sqlite_url",
]

STORAGE_URL_ENV = "SESSION_STORAGE_URL"
DEFAULT_SQLITE_FILE = "sessions.db"

_PG_DRIVERS = {"postgres": "postgresql+psycopg", "postgresql": "postgresql+psycopg"}
_SECRET_QUERY_KEYS = frozenset({"password", "sslpassword"})
_MEMORY = ("", ":memory:")
# SQLAlchemy 2.1 percent-decodes the database part of a URL string; 2.0 leaves it as written. We always decode.
_DECODES_DATABASE = make_url("sqlite:///a%41").database == "aA"


@dataclass(frozen=True)
class StorageURL:
    """A parsed storage URL: what the engine connects with, and what may be shown or sent elsewhere."""

    engine_url: URL
    public: str | None  # None for an in-memory SQLite database: no other process can open it
    dialect: str  # "sqlite" or "postgresql"

    @property
    def is_memory(self) -> bool:
        return self.public is None


def sqlite_url(path: str | os.PathLike[str]) -> str:
    """The ``sqlite:///`` URL of a file, made absolute so a process with another working directory opens it too.

    ``%``, ``?`` and ``#`` in the path are percent-encoded, so `parse_storage_url` (and ``open_storage`` in any
    process) opens this very file rather than one named by the text before a ``?``.
    """
    return "sqlite:///" + _quote_path(sqlite_path(path))


def sqlite_path(path: str | os.PathLike[str]) -> str:
    """`path` made absolute (``~`` expanded), as SQLite is given it."""
    return Path(path).expanduser().absolute().as_posix()


def sqlite_file_url(path: str | os.PathLike[str]) -> URL:
    """The engine URL of a SQLite file, built without parsing a string (no character of `path` is special)."""
    return URL.create("sqlite", database=sqlite_path(path))


def default_url() -> str:
    """``$SESSION_STORAGE_URL`` when set, else ``sessions.db`` in the working directory."""
    return os.environ.get(STORAGE_URL_ENV) or sqlite_url(DEFAULT_SQLITE_FILE)


def public_url(url: URL) -> str:
    """`url` rendered without its password or any password-like query parameter."""
    query = {k: v for k, v in url.query.items() if k.lower() not in _SECRET_QUERY_KEYS}
    # URL.set(password=None) would keep the password: None means "unchanged" there.
    bare = url._replace(password=None).set(query=query)
    return redact_url(bare.render_as_string(hide_password=False))


def parse_storage_url(url: str | URL) -> StorageURL:
    """Normalize a ``sqlite`` or ``postgresql`` URL; raise `InvalidStorageURL` for anything else.

    ``postgresql://`` and ``postgres://`` use psycopg 3 (``postgresql+psycopg://``). A relative SQLite path is
    made absolute against the working directory. Percent-escapes in the path of a SQLite URL string are decoded
    (whatever the SQLAlchemy version); a `URL` object's database is used as it is.
    """
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        shown = public_url(url) if isinstance(url, URL) else _scrub(str(url))
        raise InvalidStorageURL(f"cannot parse storage URL {shown!r}: {exc}") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database or ""
        if isinstance(url, str) and not _DECODES_DATABASE:
            database = unquote(database)
        if database in _MEMORY or database.startswith("file::memory:"):
            return StorageURL(parsed.set(database=":memory:"), None, "sqlite")
        if not database.startswith("file:"):
            try:
                database = sqlite_path(database)
            except RuntimeError:  # Path.expanduser: "~someone" names no user with a home directory
                raise InvalidStorageURL(
                    f"cannot use storage URL {_scrub(str(url))!r}: {database.split('/', 1)[0]!r} names no home "
                    "directory (no such user?)"
                ) from None
        elif not database.startswith("file:/"):  # a relative URI path: made absolute too, escaped as a URI's
            database = f"file:{quote(Path.cwd().as_posix())}/{database[5:]}"
        engine_url = parsed.set(database=database)
        return StorageURL(engine_url, _public_sqlite_url(engine_url), "sqlite")
    if backend in _PG_DRIVERS:
        if "@" in (parsed.host or ""):  # the password ended at its first "@": the rest became the host
            shown = _scrub(url.render_as_string(hide_password=False) if isinstance(url, URL) else url)
            raise InvalidStorageURL(
                f"cannot use storage URL {shown!r}: the password holds an '@', which must be written %40 "
                "(percent-encode the password, e.g. urllib.parse.quote(password, safe=''))"
            )
        drivername = _PG_DRIVERS.get(parsed.drivername, parsed.drivername)
        engine_url = parsed.set(drivername=drivername)
        return StorageURL(engine_url, public_url(engine_url), "postgresql")
    raise InvalidStorageURL(
        f"session-storage-sql stores sessions in SQLite or PostgreSQL, not {backend!r} "
        f"({public_url(parsed)}); use sqlite:///path/to/sessions.db or postgresql://user@host/db"
    )


def fill_credentials(url: URL, environ: Mapping[str, str] | None = None) -> URL:
    """`url` with the user and password of ``$SESSION_STORAGE_URL`` when that names the same server and database.

    Only a PostgreSQL URL without a password is filled, and only from a URL whose host, port and database match
    exactly (and whose user matches, when `url` names one). Otherwise `url` is returned unchanged and libpq
    looks for ``PGPASSWORD`` / ``~/.pgpass`` itself.
    """
    if url.get_backend_name() != "postgresql" or url.password is not None or "password" in url.query:
        return url
    env = (os.environ if environ is None else environ).get(STORAGE_URL_ENV)
    if not env:
        return url
    try:
        source = make_url(env)
    except (ArgumentError, ValueError):
        return url
    if source.get_backend_name() not in _PG_DRIVERS or source.password is None:
        return url
    same = (
        (source.host or "").lower() == (url.host or "").lower()
        and (source.port or 5432) == (url.port or 5432)
        and source.database == url.database
        and (url.username is None or url.username == source.username)
    )
    if not same:
        return url
    return url.set(username=source.username, password=source.password)


def _quote_path(database: str) -> str:
    """`database` with the characters that end a URL's path (``?``, ``#``) or start an escape (``%``) encoded."""
    return database.replace("%", "%25").replace("?", "%3F").replace("#", "%23")


def _public_sqlite_url(url: URL) -> str:
    """A SQLite engine URL as text that `parse_storage_url` turns back into the same file on any SQLAlchemy 2.x
    (SQLAlchemy's own rendering of the path differs between 2.0 and 2.1)."""
    base = url._replace(password=None, database=None).set(query={}).render_as_string(hide_password=False)
    text = f"{base}/{_quote_path(url.database or '')}"
    query = [(k, v) for k, v in sorted(url.query.items()) if k.lower() not in _SECRET_QUERY_KEYS]
    if query:
        text += "?" + "&".join(
            f"{quote_plus(k)}={quote_plus(item)}" for k, v in query for item in ([v] if isinstance(v, str) else v)
        )
    return text


def _scrub(text: str) -> str:
    """A URL that failed to parse (or was refused), without its password (shown as ``***``) nor a password-like
    query parameter: session-core's `redact_url`, which reads it as text, so a password holding ``@``, ``/``,
    ``?`` or ``#`` goes whole."""
    shown = redact_url(text)
    scheme, _, rest = text.partition("://")  # no "://": redact_url left it as it was
    user, colon, _ = rest.partition(":")
    if shown == text or not colon or any(mark in user for mark in "@/?#"):
        return shown  # no "user:password@" went (at most a query parameter): nothing to mark
    tail = shown[len(scheme) + 3 :]  # after redaction: "user@host..." or, without a user, "host..."
    if user and tail.startswith(user + "@"):
        return f"{scheme}://{user}:***@{tail[len(user) + 1 :]}"
    if not user and not tail.startswith(":"):
        return f"{scheme}://:***@{tail}"
    return shown  # the ':' was a port's
