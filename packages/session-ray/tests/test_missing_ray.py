"""Without Ray: ``import session_ray`` works, ``remote`` says exactly what to install."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap

import pytest

import session_ray
from session_core import MissingOptionalDependency

INSTALL = 'pip install "session-ray[ray]"'


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120, check=False
    )


def test_import_never_imports_ray() -> None:
    done = _run(
        """
        import sys
        import session_ray
        assert "ray" not in sys.modules, "import session_ray imported ray"
        print(sorted(session_ray.__all__))
        """
    )
    assert done.returncode == 0, done.stderr
    assert "remote" in done.stdout and "ray_entrypoint" in done.stdout


def test_remote_without_ray_names_the_extra_to_install() -> None:
    # sys.modules["ray"] = None makes `import ray` fail exactly as when Ray is not installed.
    done = _run(
        """
        import sys
        sys.modules["ray"] = None
        import session_ray
        from session_core import MissingOptionalDependency

        def f():
            return 1

        for attempt in (lambda: session_ray.remote(f), lambda: session_ray.remote(num_cpus=1)):
            try:
                attempt()
            except MissingOptionalDependency as exc:
                assert isinstance(exc, ImportError)
                print(exc)
            else:
                raise SystemExit("remote() did not raise")
        print(session_ray.ray_entrypoint(f)())
        """
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == lines[1]
    assert lines[0].startswith("session_ray.remote requires the optional dependency 'ray'")
    assert lines[0].endswith(INSTALL)
    assert lines[2] == "1"  # ray_entrypoint needs no Ray


@pytest.mark.skipif(importlib.util.find_spec("ray") is not None, reason="Ray is installed in this variant")
def test_remote_in_this_process_raises_missing_optional_dependency() -> None:
    with pytest.raises(MissingOptionalDependency, match=r'pip install "session-ray\[ray\]"') as info:
        session_ray.remote(lambda: None)
    assert isinstance(info.value, ImportError)
    assert info.value.name == "ray"
