"""OTelSession: the session protocol, its span, its baggage, contexts — against the real OpenTelemetry API/SDK."""

from __future__ import annotations

import copy
import json
import logging
import os
import pickle
import threading

import pytest
from opentelemetry import baggage, propagate, trace
from opentelemetry.context import attach, detach

import session_core
from session_core import (
    ContextVarSession,
    InMemoryStorage,
    InvalidSessionContext,
    SessionProtocol,
    SessionStateError,
    Trace,
    bind_session,
    get_active_session_uids,
    get_current_metadata,
    get_current_session,
    get_current_session_name,
    record_trace,
    restore_session,
)
from session_otel import OTelSession, get_active_otel_sessions, get_current_otel_session, get_otel_metadata


def _session_spans(exporter):
    return [s for s in exporter.get_finished_spans() if s.name.startswith("session:")]


# -- the protocol ------------------------------------------------------------------------------------------------
def test_satisfies_the_session_protocol_and_registers_as_the_otel_backend():
    session = OTelSession("proto")
    assert isinstance(session, SessionProtocol)
    assert session_core.get_backend("otel") is OTelSession


def test_name_uid_chain_and_metadata_follow_contextvar_semantics():
    with OTelSession("outer", user="ann", n=1) as outer:
        assert get_current_session() is outer
        assert outer.uid_chain == [outer.uid]
        with OTelSession(n=2, extra=[1, 2]) as inner:
            assert inner.name == "outer"  # inherited
            assert inner.uid_chain == [outer.uid, inner.uid]
            assert inner.merged_metadata() == {"user": "ann", "n": 2, "extra": [1, 2]}
            assert get_current_metadata() == {"user": "ann", "n": 2, "extra": [1, 2]}
            assert get_active_otel_sessions() == [outer, inner]
            assert get_current_otel_session() is inner
        assert get_current_metadata() == {"user": "ann", "n": 1}
        assert get_current_session_name() == "outer"
    assert get_current_metadata() == {}
    assert get_current_session() is None
    assert get_current_otel_session() is None


def test_generated_names_and_unique_uids():
    uids = set()
    for _ in range(200):
        with OTelSession() as s:
            assert s.name.startswith("sess_")
            uids.add(s.uid)
    assert len(uids) == 200


def test_entering_an_active_session_twice_is_refused_and_the_stack_is_unchanged():
    with OTelSession("once") as s:
        with pytest.raises(SessionStateError):
            s.__enter__()
        assert get_current_session() is s
    assert get_current_session() is None


def test_a_session_object_can_be_entered_again_after_exit():
    s = OTelSession("again", k=1)
    with s:
        first = s.baggage_items
    with s:
        assert get_current_session() is s
        assert s.baggage_items == first


def test_traces_land_under_the_whole_chain(no_storage_env):
    storage = InMemoryStorage()
    with OTelSession("root", storage=storage, team="a") as root:
        record_trace(name="outer-call", model="m")
        with OTelSession("child", step=1) as child:
            assert child.storage is storage
            stored = record_trace(Trace(name="inner-call", tokens={"prompt": 3, "completion": 4, "total": 7}))
        assert stored is not None and stored.metadata == {"team": "a", "step": 1}
        assert [t.name for t in root.llm_calls] == ["outer-call", "inner-call"]
        assert [t.name for t in child.llm_calls] == ["inner-call"]
        assert len(root) == 2
        root.clear_calls()
        assert root.llm_calls == []


def test_async_with_works_and_tasks_inherit():
    import asyncio

    async def main() -> list[str]:
        async with OTelSession("async", a=1) as s:

            async def child() -> list[str]:
                async with OTelSession(b=2) as c:
                    assert get_otel_metadata() == {"a": 1, "b": 2}
                    return c.uid_chain

            chain = await asyncio.create_task(child())
            assert chain[0] == s.uid
            return chain

    assert len(asyncio.run(main())) == 2


def test_repr_names_class_name_uid_depth_and_storage():
    storage = InMemoryStorage()
    with OTelSession("shown", storage=storage) as s:
        text = repr(s)
    assert text.startswith("OTelSession(name='shown'")
    assert s.uid in text and "depth=1" in text and "InMemoryStorage" in text


