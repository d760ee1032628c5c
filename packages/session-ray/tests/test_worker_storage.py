"""Where a restored call writes: the context's storage by URL, credentials only from the worker's environment."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

import session_ray
from session_core import (
    ContextVarSession,
    InMemoryStorage,
    InvalidSessionContext,
    StorageError,
    StorageNotAddressable,
    record_trace,
    register_storage_scheme,
)
from session_ray import ray_entrypoint

_SCHEME_IDS = itertools.count()


class UrlStorage(InMemoryStorage):
    """An in-process storage that reports the URL it was opened with (the password stays out of `url`)."""

    def __init__(self, opened_with: str, url: str) -> None:
        super().__init__()
        self.opened_with = opened_with
        self.url = url  # type: ignore[misc]


@pytest.fixture
def scheme() -> tuple[str, list[UrlStorage]]:
    """A fresh URL scheme whose factory records every storage it opens."""
    name = f"urltest{next(_SCHEME_IDS)}"
    opened: list[UrlStorage] = []

    def factory(url: str) -> UrlStorage:
        storage = UrlStorage(url, url.replace(":secret@", "@"))
        opened.append(storage)
        return storage

    register_storage_scheme(name, factory)
    return name, opened


@ray_entrypoint
def write(label: str) -> None:
    record_trace(name=label)


def _ctx(url: str | None) -> dict[str, Any]:
    ctx: dict[str, Any] = {"v": 1, "name": "remote-parent", "uid_chain": ["rootuid"], "metadata": {}}
    if url is not None:
        ctx["storage_url"] = url
    return ctx


def test_password_comes_from_the_workers_environment(
    scheme: tuple[str, list[UrlStorage]], monkeypatch: pytest.MonkeyPatch
) -> None:
    name, opened = scheme
    monkeypatch.setenv("SESSION_STORAGE_URL", f"{name}://traces:secret@db.internal:5432/traces")
    write("one", _session_ctx=_ctx(f"{name}://traces@db.internal:5432/traces"))
    write("two", _session_ctx=_ctx(f"{name}://traces@db.internal:5432/traces"))
    [storage] = opened  # opened once per process, then reused
    assert storage.opened_with == f"{name}://traces:secret@db.internal:5432/traces"
    assert [t.name for t in storage.get_traces("rootuid")] == ["one", "two"]


def test_an_environment_naming_another_storage_does_not_redirect_the_context(
    scheme: tuple[str, list[UrlStorage]], monkeypatch: pytest.MonkeyPatch
) -> None:
    name, opened = scheme
    monkeypatch.setenv("SESSION_STORAGE_URL", f"{name}://other:secret@elsewhere/db")
    write("x", _session_ctx=_ctx(f"{name}://traces@db.internal/traces"))
    assert [s.opened_with for s in opened] == [f"{name}://traces@db.internal/traces"]


def test_a_context_without_url_uses_the_workers_configured_storage(
    scheme: tuple[str, list[UrlStorage]], monkeypatch: pytest.MonkeyPatch
) -> None:
    name, opened = scheme
    monkeypatch.setenv("SESSION_STORAGE_URL", f"{name}://svc/traces")
    write("ambient", _session_ctx=_ctx(None))
    [storage] = opened
    assert [t.name for t in storage.get_traces("rootuid")] == ["ambient"]


def test_without_any_storage_the_call_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SESSION_STORAGE_URL", raising=False)
    with pytest.raises(StorageNotAddressable, match=r"\$SESSION_STORAGE_URL"):
        write("nowhere", _session_ctx=_ctx(None))


def test_an_unknown_scheme_is_a_storage_error_naming_the_url() -> None:
    with pytest.raises(StorageError, match=r"nosuchscheme://host/db") as info:
        write("nowhere", _session_ctx=_ctx("nosuchscheme://host/db"))
    assert "reachable from every node" in str(info.value)


def test_the_sent_context_never_carries_the_password(scheme: tuple[str, list[UrlStorage]]) -> None:
    name, _ = scheme
    storage = UrlStorage("", f"{name}://traces:secret@db.internal/traces")
    with ContextVarSession("with-password", storage=storage):
        ctx = session_ray.capture_context()
    assert ctx is not None
    assert ctx["storage_url"] == f"{name}://traces@db.internal/traces"
    assert "secret" not in repr(ctx)


def test_capture_refuses_process_local_storage_unless_told_not_to_check() -> None:
    assert session_ray.capture_context() is None
    with ContextVarSession("local", storage=InMemoryStorage()):
        with pytest.raises(StorageNotAddressable, match="lives in this process only"):
            session_ray.capture_context()
        ctx = session_ray.capture_context(check_storage=False)
    assert ctx is not None and ctx["name"] == "local"


@pytest.mark.parametrize("env", [False, True])
def test_a_malformed_context_opens_no_storage(
    scheme: tuple[str, list[UrlStorage]], monkeypatch: pytest.MonkeyPatch, env: bool
) -> None:
    """The context is checked before anything is opened: a bad one creates no database file or connection."""
    name, opened = scheme
    if env:
        monkeypatch.setenv("SESSION_STORAGE_URL", f"{name}://workers/db")
    bad = {**_ctx(None if env else f"{name}://traces/db"), "uid_chain": ["no spaces allowed"]}
    with pytest.raises(InvalidSessionContext, match="uid_chain"):
        write("x", _session_ctx=bad)
    assert opened == []
