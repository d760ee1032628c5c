"""session-otel: OTelSession create+enter+exit against the raw OpenTelemetry work it must do, measured alongside.

The floor is what any code producing the same result pays: start an SDK span with the same attributes, put the
same baggage members and the span into a new OTel context, attach, detach, end the span. The session adds its
uid, the active-session stack and the building of those attributes and members.
"""

from __future__ import annotations

from typing import Any

from _harness import Result, per_call

US = 1e6
META = {"task_id": 1, "rollout": 2, "arm": "a"}


def _floor(tracer: Any, name: str, attrs: dict[str, Any], items: dict[str, str], inner: Any = None) -> Any:
    """Raw OpenTelemetry: span start/end with `attrs` + baggage `items` set, attached and detached (around
    `inner`, another floor, for nesting)."""
    from opentelemetry.context import Context, attach, detach, get_current

    from session_otel._keys import BAGGAGE_KEY, SPAN_KEY

    def floor() -> None:
        cur = get_current()
        span = tracer.start_span(name, cur, attributes=attrs)
        bag = cur.get(BAGGAGE_KEY)
        token = attach(Context(cur, **{BAGGAGE_KEY: {**bag, **items} if bag else items, SPAN_KEY: span}))
        if inner is not None:
            inner()
        detach(token)
        span.end()

    return floor


def _paired(figure: Any, floor: Any, number: int, rounds: int = 4) -> tuple[float, float]:
    """Best seconds per call of `figure` and of `floor`, measured in alternation so load drifts hit both."""
    best_figure = best_floor = float("inf")
    for _ in range(rounds):
        best_floor = min(best_floor, per_call(floor, number=number, repeat=2))
        best_figure = min(best_figure, per_call(figure, number=number, repeat=2))
    return best_figure, best_floor


def run(quick: bool) -> list[Result]:
    from opentelemetry import trace

    from session_otel import OTelSession, init_otel_distributed_tracing

    init_otel_distributed_tracing()  # as an application would; the sessions below use explicit tracers
    n = 1_000 if quick else 20_000
    results: list[Result] = []

    noop = trace.NoOpTracer()
    sample = OTelSession("bench", tracer=noop, **META)
    attrs, items = sample.span_attributes(), sample.baggage_items

    def api_only() -> None:
        with OTelSession("bench", tracer=noop, **META):
            pass

    figure, floor = _paired(api_only, _floor(noop, "session:bench", attrs, items), n)
    results.append(
        Result(
            "otel",
            "OTelSession create+enter+exit, API only (no SDK), 3 metadata keys",
            figure * US,
            "us",
            "no-op span start/end + baggage set/attach/detach",
            floor * US,
            "<= 6.5 us",
            figure * US <= 6.5,
        )
    )

    try:
        from opentelemetry.sdk.trace import TracerProvider
    except ImportError:
        return results
    tracer = TracerProvider().get_tracer("bench")  # recording spans, no processor, no exporter

    def sdk() -> None:
        with OTelSession("bench", tracer=tracer, **META):
            pass

    def nested() -> None:
        with OTelSession("outer", tracer=tracer, **META), OTelSession("inner", tracer=tracer, step=3):
            pass

    figure, floor = _paired(sdk, _floor(tracer, "session:bench", attrs, items), n // 4)
    results.append(
        Result(
            "otel",
            "OTelSession create+enter+exit, SDK recording span (no exporter), 3 metadata keys",
            figure * US,
            "us",
            "SDK span start/end (same attributes) + baggage set/attach/detach",
            floor * US,
            "<= 16 us and <= 1.2x floor",
            figure * US <= 16 and figure / floor <= 1.2,
        )
    )

    with OTelSession("outer", tracer=noop, **META) as outer:
        inner = OTelSession("inner", tracer=noop, step=3)
        with inner:
            i_attrs, i_items = inner.span_attributes(), inner.baggage_items
    inner_floor = _floor(tracer, "session:inner", i_attrs, i_items)
    nested_floor = _floor(tracer, "session:outer", outer.span_attributes(), outer.baggage_items, inner_floor)

    figure, floor = _paired(nested, nested_floor, n // 8)
    results.append(
        Result(
            "otel",
            "two nested OTelSessions create+enter+exit, SDK recording spans",
            figure * US,
            "us",
            "the same, nested: 2x (SDK span start/end + baggage set/attach/detach)",
            floor * US,
            "<= 32 us",
            figure * US <= 32,
        )
    )
    return results
