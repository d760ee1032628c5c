"""open_storage, the entry-point registries, restore_session, InMemoryStorage and Trace."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import core_testing_storage
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from session_core import (
    ContextVarSession,
    InMemoryStorage,
    SessionStorage,
    Trace,
    UnknownStorageScheme,
    get_current_metadata,
    helpers,
    open_storage,
    record_trace,
    register_ambient_provider,
    register_backend,
    register_storage_scheme,
    registry,
    restore_session,
    storage_schemes,
)


def test_memory_scheme_is_process_wide():
    assert open_storage("memory://a") is open_storage("memory://a")
    assert open_storage("memory://a") is not open_storage("memory://b")
    assert isinstance(open_storage("memory://"), SessionStorage)


@pytest.mark.parametrize(
    ("url", "hint"),
    [
        ("sqlite:///x.db", "session-storage-sql"),
        ("postgresql+psycopg://h/db", "session-storage-sql[postgres]"),
        ("nosuch://x", "Schemes available here"),
    ],
)
def test_unknown_scheme_names_what_to_install(url, hint):
    if url.split(":")[0].split("+")[0] in storage_schemes():
        pytest.skip(f"{url.split(':')[0]} storage is installed in this environment")
    with pytest.raises(UnknownStorageScheme, match=hint.replace("[", r"\[").replace("]", r"\]")):
        open_storage(url)


def test_unknown_scheme_never_echoes_password():
    with pytest.raises(UnknownStorageScheme) as info:
        open_storage("nosuch://user:hunter2@host/db")
    assert "hunter2" not in str(info.value)


class RelativeJsonl(core_testing_storage.JsonlStorage):
    """As session-storage-sql opens ``sqlite:///relative.db``: a relative path is the file in the working
    directory, and ``url`` is its absolute address; ``user:secret@`` is left out of ``url``, as a password is."""

    @classmethod
    def from_url(cls, url: str) -> RelativeJsonl:
        path = url[len("reljsonl://") :].rpartition("@")[2]
        return cls(Path(path).absolute())

    @property
    def url(self) -> str:
        return f"reljsonl://{self.path}"


@pytest.fixture
def reljsonl():
    register_storage_scheme("reljsonl", RelativeJsonl.from_url)
    yield "reljsonl"
    registry._explicit[registry.STORAGE_GROUP].pop("reljsonl")


def test_open_storage_resolves_a_relative_url_in_the_working_directory_of_each_call(reljsonl, tmp_path, monkeypatch):
    """Storages were cached by URL alone: after chdir, ``sqlite:///traces.db`` still gave the old directory's file,
    and its absolute URL another storage object for that same file."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    monkeypatch.chdir(first)
    here = open_storage("reljsonl://traces.jsonl")
    assert here.path == first / "traces.jsonl"
    assert open_storage("reljsonl://traces.jsonl") is here
    assert open_storage(here.url) is here  # the same file by its absolute URL: the same storage
    monkeypatch.chdir(second)
    there = open_storage("reljsonl://traces.jsonl")
    assert there.path == second / "traces.jsonl" and there is not here
    assert open_storage(here.url) is here  # an absolute URL means the same file from any directory
    with ContextVarSession("in second", storage=there) as s:
        record_trace(name="second")
    assert [t.name for t in open_storage(there.url).get_traces(s.uid)] == ["second"]
    assert here.get_traces(s.uid) == []
    monkeypatch.chdir(first)
    assert open_storage("reljsonl://traces.jsonl") is here
    assert open_storage("reljsonl://./traces.jsonl") is here  # another spelling of that file


def test_open_storage_keeps_a_url_with_a_secret_apart(reljsonl, tmp_path, monkeypatch):
    """A URL holding a password connects with it: it is not swapped for a storage opened without one."""
    monkeypatch.chdir(tmp_path)
    plain = open_storage(f"reljsonl://{tmp_path}/s.jsonl")
    secret = open_storage(f"reljsonl://user:pw@{tmp_path}/s.jsonl")
    assert secret.url == plain.url and secret is not plain
    assert open_storage(f"reljsonl://user:pw@{tmp_path}/s.jsonl") is secret
    assert open_storage(f"reljsonl://user@{tmp_path}/s.jsonl") is plain  # no secret: the storage of its place


def test_restore_session_uses_registered_backend_and_falls_back(caplog):
    class CustomSession(ContextVarSession):
        __slots__ = ()

    register_backend("custom-test", CustomSession)
    try:
        with ContextVarSession("b") as s:
            ctx = {**s.to_context(), "backend": "custom-test"}
        assert type(restore_session(ctx)) is CustomSession
        assert type(restore_session({**ctx, "backend": "not-installed"})) is ContextVarSession
        assert "not installed here" in caplog.text
    finally:
        registry._explicit[registry.BACKEND_GROUP].pop("custom-test")


