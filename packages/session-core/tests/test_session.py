"""ContextVarSession: naming, uids, metadata merging, storage defaults, the stack, errors, repr."""

from __future__ import annotations

import copy
import pickle

import pytest

from session_core import (
    ContextVarSession,
    InMemoryStorage,
    InvalidSessionContext,
    SessionProtocol,
    SessionStateError,
    Trace,
    get_active_session_uids,
    get_active_sessions,
    get_current_metadata,
    get_current_session,
    get_current_session_name,
    open_storage,
    record_trace,
    validate_context,
)


class TestBasics:
    def test_given_name_metadata_and_protocol(self):
        s = ContextVarSession("rollout", task_id=7, arm="b")
        assert s.name == "rollout"
        assert s.metadata == {"task_id": 7, "arm": "b"}
        assert isinstance(s, SessionProtocol)

    def test_generated_name_shape(self):
        name = ContextVarSession().name
        assert name.startswith("sess_") and len(name) == len("sess_") + 16
        int(name[5:], 16)

    def test_uids_unique_and_hex(self):
        uids = {ContextVarSession().uid for _ in range(10_000)}
        assert len(uids) == 10_000
        assert all(len(u) == 32 and int(u, 16) >= 0 for u in uids)

    def test_name_must_be_str(self):
        with pytest.raises(TypeError, match="name must be a str"):
            ContextVarSession(123)  # type: ignore[arg-type]

    def test_default_storage_is_in_memory_per_root(self, monkeypatch):
        monkeypatch.delenv("SESSION_STORAGE_URL", raising=False)
        a, b = ContextVarSession(), ContextVarSession()
        assert isinstance(a.storage, InMemoryStorage)
        assert a.storage is not b.storage

    def test_default_storage_from_env(self, monkeypatch):
        monkeypatch.setenv("SESSION_STORAGE_URL", "memory://env-test")
        s = ContextVarSession()
        assert s.storage is open_storage("memory://env-test")

    def test_repr_shows_class_name_uid_depth_storage(self):
        storage = InMemoryStorage()
        with ContextVarSession("outer", storage=storage), ContextVarSession("inner") as inner:
            text = repr(inner)
        assert "ContextVarSession(" in text and "'inner'" in text and inner.uid in text and "depth=2" in text
        assert "InMemoryStorage" in text


