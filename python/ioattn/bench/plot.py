"""PNG plots of a report, in the style of FlashAttention's README: grouped bars of TFLOPS per
sequence length, one bar per method with its value on top, one panel per head dim x causal,
one figure per pass and dtype; and peak memory vs sequence length (log-log) per head dim.

matplotlib is imported only here and only when plotting (``ImportError`` otherwise, which the
CLI reports as "plots skipped").
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ioattn.bench.report import OK, Report, methods_of
from ioattn.bench.shapes import PASS_TITLES, PASSES

# Fixed colors, so a method looks the same in every figure; others cycle through tab10.
COLORS = {
    "ioattn-sm90": "#d62728",
    "ioattn-sm80": "#ff7f0e",
    "sdpa-flash": "#1f77b4",
    "sdpa-cudnn": "#2ca02c",
    "sdpa-efficient": "#17becf",
    "flex": "#9467bd",
    "fa3": "#8c564b",
    "fa3-jax": "#e377c2",
    "fa2": "#7f7f7f",
    "naive": "#bcbd22",
}


def gpu_slug(name: str | None) -> str:
    """A short file-name prefix for a GPU: "NVIDIA H100 80GB HBM3" -> "h100"."""
    if not name:
        return "gpu"
    match = re.search(r"\b([A-Z]{1,3}\d{2,4}[A-Za-z]?)\b", name)
    if match:
        return match.group(1).lower()
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "gpu"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _color(method: str, i: int) -> Any:
    if method in COLORS:
        return COLORS[method]
    import matplotlib

    return matplotlib.colormaps["tab10"](i % 10)


def _size(seqlen: int) -> str:
    return f"{seqlen // 1024}k" if seqlen % 1024 == 0 else str(seqlen)


def _finish(fig: Any, title: str, handles: dict[str, Any], path: Path) -> None:
    """Title and one legend above the panels (0.75 inch of the figure), then save as PNG."""
    plt = _pyplot()
    height = fig.get_size_inches()[1]
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.75 / height))  # before the title: it leaves room
    fig.suptitle(title, y=1 - 0.08 / height, va="top", fontsize=12)
    fig.legend(
        list(handles.values()),
        list(handles),
        loc="upper center",
        bbox_to_anchor=(0.5, 1 - 0.4 / height),
        ncol=min(len(handles), 7),
        fontsize=8,
        frameon=False,
    )
    fig.savefig(path, dpi=130)
    plt.close(fig)


def _handles(axes: Any, last: str | None = None) -> dict[str, Any]:
    """Legend entries of every panel, once each, ``last`` moved to the end."""
    found: dict[str, Any] = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            found.setdefault(label, handle)
    if last in found:
        found[last] = found.pop(last)
    return found


def throughput_figure(report: Report, pass_: str, dtype: str, path: Path) -> bool:
    """Grouped bars of TFLOPS; False (nothing written) when the pass/dtype has no result."""
    cells = [c for c in report.cells if c.pass_ == pass_ and c.dtype == dtype]
    methods = [m for m in methods_of(cells) if any(c.method == m and c.tflops for c in cells)]
    if not methods:
        return False
    plt = _pyplot()
    head_dims = sorted({c.head_dim for c in cells})
    causals = sorted({c.causal for c in cells})
    seqlens = sorted({c.seqlen for c in cells})
    value = {(c.method, c.head_dim, c.causal, c.seqlen): c.tflops for c in cells if c.status == OK}
    width = 0.84 / len(methods)
    fig, axes = plt.subplots(
        len(head_dims),
        len(causals),
        figsize=(
            max(6.5, 0.42 * len(seqlens) * len(methods) + 1.5) * len(causals),
            3.6 * len(head_dims),
        ),
        squeeze=False,
    )
    top = max(v for v in value.values() if v) * 1.18
    for row, d in enumerate(head_dims):
        for col, causal in enumerate(causals):
            ax = axes[row][col]
            for i, m in enumerate(methods):
                heights = [value.get((m, d, causal, s)) or 0.0 for s in seqlens]
                xs = [j - 0.42 + width * (i + 0.5) for j in range(len(seqlens))]
                bars = ax.bar(xs, heights, width, label=m, color=_color(m, i))
                labels = [f"{h:.0f}" if h else "" for h in heights]
                ax.bar_label(bars, labels=labels, fontsize=6, rotation=90, padding=2)
            if report.matmul_tflops:  # the ceiling of the same run
                ax.axhline(report.matmul_tflops, color="0.5", lw=0.8, ls="--", label="bf16 matmul")
            ax.set_xticks(range(len(seqlens)))
            ax.set_xticklabels([_size(s) for s in seqlens])
            ax.set_ylim(0, max(top, (report.matmul_tflops or 0) * 1.08))
            ax.set_xlabel("sequence length")
            ax.set_ylabel("TFLOPS")
            ax.set_title(f"head dim {d}, {'causal' if causal else 'not causal'}", fontsize=10)
            ax.grid(axis="y", alpha=0.3)
    title = f"{PASS_TITLES[pass_]} speed, {dtype}, {report.gpu_name}"
    _finish(fig, title, _handles(axes, last="bf16 matmul"), path)
    return True


def memory_figure(report: Report, dtype: str, path: Path) -> bool:
    """Peak memory (GiB, log) vs sequence length per head dim, both passes; the minimum dashed."""
    rows = [r for r in report.memory if r.dtype == dtype]
    if not any(r.status == OK for r in rows):
        return False
    plt = _pyplot()
    head_dims = sorted({r.head_dim for r in rows})
    passes = [p for p in PASSES if any(r.pass_ == p and r.status == OK for r in rows)]
    fig, axes = plt.subplots(
        len(passes),
        len(head_dims),
        figsize=(4.2 * len(head_dims), 3.4 * len(passes)),
        squeeze=False,
    )
    methods = methods_of(rows)
    seqlens = sorted({r.seqlen for r in rows})
    from matplotlib import ticker

    for row, pass_ in enumerate(passes):
        for col, d in enumerate(head_dims):
            ax = axes[row][col]
            here = [r for r in rows if r.pass_ == pass_ and r.head_dim == d]
            least = sorted({(r.seqlen, r.min_bytes) for r in here if r.min_bytes})
            if least:
                ax.plot(
                    [s for s, _ in least],
                    [b / 2**30 for _, b in least],
                    "k--",
                    lw=1,
                    label="minimum",
                )
            for i, m in enumerate(methods):
                pts = sorted(
                    (r.seqlen, r.peak_bytes)
                    for r in here
                    if r.method == m and r.status == OK and r.peak_bytes
                )
                if pts:
                    ax.plot(
                        [s for s, _ in pts],
                        [b / 2**30 for _, b in pts],
                        "o-",
                        ms=3,
                        lw=1.2,
                        color=_color(m, i),
                        label=m,
                    )
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xticks(seqlens)
            ax.set_xticklabels([_size(x) for x in seqlens])
            ax.xaxis.set_minor_locator(ticker.NullLocator())
            ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda y, _: f"{y:g}"))
            ax.yaxis.set_minor_formatter(ticker.NullFormatter())
            ax.set_xlabel("sequence length")
            ax.set_ylabel("peak GiB")
            ax.set_title(f"{PASS_TITLES[pass_]}, head dim {d}", fontsize=10)
            ax.grid(alpha=0.3, which="both")
    _finish(fig, f"Peak memory, {dtype}, {report.gpu_name}", _handles(axes), path)
    return True


def plot_report(report: Report, out_dir: str | Path, prefix: str) -> dict[str, Path]:
    """Every figure the report has data for, as ``{section key: path}`` (keys as in
    ``report.to_markdown``: "fwd/bf16", "memory/bf16"). ImportError without matplotlib."""
    _pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    pairs = dict.fromkeys((c.pass_, c.dtype) for c in report.cells)
    for pass_, dtype in sorted(pairs, key=lambda p: (PASSES.index(p[0]), p[1])):
        path = out / f"{prefix}_{pass_}_{dtype}.png"
        if throughput_figure(report, pass_, dtype, path):
            written[f"{pass_}/{dtype}"] = path
    for dtype in dict.fromkeys(r.dtype for r in report.memory):
        path = out / f"{prefix}_memory_{dtype}.png"
        if memory_figure(report, dtype, path):
            written[f"memory/{dtype}"] = path
    return written
