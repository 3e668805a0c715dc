"""``python -m ioattn`` / ``ioattn``: what is installed, does it compute the right thing, how fast.

With no subcommand it runs the main job:

1. the environment (Python, torch, CUDA, the GPU, the backend ioattn picks);
2. the kernel libraries that were built and the kernels compiled into them (``build_info``);
3. a correctness check of a few shapes: max error of ioattn and of PyTorch's own attention in
   the same precision, both against the fp32 naive reference; a shape passes when ioattn's
   error is at most twice PyTorch's plus a rounding slack (the FlashAttention test rule);
4. a small timing table of ioattn beside PyTorch SDPA on the current device.

The exit code is 1 when a correctness check fails. ``ioattn info`` prints 1 and 2 only;
``ioattn bench ...`` hands its arguments to the benchmark (``ioattn.bench``).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}  # build_info dtype -> torch dtype name

# ---------------------------------------------------------------------------------------------
# output helpers


def _section(title: str) -> None:
    print()
    print(f"== {title}")


def _kv(rows: Sequence[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"  {key.ljust(width)}  {value}")


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row)]

    def line(cells: Sequence[str]) -> str:
        return "  " + "  ".join(
            c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))
        )

    print(line(headers))
    print("  " + "  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))


def _version() -> str:
    """Version and distribution, e.g. ``0.1.0 (ioattn-cu12)``; warns about several installed."""
    from ioattn import _dist

    names = _dist.installed()
    if not names:
        return f"{_dist.version()} (not installed: source tree)"
    text = f"{_dist.version()} ({', '.join(names)})"
    if len(names) > 1:
        text += "  WARNING: several ioattn distributions share one module; keep one"
    return text


# ---------------------------------------------------------------------------------------------
# environment and libraries


@dataclass
class _Env:
    device: Any  # torch.device the checks run on
    cuda: bool  # a CUDA device is used
    backend: str  # "sm90" | "sm80" | "reference"
    backend_note: str
    library: Any  # _abi.Library of the chosen backend, or None
    libraries: list[dict[str, Any]]


def _describe_libraries() -> list[dict[str, Any]]:
    from ioattn import _abi, _backend

    describe = getattr(_backend, "describe_backends", None)
    if describe is not None:
        return [d for d in describe() if d["name"] != "reference"]
    result = []
    for name in ("sm90", "sm80"):
        lib = _abi.load_library(name)
        result.append(
            {
                "name": name,
                "path": str(getattr(lib, "path", "")),
                "loaded": lib is not None,
                "error": "" if lib is not None else "not built",
                "build_info": lib.build_info() if lib is not None else None,
            }
        )
    return result


def _kernel_summary(kernels: Sequence[dict[str, Any]]) -> list[str]:
    """One line per (op, dtype): head dims plus the values each other key takes."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for k in kernels:
        groups.setdefault((str(k.get("op", "?")), str(k.get("dtype", "?"))), []).append(k)
    lines = []
    for (op, dtype), items in sorted(groups.items()):
        dims = sorted({int(k["head_dim"]) for k in items if "head_dim" in k})
        extra = []
        keys = sorted({key for k in items for key in k} - {"op", "dtype", "head_dim"})
        for key in keys:
            values = sorted({str(k.get(key)).lower() for k in items if key in k})
            extra.append(f"{key} {'/'.join(values)}")
        text = f"{op} {dtype}: " + (
            f"head_dim {','.join(map(str, dims))}" if dims else "any head_dim"
        )
        if extra:
            text += "; " + "; ".join(extra)
        lines.append(f"{text}  ({len(items)} kernel{'s' if len(items) != 1 else ''})")
    return lines


def _compiled(library: Any) -> set[tuple[str, int]]:
    """(dtype, head_dim) pairs with a forward kernel in ``library``'s build_info."""
    try:
        info = library.build_info()
    except Exception:
        return set()
    return {
        (str(k["dtype"]), int(k["head_dim"]))
        for k in info.get("kernels", [])
        if k.get("op", "fwd") == "fwd" and k.get("dtype") in _DTYPES and "head_dim" in k
    }