class TestNesting:
    def test_chain_name_metadata_and_storage_inherit(self):
        storage = InMemoryStorage()
        with ContextVarSession("outer", storage=storage, a=1, b=1) as outer:
            with ContextVarSession(b=2, c=3) as inner:
                assert inner.name == "outer"
                assert inner.uid_chain == [outer.uid, inner.uid]
                assert get_current_metadata() == {"a": 1, "b": 2, "c": 3}
                assert inner.metadata == {"b": 2, "c": 3}
                assert inner.storage is storage
                assert get_active_sessions() == [outer, inner]
                assert get_active_session_uids() == inner.uid_chain
            assert get_current_metadata() == {"a": 1, "b": 1}
            assert get_current_session() is outer
        assert get_current_session() is None
        assert get_current_metadata() == {}
        assert get_current_session_name() is None

    def test_parent_sees_descendant_traces_child_does_not_see_siblings(self):
        with ContextVarSession("root") as root:
            record_trace(name="r")
            with ContextVarSession("a") as a:
                record_trace(name="a1")
                with ContextVarSession("a.x"):
                    record_trace(name="ax")
            with ContextVarSession("b") as b:
                record_trace(name="b1")
        assert [t.name for t in root.llm_calls] == ["r", "a1", "ax", "b1"]
        assert [t.name for t in a.llm_calls] == ["a1", "ax"]
        assert [t.name for t in b.llm_calls] == ["b1"]
        assert len(root) == 4

    def test_deep_nesting(self):
        sessions = []
        storage = InMemoryStorage()

        def nest(depth):
            with ContextVarSession(f"d{depth}", storage=storage if depth == 0 else None, level=depth) as s:
                sessions.append(s)
                if depth < 49:
                    nest(depth + 1)
                else:
                    record_trace(name="leaf")
                    assert get_current_metadata() == {"level": 49}
                    assert len(get_active_session_uids()) == 50

        nest(0)
        assert all(len(s.llm_calls) == 1 for s in sessions)

    def test_nesting_past_the_wire_limit_works_here_and_is_refused_by_the_sender(self):
        """64 uids is what a context carries; a 65-deep session still records locally, but trying to send it
        fails in the sender, naming the limit, instead of in whoever receives it."""
        from contextlib import ExitStack

        from session_core import bind_session, session_baggage

        storage = InMemoryStorage()
        with ExitStack() as stack:
            root = stack.enter_context(ContextVarSession("deep", storage=storage))
            for depth in range(1, 64):
                deepest = stack.enter_context(ContextVarSession(f"d{depth}"))
            assert len(deepest.to_context()["uid_chain"]) == 64  # at the limit: travels
            too_deep = stack.enter_context(ContextVarSession("d64", k=1))
            record_trace(name="leaf")
            for send in (too_deep.to_context, lambda: bind_session(len), lambda: session_baggage(too_deep)):
                with pytest.raises(InvalidSessionContext, match="65 deep, over the limit of 64"):
                    send()
        assert [t.name for t in root.llm_calls] == ["leaf"] == [t.name for t in too_deep.llm_calls]

    @pytest.mark.parametrize(
        ("name", "problem"), [("", "must be a non-empty string"), ("n" * 257, "257 characters long, over the limit")]
    )
    def test_a_name_receivers_refuse_works_here_and_is_refused_by_the_sender(self, name, problem):
        """A context's name is 1-256 characters wherever it is received; a session named otherwise still records
        locally, but trying to send it fails in the sender, naming the problem, instead of in whoever receives it
        (a baggage header was refused there with a warning, a bound thread or process raised)."""
        from session_core import bind_session, decode_baggage, session_baggage

        with ContextVarSession(name, storage=InMemoryStorage()) as session:
            record_trace(name="leaf")
            for send in (session.to_context, lambda: bind_session(len), lambda: session_baggage(session)):
                with pytest.raises(InvalidSessionContext, match=problem):
                    send()
        assert [t.name for t in session.llm_calls] == ["leaf"]
        with ContextVarSession("n" * 256) as longest:  # at the limit: travels
            assert ContextVarSession.from_context(longest.to_context()).name == "n" * 256
            assert decode_baggage(session_baggage(longest), strict=True)["name"] == "n" * 256

    def test_session_created_outside_adopts_parent_where_entered(self):
        storage = InMemoryStorage()
        late = ContextVarSession("late", x=2)
        with ContextVarSession("outer", storage=storage, x=1, y=1) as outer, late:
            assert late.uid_chain == [outer.uid, late.uid]
            assert get_current_metadata() == {"x": 2, "y": 1}
            assert late.storage is storage


class TestStackErrors:
    def test_entering_twice_at_once_raises(self):
        s = ContextVarSession("once")
        with s:
            with pytest.raises(SessionStateError, match="already active"):
                s.__enter__()
            assert get_active_sessions() == [s]

    def test_reenter_after_exit_is_fine(self):
        s = ContextVarSession("again")
        with s:
            pass
        with s:
            assert get_current_session() is s

    def test_out_of_order_exit_raises_and_stack_stays_consistent(self):
        a, b = ContextVarSession("a"), ContextVarSession("b")
        a.__enter__()
        b.__enter__()
        with pytest.raises(SessionStateError, match="reverse order"):
            a.__exit__(None, None, None)
        assert get_active_sessions() == [b]
        b.__exit__(None, None, None)
        assert get_active_sessions() == []

    def test_exit_without_enter_raises(self):
        with pytest.raises(SessionStateError, match="not active"):
            ContextVarSession("never").__exit__(None, None, None)

    def test_exception_propagates_and_state_restored(self):
        with ContextVarSession("outer", k=1):
            with pytest.raises(KeyError):
                with ContextVarSession("inner", k=2):
                    raise KeyError("boom")
            assert get_current_session_name() == "outer"
            assert get_current_metadata() == {"k": 1}


