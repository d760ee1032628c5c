"""Process-wide flags read on the hot path (a module attribute read is the cheapest check there is)."""

from __future__ import annotations

__all__ = ["initialized"]

initialized = False
"""Set once `init_otel_distributed_tracing` has run (explicitly or automatically)."""
