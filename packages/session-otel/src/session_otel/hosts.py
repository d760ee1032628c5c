"""Which hosts may receive session baggage: exact host names and ``*.`` wildcards.

``*.example.com`` matches every subdomain of example.com (not example.com itself, as in TLS certificates);
``*`` matches every host. Matching ignores case, a trailing dot and IPv6 brackets.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

__all__ = ["PROPAGATE_TO_ENV", "HostFilter", "normalize_host", "resolve_propagate_to"]

PROPAGATE_TO_ENV = "SESSION_PROPAGATE_TO"


def normalize_host(host: str) -> str:
    """`host` lower-cased, without IPv6 brackets or a trailing dot."""
    host = host.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host.rstrip(".")


def resolve_propagate_to(propagate_to: Iterable[str] | str | None) -> tuple[str, ...] | None:
    """The normalized allow-list: `propagate_to`, else ``$SESSION_PROPAGATE_TO`` (comma-separated), else None
    (every host). A string is read as a comma-separated list. Raises `ValueError` for a URL or an empty name."""
    if propagate_to is None:
        env = os.environ.get(PROPAGATE_TO_ENV, "").strip()
        if not env:
            return None
        propagate_to = env
    if isinstance(propagate_to, str):
        propagate_to = propagate_to.split(",")
    patterns: list[str] = []
    for raw in propagate_to:
        if not isinstance(raw, str):
            raise TypeError(f"propagate_to holds {raw!r}; give host names as strings, e.g. 'api.example.com'")
        pattern = normalize_host(raw)
        if not pattern:
            continue
        if "/" in pattern or (pattern.count(":") == 1):
            raise ValueError(
                f"propagate_to holds {raw!r}; give host names or '*.' wildcards (e.g. 'api.example.com', "
                "'*.internal'), not URLs or host:port"
            )
        if "*" in pattern and pattern != "*" and not (pattern.startswith("*.") and "*" not in pattern[2:]):
            raise ValueError(
                f"propagate_to holds {raw!r}; a wildcard must be '*' or lead the name as in '*.example.com'"
            )
        patterns.append(pattern)
    return tuple(dict.fromkeys(patterns))


class HostFilter:
    """An allow-list of hosts; None allows every host."""

    __slots__ = ("_all", "_exact", "_patterns", "_suffixes")

    def __init__(self, patterns: tuple[str, ...] | None) -> None:
        self._patterns = patterns
        self._all = patterns is None or "*" in patterns
        self._exact = frozenset(p for p in patterns or () if not p.startswith("*"))
        self._suffixes = tuple(p[1:] for p in patterns or () if p.startswith("*."))

    @property
    def patterns(self) -> tuple[str, ...] | None:
        return self._patterns

    @property
    def allows_all(self) -> bool:
        return self._all

    def allows(self, host: str | None) -> bool:
        """Whether session baggage may be sent to `host` (an unknown host is allowed only when all are)."""
        if self._all:
            return True
        if not host:
            return False
        host = normalize_host(host)
        return host in self._exact or (bool(self._suffixes) and host.endswith(self._suffixes))

    def __repr__(self) -> str:
        return f"HostFilter({'*' if self._patterns is None else list(self._patterns)!r})"
