"""Cheap, fork-safe identifiers.

`uuid.uuid4()` costs several times a whole session enter/exit, so session uids are a random per-process
prefix plus a counter: unique within the process by construction and across processes with 64 random
bits. A forked child draws a new prefix, so it never repeats its parent's ids.
"""

from __future__ import annotations

import itertools
import os
import random

__all__ = ["new_session_name", "new_trace_id", "new_uid"]

_rng = random.Random(os.urandom(32))
_prefix = f"{_rng.getrandbits(64):016x}"
_counter = itertools.count(1 << 63)  # keeps every uid 32 hex digits long


def _reseed() -> None:
    global _prefix, _counter
    _rng.seed(os.urandom(32))
    _prefix = f"{_rng.getrandbits(64):016x}"
    _counter = itertools.count(1 << 63)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reseed)


def new_uid() -> str:
    """A session uid: 32 lowercase hex digits, unique across processes."""
    return "%s%x" % (_prefix, next(_counter))  # noqa: UP031 - fastest form on the hot path


def new_trace_id() -> str:
    """A random 128-bit trace id as 32 lowercase hex digits."""
    return f"{_rng.getrandbits(128):032x}"


def new_session_name() -> str:
    """A generated session name: ``sess_`` and 16 hex digits."""
    return f"sess_{_rng.getrandbits(64):016x}"
