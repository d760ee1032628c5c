"""Routing metadata: what a proxy needs to attribute a request to a session (slug mode)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from session_core.context import CONTEXT_VERSION, validate_context
from session_core.errors import InvalidSessionContext
from session_core.helpers import get_active_session_uids, get_current_metadata, get_current_session_name

__all__ = ["assemble_routing_metadata", "context_from_routing_metadata"]


def assemble_routing_metadata(extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Merged metadata + ``session_name`` (unless metadata has one) + ``session_uids`` + `extra` (overrides).

    `{}` outside any session (plus `extra`).
    """
    meta = get_current_metadata()
    name = get_current_session_name()
    if name is not None:
        meta.setdefault("session_name", name)
        meta["session_uids"] = get_active_session_uids()
    if extra:
        meta.update(extra)
    return meta


def context_from_routing_metadata(meta: Mapping[str, Any]) -> dict[str, Any] | None:
    """The context that `assemble_routing_metadata` output describes, or None when it names no session.

    Raises `InvalidSessionContext` when the session fields are malformed.
    """
    if not isinstance(meta, Mapping):
        raise InvalidSessionContext(f"routing metadata must be a dict, got {type(meta).__name__}")
    uids = meta.get("session_uids")
    if uids is None:
        return None
    rest = {k: v for k, v in meta.items() if k not in ("session_name", "session_uids")}
    name = meta.get("session_name")
    return validate_context({"v": CONTEXT_VERSION, "name": name, "uid_chain": uids, "metadata": rest})
