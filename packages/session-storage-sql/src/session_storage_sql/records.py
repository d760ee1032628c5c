"""What the session queries return: a row of the sessions table, and a node of a session tree."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SessionNode", "SessionRecord"]


@dataclass(frozen=True)
class SessionRecord:
    """One session as stored: its place in the tree, name, merged metadata and when it was first stored.

    `name` and `metadata` are None for an ancestor this database only knows from a descendant's uid chain
    (it ran in a process that never recorded a trace or saved its context here).
    """

    uid: str
    parent_uid: str | None
    root_uid: str
    depth: int
    name: str | None
    metadata: dict[str, Any] | None
    created_at: float

    @property
    def is_root(self) -> bool:
        return self.parent_uid is None


@dataclass
class SessionNode:
    """A session with its descendants; `trace_count` counts the traces of the whole subtree, `own_trace_count`
    those recorded directly in this session."""

    session: SessionRecord
    trace_count: int
    own_trace_count: int
    children: list[SessionNode] = field(default_factory=list)

    @property
    def uid(self) -> str:
        return self.session.uid

    @property
    def name(self) -> str | None:
        return self.session.name

    def walk(self) -> Iterator[SessionNode]:
        """This node and every descendant, depth first, children in creation order."""
        stack = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children))

    def find(self, uid: str) -> SessionNode | None:
        """The node of session `uid` in this subtree, or None."""
        return next((node for node in self.walk() if node.uid == uid), None)

    def __len__(self) -> int:
        """The number of sessions in this subtree."""
        return sum(1 for _ in self.walk())