# -- spans -----------------------------------------------------------------------------------------------------
def test_the_session_span_is_current_named_and_attributed(spans):
    tracer = trace.get_tracer("test")
    with OTelSession("rollout", task="t1", n=3, tags=["a", "b"], cfg={"lr": 0.1}) as s:
        assert trace.get_current_span() is s.span
        with tracer.start_as_current_span("llm-call"):
            pass
    (session_span,) = _session_spans(spans)
    assert session_span.name == "session:rollout"
    attrs = dict(session_span.attributes)
    assert attrs["session.id"] == s.uid
    assert attrs["session.name"] == "rollout"
    assert attrs["session.uid_chain"] == (s.uid,)
    assert attrs["session.metadata.task"] == "t1"
    assert attrs["session.metadata.n"] == 3
    assert attrs["session.metadata.tags"] == ("a", "b")
    assert json.loads(attrs["session.metadata.cfg"]) == {"lr": 0.1}
    (llm,) = [x for x in spans.get_finished_spans() if x.name == "llm-call"]
    assert llm.parent.span_id == session_span.context.span_id
    assert llm.context.trace_id == session_span.context.trace_id
    assert s.trace_id == f"{session_span.context.trace_id:032x}"
    assert s.span_id == f"{session_span.context.span_id:016x}"


def test_nested_session_spans_are_parent_and_child(spans):
    with OTelSession("outer") as outer, OTelSession("inner", k=1) as inner:
        pass
    by_name = {x.name: x for x in _session_spans(spans)}
    assert by_name["session:inner"].parent.span_id == by_name["session:outer"].context.span_id
    assert by_name["session:inner"].attributes["session.uid_chain"] == (outer.uid, inner.uid)
    assert by_name["session:inner"].attributes["session.metadata.k"] == 1
    assert outer.trace_id == inner.trace_id


def test_an_exception_is_recorded_on_the_span_and_re_raised(spans):
    with pytest.raises(ValueError, match="boom"), OTelSession("failing"):
        raise ValueError("boom")
    (span,) = _session_spans(spans)
    assert span.status.status_code == trace.StatusCode.ERROR
    assert "ValueError" in (span.status.description or "")
    (event,) = [e for e in span.events if e.name == "exception"]
    assert event.attributes["exception.type"] == "ValueError"
    assert event.attributes["exception.message"] == "boom"
    assert get_current_session() is None


def test_an_exception_whose_str_fails_is_re_raised_as_it_is_and_the_session_still_ends(spans):
    class Opaque(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no text for this one")

    with pytest.raises(Opaque):
        with OTelSession("opaque"):
            raise Opaque()
    assert get_current_session() is None and baggage.get_baggage("session.uids") is None
    (span,) = _session_spans(spans)
    assert span.status.status_code == trace.StatusCode.ERROR
    assert span.status.description == "Opaque"


def test_an_explicit_tracer_is_used(spans):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    own = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(own))
    with OTelSession("explicit", tracer=provider.get_tracer("mine")):
        pass
    assert [s.name for s in own.get_finished_spans()] == ["session:explicit"]
    assert _session_spans(spans) == []


def test_without_a_recording_provider_spans_are_non_recording_and_everything_else_works():
    with OTelSession("noop", tracer=trace.NoOpTracer(), k=1) as s:
        assert not s.span.is_recording()
        assert s.trace_id is None and s.span_id is None
        assert baggage.get_baggage("session.m.k") == "1"
        assert get_otel_metadata() == {"k": 1}
        ctx = s.to_otel_context()
    assert "traceparent" not in ctx.get("otel", {})
    assert ctx["backend"] == "otel"


def test_api_only_a_restored_traceparent_is_passed_on():
    from opentelemetry import propagate

    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    ctx = {
        "name": "remote",
        "uid_chain": ["r1"],
        "metadata": {},
        "backend": "otel",
        "otel": {"traceparent": traceparent},
    }
    with OTelSession.from_otel_context(ctx, tracer=trace.NoOpTracer()) as s:
        assert not s.span.is_recording()
        assert s.trace_id == "0af7651916cd43dd8448eb211c80319c"
        headers: dict[str, str] = {}
        propagate.inject(headers)
    assert headers["traceparent"] == traceparent
    assert session_core.decode_baggage(headers["baggage"])["uid_chain"] == ["r1", s.uid]