def _environment(requested: str) -> _Env:
    import torch

    import ioattn
    from ioattn import _backend

    cuda_ok = torch.cuda.is_available()
    if requested == "cuda" and not cuda_ok:
        raise SystemExit("ioattn: --device cuda was asked for but torch sees no CUDA device")
    use_cuda = cuda_ok and requested != "cpu"
    device = torch.device("cuda", torch.cuda.current_device()) if use_cuda else torch.device("cpu")

    rows = [
        ("ioattn", f"{_version()}  ({os.path.dirname(ioattn.__file__)})"),
        (
            "python",
            f"{platform.python_version()} ({platform.python_implementation()}, "
            f"{platform.system().lower()} {platform.machine()})",
        ),
        ("torch", f"{torch.__version__} (CUDA build: {torch.version.cuda or 'none'})"),
        (
            "CUDA available",
            f"yes, {torch.cuda.device_count()} device(s)" if cuda_ok else "no",
        ),
    ]
    if cuda_ok:
        idx = torch.cuda.current_device()
        props = torch.cuda.get_device_properties(idx)
        major, minor = torch.cuda.get_device_capability(idx)
        gpu = f"cuda:{idx} {props.name}, {props.multi_processor_count} SMs"
        rows += [
            ("GPU", f"{gpu}, {props.total_memory / 2**30:.0f} GiB"),
            ("compute capability", f"{major}.{minor}"),
        ]
    else:
        rows += [("GPU", "none"), ("compute capability", "-")]
    for var in ("IOATTN_BACKEND", "IOATTN_LIBRARY_DIR"):
        if os.environ.get(var):
            rows.append((var, os.environ[var]))

    note = "--device cpu was asked for" if cuda_ok and not use_cuda else ""
    library = None
    try:
        backend = _backend.select_backend(device)
        name = backend.name
        library = getattr(backend, "library", None)
        if getattr(backend, "forced", False):
            note = "forced by IOATTN_BACKEND"
    except Exception as exc:  # no library for this GPU, GPU too old, bad IOATTN_BACKEND
        name = "reference"
        note = f"no GPU backend: {exc}"
        device = torch.device("cpu")
        use_cuda = False
    where = f" ({library.path})" if library is not None and hasattr(library, "path") else ""
    rows.append(("backend", f"{name}{where}" + (f"  [{note}]" if note else "")))
    rows.append(("checks run on", str(device)))

    _section("Environment")
    _kv(rows)
    return _Env(device, use_cuda, name, note, library, _describe_libraries())


def _print_libraries(env: _Env) -> None:
    _section("Kernel libraries")
    for entry in env.libraries:
        name = entry["name"]
        if not entry.get("loaded"):
            error = entry.get("error") or "not built"
            if error.startswith("not found"):
                error = "not built (" + error + ")"
            print(f"  {name}: {error}")
            continue
        info = entry.get("build_info") or {}
        sass = " ".join(f"sm_{a}" for a in info.get("sass", []))
        ptx = " ".join(f"compute_{a}" for a in info.get("ptx", []))
        print(
            f"  {name}: {entry.get('path', '')}\n"
            f"    abi {info.get('abi', '?')}, CUDA {info.get('cuda', '?')} "
            f"({info.get('device_compiler', '?')}), SASS {sass or '-'}, PTX {ptx or '-'}"
        )
        for line in _kernel_summary(info.get("kernels", [])):
            print(f"    {line}")
    if not any(e.get("loaded") for e in env.libraries):
        if all(str(e.get("error", "")).startswith("not found") for e in env.libraries):
            print("  no kernel library is installed: this is a CPU-only build (no CUDA compiler")
            print("  was found when it was built); only the PyTorch reference backend is available")
        else:
            print(
                "  no kernel library could be loaded (see above); only the reference is available"
            )


# ---------------------------------------------------------------------------------------------
# correctness


@dataclass(frozen=True)
class Case:
    batch: int
    seqlen_q: int
    seqlen_k: int
    heads: int
    heads_k: int
    head_dim: int
    dtype: str  # "bf16" | "fp16"
    causal: bool = False
    window: tuple[int, int] = (-1, -1)

    def label(self) -> str:
        text = f"b{self.batch} sq{self.seqlen_q} sk{self.seqlen_k} h{self.heads}"
        if self.heads_k != self.heads:
            text += f"/{self.heads_k}"
        text += f" d{self.head_dim} {self.dtype}"
        if self.causal:
            text += " causal"
        if self.window != (-1, -1):
            text += f" window{self.window[0]},{self.window[1]}"
        return text


