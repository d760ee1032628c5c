"""URL helpers: storage URLs must never carry a secret across a boundary."""

from __future__ import annotations

from urllib.parse import unquote_plus

__all__ = ["redact_url", "url_scheme"]


def redact_url(url: str) -> str:
    """`url` without its password, nor a ``password`` / ``sslpassword`` query parameter (user names stay); other
    URLs unchanged. Read as text, never parsed, so no URL (a bad port, a broken IPv6 host) escapes redaction;
    a password that holds ``/``, ``?``, ``#`` or ``@`` unencoded is removed whole, up to the last ``@`` before
    the path."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    end = _authority_end(rest, 0)
    authority = rest[:end]
    # A password holding '/', '?' or '#' ends the authority early ("user:p#ss@host", and "me@server:p?ss@host" for
    # a user name holding '@', as Azure's PostgreSQL wants): what follows the ':' after the authority's last '@' is
    # then no port number, and an '@' comes later.
    at = rest.find("@", end)
    if at >= 0 and not _host_and_port(authority.rpartition("@")[2]):
        end = _authority_end(rest, at)
        authority = rest[:end]
    if "@" in authority:
        userinfo, _, host = authority.rpartition("@")
        user = userinfo.partition(":")[0]
        rest = (f"{user}@{host}" if user else host) + rest[end:]
    if "?" in rest and ("assword" in rest.lower() or "%" in rest):
        head, _, query = rest.partition("?")
        query, hash_, fragment = query.partition("#")
        # names compared decoded, as SQLAlchemy (parse_qsl) reads them: "pass%77ord" is a password too
        kept = [
            item for item in query.split("&") if unquote_plus(item.partition("=")[0]).lower() not in _SECRET_QUERY_KEYS
        ]
        rest = head + ("?" + "&".join(kept) if kept else "") + hash_ + fragment
    return f"{scheme}://{rest}"


_SECRET_QUERY_KEYS = frozenset({"password", "sslpassword"})


def _host_and_port(text: str) -> bool:
    """Whether `text` reads as ``host`` or ``host:<digits>``, so no password was cut short in it (anything else after
    a ':', an IPv6 literal too, counts as cut short when an '@' follows: removing too much is the safe mistake)."""
    _, colon, port = text.partition(":")
    return not colon or port.isdigit()


def _authority_end(rest: str, start: int) -> int:
    """Where the authority of ``scheme://`` + `rest` ends: the first ``/``, ``?`` or ``#`` from `start` on."""
    ends = [i for i in (rest.find(mark, start) for mark in "/?#") if i >= 0]
    return min(ends) if ends else len(rest)


def url_scheme(url: str) -> str:
    """The lower-cased scheme of a URL (`postgresql+psycopg://…` gives `postgresql+psycopg`)."""
    scheme, sep, _ = url.partition("://")
    if not sep:
        scheme, sep, _ = url.partition(":")
    return scheme.lower() if sep else ""
