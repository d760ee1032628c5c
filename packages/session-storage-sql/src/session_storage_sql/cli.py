"""``session-sql``: inspect a session database from the shell — list sessions, walk a session tree, show or
export a session's traces, and summarize the database.

Read-only: it never creates a database or writes to one. Output uses ``rich`` tables and trees when installed
(``pip install "session-storage-sql[cli]"``) and aligned plain text otherwise; ``--json`` prints
machine-readable JSON instead. User errors (no database, unknown uid, bad filter) print one line on stderr and
exit with status 2; a database failure exits with 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import itertools
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, redirect_stderr, suppress
from pathlib import Path
from typing import Any, NoReturn, TextIO

from session_core import MissingOptionalDependency, StorageError, Trace, redact_url
from session_storage_sql._version import __version__
from session_storage_sql.cli_args import CliError, parse_meta, parse_time, resolve_db
from session_storage_sql.cli_db import MIN_PREFIX, Database, open_database
from session_storage_sql.cli_format import (
    clip,
    day_of,
    fmt_bytes,
    fmt_latency,
    fmt_meta,
    fmt_time,
    fmt_tokens,
    json_text,
    meta_changes,
    safe,
    safe_block,
    short_uid,
    summarize,
)
from session_storage_sql.cli_output import (
    Column,
    Node,
    Output,
    Segment,
    Table,
    escape_what_stdout_cannot_encode,
    make_output,
    takes_unicode,
)
from session_storage_sql.records import SessionNode, SessionRecord

__all__ = ["build_parser", "main"]

PROG = "session-sql"
_META_WIDTH = 60
_TEXT_WIDTH = 32


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``session-sql ls: error: ... (see session-sql ls --help)``)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected zero or more, got {value}")
    return value


_GLOBAL_HELP = {
    "--db": "database URL (sqlite:///path.db, postgresql://user@host/db) or SQLite file path; default: "
    "$SESSION_STORAGE_URL, else ./session-demo.db if it exists, else ./sessions.db",
    "--json": "print JSON instead of tables (ls, tree, show, stats)",
    "--plain": "plain-text output even when rich is installed",
}


_EPILOG = f"""\
A UID may be given as a unique prefix of {MIN_PREFIX} or more characters, as git takes commit ids.

examples:
  session-sql ls --roots --last 10
  session-sql ls --name rollout --meta task_id=task-3 --meta rollout_idx=3 --since 1h
  session-sql tree 6d0b4d --traces
  session-sql show 6d0b4d --full
  session-sql export 6d0b4d -o rollout.jsonl
  session-sql --db postgresql://app@db.internal/traces stats --json