def test_ambient_provider_feeds_helpers_outside_sessions():
    ambient = {"v": 1, "name": "ambient", "uid_chain": ["aa"], "metadata": {"from": "baggage"}}
    register_ambient_provider("test-ambient", lambda: ambient)
    try:
        assert get_current_metadata() == {"from": "baggage"}
        with ContextVarSession("real", x=1):
            assert get_current_metadata() == {"x": 1}  # a session object wins
    finally:
        registry._explicit[registry.AMBIENT_GROUP].pop("test-ambient")
    assert get_current_metadata() == {}


def test_record_trace_under_an_ambient_context_alone_stores_nothing_and_says_so_once(monkeypatch, caplog):
    """An ambient context is the caller's session seen from here, not a session open here: nothing is stored
    (there is no chain of this process's own to store under) and one warning says what to do."""
    ambient = {"v": 1, "name": "caller", "uid_chain": ["root1"], "metadata": {"team": "a"}}
    monkeypatch.setattr(helpers, "_warned_ambient", False)
    assert record_trace(name="outside") is None
    assert caplog.records == []  # outside any session and any ambient context: nothing to say
    register_ambient_provider("test-ambient", lambda: ambient)
    try:
        with caplog.at_level("WARNING", logger="session_core"):
            assert [record_trace(name=f"t{i}") for i in range(3)] == [None] * 3
            with ContextVarSession("here") as here:
                assert record_trace(name="in a session") is not None
    finally:
        registry._explicit[registry.AMBIENT_GROUP].pop("test-ambient")
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "'caller'" in said[0] and "OTelSession" in said[0]
    assert [t.name for t in here.llm_calls] == ["in a session"]


def test_in_memory_storage_thread_safe_and_idempotent():
    storage = InMemoryStorage()
    traces = [Trace(name=f"t{i}") for i in range(200)]

    def add(chunk):
        for t in chunk:
            storage.add_trace(["root", "child"], "s", t)

    threads = [threading.Thread(target=add, args=(traces,)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(storage.get_traces("root")) == 200
    assert len(storage) == 200
    assert storage.get_traces("root", session_name="other") == []


def test_in_memory_storage_returns_oldest_first_ties_in_the_order_added():
    """As the SQL storage does: a trace recorded late with an earlier timestamp comes first."""
    storage = InMemoryStorage()
    late, first, tied_a, tied_b = (
        Trace(name=n, timestamp=ts) for n, ts in (("late", 5.0), ("first", 1.0), ("tied-a", 3.0), ("tied-b", 3.0))
    )
    for trace in (late, tied_a, first, tied_b):
        storage.add_trace(["root", "leaf"], "s", trace)
    assert [t.name for t in storage.get_traces("root")] == ["first", "tied-a", "tied-b", "late"]
    odd = Trace(name="odd", timestamp="yesterday")  # type: ignore[arg-type]  # not a number: the order added
    storage.add_trace(["root"], "s", odd)
    assert [t.name for t in storage.get_traces("root")] == ["late", "tied-a", "first", "tied-b", "odd"]


trace_fields = st.fixed_dictionaries(
    {},
    optional={
        "name": st.text(max_size=10),
        "input": st.text() | st.lists(st.dictionaries(st.text(max_size=5), st.text(max_size=5))),
        "output": st.text() | st.none(),
        "model": st.text(max_size=10) | st.none(),
        "latency_ms": st.floats(0, 1e6),
        "tokens": st.integers(0, 10**6)
        | st.fixed_dictionaries(
            {"prompt": st.integers(0, 99), "completion": st.integers(0, 99), "total": st.integers(0, 200)}
        ),
        "metadata": st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=3),
        "parent_trace_id": st.text(max_size=8) | st.none(),
        "cost": st.floats(0, 10) | st.none(),
        "environment": st.text(max_size=5) | st.none(),
        "tags": st.lists(st.text(max_size=5), max_size=3) | st.none(),
    },
)


@settings(max_examples=200)
@given(trace_fields)
def test_trace_dict_round_trip_through_json(fields):
    trace = Trace(**fields)
    assert Trace.from_dict(json.loads(json.dumps(trace.to_dict()))) == trace


def test_trace_defaults_and_unknown_keys_kept():
    a, b = Trace(), Trace()
    assert a.trace_id != b.trace_id and len(a.trace_id) == 32 and a.timestamp > 0
    t = Trace.from_dict({"name": "x", "vendor_field": 1})
    assert t.metadata == {"extra": {"vendor_field": 1}}
    with pytest.raises(TypeError):
        Trace.from_dict(["not", "a", "dict"])  # type: ignore[arg-type]
