"""URLs, the open_storage registry, credentials that never travel, and the missing-extra error."""

from __future__ import annotations

import importlib.util
import json
import pickle
from pathlib import Path

import pytest

from session_core import ContextVarSession, StorageError, Trace, UnknownStorageScheme, open_storage, storage_schemes
from session_storage_sql import InvalidStorageURL, SqlSessionStorage, fill_credentials
from session_storage_sql.urls import parse_storage_url

HAS_PSYCOPG = importlib.util.find_spec("psycopg") is not None


def test_schemes_are_registered_through_entry_points() -> None:
    schemes = storage_schemes()
    for scheme in ("sqlite", "postgresql", "postgresql+psycopg", "postgres"):
        assert scheme in schemes


def test_open_storage_round_trip_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'opened.db'}"
    storage = open_storage(url)
    assert isinstance(storage, SqlSessionStorage) and storage.url == url
    with ContextVarSession("opened", storage=storage) as s:
        ctx = s.to_context()
    assert open_storage(ctx["storage_url"]) is storage


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "postgresql+psycopg"])
def test_open_storage_round_trip_postgresql(postgres_url: str, scheme: str) -> None:
    url = postgres_url.replace("postgresql://", f"{scheme}://", 1)
    storage = open_storage(url)
    try:
        assert isinstance(storage, SqlSessionStorage) and storage.dialect == "postgresql"
        assert storage.url is not None and storage.url.startswith("postgresql+psycopg://")
        with ContextVarSession("pg", storage=storage, k=1) as s:
            from session_core import record_trace

            record_trace(name="in postgres")
        again = open_storage(s.to_context()["storage_url"])
        assert [t.name for t in again.get_traces(s.uid)] == ["in postgres"]
    finally:
        storage.close()


def test_normalized_urls() -> None:
    pg = parse_storage_url("postgres://bob:pw@db.example:6543/traces?sslmode=require&password=x")
    assert pg.dialect == "postgresql"
    assert pg.engine_url.drivername == "postgresql+psycopg"
    assert pg.public == "postgresql+psycopg://bob@db.example:6543/traces?sslmode=require"
    assert parse_storage_url("sqlite://").is_memory
    assert parse_storage_url("sqlite:///:memory:").public is None
    assert parse_storage_url("sqlite:////abs/x.db").public == "sqlite:////abs/x.db"


def test_unsupported_or_malformed_urls_say_what_to_use() -> None:
    with pytest.raises(InvalidStorageURL, match="SQLite or PostgreSQL, not 'mysql'"):
        SqlSessionStorage("mysql://u:secret@h/db")
    with pytest.raises(InvalidStorageURL) as info:
        SqlSessionStorage("not a url at all")
    assert isinstance(info.value, (StorageError, ValueError))
    with pytest.raises(InvalidStorageURL, match="'~no-such-user-here' names no home directory"):
        SqlSessionStorage("sqlite:///~no-such-user-here/x.db")  # was a RuntimeError from Path.expanduser
    with pytest.raises(UnknownStorageScheme, match="mssql"):
        open_storage("mssql://h/db")
    with pytest.raises(TypeError, match="not both"):
        SqlSessionStorage("sqlite://", engine=object())  # type: ignore[arg-type]


def test_secret_never_shown_even_for_a_rejected_url() -> None:
    with pytest.raises(InvalidStorageURL) as info:
        SqlSessionStorage("mysql://user:hunter2@h/db")
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://bob:hun?ter2@db.example:5x32/traces",  # a '?' in the password, and a port that fails
        "postgresql://bob:hun?ter2@db.example:5x32/traces?sslmode=require",
        "postgresql://bob@db.example:5x32/traces?password=hunter2",
        "postgresql://db.example:5x32/traces?sslmode=require&password=hunter2",
        "postgresql://bob:pa@ss@db.example/traces?sslpassword=hunter2",  # refused for its '@', not parsing
    ],
)
def test_a_url_that_cannot_be_used_never_shows_its_password(url: str) -> None:
    """The error for a URL SQLAlchemy cannot parse (or that is refused) showed a password that held a ``?``, and
    every ``password=`` / ``sslpassword=`` query parameter, in full."""
    with pytest.raises(InvalidStorageURL) as info:
        SqlSessionStorage(url)
    message = str(info.value)
    assert "hunter2" not in message and "ter2" not in message and "ss@" not in message
    assert "db.example" in message


