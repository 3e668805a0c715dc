"""``python -m ioattn bench``: ioattn beside every peer that imports, on the current GPU.

Protocol (FlashAttention's, as in BENCHMARKS.md): batch * seqlen = 16384 tokens, heads *
head_dim = 2048, head dims 64/128/256, seqlens 512..16k, causal and not, random normal
inputs. FLOPs = 4 * b * h * s^2 * d per forward (halved when causal); backward 2.5x, forward +
backward 3.5x. Every method runs in this one process (FlashAttention-3's JAX binding in a
subprocess), each warmed up on its own shape, timed with CUDA events around single calls with
a cold L2: the median of --reps calls, best of --runs (every method alike). ioattn's output is
checked against an fp32 reference on every shape before it is timed; a wrong one is FAILED and
the exit code is 1. Peers that do not import are skipped with the reason; a peer that fails
(out of memory included) is recorded and the run goes on.

Also: peak memory of forward and forward + backward beside naive attention and the
theoretical minimum, and host overhead (µs per call) of a tiny problem.

Output: a table on stdout; with --out DIR also <prefix>.json, <prefix>.md and PNG plots
(<prefix>_<pass>_<dtype>.png, <prefix>_memory_<dtype>.png; prefix from the GPU, e.g. h100).
--plot-only JSON redraws the plots and Markdown of a saved run (no GPU needed).

Examples:
  python -m ioattn bench --out build/bench                     # everything (long)
  python -m ioattn bench --quick                               # hdim 128, 1k and 8k, forward
  python -m ioattn bench --passes fwd --dtype bf16 --out docs/bench
  python -m ioattn bench --methods ioattn,sdpa-flash --seqlens 512,2k,16k --no-memory
  python -m ioattn bench --plot-only docs/bench/h100.json
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from typing import Any

from ioattn.bench import shapes as sh
from ioattn.bench.overhead import DEFAULT_CALLS, DEFAULT_DIMS
from ioattn.bench.report import Report, to_markdown
from ioattn.bench.runner import Settings

QUICK = {"reps": 10, "runs": 1, "passes": ["fwd"]}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ioattn bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = p.add_argument_group("what to run")
    what.add_argument("--head-dims", help="e.g. 64,128,256 (default; --quick: 128)")
    what.add_argument("--seqlens", help="e.g. 512,1k,2k,4k,8k,16k (default; --quick: 1k,8k)")
    what.add_argument("--causal", default="both", help="both (default), yes or no")
    what.add_argument("--dtype", default="bf16", help="list of bf16, fp16, fp8 (default bf16)")
    what.add_argument("--passes", help="list of fwd, bwd, fwdbwd (default all; --quick: fwd)")
    what.add_argument("--batch", type=int, help="batch size (default 16384 // seqlen)")
    what.add_argument("--heads", type=int, help="number of heads (default 2048 // head dim)")
    what.add_argument(
        "--methods",
        help="names, families or globs, e.g. ioattn,sdpa-flash,fa3 (default: all; see --list)",
    )
    what.add_argument(
        "--quick", action="store_true", help="hdim 128, seqlens 1k and 8k, fwd only, 10 reps, 1 run"
    )
    what.add_argument("--no-memory", action="store_true", help="skip the memory section")
    what.add_argument("--no-overhead", action="store_true", help="skip the host-overhead section")
    what.add_argument(
        "--list", action="store_true", help="list the methods and whether they run here"
    )
    how = p.add_argument_group("timing")
    how.add_argument("--reps", type=int, help="timed calls per cell, median (default 30)")
    how.add_argument("--runs", type=int, help="repeat each cell, keep the best median (default 3)")
    how.add_argument(
        "--warmup", type=int, default=10, help="untimed calls before each cell (default 10)"
    )
    how.add_argument(
        "--overhead-shape",
        default=",".join(map(str, DEFAULT_DIMS)),
        help="batch,seqlen,heads,head_dim of the overhead problem (default 1,128,2,64)",
    )
    how.add_argument(
        "--overhead-calls", type=int, default=DEFAULT_CALLS, help="calls per overhead measurement"
    )
    out = p.add_argument_group("output")
    out.add_argument("--out", help="folder for <prefix>.json, <prefix>.md and the PNG plots")
    out.add_argument("--prefix", help="file-name prefix (default: the GPU, e.g. h100)")
    out.add_argument("--json", help="also write the JSON report to this path")
    out.add_argument("--no-plots", action="store_true", help="write no PNG")
    out.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    out.add_argument("--plot-only", metavar="JSON", help="redraw plots and Markdown of a saved run")
    return p


def settings_from(args: argparse.Namespace) -> Settings:
    """Resolve the options (``--quick`` fills what was not given explicitly). ValueError on a
    malformed option."""
    quick = bool(args.quick)
    if args.head_dims:
        head_dims = sh.parse_sizes(args.head_dims)
    else:
        head_dims = list(sh.QUICK_HEAD_DIMS if quick else sh.DEFAULT_HEAD_DIMS)
    if args.seqlens:
        seqlens = sh.parse_sizes(args.seqlens)
    else:
        seqlens = list(sh.QUICK_SEQLENS if quick else sh.DEFAULT_SEQLENS)
    if args.passes:
        passes = sh.parse_choices(args.passes, sh.PASSES, "--passes")
    else:
        passes = list(QUICK["passes"] if quick else sh.PASSES)
    reps = args.reps if args.reps is not None else (QUICK["reps"] if quick else 30)
    runs = args.runs if args.runs is not None else (QUICK["runs"] if quick else 3)
    if reps < 1 or runs < 1 or args.warmup < 0:
        raise ValueError("--reps and --runs must be >= 1, --warmup >= 0")
    for name in ("batch", "heads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name} must be >= 1")
    return Settings(
        head_dims=head_dims,
        seqlens=seqlens,
        causals=sh.parse_causal(args.causal),
        dtypes=sh.parse_choices(args.dtype, sh.DTYPES, "--dtype"),
        passes=passes,
        batch=args.batch,
        heads=args.heads,
        reps=int(reps),
        runs=int(runs),
        warmup=args.warmup,
        memory=not args.no_memory,
        overhead=not args.no_overhead,
        overhead_dims=sh.parse_dims4(args.overhead_shape),
        overhead_calls=args.overhead_calls,
    )


def patterns(text: str | None) -> list[str] | None:
    return [p.strip() for p in text.split(",") if p.strip()] if text else None


def write_outputs(
    report: Report,
    out_dir: str | None,
    prefix: str | None,
    plots: bool,
    json_path: str | None = None,
) -> list[str]:
    """Write JSON, Markdown and (if asked and matplotlib imports) the plots; print the tables.
    Returns the lines said about it (also printed to stderr)."""
    from ioattn.bench import plot

    said: list[str] = []
    images: dict[str, str] = {}
    prefix = prefix or plot.gpu_slug(report.gpu_name)
    if out_dir is not None:
        folder = Path(out_dir)
        folder.mkdir(parents=True, exist_ok=True)
        if plots:
            try:
                written = plot.plot_report(report, folder, prefix)
            except ImportError as exc:
                said.append(f"plots skipped: matplotlib is not available ({exc})")
            else:
                images = {key: path.name for key, path in written.items()}
                said += [f"wrote {path}" for path in written.values()]
        report.save(folder / f"{prefix}.json")
        (folder / f"{prefix}.md").write_text(to_markdown(report, images))
        said += [f"wrote {folder / (prefix + '.json')}", f"wrote {folder / (prefix + '.md')}"]
    elif plots:
        said.append("plots skipped: no --out folder given")
    if json_path:
        report.save(json_path)
        said.append(f"wrote {json_path}")
    print(to_markdown(report))
    for line in said:
        print(line, file=sys.stderr)
    return said


def _list_methods() -> int:
    from ioattn.bench.methods import all_methods

    found = all_methods()
    if not any(m.ours for m in found):
        print("ioattn-*         no kernel library loads here (a CPU-only build?)")
    for m in found:
        reason = m.available() or "available"
        dims = f" (head dims {'/'.join(map(str, m.head_dims))})" if m.head_dims else ""
        print(f"{m.name:16} {'/'.join(m.passes):15} {'/'.join(m.dtypes):10} {reason}")
        print(f"{'':16} {m.description}{dims}")
    return 0


def _plot_only(args: argparse.Namespace) -> int:
    path = Path(args.plot_only)
    report = Report.load(path)
    out_dir = args.out or str(path.parent)
    write_outputs(report, out_dir, args.prefix or path.stem, plots=not args.no_plots)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.plot_only:
        return _plot_only(args)
    if args.list:
        return _list_methods()
    try:
        settings = settings_from(args)
    except ValueError as exc:
        parser.error(str(exc))
    import torch

    if not torch.cuda.is_available():
        print("ioattn bench needs a CUDA GPU; none is available here.", file=sys.stderr)
        return 2
    return _run(settings, args, argv)


class Checkpoints:
    """Writes the JSON of a run in progress at most every ``every`` seconds, so a run that is
    killed (a time limit) leaves what it measured; the final outputs overwrite it."""

    def __init__(
        self, out_dir: str | None, prefix: str | None, json_path: str | None, every: float = 60.0
    ) -> None:
        self.out_dir, self.prefix, self.json_path, self.every = out_dir, prefix, json_path, every
        self._last = time.monotonic()

    def __call__(self, report: Report) -> None:
        if time.monotonic() - self._last < self.every:
            return
        self._last = time.monotonic()
        from ioattn.bench.plot import gpu_slug

        if self.out_dir is not None:
            folder = Path(self.out_dir)
            folder.mkdir(parents=True, exist_ok=True)
            report.save(folder / f"{self.prefix or gpu_slug(report.gpu_name)}.json")
        if self.json_path:
            report.save(self.json_path)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _run(settings: Settings, args: argparse.Namespace, argv: list[str]) -> int:
    from ioattn.bench import environment, methods, runner
    from ioattn.bench.progress import ProgressBar
    from ioattn.bench.timing import CudaDevice

    try:
        chosen = methods.select(methods.all_methods(), patterns(args.methods))
    except ValueError as exc:
        print(f"ioattn bench: {exc}", file=sys.stderr)
        return 2
    if not any(m.ours for m in chosen):
        print(
            "ioattn bench: note: no ioattn kernel library is timed (none built or none selected)",
            file=sys.stderr,
        )
    device = CudaDevice(
        warmup=settings.warmup,
        reps=settings.reps,
        runs=settings.runs,
        overhead_calls=settings.overhead_calls,
    )
    bar: Any = None if args.no_progress else ProgressBar()
    run = runner.Runner(
        settings,
        chosen,
        device,
        progress=bar,
        memory_baselines=[methods.naive_method()],
        checkpoint=Checkpoints(args.out, args.prefix, args.json),
    )
    interrupted = False
    try:  # a time limit (SIGTERM) or Ctrl-C: keep what was measured
        previous: Any = signal.signal(signal.SIGTERM, _interrupt)
    except ValueError:  # not the main thread
        previous = None
    try:
        report = run.run(environment.collect(argv))
    except KeyboardInterrupt:
        interrupted = True
        report = run.report
        report.complete = False
        report.finalize()
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if bar is not None:
            bar.close()
    write_outputs(report, args.out, args.prefix, plots=not args.no_plots, json_path=args.json)
    failed = report.failed()
    if failed:
        print(f"ioattn bench: {len(failed)} ioattn cell(s) FAILED", file=sys.stderr)
    if interrupted:
        print("ioattn bench: interrupted; the report above is partial", file=sys.stderr)
        return 130
    return 1 if failed else 0
