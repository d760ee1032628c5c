"""Where ``session-sql`` output goes: rich tables and trees when ``rich`` is installed, plain text otherwise.

The commands describe what to show (`Table`, `Node`, key/value `fields`) with text already made safe and
clipped by `cli_format`; an `Output` only lays it out, so both renderers show the same content.
"""

from __future__ import annotations

import codecs
import io
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import IO, Any, Literal, Protocol

from session_storage_sql.cli_format import json_text

__all__ = [
    "Column",
    "Node",
    "Output",
    "PlainOutput",
    "Segment",
    "Table",
    "escape_what_stdout_cannot_encode",
    "make_output",
    "rich_available",
    "takes_unicode",
]

logger = logging.getLogger(__name__)

Segment = tuple[str, str]  # (text, rich style; "" for none)


@dataclass(frozen=True)
class Column:
    """A table column; only `flexible` ones (free text) are cut when a terminal is too narrow for the table."""

    header: str
    justify: Literal["left", "right"] = "left"
    style: str = ""
    flexible: bool = False


@dataclass
class Table:
    columns: list[Column]
    rows: list[list[str]] = field(default_factory=list)
    title: str | None = None


@dataclass
class Node:
    """A tree node: its label as styled segments, and its children."""

    label: list[Segment]
    children: list[Node] = field(default_factory=list)


class Output(Protocol):
    def table(self, table: Table) -> None: ...
    def tree(self, root: Node) -> None: ...
    def fields(self, title: str, pairs: list[tuple[str, str]]) -> None: ...
    def line(self, text: str = "", style: str = "") -> None: ...
    def json(self, data: Any) -> None: ...


def _dump_json(data: Any, stream: IO[str]) -> None:
    stream.write(json_text(data, indent=2, ascii_only=not takes_unicode(stream)) + "\n")


def takes_unicode(stream: IO[str]) -> bool:
    """Whether `stream` encodes every character (UTF-8, UTF-16...), not a legacy code page such as Latin-1 or
    Windows' cp1252 (what a pipe gets there)."""
    encoding = getattr(stream, "encoding", None)
    if not encoding:  # an in-memory stream: text, not bytes
        return True
    try:
        return codecs.lookup(encoding).name.startswith("utf")
    except LookupError:
        return False


def escape_what_stdout_cannot_encode() -> None:
    """Make standard output write a character its encoding lacks as a backslash escape (``\\u540d``) rather
    than fail with UnicodeEncodeError; a UTF-8 stdout is left as it is."""
    stream = sys.stdout
    if stream is not None and not takes_unicode(stream) and isinstance(stream, io.TextIOWrapper):
        stream.reconfigure(errors="backslashreplace")


