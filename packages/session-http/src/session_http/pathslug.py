"""The ``/meta/<slug>/`` path segment (slug mode): find it, decode it, and rewrite the path without it.

A segment is ours when it decodes as a metadata slug, or when it carries the ``v1.`` prefix that
`session_core.encode_metadata_slug` always writes or rLLM SDK's ``rllm1:`` (then a decoding failure is a
malformed slug, reported).
Anything else under ``/meta/`` (an application's own ``/meta/users`` route) is left alone, and a segment of
ours after it (``/meta/users/meta/v1.…``) is still found.
"""

from __future__ import annotations

from typing import Any, NamedTuple
from urllib.parse import quote

from session_core import decode_metadata_slug
from session_core.slug import find_metadata_segment

__all__ = ["META_SEGMENT", "PathSlug", "drop_segment", "find_path_slug", "raw_path_without", "request_uri_without"]

META_SEGMENT = "/meta/"
_PATH_SAFE = "/:@!$&'()*+,;=-._~"


class PathSlug(NamedTuple):
    """A ``/meta/<slug>`` segment found in a path."""

    path: str  # the path without the segment ("/" when nothing is left)
    segment: str  # the slug text as it appeared in the path
    metadata: dict[str, Any] | None  # the decoded slug, or None when it is malformed
    error: str | None  # why the slug is malformed


def find_path_slug(path: str) -> PathSlug | None:
    """The ``/meta/<slug>`` segment of `path` that is ours (`session_core.slug.find_metadata_segment`), else
    None. Never raises."""
    found = find_metadata_segment(path)
    if found is None:
        return None
    start, end = found
    segment = path[start + len(META_SEGMENT) : end]
    clean = (path[:start] + path[end:]) or "/"
    try:
        metadata = decode_metadata_slug(segment)
    except (ValueError, RecursionError) as exc:
        return PathSlug(clean, segment, None, f"malformed metadata slug in the path: {exc}")
    return PathSlug(clean, segment, metadata, None)


def drop_segment(uri: str, segment: str) -> str | None:
    """`uri` (a raw request URI, maybe with a query) without ``/meta/<segment>``; None when it is not there.

    Only a whole segment matches: ``/meta/e30`` is not taken out of an app's own ``/meta/e30x``."""
    needle = META_SEGMENT + segment
    at = uri.find(needle)
    while at >= 0 and uri[at + len(needle) : at + len(needle) + 1] not in ("", "/", "?", "#"):
        at = uri.find(needle, at + 1)
    if at < 0:
        return None
    rest = uri[at + len(needle) :]
    head = uri[:at]
    if not head and (not rest or rest[0] != "/"):
        rest = "/" + rest
    return head + rest


def raw_path_without(raw_path: bytes | None, segment: str, clean_path: str) -> bytes:
    """ASGI ``raw_path`` without the segment (re-encoded from the clean path when it was percent-encoded)."""
    if raw_path:
        try:
            dropped = drop_segment(raw_path.decode("latin-1"), segment)
        except (AttributeError, UnicodeDecodeError):
            dropped = None
        if dropped is not None:
            return dropped.encode("latin-1")
    return quote(clean_path, safe=_PATH_SAFE).encode("ascii")


def request_uri_without(uri: str, segment: str, clean_path: str) -> str:
    """A WSGI ``REQUEST_URI`` / ``RAW_URI`` without the segment, its query kept as it was; when the segment was
    percent-encoded there, the path is re-encoded from `clean_path` (``SCRIPT_NAME`` + the new ``PATH_INFO``,
    PEP 3333's latin-1 text)."""
    at = uri.find("?")
    path, query = (uri, "") if at < 0 else (uri[:at], uri[at:])
    dropped = drop_segment(path, segment)
    if dropped is None:
        dropped = quote(clean_path, safe=_PATH_SAFE, encoding="latin-1", errors="replace")
    return dropped + query
