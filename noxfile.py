"""Every package's tests with and without its extras, the cross-package suite, lint, types, build, install
checks, release, benchmarks and the demo.

Packages are discovered from ``packages/*/pyproject.toml``; their extras and test dependencies are read from
those files, so a new package joins every session without edits here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests", "lint"]

ROOT = Path(__file__).parent
PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
OLDEST, NEWEST, DEFAULT = PYTHONS[0], PYTHONS[-1], "3.11"
TEST_TOOLS = ["pytest>=8", "pytest-asyncio>=0.23", "hypothesis>=6"]


@dataclass
class Package:
    name: str
    path: Path
    module: str
    extras: dict[str, list[str]] = field(default_factory=dict)
    dependencies: list[str] = field(default_factory=list)
    test_group: list[str] = field(default_factory=list)

    @property
    def real_extras(self) -> list[str]:
        return [e for e in self.extras if e != "all"]

    def spec(self, extras: list[str] | None = None) -> str:
        chosen = extras if extras is not None else []
        return f"{self.path}[{','.join(chosen)}]" if chosen else str(self.path)


def _discover() -> dict[str, Package]:
    found = {}
    for pyproject in sorted(ROOT.glob("packages/*/pyproject.toml")):
        data = nox.project.load_toml(pyproject)
        project = data["project"]
        name = project["name"]
        found[name] = Package(
            name=name,
            path=pyproject.parent.relative_to(ROOT),
            module=name.replace("-", "_"),
            extras=dict(project.get("optional-dependencies", {})),
            dependencies=list(project.get("dependencies", [])),
            test_group=list(data.get("dependency-groups", {}).get("test", [])),
        )
    return found


PACKAGES = _discover()
_REQ_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?")


def _local(req: str) -> str:
    """A requirement naming one of our packages becomes its path (with extras); others pass through."""
    m = _REQ_NAME.match(req)
    if m and m.group(1) in PACKAGES:
        pkg = PACKAGES[m.group(1)]
        extras = [e.strip() for e in (m.group(2) or "[]")[1:-1].split(",") if e.strip()]
        return pkg.spec(extras)
    return req


def _install_packages(session: nox.Session, specs: list[str], extra_reqs: list[str] = ()) -> None:  # type: ignore[assignment]
    args: list[str] = []
    for spec in specs:
        args += ["-e", spec]
    session.install(*args, *[_local(r) for r in extra_reqs])


def _test_params() -> list[nox.param]:
    params = []
    for pkg in PACKAGES.values():
        pythons = PYTHONS if pkg.name == "session-core" else [OLDEST, NEWEST]
        variants = ["bare", "all"] if pkg.real_extras else ["bare"]
        for variant in variants:
            for python in pythons:
                params.append(nox.param(python, pkg.name, variant, id=f"{pkg.name}-{variant}-{python}"))
    for python in (OLDEST, NEWEST):  # the whole family together on the oldest and newest supported Pythons
        params.append(nox.param(python, "cross-package", "all", id=f"cross-package-{python}"))
    return params


@nox.session
@nox.parametrize(("python", "package", "variant"), _test_params())
def tests(session: nox.Session, package: str, variant: str) -> None:
    """A package's tests in the `bare` (no extras) or `all` (every extra) variant; or the cross-package suite."""
    env = {"SESSION_TEST_VARIANT": variant}
    for var in ("SESSION_TEST_POSTGRES_URL",):
        if var in os.environ:
            env[var] = os.environ[var]
    report = _junit_args(session)
    if package == "cross-package":
        _install_everything(session)
        session.run("pytest", "tests", *report, *session.posargs, env=env)
        return
    pkg = PACKAGES[package]
    extras = pkg.real_extras if variant == "all" else []
    specs = [PACKAGES["session-core"].spec(), pkg.spec(extras)] if package != "session-core" else [pkg.spec()]
    _install_packages(session, specs, [*TEST_TOOLS, *pkg.test_group])
    if variant == "bare":
        _assert_absent(session, pkg)
    session.run("pytest", str(pkg.path / "tests"), *report, *session.posargs, env=env)


def _junit_args(session: nox.Session) -> list[str]:
    """`--junitxml=<dir>/<session name>.xml` when $SESSION_TEST_REPORT_DIR is set (read by .ci/summarize_tests.py)."""
    report_dir = os.environ.get("SESSION_TEST_REPORT_DIR")
    if not report_dir:
        return []
    directory = Path(report_dir).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", session.name).strip("_")
    return [f"--junitxml={directory / stem}.xml"]


