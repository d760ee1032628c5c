"""session-ray: sessions that follow work into Ray tasks and actors, automatically.

``session_ray.remote`` is a drop-in for ``ray.remote``: the session current at each ``.remote()`` call is
restored in the worker, and traces recorded there land in the caller's session through an addressable storage.
``ray_entrypoint`` does the same by hand (``fn(..., _session_ctx=session.to_context())``), with or without Ray.
"""

from __future__ import annotations

from session_ray._version import __version__
from session_ray.capture import capture_context
from session_ray.entrypoint import ray_entrypoint
from session_ray.remote import SessionActorClass, remote
from session_ray.worker import CONTEXT_KWARG, LEGACY_CONTEXT_KWARG

__all__ = [
    "CONTEXT_KWARG",
    "LEGACY_CONTEXT_KWARG",
    "SessionActorClass",
    "__version__",
    "capture_context",
    "ray_entrypoint",
    "remote",
]
