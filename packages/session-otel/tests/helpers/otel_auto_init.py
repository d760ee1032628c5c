"""Run in a fresh process: enter OTelSessions without calling init_otel_distributed_tracing; report what happened."""

from __future__ import annotations

import json
import logging
import sys

logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")

from opentelemetry import propagate, trace  # noqa: E402

from session_otel import OTelSession  # noqa: E402
from session_otel.tracing import current_setup  # noqa: E402

initialized_before = OTelSession.backend_initialized()  # nothing set up yet
with OTelSession("first", k=1) as first:
    recording = first.span is not None and first.span.is_recording()
with OTelSession("second") as second:
    pass
setup = current_setup()
assert setup is not None
from session_otel import init_otel_distributed_tracing  # noqa: E402

late = init_otel_distributed_tracing(service_name="late-name")  # too late to name the provider: says why
print(
    json.dumps(
        {
            "automatic": setup.automatic,
            "initialized": [initialized_before, OTelSession.backend_initialized()],
            "tracer_provider": setup.tracer_provider,
            "provider_class": type(trace.get_tracer_provider()).__name__,
            "propagator": type(propagate.get_global_textmap()).__name__,
            "recording": recording,
            "trace_ids": [first.trace_id, second.trace_id],
            "late_service_name": late.service_name,
        }
    )
)
