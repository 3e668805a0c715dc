"""``python -m ioattn bench``: forward speed of ioattn beside PyTorch's SDPA backends.

Protocol (../shared/BENCHMARKS.md, the FlashAttention convention): batch * seqlen = 16384
tokens, num_heads * head_dim = 2048, bf16, random normal inputs; FLOPs = 4 * b * h * s^2 * d,
halved when causal. Every method is timed in this one process with CUDA events around single
calls, after its own warm-up, with a 256 MB buffer zeroed before each call so that L2 is cold
and the host-side cost of a call hides behind the GPU's memset. A cell's time is the median of
``--reps`` calls; with ``--runs N`` that is repeated N times and the best median kept, for
every method alike (BENCHMARKS.md quotes the peers as the best of several runs, because a
transient clock dip can spoil a single one).
ioattn's output is checked against SDPA's on every shape before it is timed.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import platform
import statistics
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

TOKENS = 16384
HIDDEN = 2048


@dataclass
class Cell:
    method: str
    head_dim: int
    causal: bool
    seqlen: int
    batch: int
    heads: int
    ms: float | None = None
    tflops: float | None = None
    error: str | None = None


@dataclass
class Report:
    device: str
    torch: str
    cuda: str | None
    matmul_tflops: float | None
    cells: list[Cell] = field(default_factory=list)


def fwd_flops(batch: int, heads: int, seqlen: int, head_dim: int, causal: bool) -> float:
    """Forward FLOPs of exact attention by the FlashAttention convention."""
    flops = 4.0 * batch * heads * seqlen * seqlen * head_dim
    return flops / 2 if causal else flops


def _time_ms(fn: Callable[[], object], flush: torch.Tensor, warmup: int, reps: int) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for i in range(reps):
        flush.zero_()
        starts[i].record()
        fn()
        ends[i].record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends))


def _matmul_tflops(flush: torch.Tensor) -> float:
    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    ms = _time_ms(lambda: a @ b, flush, warmup=5, reps=20)
    return 2.0 * n**3 / (ms * 1e-3) / 1e12


def _methods(backends: list[str]) -> dict[str, Callable[..., torch.Tensor]]:
    import os

    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.functional import scaled_dot_product_attention as sdpa

    import ioattn

    methods: dict[str, Callable[..., torch.Tensor]] = {}
    for name in backends:

        def run(
            q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, _name: str = name
        ) -> torch.Tensor:
            os.environ["IOATTN_BACKEND"] = _name
            return ioattn.flash_attn_func(q, k, v, causal=causal)

        methods[f"ioattn-{name}"] = run

    def sdpa_with(backend: SDPBackend) -> Callable[..., torch.Tensor]:
        def run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
            with sdpa_kernel(backend):
                out = sdpa(
                    q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=causal
                )
            return out.transpose(1, 2)

        return run

    methods["sdpa-flash"] = sdpa_with(SDPBackend.FLASH_ATTENTION)
    methods["sdpa-cudnn"] = sdpa_with(SDPBackend.CUDNN_ATTENTION)
    try:
        import fa3_fwd_interface  # type: ignore[import-not-found]

        def fa3(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
            out = fa3_fwd_interface.flash_attn_func(q, k, v, causal=causal)
            return out[0] if isinstance(out, tuple) else out

        methods["fa3"] = fa3
    except ImportError:
        pass
    return methods


def run_bench(
    head_dims: list[int],
    seqlens: list[int],
    causals: list[bool],
    dtype: torch.dtype,
    backends: list[str],
    reps: int,
    runs: int,
    progress: Callable[[str], None],
) -> Report:
    flush = torch.empty(256 * 1024 * 1024, dtype=torch.int8, device="cuda")
    props = torch.cuda.get_device_properties(0)
    report = Report(
        device=props.name, torch=torch.__version__, cuda=torch.version.cuda, matmul_tflops=None
    )
    report.matmul_tflops = _matmul_tflops(flush)
    methods = _methods(backends)
    for hd in head_dims:
        heads = HIDDEN // hd
        for causal in causals:
            for s in seqlens:
                batch = max(1, TOKENS // s)
                gen = torch.Generator(device="cuda").manual_seed(s * 1000 + hd)
                q, k, v = (
                    torch.randn(batch, s, heads, hd, device="cuda", dtype=dtype, generator=gen)
                    for _ in range(3)
                )
                reference: torch.Tensor | None = None
                flops = fwd_flops(batch, heads, s, hd, causal)
                for name, fn in methods.items():
                    cell = Cell(name, hd, causal, s, batch, heads)
                    report.cells.append(cell)
                    progress(f"hd{hd} causal={causal} s={s} {name}")
                    try:
                        out = fn(q, k, v, causal)
                        if name == "sdpa-flash":
                            reference = out
                        if name.startswith("ioattn") and reference is None:
                            reference = methods["sdpa-flash"](q, k, v, causal)
                        if name.startswith("ioattn"):
                            assert reference is not None
                            err = (out.float() - reference.float()).abs().max().item()
                            if not math.isfinite(err) or err > 0.05:
                                cell.error = f"wrong result: max |ioattn - sdpa| = {err:.3g}"
                                continue
                        call = functools.partial(fn, q, k, v, causal)
                        cell.ms = min(
                            _time_ms(call, flush, warmup=10, reps=reps) for _ in range(runs)
                        )
                        cell.tflops = flops / (cell.ms * 1e-3) / 1e12
                    except Exception as exc:  # a failing peer must not stop the run
                        cell.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
    return report


def format_table(report: Report) -> str:
    """Markdown table: TFLOPS per method, and ioattn's ratio to each peer of the same run."""
    methods = list(dict.fromkeys(c.method for c in report.cells))
    ours = [m for m in methods if m.startswith("ioattn")]
    peers = [m for m in methods if not m.startswith("ioattn")]
    rows: dict[tuple[int, bool, int], dict[str, Cell]] = {}
    for c in report.cells:
        rows.setdefault((c.head_dim, c.causal, c.seqlen), {})[c.method] = c
    head = ["hdim", "causal", "seqlen", *methods]
    head += [f"{o}/{p}" for o in ours for p in peers]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (hd, causal, s), cells in rows.items():
        vals = [str(hd), "yes" if causal else "no", str(s)]
        for m in methods:
            c = cells.get(m)
            vals.append(f"{c.tflops:.0f}" if c and c.tflops else ("FAIL" if c and c.error else ""))
        for o in ours:
            for p in peers:
                a, b = cells.get(o), cells.get(p)
                ok = a and b and a.tflops and b.tflops
                vals.append(f"{a.tflops / b.tflops:.2f}" if ok else "")  # type: ignore[union-attr]
        lines.append("| " + " | ".join(vals) + " |")
    lines.append("")
    lines.append(
        f"{report.device}, torch {report.torch}, CUDA {report.cuda}; "
        f"bf16 matmul 8192^3 in the same run: {report.matmul_tflops:.0f} TFLOPS"
    )
    errors = [c for c in report.cells if c.error]
    for c in errors:
        lines.append(f"- {c.method} hd{c.head_dim} causal={c.causal} s={c.seqlen}: {c.error}")
    return "\n".join(lines)


