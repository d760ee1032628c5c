"""session-core: session enter/exit, context round trip, baggage codec — against floors of the same run."""

from __future__ import annotations

import contextvars

from _harness import Result, per_call


def run(quick: bool) -> list[Result]:
    from session_core import ContextVarSession, decode_baggage, encode_baggage
    from session_core.helpers import record_trace  # noqa: F401 - imported for parity with real use

    n = 2_000 if quick else 200_000
    a, b, c, d = (contextvars.ContextVar(x) for x in "abcd")

    def floor_four_vars() -> None:
        ta = a.set(1)
        tb = b.set(2)
        tc = c.set(3)
        td = d.set(4)
        d.reset(td)
        c.reset(tc)
        b.reset(tb)
        a.reset(ta)

    def enter_exit_new() -> None:
        with ContextVarSession("bench", task_id=1, rollout=2, arm="a"):
            pass

    reused = ContextVarSession("bench", task_id=1, rollout=2, arm="a")

    def enter_exit_reused() -> None:
        with reused:
            pass

    floor = per_call(floor_four_vars, number=n)
    new = per_call(enter_exit_new, number=n)
    old = per_call(enter_exit_reused, number=n)
    us = 1e6
    results = [
        Result(
            "core",
            "ContextVarSession create+enter+exit, 3 metadata keys",
            new * us,
            "us",
            "4x ContextVar set/reset",
            floor * us,
            "<= 1.5 us and <= 2.5x floor",
            new * us <= 1.5 and new / floor <= 2.5,
        ),
        Result(
            "core",
            "ContextVarSession enter+exit (object reused)",
            old * us,
            "us",
            "4x ContextVar set/reset",
            floor * us,
            "<= 1.5 us and <= 2.5x floor",
            old * us <= 1.5 and old / floor <= 2.5,
        ),
    ]

    with ContextVarSession("outer", q=1), ContextVarSession("bench", task_id=1, rollout=2, arm="a") as s:

        def round_trip() -> None:
            ContextVarSession.from_context(s.to_context())

        rt = per_call(round_trip, number=n // 4)
    results.append(
        Result(
            "core",
            "context dict round trip (to_context + from_context)",
            rt * us,
            "us",
            None,
            None,
            "<= 3 us",
            rt * us <= 3,
        )
    )

    meta = {f"key{i}": (i if i % 2 else f"value-{i}") for i in range(10)}
    with ContextVarSession("bench", **meta) as s:
        ctx = s.to_context()

    def codec() -> None:
        decode_baggage(encode_baggage(ctx))

    bag = per_call(codec, number=n // 10)
    floor_otel = _otel_floor(ctx, n // 10)
    results.append(
        Result(
            "core",
            "baggage encode + decode, 10-key context",
            bag * us,
            "us",
            "OTel W3C propagators inject+extract (traceparent + same members)" if floor_otel else None,
            floor_otel * us if floor_otel else None,
            "<= 15 us",
            bag * us <= 15,
        )
    )
    return results


def _otel_floor(ctx: dict, number: int) -> float | None:
    """OpenTelemetry's own propagators carrying the same members, when opentelemetry is installed."""
    try:
        from opentelemetry import baggage, context, trace
        from opentelemetry.baggage.propagation import W3CBaggagePropagator
        from opentelemetry.propagators.composite import CompositePropagator
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    except ImportError:
        return None
    from session_core import context_to_baggage_items

    prop = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])
    span_ctx = trace.SpanContext(0x1234, 0x5678, is_remote=False, trace_flags=trace.TraceFlags(1))
    otel_ctx = trace.set_span_in_context(trace.NonRecordingSpan(span_ctx))
    for k, v in context_to_baggage_items(ctx).items():
        otel_ctx = baggage.set_baggage(k, v, otel_ctx)

    def floor() -> None:
        carrier: dict[str, str] = {}
        prop.inject(carrier, context=otel_ctx)
        prop.extract(carrier, context=context.Context())

    return per_call(floor, number=number)
