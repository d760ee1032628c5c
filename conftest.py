"""Monorepo-wide pytest hooks.

``SESSION_TEST_VARIANT=all`` (set by nox for the variant that installs every extra) turns a skip caused by
``pytest.importorskip`` into a failure: an extra that was meant to be installed but cannot be imported must not
pass quietly by skipping. In the ``bare`` variant such skips are the point.
"""

from __future__ import annotations

import os

import pytest

_IMPORT_SKIP = "could not import"


def _strict() -> bool:
    return os.environ.get("SESSION_TEST_VARIANT") == "all"


def _is_import_skip(report: pytest.BaseReport) -> bool:
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return _IMPORT_SKIP in str(text)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if _strict() and report.skipped and _is_import_skip(report):
        report.outcome = "failed"
        report.longrepr = f"SESSION_TEST_VARIANT=all, but an extra did not import: {report.longrepr}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if _strict() and report.skipped and _is_import_skip(report):
        report.outcome = "failed"
        report.longrepr = f"SESSION_TEST_VARIANT=all, but an extra did not import: {report.longrepr}"


@pytest.fixture(autouse=True)
def _warned_afresh() -> None:
    """session-core warns once per process about each metadata key JSON cannot carry; every test starts with none
    warned about, so a test that checks that warning passes whichever suite ran before it in this process."""
    try:
        from session_core import outgoing
    except ImportError:
        return
    outgoing._left_out.clear()
