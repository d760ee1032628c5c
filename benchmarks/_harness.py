"""A tiny benchmark harness: figures and the floors they are compared with are measured in the same run.

Each ``benchmarks/bench_<area>.py`` defines ``run(quick: bool) -> list[Result]``; ``benchmarks/run.py`` runs them
all and writes the markdown report. Never assert times in tests: targets are checked and reported here.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Result", "per_call", "per_second", "timed"]


@dataclass
class Result:
    """One benchmark line.

    `figure` is in `unit`; `floor` is the baseline measured in the same run (same unit) or None;
    `ratio` = figure / floor. `target` says what passes, e.g. "<= 1.5 us and <= 2.5x floor"; `passed` is
    whether it did.
    """

    area: str
    operation: str
    figure: float
    unit: str
    floor_name: str | None
    floor: float | None
    target: str
    passed: bool

    @property
    def ratio(self) -> float | None:
        if self.floor in (None, 0):
            return None
        return self.figure / self.floor  # type: ignore[operator]


def per_call(fn: Callable[[], object], *, number: int, repeat: int = 7) -> float:
    """Best-of-`repeat` seconds per call of `fn` over `number` calls (min is the least noisy estimator)."""
    gc.collect()
    gc.disable()
    try:
        best = float("inf")
        for _ in range(repeat):
            start = time.perf_counter()
            for _ in range(number):
                fn()
            best = min(best, (time.perf_counter() - start) / number)
        return best
    finally:
        gc.enable()


def timed(fn: Callable[[], object], *, repeat: int = 5) -> float:
    """Median seconds of one call of a slow `fn` (a bulk insert, a query) over `repeat` runs.

    The clock stops when `fn` returns: freeing what it returned (10,000 traces take milliseconds to free) is
    the caller's later work, not the call's, for the measured code and its floor alike.
    """
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
        del result
    return statistics.median(times)


def per_second(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")
