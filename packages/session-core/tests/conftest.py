from __future__ import annotations

import sys
from pathlib import Path

import pytest

# Helper modules that child processes must import by name (spawn pickles functions by module path).
sys.path.insert(0, str(Path(__file__).parent / "helpers"))

import core_testing_storage

from session_core import stack


@pytest.fixture(autouse=True)
def _clean_stack():
    """Every test starts and ends outside any session; a leaked session would falsify the next test."""
    assert stack.ACTIVE.get() == (), "a previous test leaked an active session"
    yield
    leaked = stack.ACTIVE.get()
    stack.ACTIVE.set(())
    assert leaked == (), f"test leaked active sessions: {leaked}"


@pytest.fixture
def jsonl_storage(tmp_path, monkeypatch):
    """A real file-backed, addressable storage (the core has none of its own)."""
    monkeypatch.delenv("SESSION_STORAGE_URL", raising=False)
    return core_testing_storage.JsonlStorage.create(tmp_path / "traces.jsonl")
