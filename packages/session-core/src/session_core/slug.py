"""URL slug: session metadata in a path segment, for clients that only let you set a base URL."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from session_core.context import json_safe
from session_core.errors import UnserializableMetadata

__all__ = [
    "MAX_SLUG_LENGTH",
    "build_proxied_base_url",
    "decode_metadata_slug",
    "encode_metadata_slug",
    "extract_metadata_from_path",
    "find_metadata_segment",
]

SLUG_PREFIX = "v1."
RLLM_SLUG_PREFIX = "rllm1:"
"""rLLM SDK's slug prefix (same body: base64url of compact JSON); read, never written."""
MAX_SLUG_LENGTH = 6144
_SLUG_RE = re.compile(r"(?:v1\.|rllm1:)?[A-Za-z0-9_-]*")
_META_SEGMENT = "/meta/"
_SLUG_PREFIXES = (SLUG_PREFIX, RLLM_SLUG_PREFIX)


def encode_metadata_slug(meta: Mapping[str, Any]) -> str:
    """``v1.`` + base64url (unpadded) of the compact JSON of `meta` (UTF-8; text UTF-8 cannot encode, a lone
    surrogate, as JSON ``\\udce9`` escapes, which `decode_metadata_slug` reads back exactly)."""
    if not isinstance(meta, Mapping):
        raise TypeError(f"slug metadata must be a dict, got {type(meta).__name__}")
    try:
        safe = json_safe(meta, "slug metadata")
    except UnserializableMetadata as exc:
        raise ValueError(str(exc)) from exc
    try:
        raw = json.dumps(safe, separators=(",", ":"), ensure_ascii=False).encode()
    except UnicodeEncodeError:  # a lone surrogate (os.fsdecode of a non-UTF-8 name): JSON escapes carry it exactly
        raw = json.dumps(safe, separators=(",", ":")).encode()
    slug = SLUG_PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    if len(slug) > MAX_SLUG_LENGTH:
        raise ValueError(f"metadata slug is {len(slug)} characters, over the limit of {MAX_SLUG_LENGTH}")
    return slug


def decode_metadata_slug(slug: str) -> dict[str, Any]:
    """The metadata dict of a slug; `ValueError` saying what is wrong for anything malformed.

    Reads this family's ``v1.`` slugs, unprefixed ones, and rLLM SDK's ``rllm1:`` slugs (so its clients can
    talk to session-http's middleware while they migrate)."""
    if not isinstance(slug, str):
        raise ValueError(f"metadata slug must be a str, got {type(slug).__name__}")
    if len(slug) > MAX_SLUG_LENGTH:
        raise ValueError(f"metadata slug is {len(slug)} characters, over the limit of {MAX_SLUG_LENGTH}")
    if not _SLUG_RE.fullmatch(slug):
        raise ValueError("metadata slug holds characters outside base64url")
    if slug.startswith(SLUG_PREFIX):
        body = slug[len(SLUG_PREFIX) :]
    elif slug.startswith(RLLM_SLUG_PREFIX):  # written by rLLM's SDK: the same JSON under its own prefix
        body = slug[len(RLLM_SLUG_PREFIX) :]
    else:
        body = slug
    if not body:
        raise ValueError("metadata slug is empty")
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        meta = json.loads(raw.decode("utf-8"))
    except (binascii.Error, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ValueError(f"metadata slug is not base64url-encoded JSON: {type(exc).__name__}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"metadata slug holds a JSON {type(meta).__name__}, not an object")
    return meta


def build_proxied_base_url(base_url: str, meta: Mapping[str, Any]) -> str:
    """`base_url` with ``/meta/<slug>`` inserted in its path before a trailing ``/v1`` (appended to the path
    when there is none); a query or fragment stays where it was.

    A trailing ``/`` is kept when `base_url` had one (``http://h/v1/`` gives ``http://h/meta/<slug>/v1/``), so
    the result joins relative paths as the input did: httpx and the OpenAI SDK add the slash themselves either
    way, but `urllib.parse.urljoin` without it would replace the last segment."""
    slug = encode_metadata_slug(meta)
    parts = urlsplit(base_url)
    path = parts.path.rstrip("/")
    path = f"{path[:-3]}/meta/{slug}/v1" if path.endswith("/v1") else f"{path}/meta/{slug}"
    if parts.path.endswith("/"):
        path += "/"
    return urlunsplit(parts._replace(path=path))


def find_metadata_segment(path: str) -> tuple[int, int] | None:
    """``(start, end)`` of the ``/meta/<slug>`` segment of `path` that is ours (``path[start:end]``), else None.

    Each ``/meta/`` is tried in turn. Its segment is ours when it carries a slug prefix (``v1.``, which
    `encode_metadata_slug` always writes, or rLLM SDK's ``rllm1:``), malformed or not, or when it decodes as an
    unprefixed slug; anything else (an application's own ``/meta/users`` route) is skipped. Never raises."""
    at = path.find(_META_SEGMENT)
    while at >= 0:
        slug_start = at + len(_META_SEGMENT)
        end = path.find("/", slug_start)
        end = len(path) if end < 0 else end
        slug = path[slug_start:end]
        if slug.startswith(_SLUG_PREFIXES):
            return at, end
        try:
            decode_metadata_slug(slug)
        except (ValueError, RecursionError):
            at = path.find(_META_SEGMENT, at + 1)  # at + 1: "/meta/meta/<slug>" is a route "/meta" + our segment
        else:
            return at, end
    return None


def extract_metadata_from_path(path: str) -> tuple[str, dict[str, Any]] | None:
    """``(path without the /meta/<slug> segment, metadata)``, or None when the path has no such segment of ours.

    Which ``/meta/`` segment is ours: see `find_metadata_segment`. Raises `ValueError` when that segment carries
    our prefix but its slug is malformed.
    """
    found = find_metadata_segment(path)
    if found is None:
        return None
    start, end = found
    meta = decode_metadata_slug(path[start + len(_META_SEGMENT) : end])
    return (path[:start] + path[end:]) or "/", meta
