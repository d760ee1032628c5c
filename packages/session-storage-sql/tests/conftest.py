"""Fixtures: real SQLite files under tmp_path, and real PostgreSQL (a fresh schema per test) when
``SESSION_TEST_POSTGRES_URL`` is set."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

# Helper modules that child processes import by name (spawn pickles functions by module path).
sys.path.insert(0, str(Path(__file__).parent / "helpers"))

from session_core import stack

POSTGRES_ENV = "SESSION_TEST_POSTGRES_URL"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test sees the developer's $SESSION_STORAGE_URL, and none leaks an active session."""
    monkeypatch.delenv("SESSION_STORAGE_URL", raising=False)
    assert stack.ACTIVE.get() == (), "a previous test leaked an active session"
    yield
    leaked = stack.ACTIVE.get()
    stack.ACTIVE.set(())
    assert leaked == (), f"test leaked active sessions: {leaked}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that runs against PostgreSQL, so ``-m "not postgres"`` leaves them out."""
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        param = getattr(getattr(item, "callspec", None), "params", {})
        if "postgres_url" in fixtures or "postgresql" in (param.get("storage_url"), param.get("backend")):
            item.add_marker(pytest.mark.postgres)


def postgres_base_url() -> str | None:
    return os.environ.get(POSTGRES_ENV) or None


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a schema created for this test alone (dropped afterwards)."""
    base = postgres_base_url()
    if base is None:
        pytest.skip(f"PostgreSQL tests need {POSTGRES_ENV} (e.g. postgresql://postgres@127.0.0.1:5432/test)")
    psycopg = pytest.importorskip("psycopg")
    schema = f"sst_{uuid.uuid4().hex[:12]}"
    plain = base.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in base else "?"
    options = quote(f"-csearch_path={schema}", safe="")
    try:
        yield f"{base}{sep}options={options}&application_name={schema}"
    finally:
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s", (schema,)
            )
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using it runs against a SQLite file and against PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'sessions.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def storage(storage_url: str) -> Iterator[object]:
    from session_storage_sql import SqlSessionStorage

    store = SqlSessionStorage(storage_url)
    try:
        yield store
    finally:
        store.close()