# -- contexts ----------------------------------------------------------------------------------------------------
def test_to_otel_context_is_json_and_pickle_safe_and_complete():
    storage = InMemoryStorage()
    with OTelSession("ctx", storage=storage, n=1, f=0.5, flag=True, none=None, nested={"a": [1, "x"]}) as s:
        ctx = s.to_otel_context()
    assert json.loads(json.dumps(ctx)) == ctx
    assert pickle.loads(pickle.dumps(ctx)) == ctx
    assert ctx["backend"] == "otel"
    assert ctx["name"] == "ctx" and ctx["uid_chain"] == [s.uid]
    assert ctx["metadata"] == {"n": 1, "f": 0.5, "flag": True, "none": None, "nested": {"a": [1, "x"]}}
    assert session_core.decode_baggage(ctx["otel"]["baggage"])["metadata"] == ctx["metadata"]
    assert ctx == s.to_context()
    if s.trace_id is not None:
        assert ctx["otel"]["traceparent"] == f"00-{s.trace_id}-{s.span_id}-{ctx['otel']['traceparent'][-2:]}"


def test_from_otel_context_continues_the_chain_the_trace_and_the_metadata(spans):
    with OTelSession("sender", storage=InMemoryStorage(), n=1) as sender:
        ctx = json.loads(json.dumps(sender.to_otel_context()))
    worker = OTelSession.from_otel_context(ctx, storage=InMemoryStorage())
    assert worker.uid_chain[:-1] == [sender.uid]
    assert worker.trace_id == sender.trace_id  # before entry: the sender's trace
    with worker:
        assert get_current_metadata() == {"n": 1}
        assert worker.name == "sender"
    worker_span = next(x for x in _session_spans(spans) if x.context.span_id == int(worker.span_id, 16))
    assert worker_span.parent.span_id == int(sender.span_id, 16)
    assert worker_span.context.trace_id == int(sender.trace_id, 16)
    assert worker_span.attributes["session.uid_chain"] == (sender.uid, worker.uid)


def test_restored_inside_the_servers_span_of_the_same_trace_the_session_span_goes_under_it(spans):
    """A server whose OpenTelemetry instrumentation extracted the caller's ``traceparent`` has its server span
    current (a child of the caller's span): a session restored from the caller's context there is a child of
    that server span, not its sibling (which left the server span without children and the request's work
    hanging off the caller's span)."""
    with OTelSession("caller", storage=InMemoryStorage()) as caller:
        ctx = json.loads(json.dumps(caller.to_otel_context()))
    tracer = trace.get_tracer("server-instrumentation")
    extracted = propagate.extract({"traceparent": ctx["otel"]["traceparent"]})
    with tracer.start_as_current_span("GET /", context=extracted, kind=trace.SpanKind.SERVER) as server:
        with OTelSession.from_otel_context(ctx, storage=InMemoryStorage()) as worker:
            pass
    worker_span = next(x for x in _session_spans(spans) if x.context.span_id == int(worker.span_id, 16))
    assert worker_span.context.trace_id == int(caller.trace_id, 16)
    assert worker_span.parent.span_id == server.get_span_context().span_id
    # with no span of that trace current (another process, a thread), the sender's span is the parent
    with OTelSession.from_otel_context(ctx, storage=InMemoryStorage()) as elsewhere:
        pass
    elsewhere_span = next(x for x in _session_spans(spans) if x.context.span_id == int(elsewhere.span_id, 16))
    assert elsewhere_span.parent.span_id == int(caller.span_id, 16)


def test_restore_session_and_bind_session_pick_otel_session_through_the_entry_point():
    storage = InMemoryStorage()
    with OTelSession("bound", storage=storage, k=1) as parent:
        restored = restore_session(parent.to_context())
        assert type(restored) is OTelSession

        def work() -> tuple[str, list[str], dict]:
            session = get_current_session()
            record_trace(name="from-thread")
            return type(session).__name__, get_active_session_uids(), get_otel_metadata()

        result: list = []
        bound = bind_session(work)
        thread = threading.Thread(target=lambda: result.append(bound()))
        thread.start()
        thread.join()
    kind, chain, meta = result[0]
    assert kind == "OTelSession"
    assert chain[0] == parent.uid and len(chain) == 2
    assert meta == {"k": 1}
    assert [t.name for t in parent.llm_calls] == ["from-thread"]