def test_fill_credentials_from_the_environment_url_of_the_same_database() -> None:
    from sqlalchemy.engine import make_url

    env = {"SESSION_STORAGE_URL": "postgresql://svc:s3cret@db.internal:5432/traces"}
    filled = fill_credentials(make_url("postgresql+psycopg://db.internal/traces"), env)
    assert (filled.username, filled.password) == ("svc", "s3cret")
    same_user = fill_credentials(make_url("postgresql+psycopg://svc@db.internal:5432/traces"), env)
    assert same_user.password == "s3cret"
    for other in (
        "postgresql+psycopg://db.internal/other_db",  # another database
        "postgresql+psycopg://elsewhere/traces",  # another host
        "postgresql+psycopg://db.internal:6432/traces",  # another port
        "postgresql+psycopg://alice@db.internal/traces",  # another user
    ):
        assert fill_credentials(make_url(other), env).password is None, other
    explicit = fill_credentials(make_url("postgresql+psycopg://svc:mine@db.internal/traces"), env)
    assert explicit.password == "mine"
    assert fill_credentials(make_url("postgresql+psycopg://db.internal/traces"), {}).password is None


def with_password(url: str, password: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(password=password).render_as_string(hide_password=False)


def test_password_never_in_url_repr_context_or_pickle(postgres_url: str) -> None:
    secret = "pw-that-must-not-travel"
    storage = SqlSessionStorage(with_password(postgres_url, secret))
    try:
        assert secret not in (storage.url or "") and secret not in repr(storage)
        with ContextVarSession("secret-free", storage=storage) as s:
            from session_core import record_trace

            record_trace(name="t")
            ctx = s.to_context()
        assert secret not in json.dumps(ctx)
        assert secret.encode() not in pickle.dumps(storage)
        from session_storage_sql import RetryPolicy

        tuned = SqlSessionStorage(with_password(postgres_url, secret), retry=RetryPolicy(attempts=2), busy_timeout=1)
        assert secret.encode() not in pickle.dumps(tuned)  # the options travel, the password does not
        copy = pickle.loads(pickle.dumps(tuned))
        assert copy.url == storage.url and copy._retry == RetryPolicy(attempts=2)
        assert [t.name for t in copy.get_traces(s.uid)] == ["t"]  # credentials from this side (trust auth here)
        copy.close()
        tuned.close()
        assert secret.encode() not in pickle.dumps(ctx)
        assert storage.load_context(s.uid) is not None and secret not in json.dumps(storage.load_context(s.uid))
        assert storage.engine.url.password == secret  # the sender keeps it for its own connections
    finally:
        storage.close()


def test_receiving_side_supplies_the_password_from_its_environment(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "receiver-side-secret"
    monkeypatch.setenv("SESSION_STORAGE_URL", with_password(postgres_url.split("?", 1)[0], secret))
    storage = SqlSessionStorage(postgres_url)  # as it arrives in a context: no password
    try:
        assert storage.engine.url.password == secret
        assert secret not in (storage.url or "")
        assert storage.get_traces("nobody") == []  # and it connects
    finally:
        storage.close()


@pytest.mark.skipif(HAS_PSYCOPG, reason="checks the error raised when the postgres extra is NOT installed")
def test_missing_psycopg_names_the_extra_to_install() -> None:
    with pytest.raises(ImportError) as info:
        SqlSessionStorage("postgresql://postgres@127.0.0.1:5432/test")
    message = str(info.value)
    assert 'pip install "session-storage-sql[postgres]"' in message and "psycopg" in message
    with pytest.raises(ImportError, match=r"session-storage-sql\[postgres\]"):
        open_storage("postgresql://postgres@127.0.0.1:5432/test")
    import session_storage_sql  # importing the package itself never needs the extra

    assert session_storage_sql.SqliteSessionStorage is not None


def test_an_engine_of_your_own_with_schema_translate_map(postgres_url: str) -> None:
    """Your engine, your settings: here every table lives in a schema named by schema_translate_map."""
    import psycopg
    from sqlalchemy import create_engine, text

    schema = postgres_url.rsplit("application_name=", 1)[1] + "_own"
    plain = postgres_url.split("?", 1)[0]
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    engine = create_engine(
        plain.replace("postgresql://", "postgresql+psycopg://", 1),
        execution_options={"schema_translate_map": {None: schema}},
    )
    try:
        for _ in range(2):  # opening twice finds the schema version it recorded the first time
            storage = SqlSessionStorage(engine=engine)
            with ContextVarSession("own engine", storage=storage, k=1) as s:
                from session_core import record_trace

                record_trace(name="translated")
            assert storage.url is not None and storage.url.startswith("postgresql+psycopg://")
            storage.close()
        assert [t.name for t in storage.get_traces(s.uid)] == ["translated"]
        assert storage.list_sessions(metadata={"k": 1})[-1].uid == s.uid
        from session_storage_sql.storage import _COPY_MIN

        storage.add_traces(["bulk"], "n", [Trace(name=f"b{i}") for i in range(_COPY_MIN)])  # the COPY path
        assert len(storage.get_traces("bulk")) == _COPY_MIN
        with engine.connect() as conn:
            count = conn.execute(text(f'SELECT count(*) FROM "{schema}".traces')).scalar_one()
        assert count == 2 + _COPY_MIN
    finally:
        engine.dispose()
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://bob:pa@ss@db.example/traces",
        "postgresql://bob:s3@cr@et@db.example:5433/traces",
        "postgres://:p@w@h/d",
    ],
)
def test_an_unencoded_at_sign_in_a_password_is_refused_without_showing_it(url: str) -> None:
    """SQLAlchemy ends the password at the first ``@``, so the rest of it became part of the host name, which
    `storage.url` showed and every context carried. Such a URL is refused, and the error shows no part of it."""
    with pytest.raises(InvalidStorageURL, match="%40") as info:
        SqlSessionStorage(url)
    message = str(info.value)
    assert "pa@" not in message and "ss@" not in message and "cr@" not in message and "et@" not in message
    assert "p@w" not in message and "w@h" not in message
    assert "db.example" in message or "@h/d" in message


