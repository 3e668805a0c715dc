"""The benchmark's control flow, independent of any GPU: which cells exist, which are skipped
and why, what runs in which order, and how a failure is recorded without stopping the run.

Everything that touches a device goes through a :class:`Device` (``timing.CudaDevice`` on a
GPU; tests pass a fake with made-up times and failures), and the methods are passed in too.

Order of a run: the matmul ceiling; per shape (head dim, causal, seqlen) and dtype, every
in-process method (make its function, check an ioattn result against the fp32 reference,
then time each pass); memory; host overhead; last, the methods that run in a subprocess
(FlashAttention-3 through JAX), with all their jobs in one worker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from ioattn.bench import shapes as sh
from ioattn.bench.check import CheckResult
from ioattn.bench.memory import theoretical_min_bytes
from ioattn.bench.methods import GATED_DTYPES, AttnFn, Method
from ioattn.bench.report import (
    BACKWARD_NOT_IMPLEMENTED,
    ERROR,
    FAILED,
    Cell,
    MemoryRow,
    OverheadRow,
    Report,
    Row,
)

MEMORY_PASSES = ("fwd", "fwdbwd")
OVERHEAD_PASSES = ("fwd", "fwdbwd")

Progress = Callable[[int, int, str], None]
"""``progress(done, total, label)``, called once per finished row."""


@dataclass
class Settings:
    """What to run (the CLI's options, resolved)."""

    head_dims: list[int] = field(default_factory=lambda: list(sh.DEFAULT_HEAD_DIMS))
    seqlens: list[int] = field(default_factory=lambda: list(sh.DEFAULT_SEQLENS))
    causals: list[bool] = field(default_factory=lambda: [False, True])
    dtypes: list[str] = field(default_factory=lambda: ["bf16"])
    passes: list[str] = field(default_factory=lambda: list(sh.PASSES))
    batch: int | None = None
    heads: int | None = None
    reps: int = 30
    runs: int = 3
    warmup: int = 10
    memory: bool = True
    overhead: bool = True
    overhead_dims: tuple[int, int, int, int] = (1, 128, 2, 64)
    overhead_calls: int = 200

    def shapes(self) -> list[sh.Shape]:
        return sh.grid(self.head_dims, self.seqlens, self.causals, self.batch, self.heads)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["overhead_dims"] = list(self.overhead_dims)  # as JSON reads it back
        return data


class Device(Protocol):
    """What the runner needs from a device; every call may raise (recorded, run goes on)."""

    def matmul_tflops(self) -> float: ...

    def inputs(self, shape: sh.Shape, dtype: str) -> Any: ...

    def check(self, fn: AttnFn, inputs: Any, shape: sh.Shape) -> CheckResult: ...

    def time(self, fn: AttnFn, inputs: Any, pass_: str) -> float: ...

    def memory(self, fn: AttnFn, shape: sh.Shape, dtype: str, pass_: str) -> int: ...

    def overhead(self, fn: AttnFn, shape: sh.Shape, dtype: str, pass_: str) -> float: ...

    def release(self, collect: bool = False) -> None: ...

    def describe(self, exc: BaseException) -> str: ...

    def run_worker(self, method: Method, request: dict[str, Any]) -> Iterable[dict[str, Any]]: ...


@dataclass
class _Task:
    """One method on one shape and dtype: its rows (one per pass)."""

    method: Method
    shape: sh.Shape
    dtype: str
    rows: list[Any]  # Cell, MemoryRow or OverheadRow, one per pass


def _row(cls: type[Any], method: Method, pass_: str, dtype: str, shape: sh.Shape) -> Any:
    return cls(
        method=method.name,
        pass_=pass_,
        dtype=dtype,
        batch=shape.batch,
        seqlen=shape.seqlen,
        heads=shape.heads,
        head_dim=shape.head_dim,
        causal=shape.causal,
        ours=method.ours,
    )


class Runner:
    """Plans the rows of a run, then fills them in (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        methods: Sequence[Method],
        device: Device,
        progress: Progress | None = None,
        memory_baselines: Sequence[Method] = (),
        checkpoint: Callable[[Report], None] | None = None,
    ) -> None:
        self.settings, self.methods, self.device = settings, list(methods), device
        self.memory_methods = [*memory_baselines, *(m for m in methods if m.worker is None)]
        self.progress = progress
        self.checkpoint = checkpoint
        self.reasons: dict[str, str | None] = {}
        self.report = Report(config=settings.to_dict())
        self._done = 0
        self._total = 0

    # -- planning -----------------------------------------------------------------------------

    def reason(self, method: Method) -> str | None:
        """Why ``method`` cannot run here at all (cached ``available()``)."""
        if method.name not in self.reasons:
            try:
                self.reasons[method.name] = method.available()
            except Exception as exc:
                self.reasons[method.name] = f"{type(exc).__name__}: {exc}"
        return self.reasons[method.name]

    def _ours_dtypes(self) -> set[str]:
        return {d for m in self.methods if m.ours and self.reason(m) is None for d in m.dtypes}

    def static_skip(self, method: Method, pass_: str, dtype: str, head_dim: int) -> str | None:
        """The reason a row is skipped without running anything, or None."""
        reason = self.reason(method)
        if reason is not None:
            return reason
        reason = method.unsupported(pass_, dtype, head_dim)
        if reason is not None:
            return reason
        if not method.ours and dtype in GATED_DTYPES and dtype not in self._ours_dtypes():
            return f"{dtype}: no ioattn backend has it yet (peers are compared only beside it)"
        return None

    def _task(self, cls: type[Any], m: Method, shape: sh.Shape, dtype: str, passes: Any) -> _Task:
        rows = [_row(cls, m, p, dtype, shape) for p in passes]
        for r in rows:
            reason = self.static_skip(m, r.pass_, dtype, shape.head_dim)
            if reason is not None:
                r.skip(reason)
        return _Task(m, shape, dtype, rows)

    def plan(self) -> tuple[list[_Task], list[_Task], list[_Task]]:
        """(timing, memory, overhead) tasks; every row exists, the static skips are set."""
        s = self.settings
        timing = [
            self._task(Cell, m, shape, dtype, s.passes)
            for shape in s.shapes()
            for dtype in s.dtypes
            for m in self.methods
        ]
        plain = [d for d in s.dtypes if d not in GATED_DTYPES]
        memory: list[_Task] = []
        if s.memory and plain:
            causal = s.causals[0]
            memory = [
                self._task(MemoryRow, m, shape, plain[0], MEMORY_PASSES)
                for shape in sh.grid(s.head_dims, s.seqlens, [causal], s.batch, s.heads)
                for m in self.memory_methods
            ]
            for task in memory:
                for r in task.rows:
                    r.min_bytes = theoretical_min_bytes(task.shape, task.dtype, r.pass_)
        overhead: list[_Task] = []
        if s.overhead and plain:
            b, n, h, d = s.overhead_dims
            tiny = sh.Shape(b, n, h, d, False)
            overhead = [
                self._task(OverheadRow, m, tiny, plain[0], OVERHEAD_PASSES) for m in self.methods
            ]
        return timing, memory, overhead

    # -- running ------------------------------------------------------------------------------

    def _tick(self, row: Row) -> None:
        self._done += 1
        if self.progress is not None:
            self.progress(self._done, self._total, row.label())

    def _save_point(self) -> None:
        """Hand the report so far to ``checkpoint`` (a run cut short keeps what it measured)."""
        if self.checkpoint is not None:
            self.report.finalize()
            self.checkpoint(self.report)

    def run(self, environment: dict[str, Any] | None = None) -> Report:
        report = self.report
        report.environment = dict(environment or {})
        report.complete = False
        timing, memory, overhead = self.plan()
        report.cells = [r for t in timing for r in t.rows]
        report.memory = [r for t in memory for r in t.rows]
        report.overhead = [r for t in overhead for r in t.rows]
        self._total = len(report.rows())
        try:
            report.matmul_tflops = self.device.matmul_tflops()
        except Exception as exc:
            report.notes.append(f"matmul ceiling not measured: {self.device.describe(exc)}")
        self._run_timing([t for t in timing if t.method.worker is None])
        self._run_simple(memory, self._memory_row)
        self._run_simple([t for t in overhead if t.method.worker is None], self._overhead_row)
        self._run_workers([t for t in (*timing, *overhead) if t.method.worker is not None])
        report.complete = True
        report.finalize()
        return report

    def _finish(self, rows: Iterable[Row]) -> None:
        for r in rows:
            self._tick(r)
        self._save_point()

    def _run_timing(self, tasks: list[_Task]) -> None:
        key: tuple[sh.Shape, str] | None = None
        inputs: Any = None
        for task in tasks:
            pending = [r for r in task.rows if not r.resolved]
            if not pending:
                self._finish(task.rows)
                continue
            if key != (task.shape, task.dtype):
                inputs = None
                self.device.release()
                key = (task.shape, task.dtype)
                try:
                    inputs = self.device.inputs(task.shape, task.dtype)
                except Exception as exc:
                    inputs, message = None, self.device.describe(exc)
                    for r in pending:
                        r.fail(f"inputs: {message}")
            if inputs is not None:
                self._time_task(task, pending, inputs)
            self._finish(task.rows)
        self.device.release()

    def _time_task(self, task: _Task, pending: list[Any], inputs: Any) -> None:
        m = task.method
        with m.context():
            try:
                fn = m.make(task.shape)
                if m.ours:
                    result = self.device.check(fn, inputs, task.shape)
                    for r in pending:
                        r.max_error, r.tolerance = result.max_error, result.tolerance
                    if not result.ok:
                        for r in pending:
                            r.fail(result.message)
                        return
            except NotImplementedError as exc:
                for r in pending:
                    r.skip(f"not supported: {exc}")
                return
            except Exception as exc:
                message = self.device.describe(exc)
                for r in pending:
                    r.fail(message)
                return
            finally:
                self._release_after_failure(pending)
            for r in pending:
                try:
                    ms = self.device.time(fn, inputs, r.pass_)
                except NotImplementedError as exc:
                    r.skip(
                        BACKWARD_NOT_IMPLEMENTED if r.pass_ != "fwd" else f"not supported: {exc}"
                    )
                except Exception as exc:
                    r.fail(self.device.describe(exc))
                else:
                    r.done(ms, sh.flops(task.shape, r.pass_))
                self._release_after_failure([r])

    def _release_after_failure(self, rows: Sequence[Row]) -> None:
        """Free the device's cached memory when a row just failed (after the ``except``
        block, so the exception's frames, which hold the tensors, are gone)."""
        if any(r.status in (ERROR, FAILED) for r in rows):
            self.device.release(collect=True)

    def _run_simple(
        self, tasks: list[_Task], measure: Callable[[AttnFn, _Task, Any], None]
    ) -> None:
        for task in tasks:
            pending = [r for r in task.rows if not r.resolved]
            if pending:
                with task.method.context():
                    try:
                        fn = task.method.make(task.shape)
                    except Exception as exc:
                        for r in pending:
                            r.fail(self.device.describe(exc))
                        fn = None
                    for r in pending if fn is not None else []:
                        try:
                            measure(fn, task, r)
                        except NotImplementedError as exc:
                            r.skip(
                                BACKWARD_NOT_IMPLEMENTED
                                if r.pass_ != "fwd"
                                else f"not supported: {exc}"
                            )
                        except Exception as exc:
                            r.fail(self.device.describe(exc))
                        self._release_after_failure([r])
                fn = None
                self.device.release()
            self._finish(task.rows)

    def _memory_row(self, fn: AttnFn, task: _Task, row: MemoryRow) -> None:
        row.done(self.device.memory(fn, task.shape, task.dtype, row.pass_))

    def _overhead_row(self, fn: AttnFn, task: _Task, row: OverheadRow) -> None:
        row.done(self.device.overhead(fn, task.shape, task.dtype, row.pass_))

    def _run_workers(self, tasks: list[_Task]) -> None:
        by_method: dict[str, list[_Task]] = {}
        for task in tasks:
            by_method.setdefault(task.method.name, []).append(task)
        for group in by_method.values():
            self._run_worker(group[0].method, group)

    def _run_worker(self, method: Method, tasks: list[_Task]) -> None:
        resolved = [r for t in tasks for r in t.rows if r.resolved]
        self._finish(resolved)
        rows = [r for t in tasks for r in t.rows if not r.resolved]
        if not rows:
            return
        s = self.settings
        jobs = []
        for i, r in enumerate(rows):
            kind = "overhead" if isinstance(r, OverheadRow) else "time"
            jobs.append(
                {"id": i, "kind": kind, "pass": r.pass_, "dtype": r.dtype, **r.shape.to_dict()}
            )
        request = {
            "warmup": s.warmup,
            "reps": s.reps,
            "runs": s.runs,
            "calls": s.overhead_calls,
            "jobs": jobs,
        }
        try:
            for msg in self.device.run_worker(method, request):
                if "info" in msg:
                    workers = self.report.environment.setdefault("workers", {})
                    workers[method.name] = msg["info"]
                    continue
                row = rows[int(msg["id"])]
                if row.resolved:
                    continue
                _apply(row, msg)
                self._tick(row)
                self._save_point()
        except Exception as exc:
            message = f"worker: {self.device.describe(exc)}"
            for r in rows:
                if not r.resolved:
                    r.fail(message)
                    self._tick(r)
        for r in rows:
            if not r.resolved:
                r.fail("worker gave no result")
                self._tick(r)


def _apply(row: Row, msg: dict[str, Any]) -> None:
    """A worker's reply to one job, onto its row."""
    if msg.get("skipped"):
        row.skip(str(msg["skipped"]))
    elif msg.get("error"):
        row.fail(str(msg["error"]))
    elif isinstance(row, Cell) and msg.get("ms") is not None:
        row.done(float(msg["ms"]), sh.flops(row.shape, row.pass_))
    elif isinstance(row, OverheadRow) and msg.get("us") is not None:
        row.done(float(msg["us"]))
    else:
        row.fail(f"unexpected worker reply: {msg}")


def run(
    settings: Settings,
    methods: Sequence[Method],
    device: Device,
    progress: Progress | None = None,
    environment: dict[str, Any] | None = None,
    memory_baselines: Sequence[Method] = (),
) -> Report:
    """Plan and run a whole benchmark; see :class:`Runner`."""
    return Runner(settings, methods, device, progress, memory_baselines).run(environment)