def test_from_otel_context_accepts_a_contextvar_session_context():
    with ContextVarSession("plain", storage=InMemoryStorage(), n=1) as plain:
        ctx = plain.to_context()
    with OTelSession.from_otel_context(ctx, storage=InMemoryStorage()) as s:
        assert s.uid_chain[0] == plain.uid
        assert get_otel_metadata() == {"n": 1}
        assert baggage.get_baggage("session.uids") == f"{plain.uid}.{s.uid}"


def test_malformed_contexts_raise_invalid_session_context():
    with pytest.raises(InvalidSessionContext, match="uid_chain"):
        OTelSession.from_otel_context({"name": "x", "uid_chain": []})
    with pytest.raises(InvalidSessionContext, match="otel"):
        OTelSession.from_otel_context({"name": "x", "uid_chain": ["a"], "otel": {"traceparent": 5}})


def test_a_malformed_traceparent_starts_a_new_trace_with_a_warning(caplog, spans):
    ctx = {"name": "x", "uid_chain": ["abc"], "metadata": {}, "otel": {"traceparent": "00-zz-yy-01"}}
    with caplog.at_level(logging.WARNING, logger="session_otel"):
        session = OTelSession.from_otel_context(ctx)
    assert "malformed traceparent" in caplog.text
    with session:
        pass
    (span,) = _session_spans(spans)
    assert span.parent is None
    assert span.attributes["session.uid_chain"] == ("abc", session.uid)


def test_an_oversized_baggage_field_is_left_out_with_a_short_warning_and_the_trace_continues(caplog, spans):
    with OTelSession("sender") as sender:
        ctx = sender.to_otel_context()
    ctx["otel"]["baggage"] = "tenant=t1," + ",".join(f"k{i}={'v' * 60}" for i in range(400))  # ≈ 26 kB
    with caplog.at_level(logging.WARNING):
        session = OTelSession.from_otel_context(ctx)
    assert "baggage field is" in caplog.text and "over the limit of 8192" in caplog.text
    assert max(len(r.getMessage()) for r in caplog.records) < 500  # never the whole header
    with session:
        assert baggage.get_baggage("tenant") is None
        assert session.trace_id == sender.trace_id


def test_non_session_baggage_travels_in_the_context_and_is_restored():
    token = attach(baggage.set_baggage("tenant", "acme"))
    try:
        with OTelSession("with-others", storage=InMemoryStorage()) as s:
            ctx = s.to_otel_context()
    finally:
        detach(token)
    assert "tenant=acme" in ctx["otel"]["baggage"]
    with OTelSession.from_otel_context(ctx, storage=InMemoryStorage()):
        assert baggage.get_baggage("tenant") == "acme"
    assert baggage.get_baggage("tenant") is None


def test_metadata_json_cannot_carry_stays_local_with_one_warning(caplog):
    marker = object()
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            with OTelSession("odd", unportable=marker, ok=1) as s:
                assert get_current_metadata()["unportable"] is marker
                assert "session.m.unportable" not in baggage.get_all()
                assert baggage.get_baggage("session.m.ok") == "1"
                headers: dict[str, str] = {}
                propagate.inject(headers)  # the send path leaves it out too, and does not warn again
                assert "session.m.unportable" not in headers["baggage"] and "session.m.ok=1" in headers["baggage"]
    warnings = [
        r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and "unportable" in r.getMessage()
    ]
    assert len(warnings) == 1, warnings  # once per key in the process, whichever path met it first
    assert "session 'odd'" in warnings[0] and "metadata['unportable'] is a object" in warnings[0]
    with pytest.raises(session_core.UnserializableMetadata):
        s.to_context()


def test_exiting_out_of_order_raises_and_leaves_no_session_in_the_otel_context():
    outer, inner = OTelSession("outer", a=1), OTelSession("inner", b=2)
    outer.__enter__()
    inner.__enter__()
    with pytest.raises(SessionStateError):
        outer.__exit__(None, None, None)
    assert get_current_session() is inner
    inner.__exit__(None, None, None)
    assert get_current_session() is None
    assert baggage.get_baggage("session.uids") is None
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_an_inner_session_left_active_by_an_out_of_order_exit_keeps_its_context_and_ends_its_span(spans):
    outer, inner = OTelSession("outer", a=1), OTelSession("inner", b=2)
    outer.__enter__()
    inner.__enter__()
    with pytest.raises(SessionStateError):
        outer.__exit__(None, None, None)
    assert baggage.get_baggage("session.uids") == ".".join(inner.uid_chain)  # as the stack says: inner is active
    assert trace.get_current_span() is inner.span
    inner.__exit__(None, None, None)
    assert baggage.get_baggage("session.uids") is None
    assert trace.get_current_span() is trace.INVALID_SPAN
    assert sorted(s.name for s in _session_spans(spans)) == ["session:inner", "session:outer"]


