"""Which hosts may receive session data: the ``propagate_to`` allow-list shared by every adapter.

Entries are host names (``api.example.com``, ``127.0.0.1``, ``::1``) or ``*.``-wildcards: ``*.example.com``
matches every subdomain of example.com (not example.com itself, as in TLS certificates); ``*`` alone matches
every host. Matching ignores case, a trailing dot and IPv6 brackets. The default is ``$SESSION_PROPAGATE_TO``
(comma-separated), else every host.

An internationalised name matches in either form: requests reports the IDNA ASCII form (``xn--bcher-kva.example``),
httpx the Unicode one (``bücher.example``), so both are read as the ASCII form. A name whose IDNA 2003 form (the
stdlib codec, urllib) differs from its IDNA 2008 one (requests, httpx), such as ``straße.de`` (``strasse.de`` or
``xn--strae-oqa.de``, two domains), is left as written, as is a name IDNA cannot encode: each matches only itself.
"""

from __future__ import annotations

import functools
import os
import unicodedata
from collections.abc import Iterable
from urllib.parse import urlsplit

__all__ = ["PROPAGATE_TO_ENV", "HostAllowList", "host_of", "normalize_host", "resolve_propagate_to"]

PROPAGATE_TO_ENV = "SESSION_PROPAGATE_TO"


def normalize_host(host: str) -> str:
    """`host` lower-cased, without IPv6 brackets or a trailing dot, an internationalised name in its IDNA ASCII
    form (``xn--`` labels: see the module docstring). Never raises for a str."""
    host = host.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    host = host.rstrip(".")
    return host if host.isascii() else _ascii_form(host)


@functools.lru_cache(maxsize=1024)
def _ascii_form(host: str) -> str:
    """`host` (lower-cased) with its non-ASCII labels in IDNA ASCII form; `host` itself when a label has none that
    IDNA 2003 and 2008 agree on (the stdlib codec raises, or maps it elsewhere: ß to ss, ﬁ to fi)."""
    labels = host.split(".")
    for i, label in enumerate(labels):
        if label.isascii():
            continue  # "*" and "xn--" labels too
        try:
            idna2003 = label.encode("idna")  # nameprep, then punycode; UnicodeError for what it cannot encode
            punycode = b"xn--" + unicodedata.normalize("NFC", label).encode("punycode")
        except UnicodeError:
            return host
        if idna2003 != punycode:
            return host
        labels[i] = punycode.decode("ascii")
    return ".".join(labels)


def host_of(url: str) -> str | None:
    """The normalized host of `url`, or None when it has none or is malformed.

    A backslash in the authority makes it malformed: HTTP clients disagree on where such a host ends
    (``http://evil.example\\@api.example.com/`` is api.example.com to urllib and httpx but evil.example to
    requests and browsers), so no allow-list may trust either reading."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return None
    if "\\" in parts.netloc:
        return None
    return normalize_host(host) if host else None


def _pattern(raw: object) -> str:
    if not isinstance(raw, str):
        raise TypeError(f"propagate_to entry {raw!r} is not a host name; give host names as strings")
    pattern = normalize_host(raw)
    if "/" in pattern or "@" in pattern or "[" in pattern or pattern.count(":") == 1:
        raise ValueError(
            f"propagate_to entry {raw!r} is not a host name; give hosts such as 'api.example.com' or "
            "'*.example.com' (no scheme, port or path)"
        )
    if "*" in pattern and pattern != "*" and not (pattern.startswith("*.") and "*" not in pattern[2:]):
        raise ValueError(f"propagate_to entry {raw!r}: a wildcard must be '*' or lead the name, as in '*.example.com'")
    return pattern


def resolve_propagate_to(propagate_to: Iterable[str] | str | None) -> tuple[str, ...] | None:
    """The normalized allow-list: `propagate_to`, else ``$SESSION_PROPAGATE_TO``, else None (every host).

    A string is a comma-separated list. Raises `ValueError` for a URL, a port or a misplaced wildcard.
    """
    if propagate_to is None:
        env = os.environ.get(PROPAGATE_TO_ENV, "").strip()
        if not env:
            return None
        propagate_to = env
    if isinstance(propagate_to, str):
        propagate_to = propagate_to.split(",")
    patterns = [p for p in (_pattern(raw) for raw in propagate_to) if p]
    return tuple(dict.fromkeys(patterns))


class HostAllowList:
    """A parsed allow-list (None: every host); `allows(host)` says whether a host may receive session data."""

    __slots__ = ("_exact", "_suffixes", "every_host", "patterns")

    def __init__(self, patterns: Iterable[str] | None) -> None:
        if isinstance(patterns, str):
            raise TypeError("propagate_to must be a list of host names, not a str; use from_setting() for 'a,b'")
        parsed = None if patterns is None else tuple(dict.fromkeys(p for p in map(_pattern, patterns) if p))
        self.patterns: tuple[str, ...] | None = parsed
        self.every_host = parsed is None or "*" in parsed
        self._exact = frozenset(p for p in parsed or () if not p.startswith("*"))
        self._suffixes = tuple(p[1:] for p in parsed or () if p.startswith("*."))

    @classmethod
    def from_setting(cls, value: Iterable[str] | str | None = None) -> HostAllowList:
        """The allow-list for a list, a comma-separated str, or None (``$SESSION_PROPAGATE_TO``, else all)."""
        return cls(resolve_propagate_to(value))

    @property
    def allows_all(self) -> bool:
        return self.every_host

    def allows(self, host: str | None) -> bool:
        """Whether `host` may receive session data (an unknown host only when every host may)."""
        if self.every_host:
            return True
        if not host:
            return False
        host = normalize_host(host)
        return host in self._exact or (bool(self._suffixes) and host.endswith(self._suffixes))

    def allows_url(self, url: str) -> bool:
        return True if self.every_host else self.allows(host_of(url))

    def __repr__(self) -> str:
        return "HostAllowList(every host)" if self.every_host else f"HostAllowList({list(self.patterns or ())!r})"
