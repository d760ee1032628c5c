"""SessionSpanProcessor: spans other libraries start inside a session carry the session's attributes."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context, attach, detach

from session_core import ContextVarSession, encode_baggage
from session_otel import OTelSession, SessionSpanProcessor


def _by_name(exporter):
    return {s.name: s for s in exporter.get_finished_spans()}


def test_spans_inside_a_session_are_stamped(spans):
    llm = trace.get_tracer("some.llm.instrumentation")
    with OTelSession("rollout", task="t9", step=2) as outer, OTelSession(arm="b") as inner:
        with llm.start_as_current_span("chat gpt-x"):
            pass
    attrs = dict(_by_name(spans)["chat gpt-x"].attributes)
    assert attrs["session.id"] == inner.uid
    assert attrs["session.name"] == "rollout"
    assert attrs["session.uid_chain"] == (outer.uid, inner.uid)
    assert attrs["session.metadata.task"] == "t9"
    assert attrs["session.metadata.arm"] == "b"


def test_integers_beyond_64_bits_become_text_so_the_otlp_exporter_can_send_the_spans(spans):
    """OTLP carries int64 attributes: one 128-bit id (``uuid4().int``) made the exporter refuse the whole batch."""
    encoder = pytest.importorskip("opentelemetry.exporter.otlp.proto.common._internal.trace_encoder")
    big = 2**64 + 1
    llm = trace.get_tracer("some.llm.instrumentation")
    with OTelSession("wide", run=big, seeds=[1, big], edge=-(2**63)) as session:
        with llm.start_as_current_span("chat"):
            pass
        with ContextVarSession("core", run=-big):
            with llm.start_as_current_span("inner chat"):
                pass
    assert session.to_context()["metadata"]["run"] == big  # the context keeps the int
    finished = _by_name(spans)
    for name in ("session:wide", "chat"):
        attrs = finished[name].attributes
        assert attrs["session.metadata.run"] == str(big)
        assert attrs["session.metadata.seeds"] == f"[1,{big}]"
        assert attrs["session.metadata.edge"] == -(2**63)  # still in range: stays an int
    assert finished["inner chat"].attributes["session.metadata.run"] == str(-big)
    encoder.encode_spans(list(finished.values()))  # raised ValueError: Value out of range


def test_text_utf8_cannot_encode_is_escaped_so_the_otlp_exporter_can_send_the_spans(spans):
    """A lone surrogate (``os.fsdecode`` of a non-UTF-8 file name) in a session's name or metadata made the OTLP
    exporter refuse every batch holding a span of that session."""
    encoder = pytest.importorskip("opentelemetry.exporter.otlp.proto.common._internal.trace_encoder")
    name, path = "caf\udce9", "/data/caf\udce9.jsonl"
    llm = trace.get_tracer("some.llm.instrumentation")
    with OTelSession(name, path=path, files=[path], cfg={"p": path}, **{"k\udce9": 1}):
        with llm.start_as_current_span("chat"):
            pass
        with ContextVarSession(name, path=path):
            with llm.start_as_current_span("inner chat"):
                pass
    finished = _by_name(spans)
    assert set(finished) == {"session:caf\\udce9", "chat", "inner chat"}
    for span in finished.values():
        attrs = span.attributes
        assert attrs["session.name"] == "caf\\udce9"
        assert attrs["session.metadata.path"] == "/data/caf\\udce9.jsonl"
    attrs = finished["chat"].attributes
    assert attrs["session.metadata.files"] == ("/data/caf\\udce9.jsonl",)
    assert attrs["session.metadata.cfg"] == '{"p":"/data/caf\\udce9.jsonl"}'  # JSON text: the JSON escape
    assert attrs["session.metadata.k\\udce9"] == 1
    encoder.encode_spans(list(finished.values()))  # raised UnicodeEncodeError: surrogates not allowed


def test_a_contextvar_session_inside_is_what_gets_stamped(spans):
    llm = trace.get_tracer("llm")
    with OTelSession("otel", a=1), ContextVarSession("plain", b=[1, 2]) as plain:
        with llm.start_as_current_span("call"):
            pass
    attrs = dict(_by_name(spans)["call"].attributes)
    assert attrs["session.id"] == plain.uid
    assert attrs["session.name"] == "plain"
    assert attrs["session.metadata.b"] == (1, 2)


def test_spans_carry_the_sessions_metadata_as_it_is_when_they_start(spans):
    llm = trace.get_tracer("llm")
    with ContextVarSession("plain", step=0) as plain, OTelSession("otel-inner", phase="a") as inner:
        for step in range(3):
            plain.metadata["step"] = step
            inner.metadata["phase"] = f"p{step}"
            with llm.start_as_current_span(f"call-{step}"):
                pass
    got = _by_name(spans)
    assert [got[f"call-{i}"].attributes["session.metadata.step"] for i in range(3)] == [0, 1, 2]
    assert [got[f"call-{i}"].attributes["session.metadata.phase"] for i in range(3)] == ["p0", "p1", "p2"]
    with ContextVarSession("cv", step=0) as cv:
        for step in range(2):
            cv.metadata["step"] = step
            with llm.start_as_current_span(f"cv-{step}"):
                pass
    got = _by_name(spans)
    assert [got[f"cv-{i}"].attributes["session.metadata.step"] for i in range(2)] == [0, 1]


def test_spans_in_a_server_with_only_baggage_are_stamped_with_the_callers_session(spans):
    header = encode_baggage({"name": "caller", "uid_chain": ["c1", "c2"], "metadata": {"user": "u"}})
    token = attach(W3CBaggagePropagator().extract({"baggage": header}, context=Context()))
    try:
        with trace.get_tracer("server").start_as_current_span("handler"):
            pass
    finally:
        detach(token)
    attrs = dict(_by_name(spans)["handler"].attributes)
    assert attrs["session.id"] == "c2"
    assert attrs["session.uid_chain"] == ("c1", "c2")
    assert attrs["session.metadata.user"] == "u"


def test_spans_outside_any_session_are_left_alone_and_session_spans_keep_their_own(spans):
    tracer = trace.get_tracer("t")
    with tracer.start_as_current_span("outside"):
        pass
    with OTelSession("s", k=1) as s:
        pass
    by_name = _by_name(spans)
    assert not any(k.startswith("session.") for k in by_name["outside"].attributes)
    assert by_name["session:s"].attributes["session.id"] == s.uid


def test_the_processor_never_raises_into_span_creation():
    class Broken:
        @property
        def attributes(self):
            raise RuntimeError("broken span")

    processor = SessionSpanProcessor()
    processor.on_start(Broken())  # logged at debug, not raised
    processor.on_end(Broken())
    assert processor.force_flush() is True
    processor.shutdown()


def test_importing_session_otel_does_not_import_the_sdk_and_the_processor_is_an_sdk_processor():
    import subprocess
    import sys

    code = (
        "import sys, session_otel\n"
        "assert not [m for m in sys.modules if m.startswith('opentelemetry.sdk')], 'SDK imported eagerly'\n"
        "p = session_otel.SessionSpanProcessor()\n"
        "try:\n"
        "    from opentelemetry.sdk.trace import SpanProcessor\n"
        "except ImportError:\n"
        "    print('no-sdk')\n"
        "else:\n"
        "    assert isinstance(p, SpanProcessor)\n"
        "    print('sdk')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() in ("sdk", "no-sdk")


def test_spans_in_a_thread_that_attached_the_sessions_context_carry_its_metadata_as_it_changes(spans):
    import threading

    from opentelemetry.context import get_current

    llm = trace.get_tracer("llm")
    with OTelSession("carried", step=0) as session:
        captured = get_current()

        def worker() -> None:
            token = attach(captured)  # what OTel's threading instrumentation does: no session on this thread's stack
            try:
                for step in range(3):
                    session.metadata["step"] = step
                    with llm.start_as_current_span(f"thread-call-{step}"):
                        pass
            finally:
                detach(token)

        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
    got = _by_name(spans)
    assert [got[f"thread-call-{i}"].attributes["session.metadata.step"] for i in range(3)] == [0, 1, 2]
    assert got["thread-call-2"].attributes["session.id"] == session.uid


def test_past_the_sdks_attribute_limit_the_session_attributes_are_the_ones_kept(spans):
    # The SDK keeps 128 attributes a span, dropping the oldest: the metadata go, session.id and the chain stay.
    many = {f"k{i:03}": i for i in range(140)}
    llm = trace.get_tracer("some.llm.instrumentation")
    with OTelSession("wide", **many) as session:
        with llm.start_as_current_span("chat"):
            pass
    for span in _by_name(spans).values():
        attrs = dict(span.attributes)
        assert len(attrs) == 128
        assert attrs["session.id"] == session.uid
        assert attrs["session.name"] == "wide"
        assert attrs["session.uid_chain"] == (session.uid,)
        assert attrs["session.metadata.k139"] == 139


def test_a_span_started_with_another_sessions_context_carries_that_session(spans):
    """A consumer inside its own session starts a span continuing a message's context: the span is the
    message's session's. A context the current session lies within (the caller's, extracted again inside a
    server's session) keeps the innermost session here."""
    tracer = trace.get_tracer("consumer")
    producer = encode_baggage({"name": "producer", "uid_chain": ["p1", "p2"], "metadata": {"job": 4}})
    message_ctx = W3CBaggagePropagator().extract({"baggage": producer}, context=Context())
    with ContextVarSession("consumer", worker=1) as consumer:
        caller = W3CBaggagePropagator().extract({"baggage": encode_baggage(consumer.to_context())}, context=Context())
        with ContextVarSession("handler") as handler:
            tracer.start_span("for the message", context=message_ctx).end()
            tracer.start_span("for the caller", context=caller).end()
            tracer.start_span("no session in the context", context=Context()).end()
            tracer.start_span("current").end()
    got = _by_name(spans)
    message = dict(got["for the message"].attributes)
    assert (message["session.id"], message["session.uid_chain"]) == ("p2", ("p1", "p2"))
    assert message["session.metadata.job"] == 4 and "session.metadata.worker" not in message
    for name in ("for the caller", "no session in the context", "current"):
        assert got[name].attributes["session.id"] == handler.uid, name
