"""The ``session_core.storage`` entry points: ``open_storage("sqlite:///…")`` / ``("postgresql://…")`` land here."""

from __future__ import annotations

from session_storage_sql.storage import SqlSessionStorage

__all__ = ["open_sql_storage"]


def open_sql_storage(url: str) -> SqlSessionStorage:
    """The storage for a ``sqlite``, ``postgresql``, ``postgresql+psycopg`` or ``postgres`` URL."""
    return SqlSessionStorage(url)
