"""Contributor sessions for ioattn (``nox -l`` lists them).

tests   any machine: fresh venv, pinned torch, NON-editable build of the package with a pruned
        kernel table (head dim 64, bf16; ``IOATTN_FULL_BUILD=1`` for all of it), then
        ``pytest -m "not slow"``. This is what CI runs (``.ci/run``).
gpu     the GPU machine, offline: no venv, its preinstalled torch, the full kernel table, all
        tests (posargs go to pytest), then ``python -m ioattn``. Driven by ``ci/gpu.sh``.
lint    ruff check, ruff format --check, clang-format --dry-run -Werror on src/.
format  applies what lint checks.
demo    installs like ``tests`` and runs ``python -m ioattn`` (posargs go to it).
bench   the GPU machine, offline: no venv, installs nothing, runs ``python -m ioattn bench``
        with the installed ioattn (after ``nox -s gpu``); posargs go to it (default: the whole
        benchmark, written to build/bench/).
sdist   builds the sdist and checks it holds what a build needs (src/, cmake/, CMakeLists.txt).

Environment knobs:
IOATTN_TORCH_SPEC   pip requirement for torch in tests/demo (default ``torch==2.13.0``; never
                    leave it unpinned on a CPU machine: plain ``torch`` pulls GBs of CUDA wheels).
IOATTN_FULL_BUILD=1 build every head dim and dtype (default: the pruned table below).
IOATTN_HEAD_DIMS, IOATTN_DTYPES   the pruned table (default ``64`` and ``bf16``; ';'-separated).
"""

from __future__ import annotations

import os
import shutil
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import nox

nox.needs_version = ">=2025.2.9"  # nox.project.dependency_groups
nox.options.default_venv_backend = "virtualenv"  # honours pip's find-links/index configuration
nox.options.sessions = ["lint", "tests"]
nox.options.error_on_external_run = True

ROOT = Path(__file__).resolve().parent
PYPROJECT = nox.project.load_toml(ROOT / "pyproject.toml")
PY_PATHS = ["python", "tests", "noxfile.py", "ci", "cmake"]
TORCH_SPEC = os.environ.get("IOATTN_TORCH_SPEC", "torch==2.13.0")


def _full_build() -> bool:
    return os.environ.get("IOATTN_FULL_BUILD", "") not in ("", "0")


def _build_settings(full: bool) -> list[str]:
    """pip --config-settings for scikit-build-core: kernel table, build folder, ccache."""
    defines: dict[str, str] = {}
    settings: list[str] = []
    if not full:
        defines["IOATTN_HEAD_DIMS"] = os.environ.get("IOATTN_HEAD_DIMS", "64")
        defines["IOATTN_DTYPES"] = os.environ.get("IOATTN_DTYPES", "bf16")
        # A folder of its own, so a pruned build never reuses a full build's CMake cache (a cached
        # IOATTN_HEAD_DIMS would otherwise survive) and switching back and forth stays incremental.
        settings.append("--config-settings=build-dir=build/{wheel_tag}-pruned")
    # Always set, so a build folder never keeps a launcher that is gone.
    launcher = "ccache" if shutil.which("ccache") else ""
    for lang in ("CUDA", "CXX"):
        defines[f"CMAKE_{lang}_COMPILER_LAUNCHER"] = launcher
    settings += [f"--config-settings=cmake.define.{k}={v}" for k, v in defines.items()]
    return settings


def _build_env() -> dict[str, str]:
    env = {
        # ccache: hits across clones in other folders (CI clones afresh).
        "CCACHE_BASEDIR": str(ROOT),
        "CCACHE_NOHASHDIR": "1",
        "CCACHE_MAXSIZE": os.environ.get("CCACHE_MAXSIZE", "5G"),
    }
    if "CMAKE_BUILD_PARALLEL_LEVEL" not in os.environ:
        env["CMAKE_BUILD_PARALLEL_LEVEL"] = str(os.cpu_count() or 2)
    return env


def _install_package(session: nox.Session) -> None:
    """Torch (pinned) and test tools first, then ioattn itself, built non-editable."""
    full = _full_build()
    session.log(
        "kernel table: "
        + (
            "full"
            if full
            else f"pruned (head dims {os.environ.get('IOATTN_HEAD_DIMS', '64')}, "
            f"dtypes {os.environ.get('IOATTN_DTYPES', 'bf16')}; IOATTN_FULL_BUILD=1 for all)"
        )
    )
    session.install(TORCH_SPEC)
    session.install(*nox.project.dependency_groups(PYPROJECT, "test"))
    if shutil.which("ccache"):
        session.run("ccache", "--zero-stats", external=True, silent=True)
    # torch is already there, so the dependency `torch>=2.4` installs nothing more. -v shows
    # the CMake/nvcc log, which is the only progress sign of a long build.
    session.install("-v", ".", *_build_settings(full), env=_build_env(), silent=False)
    if shutil.which("ccache"):
        session.run("ccache", "--show-stats", external=True)


