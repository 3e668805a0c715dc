"""Results of a benchmark run: rows, ratios, JSON (write and read back) and Markdown.

Three kinds of rows share the bookkeeping of :class:`Row` (a status, an error or a skip
reason): :class:`Cell` (time and TFLOPS of one method, pass, dtype and shape),
:class:`MemoryRow` (peak bytes) and :class:`OverheadRow` (host microseconds per call).

Status: ``ok``; ``skipped`` (the method cannot run that cell: not installed, no such pass or
dtype, "backward not implemented"); ``error`` (a peer raised, e.g. out of memory); ``failed``
(an ioattn backend raised or computed a wrong result: the run's exit code is 1).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from ioattn.bench.shapes import DTYPES, PASS_TITLES, PASSES, Shape, tflops

SCHEMA = "ioattn-bench/2"
PENDING, OK, SKIPPED, ERROR, FAILED = "pending", "ok", "skipped", "error", "failed"
BACKWARD_NOT_IMPLEMENTED = "backward not implemented"
OOM = "out of memory"

_R = TypeVar("_R", bound="Row")


@dataclass
class Row:
    """What every row has: who, which pass and dtype, the shape, and how it went."""

    method: str
    pass_: str
    dtype: str
    batch: int
    seqlen: int
    heads: int
    head_dim: int
    causal: bool
    ours: bool = False
    status: str = PENDING
    error: str | None = None
    skipped: str | None = None

    @property
    def shape(self) -> Shape:
        return Shape(self.batch, self.seqlen, self.heads, self.head_dim, self.causal)

    @property
    def resolved(self) -> bool:
        return self.status != PENDING

    def skip(self, reason: str) -> None:
        self.status, self.skipped = SKIPPED, reason

    def fail(self, message: str) -> None:
        """An exception or a wrong result: ``failed`` for ioattn, ``error`` for a peer."""
        self.status, self.error = (FAILED if self.ours else ERROR), message

    def label(self) -> str:
        return f"{self.method} {self.pass_} {self.dtype} {self.shape.label()}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["pass"] = data.pop("pass_")
        return data

    @classmethod
    def from_dict(cls: type[_R], data: dict[str, Any]) -> _R:
        data = dict(data)
        if "pass" in data:
            data["pass_"] = data.pop("pass")
        data.setdefault("pass_", "fwd")
        data.setdefault("dtype", "bf16")
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class Cell(Row):
    """Speed of one (method, pass, dtype, shape)."""

    ms: float | None = None
    tflops: float | None = None
    flops: float | None = None
    max_error: float | None = None  # ioattn: max |out - fp32 reference| on the checked slice
    tolerance: float | None = None
    best_peer: str | None = None  # ioattn: the fastest peer of the same cell
    vs_best_peer: float | None = None  # ioattn: tflops / best peer's tflops
    of_matmul: float | None = None  # tflops / the run's matmul TFLOPS

    def done(self, ms: float, flop_count: float) -> None:
        self.status, self.ms, self.flops = OK, ms, flop_count
        self.tflops = tflops(flop_count, ms)


@dataclass
class MemoryRow(Row):
    """Peak bytes allocated by torch for one pass, beside the theoretical minimum."""

    peak_bytes: int | None = None
    min_bytes: int | None = None

    def done(self, peak: int) -> None:
        self.status, self.peak_bytes = OK, int(peak)


@dataclass
class OverheadRow(Row):
    """Host wall-clock microseconds per call of a tiny problem (launch cost dominates)."""

    us: float | None = None

    def done(self, us: float) -> None:
        self.status, self.us = OK, float(us)


@dataclass
class Report:
    """A whole run. ``environment`` and ``config`` are free-form JSON objects."""

    environment: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    matmul_tflops: float | None = None
    cells: list[Cell] = field(default_factory=list)
    memory: list[MemoryRow] = field(default_factory=list)
    overhead: list[OverheadRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    complete: bool = True  # False in a checkpoint, or when the run was interrupted

    def rows(self) -> list[Row]:
        return [*self.cells, *self.memory, *self.overhead]

    def failed(self) -> list[Cell]:
        """ioattn cells that failed (the exit code is 1 when there is any)."""
        return [c for c in self.cells if c.ours and c.status == FAILED]

    def finalize(self) -> None:
        """Per cell: ratio to the matmul ceiling; per ioattn cell: ratio to the best peer."""
        groups: dict[tuple[Any, ...], list[Cell]] = {}
        for c in self.cells:
            groups.setdefault((c.pass_, c.dtype, c.shape), []).append(c)
            c.of_matmul = c.tflops / self.matmul_tflops if c.tflops and self.matmul_tflops else None
        for group in groups.values():
            peers = [c for c in group if not c.ours and c.status == OK and c.tflops]
            best = max(peers, key=lambda c: c.tflops or 0.0, default=None)
            for c in group:
                if c.ours and best is not None and c.status == OK and c.tflops and best.tflops:
                    c.best_peer, c.vs_best_peer = best.method, c.tflops / best.tflops
                elif c.ours:
                    c.best_peer = c.vs_best_peer = None

    # -- JSON ---------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        env = self.environment
        return {
            "schema": SCHEMA,
            # Top-level keys of the first format, kept for readers of it.
            "device": env.get("gpu", {}).get("name") if isinstance(env.get("gpu"), dict) else None,
            "torch": env.get("versions", {}).get("torch"),
            "cuda": env.get("cuda"),
            "matmul_tflops": self.matmul_tflops,
            "environment": self.environment,
            "config": self.config,
            "cells": [c.to_dict() for c in self.cells],
            "memory": [r.to_dict() for r in self.memory],
            "overhead": [r.to_dict() for r in self.overhead],
            "notes": self.notes,
            "complete": self.complete,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        env = data.get("environment")
        if not isinstance(env, dict):  # the first format: device/torch/cuda at the top
            env = {"gpu": {"name": data.get("device")}, "cuda": data.get("cuda")}
            env["versions"] = {"torch": data.get("torch")}
        report = cls(
            environment=env,
            config=dict(data.get("config") or {}),
            matmul_tflops=data.get("matmul_tflops"),
            cells=[Cell.from_dict(c) for c in data.get("cells", [])],
            memory=[MemoryRow.from_dict(r) for r in data.get("memory", [])],
            overhead=[OverheadRow.from_dict(r) for r in data.get("overhead", [])],
            notes=list(data.get("notes", [])),
            complete=bool(data.get("complete", True)),
        )
        if "schema" not in data:  # the first format: no status, no ours
            for c in report.cells:
                c.ours = c.ours or c.method.startswith("ioattn")
                if c.status == PENDING:
                    c.status = OK if c.tflops else (FAILED if c.ours else ERROR)
        return report

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1, default=_jsonable) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Report:
        return cls.from_dict(json.loads(Path(path).read_text()))

    @property
    def gpu_name(self) -> str:
        gpu = self.environment.get("gpu")
        return str(gpu.get("name") or "unknown GPU") if isinstance(gpu, dict) else "unknown GPU"


def _jsonable(value: Any) -> Any:
    if isinstance(value, (set, tuple)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    return str(value)


# ---------------------------------------------------------------------------------------------
# Markdown


def _table(head: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """A Markdown table with padded columns (readable on a terminal too)."""
    rows = [list(r) for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(head)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths)) + " |"

    sep = "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"
    return [line(head), sep, *(line(r) for r in rows)]


def _mark(row: Row | None, value: str) -> str:
    if row is None:
        return ""
    if row.status == OK:
        return value
    if row.status == FAILED:
        return "FAIL"
    if row.status == ERROR:
        return "OOM" if row.error == OOM else "ERR"
    return "–" if row.status == SKIPPED else ""


def methods_of(rows: Iterable[Row]) -> list[str]:
    """Method names in first-seen order, ioattn's first."""
    names = list(dict.fromkeys(r.method for r in rows))
    ours = {r.method for r in rows if r.ours}
    return [n for n in names if n in ours] + [n for n in names if n not in ours]


