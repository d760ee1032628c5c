"""Which hosts may receive session baggage: session-core's shared ``propagate_to`` allow-list.

``HostFilter`` is session-core's `HostAllowList` under the name this package first exported.
"""

from __future__ import annotations

from session_core.hosts import PROPAGATE_TO_ENV, HostAllowList, normalize_host, resolve_propagate_to

__all__ = ["PROPAGATE_TO_ENV", "HostFilter", "normalize_host", "resolve_propagate_to"]

HostFilter = HostAllowList
