"""Sum the pytest JUnit XML reports in a directory and print one line per run plus a total.

Usage: python3 .ci/summarize_tests.py <report dir>

Exits non-zero when the directory holds no reports, when no test passed, or when any failure or error was recorded,
so that the last lines of the CI output say how many tests ran. Standard library only.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Counts:
    tests: int = 0
    failures: int = 0
    errors: int = 0
    skipped: int = 0

    @property
    def passed(self) -> int:
        return self.tests - self.failures - self.errors - self.skipped

    def __iadd__(self, other: Counts) -> Counts:
        self.tests += other.tests
        self.failures += other.failures
        self.errors += other.errors
        self.skipped += other.skipped
        return self

    def line(self) -> str:
        return f"{self.passed} passed, {self.skipped} skipped, {self.failures} failed, {self.errors} errors"


def read_report(path: Path) -> Counts:
    """Counts summed over the report's top-level <testsuite> elements (root <testsuites> or a lone <testsuite>)."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    counts = Counts()
    for suite in suites:
        counts += Counts(
            tests=int(suite.get("tests", 0)),
            failures=int(suite.get("failures", 0)),
            errors=int(suite.get("errors", 0)),
            skipped=int(suite.get("skipped", 0)),
        )
    return counts


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: summarize_tests.py <report dir>", file=sys.stderr)
        return 2
    directory = Path(argv[1])
    reports = sorted(directory.glob("*.xml")) if directory.is_dir() else []
    if not reports:
        print(f"tests: FAILED: no JUnit XML reports in {directory}: no pytest run was recorded")
        return 1
    total = Counts()
    unreadable: list[str] = []
    for path in reports:
        try:
            counts = read_report(path)
        except (ET.ParseError, ValueError) as exc:
            print(f"{path.stem}: unreadable report: {exc}")
            unreadable.append(path.name)
            continue
        print(f"{path.stem}: {counts.line()}")
        total += counts
    print(f"tests: {total.line()} in {len(reports)} pytest runs")
    problems = []
    if unreadable:
        problems.append(f"{len(unreadable)} unreadable report(s): {', '.join(unreadable)}")
    if total.passed <= 0:
        problems.append("no test passed")
    if total.failures or total.errors:
        problems.append(f"{total.failures} failed, {total.errors} errors")
    if problems:
        print(f"tests: FAILED: {'; '.join(problems)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
