"""Cheap, fork-safe identifiers.

`uuid.uuid4()` costs several times a whole session enter/exit, so session uids come from a per-process counter
through a random bijection of 128-bit numbers: unique within the process by construction, random-looking, and
distinct across processes by the random draw. A forked child draws anew, so it never repeats its parent's ids.
"""

from __future__ import annotations

import itertools
import os
import random

__all__ = ["new_session_name", "new_trace_id", "new_uid"]

_rng = random.Random(os.urandom(32))
_MASK = (1 << 128) - 1


def _draw() -> tuple[int, int]:
    """A random odd multiplier and a random offset: counter * multiplier + offset (mod 2**128) is a bijection,
    so uids never repeat within a process, look random, and differ across processes by the random draw."""
    return _rng.getrandbits(128) | 1, _rng.getrandbits(128)


_multiplier, _offset = _draw()
_counter = itertools.count(1)


def _reseed() -> None:
    global _multiplier, _offset, _counter
    _rng.seed(os.urandom(32))
    _multiplier, _offset = _draw()
    _counter = itertools.count(1)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reseed)


def new_uid() -> str:
    """A session uid: 32 lowercase hex digits, unique across processes."""
    return "%032x" % ((next(_counter) * _multiplier + _offset) & _MASK)


def new_trace_id() -> str:
    """A random 128-bit trace id as 32 lowercase hex digits."""
    return f"{_rng.getrandbits(128):032x}"


def new_session_name() -> str:
    """A generated session name: ``sess_`` and 16 hex digits."""
    return f"sess_{_rng.getrandbits(64):016x}"