def _assert_absent(session: nox.Session, pkg: Package) -> None:
    """In the bare variant the extras' top-level modules must really be missing."""
    modules = {_import_name(req) for extra in pkg.real_extras for req in pkg.extras[extra]}
    modules -= {_import_name(r) for r in pkg.test_group}
    if modules:
        code = (
            "import importlib.util, sys\n"
            "def found(m):\n"
            "    try:\n"
            "        return importlib.util.find_spec(m) is not None\n"
            "    except ModuleNotFoundError:  # a parent package is missing too\n"
            "        return False\n"
            "present = [m for m in sys.argv[1:] if found(m)]\n"
            "sys.exit(f'bare variant has extras installed: {present}' if present else 0)"
        )
        session.run("python", "-c", code, *sorted(modules), silent=True)


_IMPORT_NAMES = {
    "opentelemetry-api": "opentelemetry.baggage",
    "opentelemetry-sdk": "opentelemetry.sdk",
    "opentelemetry-instrumentation-requests": "opentelemetry.instrumentation.requests",
    "opentelemetry-instrumentation-httpx": "opentelemetry.instrumentation.httpx",
    "opentelemetry-exporter-otlp-proto-http": "opentelemetry.exporter.otlp.proto.http",
    "psycopg": "psycopg",
    "psycopg-binary": "psycopg_binary",
}


def _import_name(req: str) -> str:
    m = _REQ_NAME.match(req)
    name = m.group(1).lower() if m else req
    return _IMPORT_NAMES.get(name, name.replace("-", "_"))


def _all_specs() -> list[str]:
    return [pkg.spec(pkg.real_extras) for pkg in PACKAGES.values()]


def _all_test_reqs() -> list[str]:
    reqs = list(TEST_TOOLS)
    for pkg in PACKAGES.values():
        reqs += [r for r in pkg.test_group if _REQ_NAME.match(r) and _REQ_NAME.match(r).group(1) not in PACKAGES]  # type: ignore[union-attr]
    root_group = nox.project.load_toml(ROOT / "tests" / "requirements.toml").get("test", [])
    return sorted(set(reqs + root_group))


def _install_everything(session: nox.Session, extra: list[str] = ()) -> None:  # type: ignore[assignment]
    _install_packages(session, _all_specs(), [*_all_test_reqs(), *extra])


@nox.session(python=DEFAULT)
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check over the whole repo."""
    session.install("ruff>=0.6,<0.18")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=DEFAULT)
def typecheck(session: nox.Session) -> None:
    """mypy --strict on every package's src/."""
    _install_packages(session, _all_specs(), ["mypy>=1.10"])
    cache = Path(session.virtualenv.location) / "mypy_cache"  # never share a cache with another environment
    for pkg in PACKAGES.values():
        session.run("mypy", "--cache-dir", str(cache), str(pkg.path / "src"))


def _build(session: nox.Session, pkg: Package, outdir: Path) -> list[Path]:
    session.run("python", "-m", "build", "--sdist", "--wheel", "--outdir", str(outdir), str(pkg.path), silent=True)
    return sorted(outdir.glob(f"{pkg.module}-*"))


