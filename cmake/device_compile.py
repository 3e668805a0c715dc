#!/usr/bin/env python3
"""Compile one device source to a fat binary with nvcc or with NVRTC + nvFatbin.

The kernel libraries keep device code apart from host code: each generated device source
(cmake/gen_kernels.py) becomes one fat binary holding SASS for every ``--sass`` arch and PTX for
every ``--ptx`` arch, which the host code embeds and loads by kernel name. Two compilers can
produce it from the same sources:

nvcc    the CUDA toolkit's compiler driver (``nvcc -fatbin``), used when a toolkit is installed.
nvrtc   the runtime compiler library plus the nvFatbin library, both loaded with ctypes. They
        ship as PyPI packages for every CUDA major (``nvidia-cuda-nvrtc-cu12``,
        ``nvidia-nvfatbin-cu12``, ...), which is how the CUDA 12 wheels are built on machines
        whose only toolkit is a newer one: the PyPI ``nvidia-cuda-nvcc-cu12`` has no ``nvcc``.

``--print-version`` prints the compiler's CUDA version (``major.minor``) and exits. Each
compile appends one JSON line (source, compiler, seconds, peak resident memory) to
``--log`` when given: the release build's time and memory report.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

NVCC_FLAGS = ["-std=c++17", "-lineinfo", "-Xfatbin=-compress-all"]
NVRTC_FLAGS = ["-std=c++17", "-lineinfo"]
# Both compress the fat binary (the driver inflates it at load): about 4x smaller libraries.


def parse_archs(value: str) -> list[str]:
    """Arch names such as "80" or "90a" (the arch-specific sm_90a: WGMMA, setmaxnreg)."""
    archs = [a.strip() for a in re.split(r"[,;]", value) if a.strip()]
    for a in archs:
        if not re.fullmatch(r"\d+a?", a):
            raise argparse.ArgumentTypeError(f"arch {a!r}: expected digits with an optional 'a'")
    return archs


# ---------------------------------------------------------------------------------------------
# nvcc


def nvcc_version(nvcc: str) -> str:
    out = subprocess.run([nvcc, "--version"], check=True, capture_output=True, text=True).stdout
    match = re.search(r"release (\d+\.\d+)", out)
    if match is None:
        sys.exit(f"device_compile.py: cannot read the CUDA version from `{nvcc} --version`")
    return match.group(1)


def compile_nvcc(args: argparse.Namespace) -> None:
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in args.sass]
    gencode += [f"-gencode=arch=compute_{a},code=compute_{a}" for a in args.ptx]
    cmd = [args.nvcc, "-fatbin", *NVCC_FLAGS, *gencode]
    cmd += [f"-I{d}" for d in args.include] + [f"-D{d}" for d in args.define]
    cmd += ["-o", str(args.output), str(args.source)]
    result = subprocess.run(cmd)
    if result.returncode != 0:
        sys.exit(result.returncode)


# ---------------------------------------------------------------------------------------------
# NVRTC + nvFatbin


class Nvrtc:
    def __init__(self, path: str) -> None:
        # libnvrtc dlopens its builtins library by soname; some packagings (the CUDA 13 PyPI
        # wheels) set no RPATH for it, so load the one beside libnvrtc first.
        for builtins in sorted(Path(path).parent.glob("libnvrtc-builtins.so.*")):
            ctypes.CDLL(str(builtins), mode=ctypes.RTLD_GLOBAL)
        self.lib = ctypes.CDLL(path)
        self.lib.nvrtcGetErrorString.restype = ctypes.c_char_p

    def check(self, status: int, what: str) -> None:
        if status != 0:
            message = self.lib.nvrtcGetErrorString(status).decode()
            sys.exit(f"device_compile.py: {what} failed: {message}")

    def version(self) -> str:
        major, minor = ctypes.c_int(), ctypes.c_int()
        self.check(self.lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)), "nvrtcVersion")
        return f"{major.value}.{minor.value}"

    def compile(self, source: Path, arch: str, options: list[str]) -> tuple[bytes, bytes]:
        """(cubin, ptx) of `source` for `arch` (sm_XX: both; compute_XX: PTX only)."""
        prog = ctypes.c_void_p()
        self.check(
            self.lib.nvrtcCreateProgram(
                ctypes.byref(prog), source.read_bytes(), source.name.encode(), 0, None, None
            ),
            "nvrtcCreateProgram",
        )
        try:
            opts = [f"-arch={arch}", *options]
            array = (ctypes.c_char_p * len(opts))(*(o.encode() for o in opts))
            status = self.lib.nvrtcCompileProgram(prog, len(opts), array)
            log = self._read(prog, "ProgramLog").rstrip(b"\0").decode(errors="replace").strip()
            if log:
                print(log, file=sys.stderr)
            self.check(status, f"compiling {source.name} for {arch}")
            cubin = self._read(prog, "CUBIN") if arch.startswith("sm_") else b""
            return cubin, self._read(prog, "PTX")
        finally:
            self.lib.nvrtcDestroyProgram(ctypes.byref(prog))

    def _read(self, prog: ctypes.c_void_p, what: str) -> bytes:
        size = ctypes.c_size_t()
        self.check(
            getattr(self.lib, f"nvrtcGet{what}Size")(prog, ctypes.byref(size)), f"nvrtcGet{what}"
        )
        buf = ctypes.create_string_buffer(size.value)
        self.check(getattr(self.lib, f"nvrtcGet{what}")(prog, buf), f"nvrtcGet{what}")
        return buf.raw


class Fatbin:
    def __init__(self, path: str) -> None:
        self.lib = ctypes.CDLL(path)
        self.lib.nvFatbinGetErrorString.restype = ctypes.c_char_p
        self.handle = ctypes.c_void_p()
        opts = (ctypes.c_char_p * 2)(b"-64", b"-compress-all")
        self.check(self.lib.nvFatbinCreate(ctypes.byref(self.handle), opts, 2), "nvFatbinCreate")

    def check(self, status: int, what: str) -> None:
        if status != 0:
            message = self.lib.nvFatbinGetErrorString(status).decode()
            sys.exit(f"device_compile.py: {what} failed: {message}")

    def add_cubin(self, cubin: bytes, arch: str, name: str) -> None:
        status = self.lib.nvFatbinAddCubin(
            self.handle, cubin, ctypes.c_size_t(len(cubin)), str(arch).encode(), name.encode()
        )
        self.check(status, f"nvFatbinAddCubin sm_{arch}")

    def add_ptx(self, ptx: bytes, arch: str, name: str) -> None:
        # nvFatbin wants the PTX text with its terminating NUL.
        text = ptx if ptx.endswith(b"\0") else ptx + b"\0"
        status = self.lib.nvFatbinAddPTX(
            self.handle, text, ctypes.c_size_t(len(text)), str(arch).encode(), name.encode(), b""
        )
        self.check(status, f"nvFatbinAddPTX compute_{arch}")

    def data(self) -> bytes:
        size = ctypes.c_size_t()
        self.check(self.lib.nvFatbinSize(self.handle, ctypes.byref(size)), "nvFatbinSize")
        buf = ctypes.create_string_buffer(size.value)
        self.check(self.lib.nvFatbinGet(self.handle, buf), "nvFatbinGet")
        self.lib.nvFatbinDestroy(ctypes.byref(self.handle))
        return buf.raw


def compile_nvrtc(args: argparse.Namespace) -> None:
    nvrtc = Nvrtc(args.nvrtc)
    fatbin = Fatbin(args.nvfatbin)
    options = NVRTC_FLAGS + [f"-I{d}" for d in args.include] + [f"-D{d}" for d in args.define]
    name = args.source.stem
    for arch in sorted(set(args.sass) | set(args.ptx)):
        # A real arch gives both the cubin and the PTX it was built from: one compile serves an
        # arch that needs SASS and PTX.
        target = f"sm_{arch}" if arch in args.sass else f"compute_{arch}"
        cubin, ptx = nvrtc.compile(args.source, target, options)
        if arch in args.sass:
            fatbin.add_cubin(cubin, arch, name)
        if arch in args.ptx:
            fatbin.add_ptx(ptx, arch, name)
    args.output.write_bytes(fatbin.data())


# ---------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--compiler", required=True, choices=("nvcc", "nvrtc"))
    ap.add_argument("--nvcc", help="nvcc executable (--compiler nvcc)")
    ap.add_argument("--nvrtc", help="libnvrtc.so path (--compiler nvrtc)")
    ap.add_argument("--nvfatbin", help="libnvfatbin.so path (--compiler nvrtc)")
    ap.add_argument("--print-version", action="store_true")
    ap.add_argument("--source", type=Path)
    ap.add_argument("--output", type=Path)
    ap.add_argument("--sass", type=parse_archs, default=[], help="real archs, e.g. 80,90")
    ap.add_argument("--ptx", type=parse_archs, default=[], help="virtual archs, e.g. 80")
    ap.add_argument("-I", "--include", action="append", default=[])
    ap.add_argument("-D", "--define", action="append", default=[])
    ap.add_argument("--log", type=Path, help="append a JSON line with time and peak memory")
    args = ap.parse_args()

    needed = ["nvcc"] if args.compiler == "nvcc" else ["nvrtc", "nvfatbin"]
    if not args.print_version:
        needed += ["source", "output"]
    missing = [f"--{n}" for n in needed if getattr(args, n) is None]
    if missing:
        ap.error(f"--compiler {args.compiler} needs {' '.join(missing)}")

    if args.print_version:
        print(nvcc_version(args.nvcc) if args.compiler == "nvcc" else Nvrtc(args.nvrtc).version())
        return
    if not args.sass and not args.ptx:
        ap.error("no --sass or --ptx arch given")

    start = time.monotonic()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    partial = args.output.with_suffix(args.output.suffix + ".part")
    final = args.output
    args.output = partial  # written whole, then renamed: an interrupted build leaves no stub
    (compile_nvcc if args.compiler == "nvcc" else compile_nvrtc)(args)
    os.replace(partial, final)
    if args.log is not None:
        # ru_maxrss is in KiB on Linux; nvcc's work happens in child processes.
        who = resource.RUSAGE_CHILDREN if args.compiler == "nvcc" else resource.RUSAGE_SELF
        record = {
            "source": args.source.name,
            "compiler": args.compiler,
            "seconds": round(time.monotonic() - start, 2),
            "peak_rss_mib": round(resource.getrusage(who).ru_maxrss / 1024, 1),
            "fatbin_bytes": final.stat().st_size,
        }
        with args.log.open("a") as f:
            f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