def _size(seqlen: int) -> str:
    return f"{seqlen // 1024}k" if seqlen % 1024 == 0 else str(seqlen)


def throughput_table(report: Report, pass_: str, dtype: str) -> list[str]:
    """TFLOPS per method; per ioattn backend its ratio to the best peer and to the matmul."""
    cells = [c for c in report.cells if c.pass_ == pass_ and c.dtype == dtype]
    if not any(c.status == OK for c in cells):
        return []
    methods = methods_of(cells)
    ours = [m for m in methods if any(c.ours for c in cells if c.method == m)]
    rows: dict[Shape, dict[str, Cell]] = {}
    for c in cells:
        rows.setdefault(c.shape, {})[c.method] = c
    head = ["hdim", "causal", "seqlen", *methods]
    for o in ours:
        short = o[len("ioattn-") :] if o.startswith("ioattn-") else o
        head += [f"{short} / best peer", f"{short} / matmul"]
    head.append("best peer")
    body = []
    for shape, by_method in rows.items():
        vals = [str(shape.head_dim), "yes" if shape.causal else "no", _size(shape.seqlen)]
        for m in methods:
            c = by_method.get(m)
            vals.append(_mark(c, _num(c.tflops) if c and c.tflops else ""))
        best = ""
        for o in ours:
            c = by_method.get(o)
            vals.append(f"{c.vs_best_peer:.2f}" if c and c.vs_best_peer else "")
            vals.append(f"{c.of_matmul:.2f}" if c and c.of_matmul else "")
            best = best or (c.best_peer or "" if c else "")
        if not best:
            peers = [c for c in by_method.values() if not c.ours and c.status == OK]
            best = max(peers, key=lambda c: c.tflops or 0.0).method if peers else ""
        vals.append(best)
        body.append(vals)
    return _table(head, body)


