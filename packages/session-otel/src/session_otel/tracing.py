"""`init_otel_distributed_tracing`: W3C trace context + baggage propagation, a TracerProvider when none is set
(exporting to the OTLP collector the environment names), and requests/httpx instrumentation, so sessions follow
HTTP calls with no code at the call sites."""

from __future__ import annotations

import importlib
import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from opentelemetry import propagate
from opentelemetry import trace as otel_trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from session_otel import _state
from session_otel.hosts import HostFilter, resolve_propagate_to
from session_otel.propagator import (
    SessionPropagator,
    httpx_async_request_hook,
    httpx_request_hook,
    requests_request_hook,
)

__all__ = ["TracingSetup", "auto_init", "init_otel_distributed_tracing"]

logger = logging.getLogger(__name__)

_lock = threading.RLock()
_setup: TracingSetup | None = None


@dataclass(frozen=True)
class TracingSetup:
    """What `init_otel_distributed_tracing` has enabled in this process.

    `service_name`: the ``service.name`` of the TracerProvider in use (None without an SDK provider), which
    is the name given to `init_otel_distributed_tracing` only when session-otel installed the provider (a
    warning says when it could not apply it); `tracer_provider`: an SDK TracerProvider was installed by
    session-otel (False when one was already set or the SDK is not installed); `span_processor`:
    `SessionSpanProcessor` was added to it; `requests` / `httpx`: that library is instrumented with
    session-otel's host hook; `propagate_to`: the hosts that receive session baggage (None: every host);
    `automatic`: initialised by the first `OTelSession` rather than by a call; `exporter`: the OTLP exporter
    session-otel added to the provider it installed (``"otlp http/protobuf"`` or ``"otlp grpc"``), else None.
    """

    service_name: str | None
    propagators: tuple[str, ...]
    tracer_provider: bool
    span_processor: bool
    requests: bool
    httpx: bool
    propagate_to: tuple[str, ...] | None
    automatic: bool = False
    exporter: str | None = None


def _ensure_propagation(hosts: HostFilter) -> tuple[str, ...]:
    """Wrap the global propagator (adding tracecontext and baggage when missing) in a `SessionPropagator`."""
    current = propagate.get_global_textmap()
    if isinstance(current, SessionPropagator):
        current.hosts = hosts
        return tuple(sorted(current.fields))
    fields = set(current.fields)
    parts: list[TextMapPropagator] = [current]
    if "traceparent" not in fields:
        parts.append(TraceContextTextMapPropagator())
    if "baggage" not in fields:
        parts.append(W3CBaggagePropagator())
    inner = parts[0] if len(parts) == 1 else CompositePropagator(parts)
    wrapper = SessionPropagator(inner, hosts)
    propagate.set_global_textmap(wrapper)
    return tuple(sorted(wrapper.fields))


_OTLP_EXPORTERS = {
    "http/protobuf": ("opentelemetry.exporter.otlp.proto.http.trace_exporter", '"session-otel[otlp]"'),
    "grpc": ("opentelemetry.exporter.otlp.proto.grpc.trace_exporter", "opentelemetry-exporter-otlp-proto-grpc"),
}


def _env_exporter(provider: Any) -> str | None:
    """Add an OTLP exporter to `provider` when the environment names a collector, as OpenTelemetry's own
    auto-configuration would: ``$OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``$OTEL_EXPORTER_OTLP_ENDPOINT`` set,
    ``$OTEL_TRACES_EXPORTER`` (default ``otlp``) naming ``otlp``, and the protocol from
    ``$OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`` (default ``http/protobuf``). Returns what it added."""
    env = os.environ
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if not endpoint:
        return None
    if "otlp" not in [name.strip().lower() for name in env.get("OTEL_TRACES_EXPORTER", "otlp").split(",")]:
        return None
    protocol = (env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "").strip()
    protocol = protocol or "http/protobuf"
    if protocol not in _OTLP_EXPORTERS:
        logger.warning(
            "OTLP protocol %r is not one session-otel sets up (http/protobuf, grpc): spans are not exported; "
            "add an exporter to your own TracerProvider",
            protocol,
        )
        return None
    module, install = _OTLP_EXPORTERS[protocol]
    try:
        exporter = importlib.import_module(module).OTLPSpanExporter()
    except ImportError:
        logger.warning(
            "an OTLP endpoint is set (%s) but the %s exporter is not installed, so spans stay in this process "
            "(pip install %s)",
            endpoint,
            protocol,
            install,
        )
        return None
    except Exception as exc:  # a malformed setting must not stop the application from starting
        logger.warning("could not create the OTLP exporter for %s (%s): spans stay in this process", endpoint, exc)
        return None
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider.add_span_processor(BatchSpanProcessor(exporter))
    return f"otlp {protocol}"


def _ensure_tracer_provider(service_name: str | None) -> tuple[bool, bool, str | None]:
    """Install an SDK TracerProvider with `SessionSpanProcessor` (and the environment's OTLP exporter) when none
    is set and the SDK is installed."""
    if not isinstance(otel_trace.get_tracer_provider(), otel_trace.ProxyTracerProvider):
        return False, False, None
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
    except ImportError:
        logger.info(
            "opentelemetry-sdk is not installed: session spans are non-recording "
            '(pip install "session-otel[sdk]" to record them)'
        )
        return False, False, None
    from session_otel.processor import SessionSpanProcessor

    attributes = {"service.name": service_name} if service_name else {}
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(SessionSpanProcessor())
    exporter = _env_exporter(provider)
    otel_trace.set_tracer_provider(provider)
    installed = otel_trace.get_tracer_provider() is provider
    if not installed:  # another thread set one first: ours is dropped, its exporter with it
        provider.shutdown()
    return installed, installed, exporter if installed else None