def _pytest(session: nox.Session, python: str, *args: str) -> None:
    """pytest with a JUnit report; fails when no test ran (all skipped or none collected)."""
    report = ROOT / "build" / f"junit-{session.name}.xml"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.unlink(missing_ok=True)
    session.run(python, "-m", "pytest", f"--junitxml={report}", *args, external=True)
    # pytest exits 5 when it collects nothing; this also catches "everything was skipped".
    suites = ET.parse(report).getroot()
    suites = [suites] if suites.tag == "testsuite" else list(suites)
    counts = {key: sum(int(s.get(key, 0)) for s in suites) for key in ("tests", "skipped")}
    ran = counts["tests"] - counts["skipped"]
    if ran <= 0:
        session.error(f"pytest ran no test ({counts['tests']} collected, all skipped)")
    session.log(f"pytest ran {ran} tests ({counts['skipped']} skipped)")


@nox.session
def tests(session: nox.Session) -> None:
    """Build + install (pruned), then pytest -m 'not slow' (posargs replace the -m filter)."""
    _install_package(session)
    args = session.posargs or ["-m", "not slow"]
    # Run from the repo root: tests/ is found by testpaths, `ioattn` is the installed copy
    # (the source lives in python/, which is not on sys.path).
    _pytest(session, "python", *args)


@nox.session(venv_backend="none")
def gpu(session: nox.Session) -> None:
    """GPU machine, offline: preinstalled torch, full kernel table, every test, then the demo."""
    python = sys.executable
    probe = (
        "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda); "
        "assert torch.cuda.is_available(), 'torch sees no CUDA device'; "
        "print('GPU', torch.cuda.get_device_name())"
    )
    # A GPU run that skips every GPU test proves nothing: stop here without a GPU.
    session.run(python, "-c", probe, external=True)
    session.run(
        python,
        "-m",
        "pip",
        "install",
        "--no-build-isolation",
        "--no-deps",
        "--no-index",
        "-v",
        ".",
        *_build_settings(full=not os.environ.get("IOATTN_HEAD_DIMS")),
        env=_build_env(),
        external=True,
    )
    # GPU tests skip when the library does not load; here that is a failure, not a skip.
    loads = (
        "from ioattn import _abi; lib = _abi.load_library('sm80'); "
        "assert lib is not None, _abi.load_error('sm80'); print('loaded', lib.path)"
    )
    session.run(python, "-c", loads, external=True)
    _pytest(session, python, *session.posargs)
    session.run(python, "-m", "ioattn", external=True)


@nox.session(venv_backend="none")
def bench(session: nox.Session) -> None:
    """GPU machine, offline: python -m ioattn bench [posargs] (default --out build/bench)."""
    args = session.posargs or ["--out", str(ROOT / "build" / "bench")]
    session.run(sys.executable, "-m", "ioattn", "bench", *args, external=True)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (lint + format check) on Python, clang-format on src/."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"))
    session.run("ruff", "check", *PY_PATHS)
    session.run("ruff", "format", "--check", "--diff", *PY_PATHS)
    sources = _cxx_sources()
    if sources:
        session.run("clang-format", "--dry-run", "-Werror", *sources)


@nox.session(name="format")
def format_(session: nox.Session) -> None:
    """Apply ruff fixes, ruff format and clang-format in place."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"))
    session.run("ruff", "check", "--fix", *PY_PATHS)
    session.run("ruff", "format", *PY_PATHS)
    sources = _cxx_sources()
    if sources:
        session.run("clang-format", "-i", *sources)


def _cxx_sources() -> list[str]:
    exts = {".h", ".cuh", ".cu", ".cpp"}
    files = (p for p in (ROOT / "src").rglob("*") if p.suffix in exts and p.is_file())
    return sorted(str(p.relative_to(ROOT)) for p in files)


@nox.session
def demo(session: nox.Session) -> None:
    """Install (like tests) and run the main job: python -m ioattn [posargs]."""
    _install_package(session)
    session.run("python", "-m", "ioattn", *session.posargs)


@nox.session
def sdist(session: nox.Session) -> None:
    """Build the sdist into dist/ and check it holds what a build from it needs."""
    import tarfile

    session.install("build")
    out = ROOT / "dist"
    session.run("python", "-m", "build", "--sdist", "--outdir", str(out))
    version = PYPROJECT["project"]["version"]
    path = out / f"ioattn-{version}.tar.gz"
    with tarfile.open(path) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    required = [
        "CMakeLists.txt",
        "pyproject.toml",
        "src/include/ioattn/api.h",
        "python/ioattn/__init__.py",
        "python/ioattn/_cli.py",
    ]
    missing = [n for n in required if n not in names]
    missing += [
        d + "/" for d in ("cmake", "src/sm80") if not any(n.startswith(d + "/") for n in names)
    ]
    if missing:
        session.error(f"{path.name} lacks {missing}")
    stray = sorted(
        n for n in names if n.startswith(("build/", ".nox/", ".whl/")) or n.endswith(".so")
    )
    if stray:
        session.error(f"{path.name} holds build outputs: {stray[:5]}")
    session.log(f"{path.name}: {len(names)} files, all required ones present")