def _num(x: float, sep: str = "") -> str:
    """Whole numbers from 10 up, two significant digits below (small test problems)."""
    return f"{x:{sep}.0f}" if abs(x) >= 10 else f"{x:.2g}"


def _mib(n: int | None) -> str:
    return _num(n / 2**20, ",") if n is not None else ""


def memory_table(report: Report, pass_: str, dtype: str) -> list[str]:
    """Peak MiB per method and the theoretical minimum; ratio to the minimum in brackets."""
    rows_in = [r for r in report.memory if r.pass_ == pass_ and r.dtype == dtype]
    if not rows_in:
        return []
    methods = methods_of(rows_in)
    rows: dict[Shape, dict[str, MemoryRow]] = {}
    for r in rows_in:
        rows.setdefault(r.shape, {})[r.method] = r
    body = []
    for shape, by_method in rows.items():
        least = next((r.min_bytes for r in by_method.values() if r.min_bytes), None)
        vals = [str(shape.head_dim), _size(shape.seqlen), _mib(least)]
        for m in methods:
            r = by_method.get(m)
            text = ""
            if r is not None and r.peak_bytes is not None:
                text = _mib(r.peak_bytes)
                if least:
                    text += f" ({r.peak_bytes / least:.2f}x)"
            vals.append(_mark(r, text))
        body.append(vals)
    return _table(["hdim", "seqlen", "minimum", *methods], body)


def overhead_table(report: Report) -> list[str]:
    """Microseconds per call, forward and forward + backward, per method."""
    if not report.overhead:
        return []
    passes = [p for p in PASSES if any(r.pass_ == p for r in report.overhead)]
    by_method: dict[str, dict[str, OverheadRow]] = {}
    for r in report.overhead:
        by_method.setdefault(r.method, {})[r.pass_] = r
    body = []
    for m in methods_of(report.overhead):
        cells = by_method[m]
        vals = [m]
        for p in passes:
            r = cells.get(p)
            vals.append(_mark(r, f"{r.us:.1f}" if r and r.us is not None else ""))
        body.append(vals)
    return _table(["method", *(PASS_TITLES[p].lower() + " (µs)" for p in passes)], body)


def _shape_list(rows: Sequence[Row], limit: int = 6) -> str:
    labels = [f"{r.pass_} {r.dtype} {r.shape.label()}" for r in rows]
    more = f", ... ({len(labels) - limit} more)" if len(labels) > limit else ""
    return ", ".join(labels[:limit]) + more


