#!/usr/bin/env python3
"""Generate one library's kernel table: the single source of truth for what gets compiled.

For every (dtype x head dim x mask x softcap) variant of the forward and the backward pass
(atomic and deterministic), and
for the backward's per-dtype helpers (preprocess, postprocess), this writes one device source
defining one ``extern "C" __global__`` entry point (compiled to a fat binary by
cmake/device_compile.py, with nvcc or NVRTC), plus the host source ``kernel_table.cpp``: the
fat binaries embedded in the library's .nv_fatbin section, the dispatch tables the host code
searches, and the JSON returned by ``ioattn_build_info()`` (one "kernels" item per fat binary,
in order). Files are rewritten only when their
content changes, so re-running CMake does not trigger rebuilds. Prints the generated sources
for CMake, one per line: ``device <path>`` or ``host <path>``; a device source ``x.cu`` is
expected to be compiled to ``x.fatbin`` beside it.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

DTYPES = {"fp16": "IOATTN_DTYPE_FP16", "bf16": "IOATTN_DTYPE_BF16"}
ELEMENTS = {"fp16": "__half", "bf16": "__nv_bfloat16"}
HEAD_DIMS = (64, 96, 128, 192, 256)
MASKS = {"full": "false", "window": "true"}

# What each kernel library needs from the generator, per op: the device header defining its
# kernels, the kernel template, the params type, and host expressions (of hd, window and the
# variant flag v) for its launch shape ("block_q", query rows per tile, where it is not
# "block"); optionally one variant flag (VARIANT_FLAGS): the (head dim, mask) pairs that also
# get a second tile config, "long_q" for long query sequences (with "min_seqlen_q", an
# expression of hd and window: the seqlen_q from which the host prefers it) or "small_smem" for GPUs where the default does not fit, and
# "has_<flag>", the tile header's word on which pairs have one (the generated table
# static_asserts that the two agree; the kernel template then takes the flag as a fifth, bool
# argument); per helper: the kernel template (of the element type, and where
# "per_tile_config" names an op, of that op's head dim and flag) and its block size; the host
# header with the tile functions; the minimum compute capability it runs on.
#
# The SM80 backward kernels (both modes), but for their template. Every head dim has tiles for
# GPUs with less shared memory beside the default (sm80/tile_config.h).
SM80_BWD = {
    "entry_header": "sm80/bwd_entry.cuh",
    "params": "ioattn::BwdParams",
    "block": "ioattn::sm80::bwd_tile_config({hd}, {v}).block_n",
    "block_q": "ioattn::sm80::bwd_tile_config({hd}, {v}).block_m",
    "threads": "ioattn::sm80::bwd_num_threads({hd}, {v})",
    "smem": "ioattn::sm80::bwd_smem_bytes({hd}, {v})",
    "small_smem": {(hd, mask) for hd in HEAD_DIMS for mask in MASKS},
    "has_small_smem": "ioattn::sm80::bwd_has_small_smem_variant({hd})",
}

LIBRARIES: dict[str, dict] = {
    "sm80": {
        "ops": {
            "fwd": {
                "entry_header": "sm80/fwd_entry.cuh",
                "variant": "ioattn::sm80::FwdKernelFor",
                "params": "ioattn::FwdParams",
                # one tile config per (head dim, mask), for every GPU (96 KB at most)
                "block": "ioattn::sm80::fwd_tile_config({hd}, {w}).block_m",
                "threads": "ioattn::sm80::fwd_tile_config({hd}, {w}).num_warps * 32",
                "smem": "ioattn::sm80::fwd_smem_bytes({hd}, {w})",
            },
            "bwd": SM80_BWD | {"variant": "ioattn::sm80::BwdKernelFor"},
            # deterministic=1: the same backward with a scheduler that walks key blocks in order
            "bwd_det": SM80_BWD | {"variant": "ioattn::sm80::BwdDeterministicKernelFor"},
        },
        "helpers": {
            "bwd_pre": {
                "entry_header": "sm80/bwd_aux.cuh",
                "kernel": "ioattn::sm80::BwdPreprocess",
                "params": "ioattn::BwdParams",
                "threads": "ioattn::sm80::kBwdHelperThreads",
            },
            # per backward tile config too: the dq_accum layout it reads is the kernel's
            "bwd_post": {
                "entry_header": "sm80/bwd_aux.cuh",
                "kernel": "ioattn::sm80::BwdPostprocess",
                "params": "ioattn::BwdParams",
                "threads": "ioattn::sm80::kBwdHelperThreads",
                "per_tile_config": "bwd",
            },
        },
        "tile_header": "sm80/tile_config.h",
        "min_cc": 80,
    },
    # FlashAttention-3-style forward (TMA, WGMMA, warp specialization); the backward is not
    # built yet, so its tables are empty and the dispatcher takes the sm80 library's.
    "sm90": {
        "ops": {
            "fwd": {
                "entry_header": "sm90/fwd_entry.cuh",
                "variant": "ioattn::sm90::FwdKernelFor",
                "params": "ioattn::sm90::FwdParamsSm90",
                "block": "ioattn::sm90::fwd_tile_config({hd}, {w}, {v}).block_m",
                "threads": "ioattn::sm90::fwd_num_threads({hd}, {w}, {v})",
                "smem": "ioattn::sm90::fwd_smem_bytes({hd}, {w}, {v})",
                "long_q": {(64, "window"), (64, "full")},
                "min_seqlen_q": "ioattn::sm90::fwd_long_min_seqlen_q({hd}, {w})",
                "has_long_q": "ioattn::sm90::fwd_has_long_variant({hd}, {w})",
            },
        },
        "helpers": {},
        "tile_header": "sm90/tile_config.h",
        "min_cc": 90,
    },
}
TABLES = ("fwd", "bwd", "bwd_det")
VARIANT_FLAGS = (
    "long_q",
    "small_smem",
)  # KernelEntry fields; an op has at most one  # kernel_table.h: every library defines all of them
HELPER_TABLES = ("bwd_pre", "bwd_post")

HEADER = "// Generated by cmake/gen_kernels.py from the CMake kernel-table options. Do not edit.\n"


API_HEADER = Path(__file__).resolve().parent.parent / "src" / "include" / "ioattn" / "api.h"


def abi_version() -> int:
    """IOATTN_ABI_VERSION of the C ABI header (the one source of that number)."""
    match = re.search(r"#define IOATTN_ABI_VERSION (\d+)", API_HEADER.read_text())
    if match is None:
        raise SystemExit(f"{API_HEADER}: no IOATTN_ABI_VERSION")
    return int(match.group(1))


def write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def device_source(op: dict[str, str], targs: str, symbol: str) -> str:
    """One kernel-table variant: an extern "C" entry point the host looks up by name."""
    return (
        HEADER
        + f'#include "{op["entry_header"]}"\n\n'
        + f"using Kernel = {op['variant']}<{targs}>::type;\n\n"
        + 'extern "C" __global__ void __launch_bounds__(Kernel::kNThreads, Kernel::kMinBlocksPerSM)\n'
        + f"    {symbol}(const __grid_constant__ {op['params']} params) {{\n"
        + "  extern __shared__ __align__(128) char smem[];\n"
        + "  Kernel::run(params, smem);\n"
        + "}\n"
    )


def helper_source(helper: dict[str, str], targs: str, symbol: str) -> str:
    """One helper kernel (no shared memory, fixed block size)."""
    return (
        HEADER
        + f'#include "{helper["entry_header"]}"\n\n'
        + f"using Kernel = {helper['kernel']}<{targs}>;\n\n"
        + 'extern "C" __global__ void __launch_bounds__(Kernel::kNThreads)\n'
        + f"    {symbol}(const __grid_constant__ {helper['params']} params) {{\n"
        + "  Kernel::run(params);\n"
        + "}\n"
    )


def embed_fatbins(fatbins: list[Path]) -> str:
    """Assembly that links each fat binary into .nv_fatbin, where cuobjdump and the CUDA tools
    look for device code, between the hidden symbols ioattn_fatbin_<i> and ..._end."""
    lines = ['.pushsection .nv_fatbin, "a"']
    for i, path in enumerate(fatbins):
        quoted = str(path).replace("\\", "\\\\").replace('"', '\\"')
        lines += [
            ".balign 8",  # fat binaries are read as 8-byte aligned structures
            f".hidden ioattn_fatbin_{i}",
            f"ioattn_fatbin_{i}:",
            f'.incbin "{quoted}"',
            f".hidden ioattn_fatbin_{i}_end",
            f"ioattn_fatbin_{i}_end:",
        ]
    lines.append(".popsection")
    body = "".join(f"    {json.dumps(line + chr(10))}\n" for line in lines)
    decls = "".join(
        f"extern const unsigned char ioattn_fatbin_{i}[], ioattn_fatbin_{i}_end[];\n"
        for i in range(len(fatbins))
    )
    # The object's dependency on the .fatbin files is declared in CMake (OBJECT_DEPENDS).
    return "asm(\n" + body + ");\n\n" + 'extern "C" {\n' + decls + "}\n"


def parse_list(value: str) -> list[str]:
    return [v for v in value.replace(";", ",").split(",") if v.strip()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--library", required=True, choices=sorted(LIBRARIES))
    ap.add_argument("--head-dims", required=True, help="e.g. 64,96,128,192,256")
    ap.add_argument("--dtypes", required=True, help="e.g. fp16,bf16")
    ap.add_argument("--sass", required=True, help="real archs, e.g. 80,90")
    ap.add_argument("--ptx", default="", help="virtual archs, e.g. 80")
    ap.add_argument("--cuda-version", required=True)
    ap.add_argument("--device-compiler", required=True, help="nvcc or nvrtc, for build_info")
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args()

    lib = LIBRARIES[args.library]
    head_dims = sorted({int(h) for h in parse_list(args.head_dims)})
    dtypes = parse_list(args.dtypes)
    for h in head_dims:
        if h not in HEAD_DIMS:
            ap.error(f"head dim {h} is not one of {HEAD_DIMS}")
    for d in dtypes:
        if d not in DTYPES:
            ap.error(f"dtype {d!r} is not one of {sorted(DTYPES)}")
    if not head_dims or not dtypes:
        ap.error("the kernel table is empty")

    args.out.mkdir(parents=True, exist_ok=True)
    sources: list[str] = []
    fatbins: list[Path] = []
    kernels: list[dict[str, object]] = []
    tables: dict[str, list[str]] = {name: [] for name in lib["ops"]}
    helper_tables: dict[str, list[str]] = {name: [] for name in lib["helpers"]}

    def add_source(stem: str, text: str) -> int:
        """Writes one device source; returns the index of its fat binary."""
        write_if_changed(args.out / f"{stem}.cu", text)
        sources.append(f"device {args.out / f'{stem}.cu'}")
        fatbins.append(args.out / f"{stem}.fatbin")
        return len(fatbins) - 1

    def variant_flag(op: dict) -> str | None:
        flags = [f for f in VARIANT_FLAGS if f in op]
        assert len(flags) <= 1, "an op has at most one variant flag"
        return flags[0] if flags else None

    def c_bool(b: bool) -> str:
        return str(b).lower()

    for op_name, op in lib["ops"].items():
        flag = variant_flag(op)
        for dtype in dtypes:
            for hd in head_dims:
                for mask, window in MASKS.items():
                    alts = (False, True) if flag and (hd, mask) in op[flag] else (False,)
                    for softcap, alt in ((s, a) for s in (False, True) for a in alts):
                        stem = (
                            f"{op_name}_{dtype}_hd{hd}_{mask}"
                            + ("_softcap" if softcap else "")
                            + ({"long_q": "_long", "small_smem": "_small"}[flag] if alt else "")
                        )
                        symbol = f"ioattn_{args.library}_{stem}"
                        targs = f"{ELEMENTS[dtype]}, {hd}, {window}, {c_bool(softcap)}"
                        if flag:
                            targs += f", {c_bool(alt)}"
                        i = add_source(stem, device_source(op, targs, symbol))
                        shape = {key: op.get(key, op["block"]).format(hd=hd, w=window, v=c_bool(alt))
                                 for key in ("block", "block_q", "threads", "smem")}  # fmt: skip
                        flags = {f: alt and flag == f for f in VARIANT_FLAGS}
                        min_seqlen_q = (
                            op["min_seqlen_q"].format(hd=hd, w=window) if flags["long_q"] else "0"
                        )
                        tables[op_name].append(
                            f"    {{{DTYPES[dtype]}, {hd}, {window}, {c_bool(softcap)}, "
                            f"{c_bool(flags['long_q'])}, {min_seqlen_q}, "
                            f"{c_bool(flags['small_smem'])},\n"
                            f"     {shape['block']}, {shape['block_q']}, {shape['threads']}, "
                            f"{shape['smem']}, "
                            f'"{symbol}",\n'
                            f"     {{ioattn_fatbin_{i}, ioattn_fatbin_{i}_end}}, &handles[{i}]}},"
                        )
                        kernels.append(
                            {
                                "op": op_name,
                                "dtype": dtype,
                                "head_dim": hd,
                                "mask": mask,
                                "softcap": softcap,
                                **flags,
                            }
                        )
    # The variant lists above against the tile header, for every compiled (head dim, mask).
    variant_checks = [
        f"static_assert({op['has_' + flag].format(hd=hd, w=window)} == "
        f"{c_bool((hd, mask) in op[flag])},\n"
        f'              "{op_name} hd{hd} {mask}: the {flag} list of cmake/gen_kernels.py '
        f'disagrees with {lib["tile_header"]}");\n'
        for op_name, op in lib["ops"].items()
        for flag in [variant_flag(op)]
        if flag
        for hd in head_dims
        for mask, window in MASKS.items()
    ]
    for helper_name, helper in lib["helpers"].items():
        of = lib["ops"].get(helper.get("per_tile_config", ""))
        # (head dim, flag) of each tile config of that op, or one (0, False) for "any"
        configs = (
            sorted({(hd, alt) for hd in head_dims for mask in MASKS for alt in (False, True)
                    if not alt or (hd, mask) in of.get("small_smem", ())})
            if of else [(0, False)]
        )  # fmt: skip
        for dtype in dtypes:
            for hd, small in configs:
                stem = f"{helper_name}_{dtype}" + (f"_hd{hd}" if hd else "")
                stem += "_small" if small else ""
                symbol = f"ioattn_{args.library}_{stem}"
                targs = ELEMENTS[dtype] + (f", {hd}, {c_bool(small)}" if hd else "")
                i = add_source(stem, helper_source(helper, targs, symbol))
                helper_tables[helper_name].append(
                    f"    {{{DTYPES[dtype]}, {hd}, {c_bool(small)}, {helper['threads']}, "
                    f'"{symbol}", {{ioattn_fatbin_{i}, ioattn_fatbin_{i}_end}}, &handles[{i}]}},'
                )
                kernels.append(
                    {"op": helper_name, "dtype": dtype}
                    | ({"head_dim": hd, "small_smem": small} if hd else {})
                )

    info = {
        "library": args.library,
        "abi": abi_version(),
        "cuda": args.cuda_version,
        # arch numbers, as the fat binaries record them ("90a" is sm_90 SASS with the
        # arch-specific instructions)
        "sass": [int(a.rstrip("a")) for a in parse_list(args.sass)],
        "ptx": [int(a.rstrip("a")) for a in parse_list(args.ptx)],
        "head_dims": head_dims,
        "dtypes": dtypes,
        "kernels": kernels,
    }
    info["device_compiler"] = args.device_compiler

    def table_of(c_type: str, name: str, rows: list[str]) -> str:
        # An empty table still needs one (zero, never read) element: C++ has no empty arrays.
        body = "\n".join(rows) if rows else "    {},"
        return (
            f"const {c_type} {name}[] = {{\n" + body + "\n};\n"
            f"const int {name.replace('k', 'kNum', 1)} = {len(rows)};\n"
        )

    def camel(op: str) -> str:
        return "".join(part.capitalize() for part in op.split("_"))

    table = (
        HEADER
        + '#include "common/host/kernel_table.h"\n'
        + '#include "ioattn/api.h"\n'
        + f'#include "{lib["tile_header"]}"\n\n'
        + "".join(variant_checks)
        + embed_fatbins(fatbins)
        + "\nnamespace ioattn {\nnamespace {\n"
        + f"LazyKernel handles[{len(fatbins)}];\n"
        + "}  // namespace\n\n"
        + "".join(
            table_of("KernelEntry", f"k{camel(op)}Kernels", tables.get(op, [])) for op in TABLES
        )
        + "".join(
            table_of("HelperKernelEntry", f"k{camel(h)}Kernels", helper_tables.get(h, []))
            for h in HELPER_TABLES
        )
        + f'const char kLibraryName[] = "{args.library}";\n'
        + f"const int kMinComputeCapability = {lib['min_cc']};\n"
        + f'const char kBuildInfoJson[] = R"json({json.dumps(info)})json";\n'
        + "\n}  // namespace ioattn\n"
    )
    write_if_changed(args.out / "kernel_table.cpp", table)
    sources.append(f"host {args.out / 'kernel_table.cpp'}")
    print("\n".join(sources))


if __name__ == "__main__":
    main()