class TestContext:
    def test_to_context_json_and_pickle_types_kept(self):
        import json

        with ContextVarSession("ctx", storage=InMemoryStorage(), i=1, f=1.5, s="x", b=True, n=None) as outer:
            with ContextVarSession(nested={"l": [1, 2]}) as s:
                ctx = s.to_context()
        assert ctx["name"] == "ctx"
        assert ctx["uid_chain"] == [outer.uid, s.uid]
        assert ctx["metadata"] == {"i": 1, "f": 1.5, "s": "x", "b": True, "n": None, "nested": {"l": [1, 2]}}
        assert "storage_url" not in ctx  # in-memory storage has no URL
        assert json.loads(json.dumps(ctx)) == ctx
        assert pickle.loads(pickle.dumps(ctx)) == ctx
        assert type(json.loads(json.dumps(ctx))["metadata"]["i"]) is int

    def test_from_context_continues_chain(self, jsonl_storage):
        with ContextVarSession("parent", storage=jsonl_storage, a=1) as parent:
            ctx = parent.to_context()
        assert ctx["storage_url"] == jsonl_storage.url
        child = ContextVarSession.from_context(ctx, b=2)
        with child:
            assert child.uid_chain == [parent.uid, child.uid]
            assert child.name == "parent"
            assert get_current_metadata() == {"a": 1, "b": 2}
            record_trace(name="from child")
        assert [t.name for t in parent.llm_calls] == ["from child"]

    def test_from_context_storage_argument_wins(self):
        storage = InMemoryStorage()
        with ContextVarSession("p") as p:
            ctx = p.to_context()
        with ContextVarSession.from_context(ctx, storage=storage):
            record_trace(name="t")
        assert [t.name for t in storage.get_traces(p.uid)] == ["t"]

    @pytest.mark.parametrize(
        ("ctx", "field"),
        [
            ("not a dict", "expected a dict"),
            ({"uid_chain": ["a"]}, "'name'"),
            ({"name": "", "uid_chain": ["a"]}, "'name'"),
            ({"name": "x"}, "'uid_chain'"),
            ({"name": "x", "uid_chain": []}, "'uid_chain'"),
            ({"name": "x", "uid_chain": ["bad uid!"]}, "'uid_chain'"),
            ({"name": "x", "uid_chain": [1]}, "'uid_chain'"),
            ({"name": "x", "uid_chain": ["a"], "metadata": []}, "'metadata'"),
            ({"name": "x", "uid_chain": ["a"], "metadata": {"k": object()}}, "'metadata'"),
            ({"name": "x", "uid_chain": ["a"], "v": 99}, "'v'"),
            ({"name": "x", "uid_chain": ["a"], "storage_url": 5}, "'storage_url'"),
            ({"name": "x" * 1000, "uid_chain": ["a"]}, "'name'"),
            ({"name": "x", "uid_chain": ["a"] * 100}, "'uid_chain'"),
        ],
    )
    def test_malformed_context_names_the_field(self, ctx, field):
        with pytest.raises(InvalidSessionContext, match=field):
            ContextVarSession.from_context(ctx)

    def test_invalid_context_is_value_error(self):
        assert issubclass(InvalidSessionContext, ValueError)

    def test_unserializable_metadata_names_key(self):
        from session_core import UnserializableMetadata

        with ContextVarSession(bad={1, 2}) as s:
            with pytest.raises(UnserializableMetadata, match="bad"):
                s.to_context()

    def test_storage_url_never_carries_password(self):
        from session_core import redact_url

        assert redact_url("postgresql://user:s3cret@db:5432/x") == "postgresql://user@db:5432/x"
        ctx = ContextVarSession.from_context(
            {"name": "x", "uid_chain": ["a"], "storage_url": "postgresql://u:pw@h/db"}, storage=InMemoryStorage()
        )._ctx
        assert ctx is not None and "pw" not in ctx["storage_url"]

    @pytest.mark.parametrize(
        ("url", "redacted"),
        [
            ("postgresql://user:p#ss@db/x", "postgresql://user@db/x"),  # '#', '?', '/' end urlsplit's netloc
            ("postgresql://user:s3cr/et@db/x", "postgresql://user@db/x"),
            ("postgresql://user:pa@ss@db/x", "postgresql://user@db/x"),
            ("postgresql://user:s3cret@db:notaport/x", "postgresql://user@db:notaport/x"),  # was a ValueError
            ("postgresql://user:s3cret@[::1/x", "postgresql://user@[::1/x"),  # urlsplit fails: was returned whole
            ("postgresql://user@db/x?sslmode=require&password=s3cret", "postgresql://user@db/x?sslmode=require"),
            ("postgresql:///x?PASSWORD=s3cret&application_name=a@b", "postgresql:///x?application_name=a@b"),
            (
                "postgresql://user:s3cret@DB.Example:5432/x?application_name=a@b",
                "postgresql://user@DB.Example:5432/x?application_name=a@b",
            ),
            ("postgresql://db/x?password=s3cret", "postgresql://db/x"),
            # percent-encoded names: SQLAlchemy (parse_qsl) decodes them, so libpq gets password=s3cret
            ("postgresql://user@db/x?pass%77ord=s3cret", "postgresql://user@db/x"),
            ("postgresql://db/x?sslmode=require&%70assword=s3cret", "postgresql://db/x?sslmode=require"),
            ("postgresql://db/x?ssl%50ASSWORD=s3cret&application_name=a", "postgresql://db/x?application_name=a"),
            ("postgresql://db:5432/x", "postgresql://db:5432/x"),
            ("sqlite:////tmp/a@b:c.db", "sqlite:////tmp/a@b:c.db"),
            # a user name holding '@' (Azure's "user@server") and a password holding '?', '/' or '#': SQLAlchemy
            # reads the password 'pa?ss', which was kept
            ("postgresql://me@server:pa?ss@db.example/x", "postgresql://me@server@db.example/x"),
            ("postgresql://me@server:pa/ss@db/x?sslmode=require", "postgresql://me@server@db/x?sslmode=require"),
            ("postgresql://me@server:pa#ss@db:5432/x", "postgresql://me@server@db:5432/x"),
            (
                "postgresql://me@server:5432/x?application_name=a@b",
                "postgresql://me@server:5432/x?application_name=a@b",
            ),
        ],
    )
    def test_redact_url_never_returns_a_password(self, url, redacted):
        from session_core import redact_url

        assert redact_url(url) == redacted
        ctx = validate_context({"name": "x", "uid_chain": ["a"], "storage_url": url})
        assert ctx["storage_url"] == redacted