def notes(report: Report) -> list[str]:
    """Skip reasons and errors, one line per (method, reason), with the cells they hit."""
    groups: dict[tuple[str, str, str], list[Row]] = {}
    for r in report.rows():
        if r.status in (SKIPPED, ERROR, FAILED):
            text = (r.skipped if r.status == SKIPPED else r.error) or ""
            groups.setdefault((r.method, r.status, text), []).append(r)
    lines = []
    for (method, status, text), rows in groups.items():
        if status == SKIPPED:
            lines.append(f"- {method}: skipped ({len(rows)}): {text}")
        else:
            word = "FAILED" if status == FAILED else "error"
            lines.append(f"- {method}: {word}: {text} [{_shape_list(rows)}]")
    return lines


def _dtypes_passes(report: Report) -> list[tuple[str, str]]:
    seen = {(c.pass_, c.dtype) for c in report.cells}
    return [(p, d) for p in PASSES for d in DTYPES if (p, d) in seen]


def summary_line(report: Report) -> str:
    env = report.environment
    versions = env.get("versions") or {}
    gpu = env.get("gpu") or {}
    sms = f", {gpu['sm_count']} SMs" if isinstance(gpu, dict) and gpu.get("sm_count") else ""
    matmul = f"{report.matmul_tflops:.0f}" if report.matmul_tflops else "n/a"
    return (
        f"{report.gpu_name}{sms}; torch {versions.get('torch', '?')}, CUDA {env.get('cuda', '?')}; "
        f"bf16 matmul 8192^3 in the same run: {matmul} TFLOPS"
    )


def to_markdown(report: Report, images: dict[str, str] | None = None) -> str:
    """The whole report: per pass and dtype a TFLOPS table, then memory, overhead, notes.

    ``images`` maps a section key ("fwd/bf16", "memory/bf16") to an image path to show there.
    """
    images = images or {}
    cfg = report.config
    out = [f"# ioattn benchmark: {report.gpu_name}", "", summary_line(report)]
    if not report.complete:
        done = sum(r.resolved for r in report.rows())
        out += ["", f"**Partial: the run stopped after {done} of {len(report.rows())} rows.**"]
    if cfg:
        out += [
            "",
            f"Timing: CUDA events around single calls (device time: L2 flushed and the call's "
            f"host work done before the start event), median of "
            f"{cfg.get('reps', '?')} calls, best of {cfg.get('runs', '?')} runs; "
            f"FLOPs = 4·b·h·s²·d per forward (halved when causal), backward 2.5x, "
            f"forward + backward 3.5x.",
        ]
    for pass_, dtype in _dtypes_passes(report):
        table = throughput_table(report, pass_, dtype)
        if not table:
            continue
        out += ["", f"## {PASS_TITLES[pass_]}, {dtype} (TFLOPS)", "", *table]
        if f"{pass_}/{dtype}" in images:
            out += ["", f"![{PASS_TITLES[pass_]} {dtype}]({images[f'{pass_}/{dtype}']})"]
    for dtype in dict.fromkeys(r.dtype for r in report.memory):
        for pass_ in PASSES:
            table = memory_table(report, pass_, dtype)
            if table:
                out += ["", f"## Memory: {PASS_TITLES[pass_].lower()}, {dtype} (peak MiB)", ""]
                out += table
        if f"memory/{dtype}" in images:
            out += ["", f"![memory {dtype}]({images[f'memory/{dtype}']})"]
    if report.memory:
        out += [
            "",
            "Peak bytes allocated by torch (inputs included); minimum = q, k, v, out in the "
            "input dtype + fp32 LSE, and for forward + backward also dout, dq, dk, dv + an fp32 "
            "dQ accumulator. OOM = out of memory.",
        ]
    table = overhead_table(report)
    if table:
        r = report.overhead[0]
        out += ["", f"## Host overhead ({r.shape.label()}, {r.dtype})", "", *table, ""]
        out.append("Wall clock per call over many calls with one synchronize at the end.")
    lines = notes(report)
    if lines or report.notes:
        out += ["", "## Notes", "", *lines, *(f"- {n}" for n in report.notes)]
    return "\n".join(out) + "\n"
