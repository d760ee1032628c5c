"""Run in a fresh process: the application sets a TracerProvider, then asks init for another service name."""

from __future__ import annotations

import json
import logging
import sys

logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")

from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.resources import Resource  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402

from session_otel import init_otel_distributed_tracing  # noqa: E402

trace.set_tracer_provider(TracerProvider(resource=Resource.create({"service.name": "the-apps-own"})))
setup = init_otel_distributed_tracing("wanted")
print(json.dumps({"service_name": setup.service_name, "tracer_provider": setup.tracer_provider}))