exit status: 0 done; 1 the database failed; 2 a usage error (no database, unknown uid, bad filter).
"""


_SUB_EPILOG = "The global options --db URL_OR_PATH, --json and --plain go here too (see session-sql --help)."


def _add_global_options(parser: argparse.ArgumentParser, *, repeated: bool) -> None:
    """--db, --json and --plain. Repeated on each command, they are hidden from its help and default to
    SUPPRESS, so a value given before the command is kept."""

    def extra(flag: str) -> dict[str, Any]:
        return {"default": argparse.SUPPRESS, "help": argparse.SUPPRESS} if repeated else {"help": _GLOBAL_HELP[flag]}

    parser.add_argument("--db", metavar="URL_OR_PATH", **extra("--db"))
    parser.add_argument("--json", action="store_true", **extra("--json"))
    parser.add_argument("--plain", action="store_true", **extra("--plain"))


def build_parser() -> argparse.ArgumentParser:
    """The ``session-sql`` argument parser (global options are accepted before or after the command)."""
    parser = _Parser(
        prog=PROG,
        description="Inspect a session-storage-sql database: sessions, session trees, traces. Read-only.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_global_options(parser, repeated=False)
    parser.add_argument("--version", action="version", version=f"{PROG} (session-storage-sql {__version__})")
    sub_common = _Parser(add_help=False)
    _add_global_options(sub_common, repeated=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)

    ls = commands.add_parser("ls", parents=[sub_common], epilog=_SUB_EPILOG, help="list sessions, oldest first")
    ls.add_argument("--name", help="only sessions with this name")
    ls.add_argument(
        "--meta",
        action="append",
        metavar="KEY=VALUE",
        help="only sessions whose merged metadata has KEY equal to VALUE (JSON when it parses: 3, true, null, "
        '"3"; else a string); repeatable',
    )
    ls.add_argument(
        "--since", metavar="WHEN", help="created at or after WHEN: ISO 8601 (2024-05-01T12:00) or 30m, 1h, 2d"
    )
    ls.add_argument("--until", metavar="WHEN", help="created before WHEN (same forms as --since)")
    ls.add_argument("--roots", action="store_true", help="only root sessions (no parent)")
    which = ls.add_mutually_exclusive_group()
    which.add_argument("--limit", type=_count, metavar="N", help="the first (oldest) N matching sessions")
    which.add_argument("--last", type=_count, metavar="N", help="the last (newest) N matching sessions")
    ls.add_argument("-q", "--quiet", action="store_true", help="print full uids only, one per line")
    ls.set_defaults(handler=cmd_ls)

    tree = commands.add_parser(
        "tree", parents=[sub_common], epilog=_SUB_EPILOG, help="a session and its descendants as a tree"
    )
    tree.add_argument("uid", metavar="UID", help="session uid or unique prefix")
    tree.add_argument("--traces", action="store_true", help="list each trace under the session that recorded it")
    tree.set_defaults(handler=cmd_tree)

    show = commands.add_parser(
        "show", parents=[sub_common], epilog=_SUB_EPILOG, help="a session's traces (its own and descendants')"
    )
    show.add_argument("uid", metavar="UID", help="session uid or unique prefix")
    show.add_argument("--full", action="store_true", help="every field of every trace, untruncated")
    show.set_defaults(handler=cmd_show)

    export = commands.add_parser(
        "export", parents=[sub_common], epilog=_SUB_EPILOG, help="a session's traces as JSON Lines or JSON"
    )
    export.add_argument("uid", metavar="UID", help="session uid or unique prefix")
    export.add_argument(
        "--format",
        choices=("jsonl", "json"),
        default="jsonl",
        help="jsonl: one Trace.to_dict() per line (default); json: {'session': ..., 'traces': [...]}",
    )
    export.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of standard output")
    export.set_defaults(handler=cmd_export)

    stats = commands.add_parser(
        "stats", parents=[sub_common], epilog=_SUB_EPILOG, help="counts, time span, top names, size"
    )
    stats.add_argument("--top", type=_count, default=10, metavar="N", help="how many session names to rank (10)")
    stats.set_defaults(handler=cmd_stats)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``session-sql`` with `argv` (default: the command line); return the exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    redact = _redactor(arguments)
    parser = build_parser()
    usage_errors = io.StringIO()
    try:
        with redirect_stderr(usage_errors):
            args = parser.parse_args(arguments)
    except SystemExit as exc:  # --help, --version, or a usage error (printed here, without any password)
        sys.stderr.write(redact(usage_errors.getvalue()))
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    escape_what_stdout_cannot_encode()
    out = make_output(plain=args.plain)
    try:
        status: int = args.handler(args, out)
        sys.stdout.flush()
        return status
    except CliError as exc:
        return _fail(redact(str(exc)), exc.status)
    except MissingOptionalDependency as exc:
        return _fail(redact(str(exc)), 2)
    except StorageError as exc:
        return _fail(redact(str(exc)), 1)
    except BrokenPipeError:
        # The reader (head, less) went away: stop quietly, and keep Python from complaining at exit.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return 1
    except KeyboardInterrupt:
        return 130


def _redactor(arguments: list[str]) -> Callable[[str], str]:
    """A function that removes from a message the password of any URL among `arguments` (a URL typed in the
    wrong place is quoted back by the usage error that names it), keeping the rest of the URL."""
    pairs = [(arg, redact_url(arg)) for arg in arguments if "://" in arg]
    pairs = sorted(((arg, shown) for arg, shown in pairs if shown != arg), key=lambda pair: -len(pair[0]))

    def redact(message: str) -> str:
        for arg, shown in pairs:
            message = message.replace(arg, shown)
        return message

    return redact


def _fail(message: str, status: int) -> int:
    # One line, and terminal-safe: a path may hold control characters, or bytes that are not UTF-8.
    print(f"{PROG}: error: {safe(' '.join(message.split()))}", file=sys.stderr)
    return status


@contextmanager
def _database(args: argparse.Namespace) -> Iterator[Database]:
    db = open_database(resolve_db(args.db))
    try:
        yield db
    finally:
        db.close()


# -- ls -------------------------------------------------------------------------------------------------------
def cmd_ls(args: argparse.Namespace, out: Output) -> int:
    """List sessions matching the filters, oldest first, with their trace counts."""
    if args.quiet and args.json:
        raise CliError("--quiet prints uids only and --json prints JSON: give one of them")
    metadata = parse_meta(args.meta)
    since = parse_time(args.since, "--since") if args.since is not None else None
    until = parse_time(args.until, "--until") if args.until is not None else None
    latest = args.last is not None  # the newest N straight from the index (--last excludes --limit)
    with _database(args) as db:
        records = db.storage.list_sessions(
            name=args.name,
            metadata=metadata or None,
            since=since,
            until=until,
            roots_only=args.roots,
            limit=args.last if latest else args.limit,
            newest_first=latest,
        )
        if latest:
            records.reverse()  # shown oldest first, like every listing
        if args.quiet:
            sys.stdout.write("".join(f"{r.uid}\n" for r in records))
            return 0
        counts = db.trace_counts(r.uid for r in records)
    if args.json:
        out.json([{**_record_dict(r), "trace_count": counts.get(r.uid, 0)} for r in records])
        return 0
    table = Table(
        [
            Column("uid", style="cyan"),
            Column("name", style="bold"),
            Column("parent", style="dim"),
            Column("created"),
            Column("traces", justify="right"),
            Column("metadata", style="dim", flexible=True),
        ]
    )
    for r in records:
        table.rows.append(
            [
                short_uid(r.uid),
                _name(r),
                short_uid(r.parent_uid) if r.parent_uid else "",
                fmt_time(r.created_at),
                str(counts.get(r.uid, 0)),
                fmt_meta(r.metadata, _META_WIDTH),
            ]
        )
    if records:
        out.table(table)
    noun = "session" if len(records) == 1 else "sessions"
    out.line(f"{len(records)} {noun}" if records else "no sessions match", style="dim")
    return 0


# -- tree -----------------------------------------------------------------------------------------------------
def cmd_tree(args: argparse.Namespace, out: Output) -> int:
    """Show a session and its descendants, each with its trace counts (and its traces with ``--traces``)."""
    with _database(args) as db:
        record = db.find_session(args.uid)
        root = db.storage.session_tree(record.uid)
        if root is None:
            raise CliError(f"session {record.uid} disappeared while reading {db.url}")
        traces: dict[str, list[Trace]] | None = None
        with_date = False
        if args.traces:
            owners = db.recording_sessions(record.uid)
            traces = {}
            found = db.storage.get_traces(record.uid)
            with_date = len({day_of(t.timestamp) for t in found}) > 1
            for trace in found:
                traces.setdefault(owners.get(trace.trace_id, record.uid), []).append(trace)
    if args.json:
        sys.stdout.write(_tree_json(root, traces, ascii_only=not takes_unicode(sys.stdout)) + "\n")
        return 0
    out.tree(_tree_nodes(root, traces, with_date))
    sessions = len(root)
    summary = f"{sessions} session{'s' if sessions != 1 else ''}, {_traces_text(root.trace_count)}"
    if not record.is_root:
        summary += (
            f"; part of the tree of root {short_uid(record.root_uid)} (session-sql tree {short_uid(record.root_uid)})"
        )
    out.line(summary, style="dim")
    return 0


def _tree_nodes(root: SessionNode, traces: dict[str, list[Trace]] | None, with_date: bool) -> Node:
    """The tree to show, built without recursion (a chain of sessions may be deeper than Python's recursion limit)."""
    top = _tree_node(root, None, traces, with_date)
    pending: list[tuple[SessionNode, Node, dict[str, Any] | None]] = [(root, top, None)]
    while pending:
        node, shown, inherited = pending.pop()
        merged = node.session.metadata if node.session.metadata is not None else inherited
        for child in node.children:
            child_shown = _tree_node(child, merged or {}, traces, with_date)
            shown.children.append(child_shown)
            pending.append((child, child_shown, merged or {}))
    return top


def _tree_node(
    node: SessionNode, inherited: dict[str, Any] | None, traces: dict[str, list[Trace]] | None, with_date: bool
) -> Node:
    """One session of the tree, with its own traces (its child sessions are added by `_tree_nodes`)."""
    record = node.session
    label: list[Segment] = [(_name(record), "bold"), (" ", ""), (short_uid(record.uid), "cyan"), ("  ", "")]
    counts = _traces_text(node.trace_count)
    if node.own_trace_count and node.own_trace_count != node.trace_count:
        counts += f", {node.own_trace_count} own"
    label.append((counts, "green" if node.trace_count else "dim"))
    own_meta = record.metadata if inherited is None else meta_changes(record.metadata, inherited)
    if own_meta:
        label += [("  ", ""), (fmt_meta(own_meta, _META_WIDTH), "dim")]
    result = Node(label)
    if traces is not None:
        for trace in traces.get(record.uid, ()):
            result.children.append(Node(_trace_label(trace, with_date)))
    return result


def _trace_label(trace: Trace, with_date: bool) -> list[Segment]:
    moment = fmt_time(trace.timestamp, millis=True, date=with_date)
    label: list[Segment] = [("• ", "dim"), (moment, "dim"), (" ", "")]
    label.append((clip(trace.name, 40) or "(no name)", "yellow"))
    if trace.model:
        label += [(" ", ""), (clip(trace.model, 30), "magenta")]
    shown_in = summarize(trace.input, _TEXT_WIDTH)
    shown_out = summarize(trace.output, _TEXT_WIDTH)
    if shown_in or shown_out:
        label.append((f"  {shown_in} → {shown_out}", ""))
    return label


def _tree_json(root: SessionNode, traces: dict[str, list[Trace]] | None, *, ascii_only: bool = False) -> str:
    """The ``--json`` tree: each session's fields, then its ``children``, nested and indented as
    ``json.dumps(indent=2)`` lays them out, but written without recursion (see `_tree_nodes`)."""
    parts: list[str] = []
    pending: list[tuple[SessionNode, str] | str] = [(root, "")]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            parts.append(item)
            continue
        node, pad = item
        fields: dict[str, Any] = {
            **_record_dict(node.session),
            "trace_count": node.trace_count,
            "own_trace_count": node.own_trace_count,
        }
        if traces is not None:
            fields["traces"] = [t.to_dict() for t in traces.get(node.uid, ())]
        body = json_text(fields, indent=2, ascii_only=ascii_only)[: -len("\n}")].replace("\n", "\n" + pad)
        if not node.children:
            parts.append(f'{body},\n{pad}  "children": []\n{pad}}}')
            continue
        parts.append(f'{body},\n{pad}  "children": [\n')
        inner = pad + "    "
        pending.append(f"\n{pad}  ]\n{pad}}}")
        for i in range(len(node.children) - 1, -1, -1):
            if i < len(node.children) - 1:
                pending.append(",\n")
            pending.append((node.children[i], inner))
            pending.append(inner)
    return "".join(parts)


def _traces_text(count: int) -> str:
    return "no traces" if count == 0 else f"{count} trace{'s' if count != 1 else ''}"


# -- show -----------------------------------------------------------------------------------------------------
def cmd_show(args: argparse.Namespace, out: Output) -> int:
    """Show a session and its traces (its own and its descendants'), oldest first."""
    with _database(args) as db:
        record = db.find_session(args.uid)
        traces = db.storage.get_traces(record.uid)
        owners = db.recording_sessions(record.uid) if traces and not args.json else {}
    if args.json:
        out.json(
            {"session": {**_record_dict(record), "trace_count": len(traces)}, "traces": [t.to_dict() for t in traces]}
        )
        return 0
    out.fields(f"session {safe(record.uid)}", _session_fields(record, len(traces)))
    if not traces:
        return 0
    out.line()
    if args.full:
        for i, trace in enumerate(traces, 1):
            title = f"trace {i}/{len(traces)}  {clip(trace.name, 60)}  {fmt_time(trace.timestamp, millis=True)}"
            out.line(title, style="bold")
            out.line(safe_block(json_text(trace.to_dict(), indent=2)))
        return 0
    days = {day_of(t.timestamp) for t in traces}
    table = Table(
        [
            Column("time", style="dim"),
            Column("session", style="cyan"),
            Column("name", style="yellow"),
            Column("model", style="magenta"),
            Column("tokens", justify="right"),
            Column("ms", justify="right"),
            Column("input", flexible=True),
            Column("output", flexible=True),
        ],
        title=f"{len(traces)} trace{'s' if len(traces) != 1 else ''}, oldest first",
    )
    for trace in traces:
        table.rows.append(
            [
                fmt_time(trace.timestamp, millis=True, date=len(days) > 1),
                short_uid(owners.get(trace.trace_id, "")),
                clip(trace.name, 30),
                clip(trace.model or "", 24),
                fmt_tokens(trace.tokens),
                fmt_latency(trace.latency_ms),
                summarize(trace.input, _TEXT_WIDTH),
                summarize(trace.output, _TEXT_WIDTH),
            ]
        )
    out.table(table)
    return 0


def _session_fields(record: SessionRecord, traces: int) -> list[tuple[str, str]]:
    return [
        ("name", _name(record)),
        ("parent", safe(record.parent_uid) if record.parent_uid else "(root)"),
        ("root", safe(record.root_uid)),
        ("depth", str(record.depth)),
        ("created", fmt_time(record.created_at)),
        ("metadata", fmt_meta(record.metadata) or "{}"),
        ("traces", str(traces)),
    ]


# -- export ---------------------------------------------------------------------------------------------------
def cmd_export(args: argparse.Namespace, out: Output) -> int:
    """Write a session's traces as JSON Lines (one ``Trace.to_dict()`` per line) or one JSON document, read and
    written a batch at a time (`SqlSessionStorage.iter_traces`), so a session of any size exports in bounded
    memory."""
    to_stdout = args.output is None or args.output == "-"
    ascii_only = to_stdout and not takes_unicode(sys.stdout)  # a file is always written in UTF-8
    with _database(args) as db:
        record = db.find_session(args.uid)
        traces = db.storage.iter_traces(record.uid)
        if to_stdout:
            _write_export(sys.stdout, record, traces, args.format, ascii_only)
            return 0
        target = Path(args.output)
        if db.path is not None and _same_file(target, db.path):
            raise CliError(f"{target} is the database being read: give another file to export to (-o)")
        # The first batch is read before the file is opened (emptied): a database that fails from the start
        # (locked past the retries, unreachable) leaves an older export there as it was.
        traces = itertools.chain(list(itertools.islice(traces, 1)), traces)
        try:
            with open(target, "w", encoding="utf-8", newline="\n") as stream:
                try:
                    count = _write_export(stream, record, traces, args.format, ascii_only)
                except BaseException:  # the database failed, the disk filled, Ctrl-C: no half an export left
                    # A regular file by that name only: unlinking a symlink (/dev/stdout is one, removable by
                    # root) removed the link and left the file it points to, which may hold more, as written.
                    if target.is_file() and not target.is_symlink():
                        with suppress(OSError):
                            target.unlink()
                    raise
        except OSError as exc:
            raise CliError(f"cannot write {target}: {exc.strerror or exc}") from None
    print(f"wrote {count} trace{'s' if count != 1 else ''} of session {record.uid} to {target}", file=sys.stderr)
    return 0


def _write_export(stream: TextIO, record: SessionRecord, traces: Iterable[Trace], form: str, ascii_only: bool) -> int:
    """`traces` written to `stream` one by one; the JSON document is the text ``json.dumps(..., indent=2)`` makes
    of ``{"session": ..., "traces": [...]}``. Returns how many traces were written."""
    count = 0
    if form == "jsonl":
        for trace in traces:
            stream.write(json_text(trace.to_dict(), ascii_only=ascii_only) + "\n")
            count += 1
        return count
    head = json_text({"session": _record_dict(record)}, indent=2, ascii_only=ascii_only)
    stream.write(head[: -len("\n}")] + ',\n  "traces": [')
    for trace in traces:
        item = json_text(trace.to_dict(), indent=2, ascii_only=ascii_only)
        stream.write((",\n    " if count else "\n    ") + item.replace("\n", "\n    "))  # JSON strings hold no newline
        count += 1
    stream.write("\n  ]\n}\n" if count else "]\n}\n")
    return count


def _same_file(target: Path, source: Path) -> bool:
    """Whether `target` is `source` or one of the files SQLite keeps beside it (write-ahead log, shared memory,
    rollback journal): by any name or link, or by that file's own name while it does not exist (SQLite would
    take an export written there for its own file)."""
    for path in (source, *(Path(f"{source}{suffix}") for suffix in ("-wal", "-shm", "-journal"))):
        try:
            if os.path.samefile(target, path):
                return True
        except OSError:  # one of them does not exist (yet)
            if path != source and target.absolute() == path.absolute():
                return True
    return False


# -- stats ----------------------------------------------------------------------------------------------------
def cmd_stats(args: argparse.Namespace, out: Output) -> int:
    """Summarize the database: sessions, roots, traces, time span, the most common names, URL and size."""
    with _database(args) as db:
        stats = db.stats(args.top)
    if args.json:
        data = dataclasses.asdict(stats)
        data["top_names"] = [{"name": name, "sessions": n} for name, n in stats.top_names]
        out.json(data)
        return 0
    out.fields(
        "database",
        [
            ("url", safe(stats.url)),
            ("dialect", stats.dialect),
            ("size", fmt_bytes(stats.size_bytes)),
            ("schema version", str(stats.schema_version)),
        ],
    )
    out.line()
    named = stats.sessions - stats.unnamed
    out.fields(
        "contents",
        [
            (
                "sessions",
                f"{stats.sessions} ({stats.roots} root{'' if stats.roots == 1 else 's'}; {named} named, "
                f"{stats.unnamed} known only by uid)",
            ),
            ("traces", str(stats.traces)),
            ("sessions created", _span(stats.first_session_at, stats.last_session_at)),
            ("traces recorded", _span(stats.first_trace_at, stats.last_trace_at)),
        ],
    )
    if stats.top_names:
        out.line()
        table = Table([Column("name", style="bold"), Column("sessions", justify="right")], title="top session names")
        for name, n in stats.top_names:
            table.rows.append([clip(name, 60) if name is not None else "(unnamed)", str(n)])
        out.table(table)
    return 0


def _span(first: float | None, last: float | None) -> str:
    if first is None or last is None:
        return "-"
    return f"{fmt_time(first)} → {fmt_time(last)}"


# -- shared ---------------------------------------------------------------------------------------------------
def _name(record: SessionRecord) -> str:
    return clip(record.name, 40) if record.name is not None else "(unnamed)"


def _record_dict(record: SessionRecord) -> dict[str, Any]:
    return dataclasses.asdict(record)


if __name__ == "__main__":
    sys.exit(main())