def _torch_dtype(name: str) -> Any:
    import torch

    return getattr(torch, _DTYPES[name])


def _cases(env: _Env) -> list[Case]:
    if not env.cuda:  # CPU reference: small and quick
        d, dt = 64, "bf16"
        return [
            Case(2, 128, 128, 4, 4, d, dt),
            Case(2, 128, 128, 4, 4, d, dt, causal=True),
            Case(1, 77, 203, 4, 2, d, dt, causal=True),
            Case(1, 256, 256, 4, 4, d, dt, window=(64, 0)),
        ]
    compiled = _compiled(env.library) if env.library is not None else set()
    if not compiled:  # forced reference on a GPU, or a library without build_info
        compiled = {("bf16", 64), ("bf16", 128)}
    cases = []
    for dt, d in sorted(compiled, key=lambda x: (x[0] != "bf16", x[1])):
        cases.append(Case(2, 512, 512, 8, 8, d, dt))
        cases.append(Case(2, 512, 512, 8, 8, d, dt, causal=True))
    dt, d = min(compiled, key=lambda x: (x[0] != "bf16", x[1] != 128, x[1]))
    cases += [
        Case(2, 300, 300, 8, 2, d, dt),  # GQA
        Case(2, 113, 901, 4, 4, d, dt, causal=True),  # seqlen_q != seqlen_k: bottom-right causal
        Case(1, 1024, 1024, 4, 4, d, dt, window=(256, 0)),  # sliding window
    ]
    return cases


def _sdpa(q: Any, k: Any, v: Any, case: Case, mask: Any) -> Any:
    """PyTorch SDPA in (b, s, h, d) layout; GQA by repeating k/v heads."""
    import torch.nn.functional as F

    if case.heads_k != case.heads:
        rep = case.heads // case.heads_k
        k = k.repeat_interleave(rep, dim=2)
        v = v.repeat_interleave(rep, dim=2)
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask
    )
    return out.transpose(1, 2)


def _check(env: _Env, case: Case, seed: int) -> tuple[str, list[str]]:
    import torch

    import ioattn
    from ioattn import reference

    gen = torch.Generator(device="cpu").manual_seed(seed)
    dtype = _torch_dtype(case.dtype)

    def rand(s: int, h: int) -> Any:
        x = torch.randn(case.batch, s, h, case.head_dim, generator=gen)
        return x.to(device=env.device, dtype=dtype)

    q, k, v = (
        rand(case.seqlen_q, case.heads),
        rand(case.seqlen_k, case.heads_k),
        rand(case.seqlen_k, case.heads_k),
    )
    wl, wr = reference.normalize_window(case.causal, case.window)
    ref, _ = reference.attention_naive(
        q.float(), k.float(), v.float(), causal=case.causal, window_size=case.window
    )
    mask = reference.visible_mask(case.seqlen_q, case.seqlen_k, wl, wr, device=env.device)
    torch_err = (_sdpa(q, k, v, case, mask).float() - ref).abs().max().item()
    # Rounding slack of the output dtype at the reference's magnitudes (FlashAttention's rule).
    ref_lp = ref.to(dtype)
    slack = 2 * ((ref_lp + 0.3 - 0.3) - ref_lp).abs().max().item()
    tol = 2 * torch_err + slack
    try:
        out = ioattn.flash_attn_func(q, k, v, causal=case.causal, window_size=case.window)
    except NotImplementedError as exc:
        return "SKIP", [
            case.label(),
            "-",
            f"{torch_err:.2e}",
            f"{tol:.2e}",
            f"SKIP (not built: {str(exc)[:60]})",
        ]
    except Exception as exc:
        return "FAIL", [
            case.label(),
            "-",
            f"{torch_err:.2e}",
            f"{tol:.2e}",
            f"FAIL ({type(exc).__name__}: {str(exc)[:80]})",
        ]
    if isinstance(out, tuple):
        out = out[0]
    err = (out.float() - ref).abs().max().item()
    ok = (
        math.isfinite(err)
        and err <= tol
        and tuple(out.shape) == tuple(q.shape)
        and out.dtype == q.dtype
    )
    status = "PASS" if ok else "FAIL"
    return status, [case.label(), f"{err:.2e}", f"{torch_err:.2e}", f"{tol:.2e}", status]