def test_an_in_memory_engine_of_one_database_per_thread_is_named_with_the_remedy(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import threading

    from sqlalchemy import create_engine
    from sqlalchemy.pool import StaticPool

    per_thread = create_engine("sqlite://")  # SQLAlchemy's default for in-memory SQLite: a connection per thread
    with caplog.at_level("WARNING", logger="session_storage_sql"):
        storage = SqlSessionStorage(engine=per_thread)
    assert "StaticPool" in caplog.text and "SingletonThreadPool" in caplog.text
    storage.add_trace(["root"], "s", Trace(name="here"))
    failures: list[BaseException] = []

    def elsewhere() -> None:
        try:
            storage.add_trace(["root"], "s", Trace(name="there"))
        except StorageError as exc:  # its own, empty database: no table there
            failures.append(exc)

    thread = threading.Thread(target=elsewhere)
    thread.start()
    thread.join()
    assert len(failures) == 1  # what the warning said; nothing silent
    per_thread.dispose()

    caplog.clear()
    shared = create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})
    with caplog.at_level("WARNING", logger="session_storage_sql"):
        storage = SqlSessionStorage(engine=shared)
    assert caplog.text == ""
    thread = threading.Thread(target=lambda: storage.add_trace(["root"], "s", Trace(name="there")))
    thread.start()
    thread.join()
    assert [t.name for t in storage.get_traces("root")] == ["there"]
    shared.dispose()
