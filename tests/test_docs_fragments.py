"""The short inline code fragments of docs/ (those not included from docs/examples/) run too.

Each fragment runs in a fresh process after a prelude that provides what the page's text assumes (an `app`, a
client, a function to call) and followed by checks of what the fragment claims. A new inline fragment fails
here until it gets a prelude: every code example in the docs runs in the tests.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"```python\n(.*?)```", re.S)

# (page, first line of the fragment) -> (prelude, checks)
PRELUDES: dict[tuple[str, str], tuple[str, str]] = {
    ("docs/guides/http.md", "app = SessionMiddleware(app)"): (
        """
        from fastapi import FastAPI
        from flask import Flask
        from session_http import SessionMiddleware, SessionWSGIMiddleware

        async def app(scope, receive, send):
            pass

        fastapi_app = FastAPI()
        flask_app = Flask(__name__)
        """,
        """
        assert isinstance(app, SessionMiddleware)
        assert isinstance(flask_app.wsgi_app, SessionWSGIMiddleware)
        assert any(m.cls is SessionMiddleware for m in fastapi_app.user_middleware)
        """,
    ),
    ("docs/guides/http.md", "headers = inject()"): (
        """
        import requests
        from session_core import ContextVarSession
        from session_http import (extract, inject, instrument_httpx, instrument_requests, uninstrument_httpx,
                                  uninstrument_requests)

        request_headers = {"baggage": "vendor=1"}
        url = "http://127.0.0.1:9/x"
        my_session = requests.Session()
        session = ContextVarSession("docs", task_id=42)
        session.__enter__()
        """,
        """
        assert headers["baggage"].startswith("session.v=1,session.name=docs")
        assert request_headers["baggage"].startswith("vendor=1,session.v=1")
        assert ctx["uid_chain"] == [session.uid] and ctx["metadata"] == {"task_id": 42}
        session.__exit__(None, None, None)
        """,
    ),
    ("docs/guides/otel.md", "from session_otel import OTelSession, init_otel_distributed_tracing"): (
        """
        from session_core import get_current_metadata, record_trace
        seen = []

        def run_agent():
            seen.append(get_current_metadata())
            record_trace(name="llm", input="hi")
        """,
        """
        from opentelemetry import baggage
        assert seen == [{"task_id": 42, "policy": "v3"}]
        assert baggage.get_all() == {}  # the session's baggage is gone once it exits
        """,
    ),
    ("docs/guides/storage-sql.md", 'storage = SqlSessionStorage("postgresql://'): (
        """
        from session_storage_sql import SqlSessionStorage
        """,
        """
        assert storage.url.startswith("postgresql") and "tracer@db.internal:5432/traces" in storage.url
        assert storage.dialect == "postgresql"  # nothing connects until the storage is used
        """,
    ),
}


def _fragments() -> list[tuple[str, str]]:
    found = []
    for page in sorted((ROOT / "docs").rglob("*.md")):
        for block in BLOCK.findall(page.read_text()):
            if not block.strip().startswith("--8<--"):
                found.append((str(page.relative_to(ROOT)), block))
    return found


FRAGMENTS = _fragments()


@pytest.mark.parametrize(
    ("page", "code"), FRAGMENTS, ids=[f"{p}:{c.strip().splitlines()[0][:40]}" for p, c in FRAGMENTS]
)
def test_fragment_runs(page: str, code: str, tmp_path: Path) -> None:
    key = next((k for k in PRELUDES if k[0] == page and code.lstrip().startswith(k[1])), None)
    assert key is not None, f"{page} has an inline code fragment with no prelude here: give it one, or include it"
    prelude, checks = PRELUDES[key]
    script = textwrap.dedent(prelude) + "\n" + code + "\n" + textwrap.dedent(checks)
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{page} fragment failed:\n{script}\n{proc.stderr[-3000:]}"


def test_every_prelude_is_used() -> None:
    used = {k for k in PRELUDES for page, code in FRAGMENTS if k[0] == page and code.lstrip().startswith(k[1])}
    assert used == set(PRELUDES)