@nox.session(python=DEFAULT)
def build(session: nox.Session) -> None:
    """sdist + wheel of every package into dist/, checked with twine; session-core's wheel has no Requires-Dist."""
    session.install("build", "twine")
    dist = ROOT / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    for pkg in PACKAGES.values():
        _build(session, pkg, dist)
    session.run("twine", "check", "--strict", *[str(p) for p in sorted(dist.iterdir())])
    core_wheel = next(dist.glob("session_core-*.whl"))
    with zipfile.ZipFile(core_wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        requires = [line for line in zf.read(meta).decode().splitlines() if line.startswith("Requires-Dist")]
    if requires:
        session.error(f"session-core must have no dependencies, but its wheel says {requires}")
    for pkg in PACKAGES.values():
        wheel = next(dist.glob(f"{pkg.module}-*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            if f"{pkg.module}/py.typed" not in zf.namelist():
                session.error(f"{wheel.name} lacks py.typed")
    session.log(f"built {len(list(dist.iterdir()))} files for {len(PACKAGES)} packages")


# Combinations users install; each runs in a fresh venv from the built wheels only.
def _install_combinations() -> list[list[str]]:
    names = list(PACKAGES)
    combos = [["session-core"]]
    combos += [["session-core", n] for n in names if n != "session-core"]
    combos.append(names)
    return combos


def _absent_modules(combo: list[str]) -> set[str]:
    """Third-party modules that must not be importable with `combo` installed without extras."""
    wanted = {_import_name(d) for n in combo for d in PACKAGES[n].dependencies if not d.startswith("session-")}
    others = {_import_name(d) for p in PACKAGES.values() for d in p.dependencies if not d.startswith("session-")}
    extras = {_import_name(r) for p in PACKAGES.values() for e in p.real_extras for r in p.extras[e]}
    return (others | extras) - wanted


@nox.session(python=DEFAULT)
def install_check(session: nox.Session) -> None:
    """Fresh venvs with built wheels only: each package alone and common combinations; absent means absent."""
    dist = ROOT / "dist"
    if not any(dist.glob("*.whl")):
        session.notify("build")
        session.error("no wheels in dist/: run `nox -s build` first (or `nox -s build install_check`)")
    checker = ROOT / "tests" / "install_check.py"
    for combo in _install_combinations():
        with tempfile.TemporaryDirectory() as tmp:
            venv = Path(tmp) / "venv"
            session.run("uv", "venv", "-q", "--python", sys.executable, str(venv), external=True)
            py = str(venv / "bin" / "python")
            wheels = [str(next(dist.glob(f"{PACKAGES[n].module}-*.whl"))) for n in combo]
            session.run("uv", "pip", "install", "-q", "--python", py, *wheels, external=True)
            absent = sorted(_absent_modules(combo))
            session.log(f"{'+'.join(combo)}: must be absent: {', '.join(absent)}")
            session.run(
                py, str(checker), json.dumps(combo), json.dumps(list(PACKAGES)), json.dumps(absent), external=True
            )


@nox.session(python=DEFAULT)
def release(session: nox.Session) -> None:
    """Build one package for release: `nox -s release -- <package> [<package>-v<version> tag]`.

    Refuses when the tag (argument or $RELEASE_TAG) and the package's version disagree.
    """
    if not session.posargs:
        session.error("usage: nox -s release -- <package> [<package>-v<version>]")
    name = session.posargs[0]
    if name not in PACKAGES:
        session.error(f"unknown package {name!r}; packages: {', '.join(PACKAGES)}")
    pkg = PACKAGES[name]
    version = _version_of(pkg)
    tag = session.posargs[1] if len(session.posargs) > 1 else os.environ.get("RELEASE_TAG")
    if tag is not None and tag != f"{name}-v{version}":
        session.error(f"tag {tag!r} does not match {name} version {version} (expected {name}-v{version})")
    session.install("build", "twine")
    out = ROOT / "dist" / "release" / name
    shutil.rmtree(out, ignore_errors=True)
    files = _build(session, pkg, out)
    session.run("twine", "check", "--strict", *map(str, files))
    session.log(f"{name} {version} ready in {out}: {', '.join(p.name for p in files)}")


def _version_of(pkg: Package) -> str:
    text = (pkg.path / "src" / pkg.module / "_version.py").read_text()
    m = re.search(r'__version__\s*=\s*"([^"]+)"', text)
    if not m:
        raise RuntimeError(f"no __version__ in {pkg.module}/_version.py")
    return m.group(1)


@nox.session(python=DEFAULT)
def bench(session: nox.Session) -> None:
    """Every package's benchmarks in one run; prints ratios and writes docs/benchmark-report.md."""
    _install_everything(session)
    session.run("python", "benchmarks/run.py", *session.posargs)


@nox.session(python=DEFAULT)
def demo(session: nox.Session) -> None:
    """The main job: the demo in docs/examples (see README)."""
    _install_everything(session)
    session.run("python", "docs/examples/demo.py", *session.posargs)


@nox.session(python=DEFAULT)
def docs(session: nox.Session) -> None:
    """Build the MkDocs site with --strict (broken links and missing snippets fail)."""
    session.install("mkdocs>=1.6", "mkdocs-material>=9.5", "pymdown-extensions>=10")
    session.run("mkdocs", "build", "--strict", "--site-dir", "site")