def test_a_generator_closed_while_its_caller_is_in_a_session_of_its_own_leaves_the_callers_span_whole(spans):
    def steps():
        with OTelSession("generator"):
            yield 1  # suspends inside the session: the caller now runs in it

    gen = steps()
    next(gen)
    with OTelSession("caller") as caller:
        with pytest.raises(SessionStateError):
            gen.close()  # the generator's session exits while the caller's, entered after it, is active
        assert get_current_session() is caller
        assert trace.get_current_span() is caller.span
    assert get_current_session() is None and baggage.get_baggage("session.uids") is None
    assert sorted(s.name for s in _session_spans(spans)) == ["session:caller", "session:generator"]


def test_an_exit_in_another_thread_ends_the_span_and_leaves_the_otel_context_for_the_sessions_own_exit(spans, caplog):
    session = OTelSession("here", a=1)
    session.__enter__()
    refused: list[BaseException] = []

    def leave() -> None:
        try:
            session.__exit__(None, None, None)
        except SessionStateError as exc:
            refused.append(exc)

    worker = threading.Thread(target=leave)
    worker.start()
    worker.join()
    assert len(refused) == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "OpenTelemetry failed to detach"
    assert [s.name for s in _session_spans(spans)] == ["session:here"]  # ended when asked
    assert get_current_session() is session  # still active here, as session-core says, with its OTel context
    assert baggage.get_baggage("session.m.a") == "1"
    assert trace.get_current_span().get_span_context() == session.span.get_span_context()
    session.__exit__(None, None, None)  # its exit in its own context restores the context before it
    assert get_current_session() is None and baggage.get_baggage("session.uids") is None
    assert trace.get_current_span() is trace.INVALID_SPAN
    assert [s.name for s in _session_spans(spans)] == ["session:here"]
    assert "ended span" not in caplog.text  # ended once


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_starts_outside_the_otel_session_it_was_forked_in(spans):
    """As session-core's stack: a fork-started worker must not attribute its later work to that session."""
    read_end, write_end = os.pipe()
    token = attach(baggage.set_baggage("tenant", "t1"))  # the application's own baggage, set before the session
    pid = -1
    report: dict[str, object] = {}
    try:
        with OTelSession("forked-in", a=1) as session:
            pid = os.fork()
            if pid == 0:
                headers: dict[str, str] = {}
                propagate.inject(headers)
                with trace.get_tracer("child").start_as_current_span("child-work") as work:
                    report["parent"] = work.parent is not None  # type: ignore[attr-defined]
                report["metadata"] = get_current_metadata()
                report["members"] = sorted(baggage.get_all())
                report["header"] = headers.get("baggage", "")
    finally:
        if pid == 0:  # the child, out of the session's block: it must not end (export) the session's span again
            report["session_spans"] = [s.name for s in _session_spans(spans)]
            os.write(write_end, json.dumps(report).encode())
            os._exit(0)
    detach(token)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        child = json.loads(pipe.read())
    os.waitpid(pid, 0)
    assert child == {
        "parent": False,
        "metadata": {},
        "members": ["tenant"],
        "header": "tenant=t1",
        "session_spans": [],
    }
    assert [s.name for s in _session_spans(spans)] == ["session:forked-in"]
    assert session.span is not None


def test_metadata_changed_between_entries_is_in_the_next_entrys_baggage_and_span(spans):
    s = OTelSession("again", step=0)
    for step in range(3):
        s.metadata["step"] = step
        with s:
            assert baggage.get_baggage("session.m.step") == str(step)
    steps = [x.attributes["session.metadata.step"] for x in _session_spans(spans)]
    assert steps == [0, 1, 2]


