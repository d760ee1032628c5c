"""session-otel: OTelSession create+enter+exit against the raw OpenTelemetry work it must do, measured alongside.

Two floors, both producing the same result as the session (a span with the same attributes, current, and the
same baggage members in the attached context):

- the issue's floor, "SDK span start/end + baggage set/attach/detach", written with OpenTelemetry's public API
  as an application would: ``tracer.start_span``, ``baggage.set_baggage`` once per member,
  ``trace.set_span_in_context``, ``context.attach`` / ``detach``, ``span.end``;
- a leaner floor no public API offers: every member and the span put into one new context at once (one dict
  merge instead of a context per member). It is reported too, so the session's own cost stays visible.

The session adds its uid, the active-session stack and the building of those attributes and members.
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


def _api_floor(tracer: Any, name: str, attrs: dict[str, Any], items: dict[str, str], inner: Any = None) -> Any:
    """The same through OpenTelemetry's public API: one `set_baggage` per member, `set_span_in_context`."""
    from opentelemetry import baggage, trace
    from opentelemetry.context import attach, detach, get_current

    set_baggage, set_span_in_context = baggage.set_baggage, trace.set_span_in_context
    members = list(items.items())

    def floor() -> None:
        ctx = get_current()
        span = tracer.start_span(name, ctx, attributes=attrs)
        for key, value in members:
            ctx = set_baggage(key, value, ctx)
        token = attach(set_span_in_context(span, ctx))
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


def _against_lean(figure: float, floor: float, floor_name: str) -> Result:
    """The row above again, against the hand-built floor: reported, no target."""
    return Result(
        "otel",
        "the same, against the leanest hand-built equivalent",
        figure * US,
        "us",
        floor_name,
        floor * US,
        "reported",
        True,
    )


def _least_possible(lean_floor: float, n: int) -> Result:
    """What no OTelSession can go below on this machine: the hand-built floor plus a `ContextVarSession`'s own
    create+enter+exit (the uid and the active-session stack every session keeps), against the absolute target."""
    from session_core import ContextVarSession

    def plain() -> None:
        with ContextVarSession("bench", **META):
            pass

    least = lean_floor + per_call(plain, number=n, repeat=5)
    return Result(
        "otel",
        "the least any OTelSession can take here: the hand-built floor + a ContextVarSession create+enter+exit",
        least * US,
        "us",
        None,
        None,
        "reported (the SDK target is 16 us)",
        True,
    )


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

    figure, floor = _paired(api_only, _api_floor(noop, "session:bench", attrs, items), n)
    results.append(
        Result(
            "otel",
            "OTelSession create+enter+exit, API only (no SDK), 3 metadata keys",
            figure * US,
            "us",
            "OTel API: no-op span start/end + set_baggage per member + attach/detach",
            floor * US,
            "<= 6.5 us",
            figure * US <= 6.5,
        )
    )

    tagged = OTelSession("bench", tracer=noop, tags=["rl", "eval"], **META)
    t_attrs, t_items = tagged.span_attributes(), tagged.baggage_items

    def api_tags() -> None:
        with OTelSession("bench", tracer=noop, tags=["rl", "eval"], **META):  # a new list each time, as in a server
            pass

    figure, floor = _paired(api_tags, _api_floor(noop, "session:bench", t_attrs, t_items), n)
    results.append(
        Result(
            "otel",
            "the same with a list in the metadata (tags=['rl', 'eval'], 4 keys)",
            figure * US,
            "us",
            "the same OTel API floor, with the tags member",
            floor * US,
            "reported",
            True,
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

    figure, floor = _paired(sdk, _api_floor(tracer, "session:bench", attrs, items), n // 4)
    results.append(
        Result(
            "otel",
            "OTelSession create+enter+exit, SDK recording span (no exporter), 3 metadata keys",
            figure * US,
            "us",
            "OTel API: SDK span start/end (same attributes) + set_baggage per member + attach/detach",
            floor * US,
            "<= 16 us and <= 1.2x floor",
            figure * US <= 16 and figure / floor <= 1.2,
        )
    )
    lean_figure, lean_floor = _paired(sdk, _floor(tracer, "session:bench", attrs, items), n // 4)
    results.append(
        _against_lean(
            lean_figure, lean_floor, "SDK span start/end + all members and the span in one new context, attach/detach"
        )
    )
    results.append(_least_possible(lean_floor, n))

    with OTelSession("outer", tracer=noop, **META) as outer:
        inner = OTelSession("inner", tracer=noop, step=3)
        with inner:
            i_attrs, i_items = inner.span_attributes(), inner.baggage_items
    o_attrs, o_items = outer.span_attributes(), outer.baggage_items
    api_nested = _api_floor(
        tracer, "session:outer", o_attrs, o_items, _api_floor(tracer, "session:inner", i_attrs, i_items)
    )
    figure, floor = _paired(nested, api_nested, n // 8)
    results.append(
        Result(
            "otel",
            "two nested OTelSessions create+enter+exit, SDK recording spans",
            figure * US,
            "us",
            "the OTel API floor, nested",
            floor * US,
            "<= 32 us",
            figure * US <= 32,
        )
    )
    lean_nested = _floor(tracer, "session:outer", o_attrs, o_items, _floor(tracer, "session:inner", i_attrs, i_items))
    results.append(_against_lean(*_paired(nested, lean_nested, n // 8), "the hand-built floor, nested"))
    return results
