"""Packaging checks on the INSTALLED ioattn (CPU only; CI runs them after a non-editable install).

The kernel library must carry SASS for sm_80 and sm_90 plus compute_80 PTX, export only the C
ABI (``ioattn_*``), link neither torch, Python nor the CUDA runtime dynamically, and ship in a
py3-none wheel. A CPU-only build (no nvcc when it was built) has no library: those tests skip,
but only when no nvcc is on PATH; with nvcc present a missing library is a failure.
"""

from __future__ import annotations

import ctypes
import importlib.metadata as md
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ioattn import _dist, _fatbin

LIB_NAME = "libioattn_sm80.so"
REQUIRED_SASS = {80, 90}
REQUIRED_PTX = {80}
API_HEADER = Path(__file__).resolve().parents[1] / "src" / "include" / "ioattn" / "api.h"

# Shared objects a torch-free, statically-linked-cudart library may need at run time.
ALLOWED_NEEDED = re.compile(
    r"^(libc|libm|libdl|libpthread|librt|libgcc_s|libstdc\+\+)\.so(\.\d+)*$"
    r"|^ld-linux(-x86-64|-aarch64)?\.so\.\d+$"
)
# Linker-defined symbols some toolchains put in .dynsym.
LINKER_SYMBOLS = {"_init", "_fini", "_edata", "_end", "__bss_start"}


def _distribution() -> md.Distribution | None:
    """The distribution that installed `ioattn`: a source build or a per-CUDA-major wheel."""
    names = _dist.installed()
    assert len(names) <= 1, f"several ioattn distributions installed: {names}"
    return md.distribution(names[0]) if names else None


DIST = _distribution()
pytestmark = pytest.mark.skipif(
    DIST is None, reason="ioattn is not installed: these tests check an installed copy"
)


def _package_dir() -> Path:
    spec = importlib.util.find_spec("ioattn")
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations)))


@pytest.fixture(scope="module")
def library() -> Path:
    path = _package_dir() / "lib" / LIB_NAME
    if path.is_file():
        return path
    if shutil.which("nvcc"):
        pytest.fail(
            f"nvcc is on PATH ({shutil.which('nvcc')}) but the installed package has no {path}: "
            "the CUDA build did not produce or install the kernel library"
        )
    pytest.skip(f"CPU-only build: no nvcc was on PATH, so no {LIB_NAME} was built")


