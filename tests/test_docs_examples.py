"""Every code example in docs/ runs: each docs/examples/*.py as a real process, and every snippet a page
includes exists."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(p for p in (ROOT / "docs" / "examples").glob("*.py") if not p.name.startswith("_"))
SNIPPET = re.compile(r'--8<--\s+"([^"]+)"')


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(example: Path, tmp_path: Path) -> None:
    args = [sys.executable, str(example)]
    if example.name == "demo.py":
        args += ["--rollouts", "4"]
    proc = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{example.name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


def test_every_included_snippet_exists() -> None:
    pages = [*list((ROOT / "docs").rglob("*.md")), ROOT / "README.md"]
    missing = [
        f"{page.relative_to(ROOT)} includes {ref}"
        for page in pages
        for ref in SNIPPET.findall(page.read_text())
        if not (ROOT / ref).exists()
    ]
    assert missing == []
    mangled = [
        f"{page.relative_to(ROOT)}: {line!r}"
        for page in pages
        for line in page.read_text().splitlines()
        if line.startswith("--8") and not SNIPPET.fullmatch(line.strip())
    ]
    assert mangled == [], "snippet lines that mkdocs would not include"