class TestRecordTrace:
    def test_outside_session_returns_none(self):
        assert record_trace(name="nowhere") is None

    def test_fields_filled_and_trace_metadata_wins(self):
        with ContextVarSession("rec", a=1, b=1) as s:
            t = record_trace(
                name="call", model="m", tokens={"prompt": 1, "completion": 2, "total": 3}, metadata={"b": 2}
            )
        assert t is not None and t.session_name == "rec" and t.metadata == {"a": 1, "b": 2}
        assert s.llm_calls == [t]

    def test_record_given_trace_and_dedup(self):
        with ContextVarSession("dup") as s:
            t = Trace(name="once")
            record_trace(t)
            record_trace(t)
        assert len(s.llm_calls) == 1

    def test_clear_calls(self):
        with ContextVarSession("c") as root:
            with ContextVarSession("child") as child:
                record_trace(name="x")
            record_trace(name="y")
        child.clear_calls()
        assert [t.name for t in root.llm_calls] == ["y"]
        root.clear_calls()
        assert root.llm_calls == []


class TestCopies:
    def test_copy_is_the_same_session_not_entered(self):
        storage = InMemoryStorage()
        with ContextVarSession("outer", storage=storage, a=1):
            s = ContextVarSession(b=2)
            twin = copy.copy(s)  # before the uid was ever read: both must still agree on it
            with s:
                assert s.uid == twin.uid and s.uid_chain == twin.uid_chain and twin.name == "outer"
                active_twin = copy.copy(s)
                assert s.is_active and not active_twin.is_active
        with active_twin:  # entered elsewhere: adopts no parent, as the original would
            record_trace(name="in the copy")
        assert active_twin.uid == s.uid and [t.name for t in s.llm_calls] == ["in the copy"]

    def test_deepcopy_copies_metadata_and_shares_storage(self):
        storage = InMemoryStorage()
        with ContextVarSession("outer", storage=storage, tags=["x"]) as outer:
            with ContextVarSession(own={"k": [1]}) as s:
                twin = copy.deepcopy(s)
                twin.metadata["own"]["k"].append(2)
                assert s.metadata == {"own": {"k": [1]}}
                assert twin.merged_metadata() == {"tags": ["x"], "own": {"k": [1, 2]}}
        assert twin.storage is storage and twin.parent is outer and twin.uid == s.uid
        pair = copy.deepcopy([s, s])
        assert pair[0] is pair[1]

    def test_pickle_keeps_identity_and_chain(self, jsonl_storage):
        with ContextVarSession("outer", storage=jsonl_storage, a=1) as outer:
            with ContextVarSession("inner", b=2) as inner:
                inner.metadata["c"] = 3
                twin = pickle.loads(pickle.dumps(inner))
        assert (twin.name, twin.uid, twin.uid_chain) == ("inner", inner.uid, [outer.uid, inner.uid])
        assert twin.merged_metadata() == {"a": 1, "b": 2, "c": 3} and not twin.is_active
        assert twin.storage.url == jsonl_storage.url
        with twin:
            record_trace(name="from the copy")
        assert [t.name for t in outer.llm_calls] == ["from the copy"]
