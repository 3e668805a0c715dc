"""CUDA timing, and :class:`CudaDevice`: the runner's device on a real GPU.

Timing (BENCHMARKS.md): CUDA events around single calls; before each timed call a 256 MB
buffer is zeroed so L2 holds nothing of the previous call, then the GPU spins for a while
(``torch.cuda._sleep``) so that the host-side cost of the call (Python, argument checks, the
launch) is spent before the GPU reaches the start event: the events time the call's device work
alone, however fast the host. (Behind the memset alone, some 85 us, a call with more host work
than that had the rest counted: on one H100 host ioattn's short forwards read up to 30% slower
than their kernels ran, FA3's up to 2.6 times.) Host cost is reported apart (the overhead section). The
median of ``reps`` calls after ``warmup`` calls of the same method on the same shape, and the
best such median of ``runs`` (applied to every method alike).

Forward: ``fn(q, k, v)`` with inputs that require grad (the training forward, FlashAttention's
convention). Backward: only ``out.backward(dout, retain_graph=True)`` is timed, on an output
of a forward run outside the timed region, gradients reset before each call (a method whose
graph cannot be replayed gets a fresh forward before each call, also untimed). Forward +
backward: both, in one timed region.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from ioattn.bench import fa3_jax_worker, memory, overhead
from ioattn.bench.check import CheckResult, check_output
from ioattn.bench.methods import AttnFn, Method
from ioattn.bench.report import OOM
from ioattn.bench.shapes import Shape

FLUSH_BYTES = 256 * 1024 * 1024
HOST_SLACK_CYCLES = 1_000_000
"""GPU clock cycles of the spin before each timed call: about 0.5 ms, well over the host cost
of any method's call."""
OVERHEAD_MIN_LOOPS = 5  # host-overhead loops per (method, pass), whatever --runs says
TORCH_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Inputs:
    """q, k, v (batch, seqlen, heads, head_dim) and dout for the backward."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    dout: torch.Tensor | None

    def reset_grads(self) -> None:
        self.q.grad = self.k.grad = self.v.grad = None


def make_inputs(shape: Shape, dtype: str, grad: bool = True, device: str = "cuda") -> Inputs:
    """Random normal inputs (zeros would run faster and flatter the result); fp8 is e4m3 of
    bf16 normals and never requires grad. Seeded by the shape, so every method sees the same."""
    gen = torch.Generator(device=device)
    gen.manual_seed(shape.seqlen * 1000 + shape.head_dim * 10 + int(shape.causal))
    base = TORCH_DTYPES.get(dtype, torch.bfloat16)
    dims = (shape.batch, shape.seqlen, shape.heads, shape.head_dim)

    def rand() -> torch.Tensor:
        return torch.randn(dims, device=device, dtype=base, generator=gen)

    q, k, v = rand(), rand(), rand()
    if dtype == "fp8":
        q, k, v = (t.to(torch.float8_e4m3fn) for t in (q, k, v))
        grad = False
    if grad:
        for t in (q, k, v):
            t.requires_grad_(True)
    return Inputs(q, k, v, rand())


class EventTimer:
    """Median time of single calls between CUDA events, with a cold L2 before each."""

    def __init__(
        self, warmup: int = 10, flush_bytes: int = FLUSH_BYTES, device: str = "cuda"
    ) -> None:
        self.warmup = warmup
        self.flush = torch.empty(flush_bytes, dtype=torch.int8, device=device)

    def median_ms(
        self, call: Callable[[], Any], reps: int, setup: Callable[[], Any] | None = None
    ) -> float:
        for _ in range(self.warmup):
            if setup is not None:
                setup()
            call()
        torch.cuda.synchronize()
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        for i in range(reps):
            if setup is not None:
                setup()
            self.flush.zero_()
            torch.cuda._sleep(HOST_SLACK_CYCLES)
            starts[i].record()
            call()
            ends[i].record()
        torch.cuda.synchronize()
        return statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends))

    def best_ms(
        self,
        call: Callable[[], Any],
        reps: int,
        runs: int,
        setup: Callable[[], Any] | None = None,
    ) -> float:
        """The best of ``runs`` medians."""
        return min(self.median_ms(call, reps, setup) for _ in range(max(1, runs)))


class _Backward:
    """``out.backward(dout, retain_graph=True)`` on one forward's output; falls back to a fresh
    forward before each call (in ``setup``, untimed) when the graph cannot be replayed."""

    def __init__(self, fn: AttnFn, inputs: Inputs) -> None:
        self.fn, self.inputs = fn, inputs
        self.fresh = False
        self.out = fn(inputs.q, inputs.k, inputs.v)
        self.out.backward(inputs.dout, retain_graph=True)  # NotImplementedError goes up
        inputs.reset_grads()
        try:
            self.out.backward(inputs.dout, retain_graph=True)
        except NotImplementedError:
            raise
        except RuntimeError as exc:  # e.g. saved tensors freed: replay not supported
            if is_oom(exc):
                raise
            self.fresh = True
        inputs.reset_grads()

    def setup(self) -> None:
        self.inputs.reset_grads()
        if self.fresh:
            self.out = self.fn(self.inputs.q, self.inputs.k, self.inputs.v)

    def __call__(self) -> None:
        self.out.backward(self.inputs.dout, retain_graph=not self.fresh)


def pass_call(
    fn: AttnFn, inputs: Inputs, pass_: str
) -> tuple[Callable[[], Any], Callable[[], Any] | None]:
    """(call, setup) of ``pass_``: ``call`` is timed, ``setup`` runs before it, untimed."""
    q, k, v = inputs.q, inputs.k, inputs.v
    if pass_ == "fwd":
        return (lambda: fn(q, k, v)), None
    if pass_ == "fwdbwd":
        return (lambda: fn(q, k, v).backward(inputs.dout)), inputs.reset_grads
    if pass_ == "bwd":
        bwd = _Backward(fn, inputs)
        return bwd, bwd.setup
    raise ValueError(f"unknown pass {pass_!r}")


def matmul_tflops(
    timer: EventTimer, reps: int, runs: int, n: int = 8192, busy_s: float = 1.0
) -> float:
    """bf16 n^3 matmul through torch: the ceiling of the same run. The GPU is kept busy for
    ``busy_s`` seconds first, so clocks have ramped up before anything is timed."""
    device = timer.flush.device
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    end = time.perf_counter() + busy_s
    while time.perf_counter() < end:
        for _ in range(10):
            a @ b
        torch.cuda.synchronize()
    ms = timer.best_ms(lambda: a @ b, reps=reps, runs=runs)
    return 2.0 * n**3 / (ms * 1e-3) / 1e12


def is_oom(exc: BaseException) -> bool:
    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    return (oom is not None and isinstance(exc, oom)) or "out of memory" in str(exc).lower()


class CudaDevice:
    """The runner's device (``runner.Device``) on the current CUDA GPU. (``device``,
    ``flush_bytes``, ``matmul_n`` and ``busy_s`` exist so tests can run this code on the CPU
    with ``torch.cuda``'s timing functions stubbed.)"""

    def __init__(
        self,
        warmup: int = 10,
        reps: int = 30,
        runs: int = 3,
        overhead_calls: int = overhead.DEFAULT_CALLS,
        device: str = "cuda",
        flush_bytes: int = FLUSH_BYTES,
        matmul_n: int = 8192,
        busy_s: float = 1.0,
    ) -> None:
        self.reps, self.runs, self.overhead_calls = reps, runs, overhead_calls
        self.device, self.matmul_n, self.busy_s = device, matmul_n, busy_s
        self.timer = EventTimer(warmup=warmup, flush_bytes=flush_bytes, device=device)

    def _inputs(self, shape: Shape, dtype: str, grad: bool = True) -> Inputs:
        return make_inputs(shape, dtype, grad=grad, device=self.device)

    def matmul_tflops(self) -> float:
        # The ceiling is the denominator of every "/ matmul" ratio: measure it the same way in
        # every mode (--quick too: with 10 calls, best of 1, an H100 just out of idle read 591
        # TFLOPS where full runs read ~795).
        reps = max(20, self.reps // 2)
        runs = max(3, self.runs)
        return matmul_tflops(self.timer, reps, runs, n=self.matmul_n, busy_s=self.busy_s)

    def inputs(self, shape: Shape, dtype: str) -> Inputs:
        return self._inputs(shape, dtype)

    def check(self, fn: AttnFn, inputs: Any, shape: Shape) -> CheckResult:
        with torch.no_grad():
            out = fn(inputs.q, inputs.k, inputs.v)
            return check_output(out, inputs.q, inputs.k, inputs.v, shape.causal)

    def time(self, fn: AttnFn, inputs: Any, pass_: str) -> float:
        call, setup = pass_call(fn, inputs, pass_)
        try:
            return self.timer.best_ms(call, self.reps, self.runs, setup)
        finally:
            inputs.reset_grads()

    def memory(self, fn: AttnFn, shape: Shape, dtype: str, pass_: str) -> int:
        return memory.measure_peak_bytes(fn, shape, dtype, pass_, self._inputs)

    def overhead(self, fn: AttnFn, shape: Shape, dtype: str, pass_: str) -> float:
        inputs = self._inputs(shape, dtype, grad=pass_ != "fwd")
        call = overhead.pass_call(fn, inputs.q, inputs.k, inputs.v, inputs.dout, pass_)
        # Host wall clock is noisy: with one loop (--runs 1) a method's number moved 2x
        # between runs minutes apart on an H100 host. A loop costs ~0.1 s, so take the best of
        # at least OVERHEAD_MIN_LOOPS in every mode.
        return overhead.host_us_per_call(
            call,
            calls=self.overhead_calls,
            runs=max(OVERHEAD_MIN_LOOPS, self.runs),
            sync=torch.cuda.synchronize,
        )

    def release(self, collect: bool = False) -> None:
        if collect:  # slow (0.1 s and more): only after a failure
            gc.collect()
        torch.cuda.empty_cache()

    def describe(self, exc: BaseException) -> str:
        if is_oom(exc):
            return OOM
        return f"{type(exc).__name__}: {exc}".splitlines()[0][:300]

    def run_worker(self, method: Method, request: dict[str, Any]) -> Iterator[dict[str, Any]]:
        self.release(collect=True)  # hand the cached blocks back: the worker allocates too
        request = {**request, "flush_bytes": FLUSH_BYTES}
        return fa3_jax_worker.run_in_subprocess(request)
