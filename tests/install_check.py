"""Run inside a fresh venv holding only built wheels (see `nox -s install_check`).

argv: JSON list of the distributions installed, JSON list of every distribution of the monorepo, JSON list of
third-party modules that must be absent (other packages' dependencies, every extra). Checks each installed
package imports with its public API, each absent one is really absent, session-core alone pulls in nothing
else, and a session records a trace.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import json
import sys


def main() -> int:
    installed: list[str] = json.loads(sys.argv[1])
    everything: list[str] = json.loads(sys.argv[2])
    must_be_absent: list[str] = json.loads(sys.argv[3]) if len(sys.argv) > 3 else []
    problems = []
    for module in must_be_absent:
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # a parent package is missing
            found = False
        if found:
            problems.append(f"{module} is importable, but nothing installed here should bring it in")
    for dist in everything:
        module = dist.replace("-", "_")
        present = importlib.util.find_spec(module) is not None
        if dist in installed:
            if not present:
                problems.append(f"{dist} installed but {module} does not import")
                continue
            mod = importlib.import_module(module)
            missing = [n for n in getattr(mod, "__all__", []) if not hasattr(mod, n)]
            if missing:
                problems.append(f"{module}.__all__ names missing attributes: {missing}")
            if importlib.metadata.version(dist) != mod.__version__:
                problems.append(f"{dist} metadata version != {module}.__version__")
        elif present:
            problems.append(f"{dist} was not installed but {module} imports")
    if installed == ["session-core"]:
        others = sorted(
            d.metadata["Name"]
            for d in importlib.metadata.distributions()
            if d.metadata["Name"] not in ("session-core", "pip", "setuptools", "wheel")
        )
        if others:
            problems.append(f"session-core alone must pull in nothing, but the venv holds {others}")
    import session_core

    with session_core.ContextVarSession("install-check", combo=",".join(installed)) as session:
        session_core.record_trace(name="smoke")
        if len(session.llm_calls) != 1:
            problems.append("a trace recorded in a session was not found in llm_calls")
    for problem in problems:
        print("install_check:", problem, file=sys.stderr)
    print(f"install_check: {'+'.join(installed)}: {'FAILED' if problems else 'ok'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
