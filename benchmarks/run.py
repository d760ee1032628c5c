"""Run every ``benchmarks/bench_*.py`` and report figures, floors, ratios and targets.

Usage: ``python benchmarks/run.py [--quick] [--only AREA ...] [--output docs/benchmark-report.md]``.
Exit status is 0 even when a target is missed: a benchmark reports, it does not gate (the report says FAIL).
"""

from __future__ import annotations

import argparse
import importlib
import mmap
import platform
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from _harness import Result  # noqa: E402


def _fmt(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}" if abs(x) < 10 else f"{x:.1f}"


def _scaled(r: Result, factor: float | None) -> str:
    """The figure as the issues' machine would give it, by the machine factor: an estimate for reading absolute
    targets (times divided by it, rates multiplied), never what pass/FAIL is decided on."""
    if factor is None:
        return "—"
    if r.unit in ("us", "ms"):
        return f"≈ {_fmt(r.figure / factor)} {r.unit}"
    if r.unit.endswith("/s"):
        return f"≈ {_fmt(r.figure * factor)} {r.unit}"
    return "—"


def table(results: list[Result], factor: float | None = None) -> str:
    lines = [
        "| area | operation | figure | floor | ratio | target | result | scaled to the issues' machine |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        floor = f"{_fmt(r.floor)} {r.unit} ({r.floor_name})" if r.floor is not None else "—"
        ratio = f"{r.ratio:.2f}x" if r.ratio is not None else "—"
        lines.append(
            f"| {r.area} | {r.operation} | {_fmt(r.figure)} {r.unit} | {floor} | {ratio} | {r.target} | "
            f"{'pass' if r.passed else 'FAIL'} | {_scaled(r, factor)} |"
        )
    return "\n".join(lines)


REFERENCE_OTEL_PROPAGATION_US = 44.0  # the issues' machine: OTel's propagators, traceparent + 10 members


def _machine_factor(results: list[Result]) -> tuple[float, float] | None:
    """(this run's reference workload in us, how many times slower than the issues' machine), when core ran."""
    ref = next((r for r in results if r.floor_name and r.floor_name.startswith("OTel W3C") and r.floor), None)
    if ref is None or ref.floor is None:
        return None
    return ref.floor, ref.floor / REFERENCE_OTEL_PROPAGATION_US


def page_fault_us(megabytes: int = 64) -> float:
    """Microseconds this machine takes to touch a fresh page of memory (a minor page fault), best of three.

    Virtual machines can take tens of times longer than bare metal here, and a figure that builds many objects
    (reading 10,000 traces builds about 100,000) pays it for every page its allocator takes from the system.
    """
    page = mmap.PAGESIZE
    best = float("inf")
    for _ in range(3):
        with mmap.mmap(-1, megabytes * 1024 * 1024) as memory:
            start = time.perf_counter()
            for offset in range(0, len(memory), page):
                memory[offset] = 1
            best = min(best, (time.perf_counter() - start) / (len(memory) // page))
    return best * 1e6


def _machine_note(measured: tuple[float, float] | None, fault_us: float) -> str:
    """How fast this machine is against the one the targets were written on, by one shared workload."""
    faults = (
        f"\n\nMemory: touching a fresh page took {fault_us:.2f} us here (a minor page fault, Python's loop "
        "included). Figures that allocate many objects pay it for every page the allocator takes from the system: "
        "a read of 10,000 traces takes one to six thousand such pages, depending on what the process freed before."
    )
    if measured is None:
        return faults
    took, factor = measured
    return faults + (
        f"\n\nMachine reference: OpenTelemetry's own W3C propagators (inject + extract of a traceparent and the "
        f"same baggage members) took {took:.1f} us here against {REFERENCE_OTEL_PROPAGATION_US:.0f} us on the "
        f"machine the absolute targets were set on: this machine runs that pure-Python workload {factor:.2f}x as "
        "slowly. Ratios to floors measured in the same run do not depend on it; absolute figures do. The last "
        "column divides times (multiplies rates) by that factor: an estimate for reading the absolute targets, "
        "not what pass/FAIL is decided on, and rough for work done mostly in C (SQLite, Ray)."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of the benchmarks")
    parser.add_argument("--only", nargs="*", help="areas to run (core, storage_sql, otel, http, ray)")
    parser.add_argument("--output", default="docs/benchmark-report.md")
    args = parser.parse_args(argv)
    modules = sorted(p.stem for p in HERE.glob("bench_*.py"))
    if args.only:
        modules = [m for m in modules if m.removeprefix("bench_") in args.only]
    results: list[Result] = []
    broken = []
    for name in modules:
        print(f"running {name} ...", flush=True)
        try:
            results += importlib.import_module(name).run(args.quick)
        except Exception:  # one broken benchmark must not hide the others' figures
            broken.append(name)
            traceback.print_exc()
    measured = _machine_factor(results)
    report = table(results, measured[1] if measured else None) + _machine_note(measured, page_fault_us())
    machine = (
        f"{platform.python_implementation()} {platform.python_version()} on {platform.machine()}, "
        f"{platform.system()} {platform.release()}"
    )
    header = (
        f"Benchmarks run {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC{' (quick)' if args.quick else ''}; {machine}."
    )
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"{header}\n\n{report}\n")
    print(f"\n{header}\n\n{report}\n\nwritten to {out}")
    if broken:
        print(f"benchmarks that raised: {', '.join(broken)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