def _tool(name: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        pytest.skip(f"{name} (binutils) is not on PATH")
    return exe


def _run(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


# ---------------------------------------------------------------------------------------------
# device code: cuobjdump, or the .nv_fatbin section parsed here


def _cuobjdump() -> str | None:
    """cuobjdump from PATH, beside nvcc, or from the PyPI package nvidia-cuda-cuobjdump."""
    candidates = [shutil.which("cuobjdump")]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(str(Path(nvcc).resolve().parent / "cuobjdump"))
    try:
        files = md.distribution("nvidia-cuda-cuobjdump").files or []
    except md.PackageNotFoundError:
        files = []
    candidates += [str(f.locate()) for f in files if f.name == "cuobjdump"]
    for exe in candidates:
        if exe and os.path.isfile(exe):
            if not os.access(exe, os.X_OK):
                try:
                    os.chmod(exe, os.stat(exe).st_mode | 0o111)
                except OSError:
                    continue
            return exe
    return None


def _archs_parsed(path: Path) -> tuple[set[int], set[int]]:
    fatbins = _fatbin.library_fatbins(path)
    assert fatbins, f"{path.name} has no .nv_fatbin section: no device code"
    return _fatbin.archs(fatbins, _fatbin.KIND_ELF), _fatbin.archs(fatbins, _fatbin.KIND_PTX)


def _archs_cuobjdump(exe: str, path: Path) -> tuple[set[int], set[int]]:
    def archs(flag: str) -> set[int]:
        result = subprocess.run([exe, flag, str(path)], capture_output=True, text=True)
        if result.returncode != 0 and "does not contain" not in result.stderr:
            raise AssertionError(f"cuobjdump {flag} failed: {result.stderr}")
        return {int(m) for m in re.findall(r"\.sm_(\d+)a?\.(?:cubin|ptx)", result.stdout)}

    return archs("--list-elf"), archs("--list-ptx")


def _archs(path: Path) -> tuple[set[int], set[int], str]:
    exe = _cuobjdump()
    if exe is not None:
        return (*_archs_cuobjdump(exe, path), "cuobjdump")
    return (*_archs_parsed(path), ".nv_fatbin parser")


def test_library_comes_from_the_wheel(library: Path) -> None:
    assert DIST is not None
    recorded = {str(f).replace("\\", "/") for f in DIST.files or []}
    assert f"ioattn/lib/{LIB_NAME}" in recorded, (
        f"{LIB_NAME} is not in the installed RECORD: it must be installed to ioattn/lib by "
        "CMake's install() so that it ships in the wheel"
    )


def test_sass_and_ptx(library: Path) -> None:
    sass, ptx, how = _archs(library)
    assert sass >= REQUIRED_SASS, (
        f"SASS for sm_{sorted(REQUIRED_SASS - sass)} missing ({how}: {sorted(sass)})"
    )
    assert ptx >= REQUIRED_PTX, (
        f"PTX for compute_{sorted(REQUIRED_PTX - ptx)} missing ({how}: {sorted(ptx)})"
    )
    # PTX only for the oldest arch: newer GPUs JIT it; more PTX only bloats the wheel.
    assert ptx == REQUIRED_PTX, f"unexpected PTX archs {sorted(ptx)} ({how})"


def test_every_kernel_has_sass_for_every_arch(library: Path) -> None:
    exe = _cuobjdump()
    if exe is None:
        pytest.skip("needs cuobjdump (nvidia-cuda-cuobjdump) to list the cubins")
    out = _run(exe, "--list-elf", str(library))
    # "ELF file    3: fwd_bf16_hd64_window.sm_80.cubin": one cubin per translation unit and
    # arch (unnamed ones get a running number, "libfoo.3", which is dropped here).
    per_arch: dict[int, list[str]] = {}
    for name, arch in re.findall(r"^ELF file\s+\d+:\s+(\S+?)\.sm_(\d+)a?\.cubin\s*$", out, re.M):
        per_arch.setdefault(int(arch), []).append(re.sub(r"\.\d+$", "", name))
    assert set(per_arch) >= REQUIRED_SASS, f"cubins found only for {sorted(per_arch)}:\n{out}"
    base = sorted(per_arch[80])
    for arch in REQUIRED_SASS:
        assert sorted(per_arch[arch]) == base, (
            f"translation units compiled for sm_80 and sm_{arch} differ: "
            f"{sorted(set(per_arch[arch]) ^ set(base))[:5]}"
        )


def test_fatbin_parser_agrees_with_cuobjdump(library: Path) -> None:
    exe = _cuobjdump()
    if exe is None:
        pytest.skip("no cuobjdump to compare the .nv_fatbin parser with")
    assert _archs_parsed(library) == _archs_cuobjdump(exe, library)


def _build_info(library: Path) -> dict:
    # Plain ctypes, independent of ioattn._abi: loads without torch and without a GPU.
    lib = ctypes.CDLL(str(library), mode=ctypes.RTLD_LOCAL)
    lib.ioattn_build_info.restype = ctypes.c_char_p
    return json.loads(lib.ioattn_build_info().decode())


def test_build_info_matches_binary(library: Path) -> None:
    info = _build_info(library)
    sass, ptx, how = _archs(library)
    assert info.get("library") == "sm80"
    assert set(info.get("sass", [])) == sass, (
        f"build_info sass {info.get('sass')} vs {how} {sorted(sass)}"
    )
    assert set(info.get("ptx", [])) == ptx, (
        f"build_info ptx {info.get('ptx')} vs {how} {sorted(ptx)}"
    )
    assert info.get("kernels"), "build_info lists no kernels"


def test_one_fat_binary_per_kernel_with_every_arch(library: Path) -> None:
    # Each kernel is loaded from its own fat binary, so each one must hold every arch that
    # build_info claims (a GPU finds no fallback in a neighbouring fat binary).
    info = _build_info(library)
    fatbins = _fatbin.library_fatbins(library)
    assert len(fatbins) == len(info["kernels"]), (
        f"{len(fatbins)} fat binaries for {len(info['kernels'])} kernels"
    )
    for i, entries in enumerate(fatbins):
        sass = {e.arch for e in entries if e.kind == _fatbin.KIND_ELF}
        ptx = {e.arch for e in entries if e.kind == _fatbin.KIND_PTX}
        assert (sass, ptx) == (set(info["sass"]), set(info["ptx"])), (
            f"fat binary {i} ({info['kernels'][i]}): SASS {sorted(sass)}, PTX {sorted(ptx)}"
        )


def test_build_info_names_its_toolchain(library: Path) -> None:
    info = _build_info(library)
    assert info.get("device_compiler") in ("nvcc", "nvrtc"), info.get("device_compiler")
    assert re.fullmatch(r"\d+\.\d+", str(info.get("cuda"))), info.get("cuda")
    dist = DIST.metadata["Name"] if DIST is not None else ""
    if dist.startswith("ioattn-cu"):  # a per-CUDA-major wheel carries that major's runtime
        assert str(info["cuda"]).split(".")[0] == dist.removeprefix("ioattn-cu"), (dist, info)


def test_exports_only_the_c_abi(library: Path) -> None:
    out = _run(_tool("nm"), "-D", "--defined-only", str(library))
    symbols = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[-2] != "A":  # "A": version-definition entries
            symbols.add(parts[-1].split("@")[0])
    stray = sorted(s for s in symbols - LINKER_SYMBOLS if not s.startswith("ioattn_"))
    assert not stray, f"{LIB_NAME} exports non-ABI symbols (hide them): {stray[:20]}"
    if API_HEADER.is_file():  # running from the repo: the header is the contract
        declared = set(
            re.findall(r"IOATTN_API\s+[^;(]*?\b(ioattn_\w+)\s*\(", API_HEADER.read_text())
        )
        assert declared, "no IOATTN_API function found in api.h"
        exported = {s for s in symbols if s.startswith("ioattn_")}
        assert exported == declared, (
            f"exports differ from api.h: missing {sorted(declared - exported)}, "
            f"extra {sorted(exported - declared)}"
        )


def test_needs_no_torch_python_or_cudart(library: Path) -> None:
    out = _run(_tool("readelf"), "-d", "-W", str(library))
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)
    assert needed, "readelf found no NEEDED entries"
    bad = [n for n in needed if not ALLOWED_NEEDED.match(n)]
    assert not bad, f"{LIB_NAME} links {bad}: only libc/libstdc++-level libraries are allowed"
    undefined = _run(_tool("nm"), "-D", "--undefined-only", str(library)).split()
    torchy = [s for s in undefined if s.startswith(("Py", "_Py", "_ZN3c10", "_ZN2at", "_ZN5torch"))]
    assert not torchy, f"undefined torch/Python symbols: {torchy[:10]}"


def test_loads_without_torch(library: Path) -> None:
    code = (
        "import ctypes, json, sys; "
        f"lib = ctypes.CDLL({str(library)!r}); "
        "lib.ioattn_abi_version.restype = ctypes.c_int32; "
        "print(lib.ioattn_abi_version()); "
        "assert 'torch' not in sys.modules"
    )
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) >= 1


