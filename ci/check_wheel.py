#!/usr/bin/env python3
"""Check built ioattn wheels: size, tags, and the device code of every kernel library.

    python ci/check_wheel.py --cuda 12.9 dist/ioattn_cu12-*.whl

For each wheel:
- size: fails above 100 MB (PyPI's default file limit), warns above 64 MiB;
- name and tag: ``ioattn-cu<major>`` for ``--cuda``, ``py3-none-manylinux_*`` (after
  auditwheel repair), and no bundled libraries (``*.libs/``: the kernel libraries need only
  libc/libstdc++, the driver is the user's);
- every ``ioattn/lib/libioattn_*.so``: its ``ioattn_build_info()`` (loaded with ctypes; no GPU
  needed) names the CUDA version of ``--cuda``, and its .nv_fatbin section holds one fat binary
  per kernel listed there, each with SASS for every arch and PTX for every virtual arch the
  library claims (read with the wheel's own ``ioattn/_fatbin.py``).
Prints one summary line per library; exits non-zero on any failure.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import json
import re
import sys
import tempfile
import zipfile
from pathlib import Path
from types import ModuleType

FAIL_BYTES = 100 * 1000 * 1000
WARN_BYTES = 64 * 2**20


def load_module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("_wheel_fatbin", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up while the class is built
    spec.loader.exec_module(module)
    return module


def check_library(lib: Path, cuda: str, fatbin: ModuleType) -> list[str]:
    errors = []
    handle = ctypes.CDLL(str(lib), mode=ctypes.RTLD_LOCAL)
    handle.ioattn_build_info.restype = ctypes.c_char_p
    info = json.loads(handle.ioattn_build_info().decode())
    if str(info.get("cuda")).split(".")[0] != cuda.split(".")[0]:
        errors.append(f"{lib.name}: built with CUDA {info.get('cuda')}, expected {cuda}")
    fatbins = fatbin.library_fatbins(lib)
    kernels = info.get("kernels", [])
    if not kernels or len(fatbins) != len(kernels):
        errors.append(f"{lib.name}: {len(fatbins)} fat binaries for {len(kernels)} kernels")
    want = (set(info.get("sass", [])), set(info.get("ptx", [])))
    for kernel, entries in zip(kernels, fatbins):
        have = (
            {e.arch for e in entries if e.kind == fatbin.KIND_ELF},
            {e.arch for e in entries if e.kind == fatbin.KIND_PTX},
        )
        if have != want:
            errors.append(f"{lib.name}: {kernel} has SASS {have[0]} PTX {have[1]}, claims {want}")
    print(
        f"  {lib.name}: CUDA {info.get('cuda')} ({info.get('device_compiler')}), "
        f"{len(kernels)} kernels, SASS {sorted(want[0])} PTX {sorted(want[1])} in every one, "
        f"{lib.stat().st_size / 2**20:.1f} MiB"
    )
    return errors


def check_wheel(wheel: Path, cuda: str, allow_linux_tag: bool) -> list[str]:
    errors = []
    size = wheel.stat().st_size
    print(f"{wheel.name}: {size / 2**20:.1f} MiB")
    if size > FAIL_BYTES:
        errors.append(f"{wheel.name}: {size} bytes, above PyPI's 100 MB limit")
    elif size > WARN_BYTES:
        print(f"  warning: above the 64 MiB size goal ({size / 2**20:.1f} MiB)")
    match = re.fullmatch(
        r"(?P<dist>[^-]+)-[^-]+-(?P<py>[^-]+)-(?P<abi>[^-]+)-(?P<plat>.+)\.whl", wheel.name
    )
    if match is None:
        return [f"{wheel.name}: not a wheel file name"]
    major = cuda.split(".")[0]
    if match["dist"] != f"ioattn_cu{major}":
        errors.append(f"{wheel.name}: distribution {match['dist']}, expected ioattn_cu{major}")
    if (match["py"], match["abi"]) != ("py3", "none"):
        errors.append(f"{wheel.name}: tag {match['py']}-{match['abi']}, expected py3-none")
    platforms = match["plat"].split(".")
    if not all(p.startswith("manylinux_") for p in platforms) and not allow_linux_tag:
        errors.append(f"{wheel.name}: platform {match['plat']} is not manylinux (auditwheel?)")

    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        bundled = [n for n in names if re.match(r"[^/]+\.libs/", n)]
        if bundled:
            errors.append(f"{wheel.name}: auditwheel bundled libraries {bundled}")
        zf.extractall(tmp)
        root = Path(tmp)
        libs = sorted((root / "ioattn" / "lib").glob("libioattn_*.so"))
        if not libs:
            return [*errors, f"{wheel.name}: no ioattn/lib/libioattn_*.so"]
        fatbin = load_module(root / "ioattn" / "_fatbin.py")
        for lib in libs:
            errors += check_library(lib, cuda, fatbin)
    return errors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cuda", required=True, help="CUDA version the wheels were built for")
    ap.add_argument(
        "--allow-linux-tag",
        action="store_true",
        help="accept a linux_<arch> tag (a wheel before auditwheel repair)",
    )
    ap.add_argument("wheels", nargs="+", type=Path)
    args = ap.parse_args()
    errors = []
    for wheel in args.wheels:
        errors += check_wheel(wheel, args.cuda, args.allow_linux_tag)
    for error in errors:
        print(f"FAIL {error}", file=sys.stderr)
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
