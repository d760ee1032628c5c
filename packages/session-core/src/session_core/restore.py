"""Restore a context as a session of the backend that sent it, when that backend is installed here."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from session_core.context import validate_context
from session_core.registry import get_backend
from session_core.session import BaseSession, ContextVarSession

__all__ = ["restore_session"]

logger = logging.getLogger(__name__)
_warned: set[str] = set()


def restore_session(ctx: Mapping[str, Any], storage: Any = None, *, backend: str | None = None, **metadata: Any) -> Any:
    """A not-yet-entered child session continuing `ctx`, with `metadata` as the child's own.

    The class is the one registered for `backend` (default: the context's ``"backend"`` field), e.g. an
    `OTelSession` when session-otel is installed, found through the ``session_core.backends`` entry points;
    else `ContextVarSession`. Raises `InvalidSessionContext` when `ctx` is malformed.
    """
    valid = validate_context(ctx)
    name = backend or valid.get("backend")
    cls: Any = ContextVarSession
    if name and name != "contextvar":
        found = get_backend(name)
        if found is not None:
            cls = found
        elif name not in _warned:
            _warned.add(name)
            logger.warning(
                "session context was sent by backend %r, which is not installed here; restoring it as a "
                "ContextVarSession (same uid chain and metadata)",
                name,
            )
    if isinstance(cls, type) and issubclass(cls, BaseSession):
        return cls._from_valid_context(valid, storage, **metadata)
    return cls.from_context(valid, storage=storage, **metadata)
