"""What the ``session-sql`` command line accepts: the database to open, metadata filters and times.

Each parser raises `CliError` with a message that says what was wrong and what is accepted, so the command
prints one line and exits with status 2 instead of a traceback.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from session_storage_sql.urls import DEFAULT_SQLITE_FILE, STORAGE_URL_ENV

__all__ = ["DEMO_SQLITE_FILE", "CliError", "parse_meta", "parse_time", "resolve_db"]

DEMO_SQLITE_FILE = "session-demo.db"
"""The file the demo (``docs/examples/demo.py``) writes in its working directory."""

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|secs|m|min|mins|h|hr|hrs|d|day|days|w|wk|wks)\s*$", re.I)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class CliError(Exception):
    """A problem the user can fix (bad argument, missing database, unknown uid): one line, exit status 2."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


def resolve_db(db: str | None, environ: Mapping[str, str] | None = None, cwd: Path | None = None) -> str | Path:
    """What to inspect: `db` (a URL, or a SQLite file path), else ``$SESSION_STORAGE_URL`` (either too), else
    ``./session-demo.db`` when it exists, else ``./sessions.db`` (what `session_storage_sql.default_url` opens).

    A path is returned as an absolute `Path`, never turned into a URL: characters such as ``?``, ``#`` and ``%``
    would be read as URL syntax there (differently by SQLAlchemy 2.0 and 2.1).
    """
    env = os.environ if environ is None else environ
    here = Path.cwd() if cwd is None else cwd
    if db is not None:
        if not db.strip():
            raise CliError("--db is empty; give a database URL (sqlite:///path, postgresql://...) or a file path")
        return _url_or_path(db, here)
    from_env = env.get(STORAGE_URL_ENV)
    if from_env:
        return _url_or_path(from_env, here)
    demo = here / DEMO_SQLITE_FILE
    if demo.exists():
        return demo
    return here / DEFAULT_SQLITE_FILE  # as default_url() without $SESSION_STORAGE_URL


def _url_or_path(text: str, here: Path) -> str | Path:
    if "://" in text:
        return text
    try:
        path = Path(text).expanduser()
    except RuntimeError:  # "~someone/...": no such user, or no home directory
        raise CliError(
            f"cannot open {text}: {text.split('/', 1)[0]!r} names no home directory (no such user?)"
        ) from None
    return path if path.is_absolute() else here / path


def parse_meta(items: list[str] | None) -> dict[str, Any]:
    """``key=value`` filters as a dict; a value that parses as JSON is taken as JSON (``3``, ``true``, ``null``,
    ``"3"``), anything else as a string. A key given twice keeps the last value."""
    wanted: dict[str, Any] = {}
    for item in items or ():
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise CliError(
                f"bad --meta filter {item!r}: expected key=value (e.g. --meta task_id=task-3 --meta rollout_idx=3)"
            )
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        wanted[key] = value
    return wanted


def parse_time(text: str, option: str, now: float | None = None) -> float:
    """Unix seconds from an ISO 8601 date or datetime (no zone: local time) or a relative age such as
    ``30m``, ``1h``, ``2d`` (that long before now)."""
    stripped = text.strip()
    match = _RELATIVE.match(stripped)
    if match:
        amount = float(match.group(1))
        unit = match.group(2)[0].lower()
        return (time.time() if now is None else now) - amount * _UNIT_SECONDS[unit]
    iso = stripped[:-1] + "+00:00" if stripped[-1:] in ("Z", "z") else stripped
    try:
        # A naive datetime at the edge of the calendar (0001-01-01) has no local time: timestamp() raises.
        return datetime.datetime.fromisoformat(iso).timestamp()
    except (ValueError, OverflowError, OSError):
        raise CliError(
            f"bad {option} value {text!r}: expected an ISO 8601 date or datetime (2024-05-01, "
            "2024-05-01T12:30:00, 2024-05-01T12:30:00+02:00) or an age like 30s, 15m, 1h, 2d, 1w"
        ) from None