def test_wheel_tag_is_py3_none() -> None:
    assert DIST is not None
    wheel = DIST.read_text("WHEEL")
    assert wheel, "the installed dist-info has no WHEEL file"
    tags = re.findall(r"^Tag:\s*(\S+)", wheel, flags=re.MULTILINE)
    assert tags, wheel
    for tag in tags:
        assert tag.startswith("py3-none-"), f"wheel tag {tag}: expected py3-none-<platform>"
        assert not tag.endswith("-any"), f"wheel tag {tag}: the wheel carries a binary"
    assert re.search(r"^Root-Is-Purelib:\s*false", wheel, flags=re.MULTILINE), wheel


def test_console_script() -> None:
    assert DIST is not None
    scripts = {ep.name: ep.value for ep in DIST.entry_points if ep.group == "console_scripts"}
    assert scripts.get("ioattn") == "ioattn._cli:main"


def test_requires_torch_2_4() -> None:
    assert DIST is not None
    requires = DIST.requires or []
    assert any(re.fullmatch(r"torch\s*>=\s*2\.4", r.split(";")[0].strip()) for r in requires), (
        requires
    )


# ---------------------------------------------------------------- the sm90 library


@pytest.fixture(scope="module")
def sm90_library() -> Path:
    """libioattn_sm90.so: built beside the sm80 library whenever nvcc can target sm_90a."""
    path = _package_dir() / "lib" / "libioattn_sm90.so"
    if path.is_file():
        return path
    if shutil.which("nvcc"):
        pytest.fail(f"nvcc is on PATH but the installed package has no {path}")
    pytest.skip("CPU-only build: no nvcc was on PATH, so no libioattn_sm90.so was built")


def test_sm90_library_has_only_sm90a_sass(sm90_library: Path) -> None:
    info = _build_info(sm90_library)
    assert info.get("library") == "sm90"
    assert info.get("kernels"), "build_info lists no kernels"
    fatbins = _fatbin.library_fatbins(sm90_library)
    assert len(fatbins) == len(info["kernels"])
    for i, entries in enumerate(fatbins):
        kinds = {(e.kind, e.arch) for e in entries}
        assert kinds == {(_fatbin.KIND_ELF, 90)}, f"fat binary {i}: {sorted(kinds)}"
    exe = _cuobjdump()
    if exe is not None:  # the cubins are the arch-specific sm_90a (WGMMA, setmaxnreg)
        names = re.findall(r"\.(sm_\w+)\.cubin", _run(exe, "--list-elf", str(sm90_library)))
        assert names and set(names) == {"sm_90a"}, names


def test_sm90_library_exports_the_same_abi(library: Path, sm90_library: Path) -> None:
    def exported(path: Path) -> set[str]:
        out = _run(_tool("nm"), "-D", "--defined-only", str(path))
        return {line.split()[-1].split("@")[0] for line in out.splitlines() if "ioattn_" in line}

    assert exported(sm90_library) == exported(library)
    out = _run(_tool("readelf"), "-d", "-W", str(sm90_library))
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)
    assert needed and all(ALLOWED_NEEDED.match(n) for n in needed), needed