def _service_name_in_use() -> str | None:
    """The ``service.name`` of the global TracerProvider's resource (an SDK provider's), else None."""
    resource = getattr(otel_trace.get_tracer_provider(), "resource", None)
    attributes = getattr(resource, "attributes", None)
    name = attributes.get("service.name") if attributes is not None else None
    return name if isinstance(name, str) else None


def _instrument_requests() -> bool:
    try:
        from opentelemetry.instrumentation.requests import RequestsInstrumentor
    except ImportError:
        return False
    instrumentor = RequestsInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        logger.info("requests was already instrumented; session-otel's host hook for propagate_to is not on it")
        return False
    try:
        instrumentor.instrument(request_hook=requests_request_hook)
    except Exception:
        logger.warning("could not instrument requests", exc_info=True)
        return False
    return bool(instrumentor.is_instrumented_by_opentelemetry)


def _instrument_httpx() -> bool:
    try:
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    except ImportError:
        return False
    instrumentor = HTTPXClientInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        logger.info("httpx was already instrumented; session-otel's host hook for propagate_to is not on it")
        return False
    try:
        instrumentor.instrument(request_hook=httpx_request_hook, async_request_hook=httpx_async_request_hook)
    except Exception:
        logger.warning("could not instrument httpx", exc_info=True)
        return False
    return bool(instrumentor.is_instrumented_by_opentelemetry)


def init_otel_distributed_tracing(
    service_name: str | None = None,
    *,
    propagate_to: Iterable[str] | str | None = None,
) -> TracingSetup:
    """Set up OpenTelemetry so sessions cross HTTP: idempotent, returns what is enabled.

    - Propagation: W3C tracecontext + baggage (added to the global propagator when missing), wrapped so that
      session baggage goes only to `propagate_to` hosts (host names or ``*.`` wildcards; default
      ``$SESSION_PROPAGATE_TO``, comma-separated, else every host). A later call with `propagate_to` replaces it.
    - A TracerProvider (SDK, with `SessionSpanProcessor`, ``service.name`` = `service_name`) only when none is
      set and opentelemetry-sdk is installed.
    - requests / httpx instrumentation when those instrumentations are installed (``session-otel[http]``).
    """
    global _setup
    with _lock:
        previous = _setup
        if previous is None or propagate_to is not None:
            patterns = resolve_propagate_to(propagate_to)
        else:
            patterns = previous.propagate_to
        propagators = _ensure_propagation(HostFilter(patterns))
        provider, processor, exporter = _ensure_tracer_provider(service_name)
        if previous is not None:
            provider = provider or previous.tracer_provider
            processor = processor or previous.span_processor
            exporter = exporter or previous.exporter
        requests_done = (previous is not None and previous.requests) or _instrument_requests()
        httpx_done = (previous is not None and previous.httpx) or _instrument_httpx()
        in_use = _service_name_in_use()
        if service_name is not None and in_use is not None and in_use != service_name:
            if previous is not None and previous.automatic and previous.tracer_provider:
                why = (
                    "the TracerProvider in use is the one session-otel installed when an OTelSession was entered "
                    "before this call"
                )
                fix = "Call init_otel_distributed_tracing at startup, before the first session"
            else:
                why = "a TracerProvider was set before"
                fix = (
                    "Put the service name on that provider's Resource, or let session-otel install the provider "
                    "by calling init_otel_distributed_tracing first"
                )
            logger.warning(
                "init_otel_distributed_tracing(service_name=%r): %s, so its service.name %r stays (a provider's "
                "resource cannot change). %s",
                service_name,
                why,
                in_use,
                fix,
            )
        _setup = TracingSetup(
            service_name=in_use,
            propagators=propagators,
            tracer_provider=provider,
            span_processor=processor,
            requests=requests_done,
            httpx=httpx_done,
            propagate_to=patterns,
            automatic=previous.automatic if previous is not None else False,
            exporter=exporter,
        )
        _state.initialized = True
        return _setup


def auto_init() -> None:
    """Called by the first `OTelSession` entered before `init_otel_distributed_tracing`: initialise, warn once."""
    global _setup
    with _lock:
        if _state.initialized:
            return
        setup = init_otel_distributed_tracing()
        _setup = replace(setup, automatic=True)
    logger.warning(
        "OTelSession entered before init_otel_distributed_tracing(); initialised OpenTelemetry now (%s). "
        "Call init_otel_distributed_tracing(service_name=...) at startup, after configuring any TracerProvider "
        "of your own, to choose the service name and the hosts that receive session baggage.",
        _describe(_setup),
    )


def current_setup() -> TracingSetup | None:
    """What has been enabled so far, or None before any initialisation."""
    return _setup


def _describe(setup: TracingSetup) -> str:
    enabled = [f"propagators={','.join(setup.propagators)}"]
    if setup.tracer_provider:
        enabled.append("SDK TracerProvider")
    if setup.exporter:
        enabled.append(f"{setup.exporter} exporter")
    if setup.requests:
        enabled.append("requests instrumentation")
    if setup.httpx:
        enabled.append("httpx instrumentation")
    return ", ".join(enabled)
