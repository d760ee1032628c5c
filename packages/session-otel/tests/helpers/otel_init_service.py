"""Run in a fresh process: init_otel_distributed_tracing(service_name) with $SESSION_PROPAGATE_TO set; report."""

from __future__ import annotations

import json
import logging
import sys

from opentelemetry import trace

from session_otel import init_otel_distributed_tracing

logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
setup = init_otel_distributed_tracing("svc-under-test")
again = init_otel_distributed_tracing()
provider = trace.get_tracer_provider()
resource = getattr(provider, "resource", None)
print(
    json.dumps(
        {
            "tracer_provider": setup.tracer_provider,
            "span_processor": setup.span_processor,
            "propagate_to": setup.propagate_to,
            "same_again": again == setup,
            "service_name": resource.attributes.get("service.name") if resource is not None else None,
            "setup_service_name": setup.service_name,
            "automatic": setup.automatic,
        }
    )
)
