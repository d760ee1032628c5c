"""Which hosts may receive session data: session-core's shared ``propagate_to`` allow-list.

Entries are host names (``api.example.com``, ``127.0.0.1``, ``::1``) or ``*.``-wildcards (``*.example.com``
matches every subdomain, not ``example.com`` itself); ``*`` alone matches every host. The default is
``$SESSION_PROPAGATE_TO`` (comma-separated), else every host. One implementation serves every adapter, so
session-otel's instrumentation and this package's clients agree on every host.
"""

from __future__ import annotations

from session_core.hosts import PROPAGATE_TO_ENV, HostAllowList, host_of

__all__ = ["PROPAGATE_TO_ENV", "HostAllowList", "host_of"]
