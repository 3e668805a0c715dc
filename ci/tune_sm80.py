#!/usr/bin/env python3
"""Build and time several SM80 forward tile configurations in one go (run on the GPU machine).

Each variant replaces one head dim's entry of src/sm80/tile_config.h through the CMake option
IOATTN_SM80_FWD_TILE_OVERRIDE, is built for sm_90 only into build/tune/<name> (builds run in
parallel), and is then timed by ``python -m ioattn bench`` in its own process beside SDPA's
FLASH_ATTENTION backend. Prints one Markdown table of ioattn / sdpa-flash per cell.

    python ci/tune_sm80.py 64:128,64,4,1,2,2 256:64,64,4,0,2,1 --seqlens 512,2k,16k
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def build(variant: str, out: Path) -> Path:
    head_dim, cfg = variant.split(":")
    name = f"hd{head_dim}_" + cfg.replace(",", "_")
    bdir = ROOT / "build" / "tune" / name
    cmd = [
        "cmake",
        "-S",
        str(ROOT),
        "-B",
        str(bdir),
        "-G",
        "Ninja",
        "-DCMAKE_BUILD_TYPE=Release",
        f"-DIOATTN_HEAD_DIMS={head_dim}",
        "-DIOATTN_DTYPES=bf16",
        "-DIOATTN_SM80_ARCHS=90-real",
        f"-DIOATTN_SM80_FWD_TILE_OVERRIDE={head_dim},{cfg}",
    ]
    log = out / f"build_{name}.log"
    with open(log, "w") as f:
        subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT)
        subprocess.run(
            ["cmake", "--build", str(bdir), "-j", "4"],
            check=True,
            stdout=f,
            stderr=subprocess.STDOUT,
        )
    return bdir


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "variants", nargs="+", help="hdim:block_m,block_n,warps,q_in_regs,min_blocks,stages"
    )
    ap.add_argument("--seqlens", default="512,2k,8k,16k")
    ap.add_argument("--out", default=os.environ.get("OUT", "build/tune"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        dirs = dict(zip(args.variants, pool.map(lambda v: build(v, out), args.variants)))

    rows = []
    for variant, bdir in dirs.items():
        head_dim = variant.split(":")[0]
        report = out / f"bench_{bdir.name}.json"
        env = dict(
            os.environ,
            IOATTN_LIBRARY_DIR=str(bdir),
            PYTHONPATH=os.pathsep.join([str(ROOT / "python"), os.environ.get("PYTHONPATH", "")]),
        )
        with open(out / f"bench_{bdir.name}.log", "w") as log:
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "ioattn",
                    "bench",
                    "--head-dims",
                    head_dim,
                    "--seqlens",
                    args.seqlens,
                    "--passes",
                    "fwd",
                    "--dtype",
                    "bf16",
                    "--methods",
                    "ioattn-sm80,sdpa-flash",
                    "--no-memory",
                    "--no-overhead",
                    "--no-plots",
                    "--no-progress",
                    "--json",
                    str(report),
                ],
                check=False,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if not report.exists():
            rows.append((variant, "-", 0, None, None, None, f"no report: see {log.name}"))
            continue
        cells = [
            c
            for c in json.loads(report.read_text())["cells"]
            if c.get("pass", "fwd") == "fwd" and c.get("dtype", "bf16") == "bf16"
        ]
        ours = {(c["causal"], c["seqlen"]): c for c in cells if c["method"] == "ioattn-sm80"}
        peer = {(c["causal"], c["seqlen"]): c for c in cells if c["method"] == "sdpa-flash"}
        for key, c in sorted(ours.items()):
            p = peer.get(key, {})
            ratio = (c["tflops"] / p["tflops"]) if c.get("tflops") and p.get("tflops") else None
            rows.append(
                (
                    variant,
                    "causal" if key[0] else "full",
                    key[1],
                    c.get("tflops"),
                    p.get("tflops"),
                    ratio,
                    c.get("error"),
                )
            )
    print("| variant | mask | seqlen | ioattn | sdpa-flash | ratio |")
    print("|---|---|---|---|---|---|")

    def fmt(x: float | None) -> str:
        return f"{x:.0f}" if x else "-"

    for v, m, s, a, b, r, err in rows:
        print(f"| {v} | {m} | {s} | {fmt(a)} | {fmt(b)} | {f'{r:.2f}' if r else err or '-'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