class PlainOutput:
    """Aligned plain text, for terminals and pipes alike; what ``session-sql`` prints without ``rich``."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._stream = stream if stream is not None else sys.stdout

    def _write(self, text: str) -> None:
        self._stream.write(text + "\n")

    def table(self, table: Table) -> None:
        if table.title:
            self._write(table.title)
        widths = [len(col.header) for col in table.columns]
        for row in table.rows:
            for i, cell in enumerate(row):
                widths[i] = max(widths[i], len(cell))

        def render(cells: list[str]) -> str:
            parts = [
                cell.rjust(widths[i]) if table.columns[i].justify == "right" else cell.ljust(widths[i])
                for i, cell in enumerate(cells)
            ]
            return "  ".join(parts).rstrip()

        self._write(render([col.header for col in table.columns]))
        self._write(render(["-" * w for w in widths]))
        for row in table.rows:
            self._write(render(row))

    def tree(self, root: Node) -> None:
        self._write(_plain(root.label))
        pending = _branches(root.children, "")  # a stack, not recursion: a tree may be thousands of levels deep
        while pending:
            node, prefix, last = pending.pop()
            self._write(f"{prefix}{'└── ' if last else '├── '}{_plain(node.label)}")
            pending += _branches(node.children, prefix + ("    " if last else "│   "))

    def fields(self, title: str, pairs: list[tuple[str, str]]) -> None:
        if title:
            self._write(title)
        width = max((len(k) for k, _ in pairs), default=0)
        for key, value in pairs:
            self._write(f"  {key.ljust(width)}  {value}".rstrip())

    def line(self, text: str = "", style: str = "") -> None:
        self._write(text)

    def json(self, data: Any) -> None:
        _dump_json(data, self._stream)


class RichOutput:
    """Tables and trees drawn by ``rich`` (colors only on a terminal; ``NO_COLOR`` respected by rich)."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        from rich.console import Console

        out = stream if stream is not None else sys.stdout
        width: int | None = None
        if not _is_terminal(out):
            width = _page_width()
        self._console = Console(file=out, width=width, highlight=False, emoji=False, markup=False, soft_wrap=False)
        self._stream = out

    def table(self, table: Table) -> None:
        from rich import box
        from rich.table import Table as RichTable
        from rich.text import Text

        if table.title:
            self._console.print(Text(table.title, style="bold"))
        grid = RichTable(
            box=box.SIMPLE_HEAD,
            show_edge=False,
            header_style="bold",
            pad_edge=False,
        )
        widths = [max([len(col.header), *(len(row[i]) for row in table.rows)]) for i, col in enumerate(table.columns)]
        flexible = [i for i, col in enumerate(table.columns) if col.flexible]
        # Too wide for the page: the fixed columns (times, uids, counts) keep their width, free text shares the rest.
        room = self._console.width - 3 * (len(widths) - 1) - sum(w for i, w in enumerate(widths) if i not in flexible)
        if flexible and room < sum(widths[i] for i in flexible):
            for i in flexible:
                widths[i] = min(widths[i], max(8, room // len(flexible)))
        for i, col in enumerate(table.columns):
            grid.add_column(
                Text(col.header),
                justify=col.justify,
                style=col.style or None,
                no_wrap=True,
                overflow="ellipsis",
                min_width=widths[i] if not col.flexible else None,
                max_width=widths[i] if col.flexible else None,
            )
        for row in table.rows:
            grid.add_row(*(Text(cell) for cell in row))
        self._console.print(grid)

    def tree(self, root: Node) -> None:
        from rich.tree import Tree

        tree = Tree(_rich_text(root.label), guide_style="dim")
        pending = [(tree, child) for child in reversed(root.children)]
        while pending:
            parent, node = pending.pop()
            branch = parent.add(_rich_text(node.label))
            pending.extend((branch, child) for child in reversed(node.children))
        self._console.print(tree)

    def fields(self, title: str, pairs: list[tuple[str, str]]) -> None:
        from rich.text import Text

        if title:
            self._console.print(Text(title, style="bold"))
        width = max((len(k) for k, _ in pairs), default=0)
        for key, value in pairs:
            line = Text("  ")
            line.append(key.ljust(width), style="bold")
            line.append(f"  {value}")
            self._console.print(line)

    def line(self, text: str = "", style: str = "") -> None:
        from rich.text import Text

        self._console.print(Text(text, style=style))

    def json(self, data: Any) -> None:
        _dump_json(data, self._stream)


def rich_available() -> bool:
    """Whether the optional ``rich`` (``pip install "session-storage-sql[cli]"``) can be imported."""
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


def make_output(plain: bool = False, stream: IO[str] | None = None) -> Output:
    """Rich output when ``rich`` is installed and `plain` is not asked for, else plain text."""
    if not plain and rich_available():
        return RichOutput(stream)
    if not plain:
        logger.debug('rich is not installed: plain-text output (pip install "session-storage-sql[cli]")')
    return PlainOutput(stream)


def _branches(children: list[Node], prefix: str) -> list[tuple[Node, str, bool]]:
    """`children` as (node, prefix, is last) to push on a stack: reversed, so the first is popped first."""
    return [(child, prefix, i == len(children) - 1) for i, child in reversed(list(enumerate(children)))]


def _plain(label: list[Segment]) -> str:
    return "".join(text for text, _ in label)


def _rich_text(label: list[Segment]) -> Any:
    from rich.text import Text

    text = Text()
    for part, style in label:
        text.append(part, style=style or None)
    return text


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _page_width() -> int:
    """The width to lay out for when output goes to a pipe or file: ``$COLUMNS``, else the terminal that
    standard error is on (``session-sql show X | less``), else 160 columns rather than rich's 80."""
    columns = _int(os.environ.get("COLUMNS"))
    if columns:
        return columns
    for stream in (sys.__stderr__, sys.__stdin__):
        try:
            return os.get_terminal_size(stream.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            continue
    return 160


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text else None
    except ValueError:
        return None