def test_a_renamed_session_carries_its_new_name_in_its_baggage_its_spans_and_the_spans_it_stamps(spans):
    session = OTelSession("before", k=1)
    with session:
        pass
    session.name = "after"
    with session:
        assert baggage.get_baggage("session.name") == "after"
        session.name = "inside"
        with trace.get_tracer("llm").start_as_current_span("call"):
            pass
        headers: dict[str, str] = {}
        propagate.inject(headers)
        assert session_core.decode_baggage(headers["baggage"])["name"] == "inside"
    finished = {s.name: s for s in spans.get_finished_spans()}
    assert set(finished) == {"session:before", "session:after", "call"}
    assert finished["session:after"].attributes["session.name"] == "after"
    assert finished["call"].attributes["session.name"] == "inside"


def test_metadata_changed_inside_a_session_is_what_later_reads_and_requests_carry():
    from opentelemetry import propagate

    with OTelSession("live", phase="plan") as s:
        assert get_current_metadata() == {"phase": "plan"}  # read once: the merged view is cached from here
        s.metadata["phase"] = "act"
        assert get_current_metadata() == {"phase": "act"}
        assert s.to_otel_context()["metadata"] == {"phase": "act"}
        headers: dict[str, str] = {}
        propagate.inject(headers)
        assert session_core.decode_baggage(headers["baggage"])["metadata"] == {"phase": "act"}
        # The OTel context attached on entry is immutable: its baggage keeps the value the session entered with.
        assert baggage.get_baggage("session.m.phase") == '"plan"'


def test_exited_otel_sessions_are_freed_spans_and_baggage_included():
    import gc
    import weakref

    refs = []
    with OTelSession("root", storage=InMemoryStorage()) as root:
        for i in range(200):
            with OTelSession("child", step=i) as child, ContextVarSession("inner", n=i) as inner:
                record_trace(name="call")
                headers: dict[str, str] = {}
                propagate.inject(headers)
                child.to_otel_context()
                refs += [weakref.ref(child), weakref.ref(inner)]
            del child, inner
        assert len(root.llm_calls) == 200
    gc.collect()
    assert sum(ref() is None for ref in refs) == len(refs)


# -- copies and pickles ------------------------------------------------------------------------------------------
def test_an_entered_session_copies_and_pickles_as_the_same_session(spans, tmp_path):
    """Its live span and context token stay behind (they used to make copy and pickle fail on a lock); the copy
    has the same uid and chain, and its own span continues the trace under the enclosing session's span."""
    sql = pytest.importorskip("session_storage_sql")
    with OTelSession("outer", storage=sql.SqliteSessionStorage(tmp_path / "t.db"), a=1) as outer:
        with OTelSession("inner", b=2) as inner:
            twin = copy.deepcopy(inner)
            sent = pickle.loads(pickle.dumps(inner))
    for other in (twin, sent):
        assert (other.uid, other.uid_chain, other.name) == (inner.uid, [outer.uid, inner.uid], "inner")
        assert other.merged_metadata() == {"a": 1, "b": 2} and not other.is_active
    with sent:
        assert get_otel_metadata() == {"a": 1, "b": 2}
        record_trace(name="in the unpickled copy")
    assert [t.name for t in outer.llm_calls] == ["in the unpickled copy"]
    by_uid = {s.attributes["session.id"]: s for s in _session_spans(spans)}
    *_, last = [s for s in _session_spans(spans) if s.attributes["session.id"] == inner.uid]
    assert last.context.trace_id == by_uid[outer.uid].context.trace_id
    assert last.parent.span_id == by_uid[outer.uid].context.span_id


def test_a_value_changed_in_place_is_carried_on_the_next_entry(spans):
    """A list appended to (no `SessionMetadata` write notes it) reaches the baggage and span of the next entry,
    as it reaches `get_current_metadata()` and `to_context()`."""
    s = OTelSession("in-place", tags=["x"])
    with s:
        pass
    s.metadata["tags"].append("y")
    with s:
        with OTelSession("child") as child:
            assert baggage.get_baggage("session.m.tags") == '["x","y"]'
        assert baggage.get_baggage("session.m.tags") == '["x","y"]'
    mine = [x for x in _session_spans(spans) if x.attributes["session.id"] == s.uid]
    assert [x.attributes["session.metadata.tags"] for x in mine] == [("x",), ("x", "y")]
    (child_span,) = [x for x in _session_spans(spans) if x.attributes["session.id"] == child.uid]
    assert child_span.attributes["session.metadata.tags"] == ("x", "y")