def _correctness(env: _Env) -> tuple[int, int, int]:
    _section(f"Correctness (max |error| vs the fp32 naive reference, on {env.device})")
    counts = {"PASS": 0, "FAIL": 0, "SKIP": 0}
    rows = []
    for i, case in enumerate(_cases(env)):
        status, row = _check(env, case, seed=i)
        counts[status] += 1
        rows.append(row)
    _table(["shape", "ioattn", "torch same-dtype", "tolerance", "result"], rows)
    print("  tolerance = 2 x torch same-dtype error + rounding slack of the dtype")
    return counts["PASS"], counts["FAIL"], counts["SKIP"]


# ---------------------------------------------------------------------------------------------
# timing


def _time_cuda(fn: Callable[[], Any], warmup: int, reps: int) -> float:
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    events = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        events.append((start, end))
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in events)


def _time_cpu(fn: Callable[[], Any], warmup: int, reps: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _sdpa_methods(cuda: bool) -> list[tuple[str, Any]]:
    """(label, backend or None) of the SDPA variants to time; None = torch's own dispatch."""
    methods: list[tuple[str, Any]] = [("SDPA", None)]
    if cuda:
        try:
            from torch.nn.attention import SDPBackend

            methods.append(("SDPA flash", SDPBackend.FLASH_ATTENTION))
            methods.append(("SDPA cuDNN", SDPBackend.CUDNN_ATTENTION))
        except ImportError:
            pass
    return methods


def _time_methods(
    env: _Env,
    shape: tuple[int, int, int, int, bool],
    dtype: Any,
    methods: Sequence[tuple[str, Any]],
    timer: Callable[[Callable[[], Any], int, int], float],
    warmup: int,
    reps: int,
) -> list[float | None]:
    """Milliseconds of ioattn, then of each SDPA method, at one shape (None: cannot run it)."""
    import torch
    import torch.nn.functional as F

    import ioattn

    b, s, h, d, causal = shape
    gen = torch.Generator(device="cpu").manual_seed(0)
    q, k, v = (torch.randn(b, s, h, d, generator=gen).to(env.device, dtype) for _ in range(3))
    # SDPA takes (b, h, s, d): transposed views, no copies.
    qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

    def run_ioattn() -> Any:
        return ioattn.flash_attn_func(q, k, v, causal=causal)

    def run_sdpa() -> Any:
        return F.scaled_dot_product_attention(qt, kt, vt, is_causal=causal).transpose(1, 2)

    results: list[float | None] = []
    try:
        results.append(timer(run_ioattn, warmup, reps))
    except Exception as exc:  # e.g. NotImplementedError: a pruned build has no kernel for it
        print(f"  ioattn could not run {shape}: {type(exc).__name__}: {str(exc)[:120]}")
        results.append(None)
    for _, backend in methods:
        try:
            if backend is None:
                results.append(timer(run_sdpa, warmup, reps))
            else:
                from torch.nn.attention import sdpa_kernel

                with sdpa_kernel(backend):
                    results.append(timer(run_sdpa, warmup, reps))
        except RuntimeError:  # this SDPA backend cannot run the shape here
            results.append(None)
    return results


def _timing(env: _Env, reps: int) -> None:
    if env.cuda:
        # The benchmark protocol's shapes: 16k tokens, heads x head_dim = 2048.
        compiled = _compiled(env.library) if env.library is not None else set()
        dt, d = min(compiled or {("bf16", 128)}, key=lambda x: (x[0] != "bf16", x[1] != 128, x[1]))
        shapes = [(16384 // s, s, 2048 // d, d, c) for s in (1024, 4096) for c in (False, True)]
        timer, warmup, how = _time_cuda, 10, "CUDA events, median"
    else:
        dt, d = "bf16", 64
        shapes = [(1, s, 4, d, c) for s in (256, 1024) for c in (False, True)]
        timer, warmup, how = _time_cpu, 1, "time.perf_counter, median"
        reps = max(1, min(reps, 5))
    methods = _sdpa_methods(env.cuda)
    # The ratio column compares with FA2 (SDPA's flash backend) on a GPU, SDPA's choice on a CPU.
    peer = 1 if len(methods) > 1 else 0
    _section(f"Timing on {env.device} ({dt}, {how} of {reps} after {warmup} warm-up)")
    headers = ["shape (b, s, h, d)", "ioattn"] + [m for m, _ in methods]
    headers.append(f"{methods[peer][0]} / ioattn")
    rows = []
    for shape in shapes:
        b, s, h, hd, causal = shape
        results = _time_methods(env, shape, _torch_dtype(dt), methods, timer, warmup, reps)
        flops = 4 * b * h * s * s * hd / (2 if causal else 1)
        unit, scale = ("TF", 1e9) if env.cuda else ("GF", 1e6)  # FLOP/ms -> TFLOPS or GFLOPS
        cells = [
            "n/a" if ms is None else f"{ms:.3f} ms {flops / ms / scale:6.1f} {unit}"
            for ms in results
        ]
        ratio = "n/a"
        if results[0] is not None and results[1 + peer] is not None:
            ratio = f"{results[1 + peer] / results[0]:.2f}x"
        rows.append([f"{b}, {s}, {h}, {hd}" + (" causal" if causal else "")] + cells + [ratio])
    _table(headers, rows)
    print("  TF/GF = TFLOPS/GFLOPS counting 4*b*h*s*s*d FLOPs (halved when causal)")
    print(f"  ratio > 1: ioattn is faster than {methods[peer][0]} (same process, same inputs)")
    if not env.cuda:
        print("  CPU numbers time the PyTorch reference backend, not the GPU kernels")


# ---------------------------------------------------------------------------------------------
# commands


def _cmd_check(args: argparse.Namespace) -> int:
    print(f"ioattn {_version()}: exact IO-aware attention (FlashAttention family)")
    env = _environment(args.device)
    _print_libraries(env)
    if not env.cuda:
        print()
        print("NOTE: the GPU kernels were NOT used: " + (env.backend_note or "no CUDA device"))
        print("      every result below comes from the CPU PyTorch reference backend.")
    passed, failed, skipped = _correctness(env)
    if not args.no_timing:
        _timing(env, args.reps)
    print()
    verdict = "FAIL" if failed else "PASS"
    print(
        f"Result: {verdict}: {passed} of {passed + failed + skipped} correctness checks pass"
        + (f", {failed} fail" if failed else "")
        + (f", {skipped} skipped (not built)" if skipped else "")
        + ("" if env.cuda else "  [CPU reference backend; GPU kernels not used]")
    )
    return 1 if failed else 0


def _cmd_info(args: argparse.Namespace) -> int:
    print(f"ioattn {_version()}")
    env = _environment(args.device)
    _print_libraries(env)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ioattn",
        description="ioattn: show the environment, check correctness against the reference, "
        "and time ioattn beside PyTorch SDPA (the default when no command is given).",
    )

    def device_option(p: argparse.ArgumentParser, default: Any) -> None:
        p.add_argument(
            "--device",
            choices=("auto", "cpu", "cuda"),
            default=default,
            help="where to run (default: the current CUDA device if there is one, else cpu)",
        )

    device_option(parser, "auto")
    parser.add_argument("--no-timing", action="store_true", help="skip the timing table")
    parser.add_argument(
        "--reps", type=int, default=30, help="timed repetitions per cell (default 30)"
    )
    parser.set_defaults(handler=_cmd_check)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    info = sub.add_parser("info", help="print the environment and the built kernel libraries only")
    # SUPPRESS: `ioattn --device cpu info` keeps the value given before the subcommand.
    device_option(info, argparse.SUPPRESS)
    info.set_defaults(handler=_cmd_info)
    # Listed for --help; main() hands `bench ...` to ioattn.bench before this parser runs.
    sub.add_parser("bench", add_help=False, help="GPU benchmark (ioattn bench --help)")
    return parser


def _cmd_bench(argv: Sequence[str]) -> int:
    from ioattn import bench

    return int(bench.main(list(argv)))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # its own parser owns every argument after the word
        return _cmd_bench(argv[1:])
    args = build_parser().parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