def _ints(text: str) -> list[int]:
    return [
        int(x.lower().replace("k", "")) * (1024 if "k" in x.lower() else 1)
        for x in text.split(",")
        if x
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="ioattn bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--head-dims", default="64,128,256")
    ap.add_argument("--seqlens", default="512,1k,2k,4k,8k,16k")
    ap.add_argument("--causal", choices=["both", "yes", "no"], default="both")
    ap.add_argument("--dtype", choices=["bf16", "fp16"], default="bf16")
    ap.add_argument("--backends", default="sm80", help="ioattn backends to time, e.g. sm80")
    ap.add_argument("--reps", type=int, default=30, help="timed calls per cell (median)")
    ap.add_argument("--runs", type=int, default=3, help="repeat each cell, keep the best median")
    ap.add_argument("--quick", action="store_true", help="hdim 128, seqlens 1k and 8k")
    ap.add_argument("--json", help="write the full report here")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("ioattn bench needs a CUDA GPU; none is available here.", file=sys.stderr)
        return 2
    head_dims, seqlens = _ints(args.head_dims), _ints(args.seqlens)
    if args.quick:
        head_dims, seqlens = [128], [1024, 8192]
    causals = {"both": [False, True], "yes": [True], "no": [False]}[args.causal]
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float16

    def progress(msg: str) -> None:
        print(f"  {msg}", file=sys.stderr, flush=True)

    report = run_bench(
        head_dims,
        seqlens,
        causals,
        dtype,
        args.backends.split(","),
        args.reps,
        args.runs,
        progress,
    )
    print(format_table(report))
    if args.json:
        data: dict[str, Any] = asdict(report)
        data["python"] = platform.python_version()
        with open(args.json, "w") as f:
            json.dump(data, f, indent=1)
    return 1 if any(c.error and c.method.startswith("ioattn") for c in report.cells) else 0
