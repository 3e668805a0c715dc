"""The measuring pieces that run on the CPU too: inputs, the pass callables (backward detection
included), the output check, host-overhead arithmetic and the memory minimum."""

from __future__ import annotations

import time
from typing import Any

import pytest
import torch

from ioattn.bench import check, memory, methods, overhead, runner, timing
from ioattn.bench.shapes import Shape

SHAPE = Shape(2, 256, 4, 64, False)
CAUSAL = Shape(2, 256, 4, 64, True)


def _inputs(shape: Shape = SHAPE, dtype: str = "bf16", grad: bool = True) -> timing.Inputs:
    return timing.make_inputs(shape, dtype, grad=grad, device="cpu")


def test_inputs_are_seeded_random_normal() -> None:
    a, b = _inputs(), _inputs()
    assert a.q.shape == (2, 256, 4, 64) and a.q.dtype == torch.bfloat16
    assert torch.equal(a.q, b.q) and torch.equal(a.dout, b.dout)  # every method, same inputs
    assert not torch.equal(a.q, a.k)
    assert 0.8 < a.q.float().std().item() < 1.2  # normal, not zeros
    assert a.q.requires_grad and not a.dout.requires_grad
    assert not _inputs(grad=False).q.requires_grad


def test_fp8_inputs() -> None:
    x = _inputs(dtype="fp8")
    assert x.q.dtype == torch.float8_e4m3fn and not x.q.requires_grad
    assert x.dout.dtype == torch.bfloat16


@pytest.mark.parametrize("shape", [SHAPE, CAUSAL], ids=["full", "causal"])
@pytest.mark.parametrize("make", [methods._naive_make, methods._sdpa_make, methods._ioattn_make])
def test_check_accepts_correct_outputs(shape: Shape, make: Any) -> None:
    x = _inputs(shape)
    with torch.no_grad():
        out = make(shape)(x.q, x.k, x.v)
    result = check.check_output(out, x.q, x.k, x.v, shape.causal)
    assert result.ok, result
    assert 0 < result.max_error <= result.tolerance < 0.1


@pytest.mark.parametrize(
    ("corrupt", "words"),
    [
        (lambda out: torch.zeros_like(out), "wrong result"),
        (lambda out: out * 1.05, "wrong result"),
        (lambda out: out.flip(1), "wrong result"),  # rows swapped
        (lambda out: torch.full_like(out, float("nan")), "wrong result"),
        (lambda out: out[:, :-1], "wrong shape"),
    ],
    ids=["zeros", "scaled", "permuted", "nan", "shape"],
)
def test_check_rejects_wrong_outputs(corrupt: Any, words: str) -> None:
    x = _inputs(CAUSAL)
    with torch.no_grad():
        out = methods._ioattn_make(CAUSAL)(x.q, x.k, x.v)
    result = check.check_output(corrupt(out), x.q, x.k, x.v, causal=True)
    assert not result.ok and words in result.message


def test_check_sees_a_wrong_mask() -> None:
    x = _inputs(SHAPE)
    with torch.no_grad():
        full = methods._naive_make(SHAPE)(x.q, x.k, x.v)
    assert not check.check_output(full, x.q, x.k, x.v, causal=True).ok


@pytest.mark.parametrize(("seqlen", "count"), [(16384, 128), (100, 128), (129, 128)])
def test_query_rows(seqlen: int, count: int) -> None:
    rows = check.query_rows(seqlen, count)
    assert rows[0] == 0 and rows[-1] == seqlen - 1
    assert len(rows) == min(seqlen, count) and rows == sorted(set(rows))


@pytest.mark.parametrize("pass_", ["fwd", "bwd", "fwdbwd"])
def test_pass_calls_run_a_peer(pass_: str) -> None:
    x = _inputs(CAUSAL)
    call, setup = timing.pass_call(methods._sdpa_make(CAUSAL), x, pass_)
    for _ in range(2):
        if setup is not None:
            setup()
        call()
    if pass_ == "fwd":
        assert x.q.grad is None
    else:
        assert x.q.grad is not None and x.q.grad.shape == x.q.shape


def test_backward_replays_one_forward() -> None:
    x = _inputs()
    forwards = []
    sdpa = methods._sdpa_make(SHAPE)

    def counted(q: Any, k: Any, v: Any) -> Any:
        forwards.append(1)
        return sdpa(q, k, v)

    call, setup = timing.pass_call(counted, x, "bwd")
    for _ in range(3):
        setup()
        call()
    assert len(forwards) == 1 and not call.fresh


def test_backward_falls_back_to_a_fresh_forward() -> None:
    class OneShot(torch.autograd.Function):
        """A backward that cannot be replayed (its saved state is consumed)."""

        @staticmethod
        def forward(ctx: Any, q: torch.Tensor) -> torch.Tensor:
            ctx.used = False
            return q * 2

        @staticmethod
        def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
            if ctx.used:
                raise RuntimeError("Trying to backward through the graph a second time")
            ctx.used = True
            return grad * 2

    forwards = []

    def fn(q: Any, k: Any, v: Any) -> Any:
        forwards.append(1)
        return OneShot.apply(q)

    x = _inputs()
    call, setup = timing.pass_call(fn, x, "bwd")
    assert call.fresh
    for _ in range(3):
        setup()
        call()
    assert len(forwards) == 1 + 3  # one for the probe, one fresh forward per timed call
    assert torch.equal(x.q.grad, (x.dout * 2).to(x.q.grad.dtype))


@pytest.mark.parametrize("pass_", ["bwd", "fwdbwd"])
def test_ioattn_backward_pass_runs(pass_: str) -> None:
    # The timed backward calls run through ioattn's autograd (the reference on CPU tensors).
    x = _inputs()
    fn = methods._ioattn_make(SHAPE)
    call, setup = timing.pass_call(fn, x, pass_)
    if setup is not None:
        setup()
    call()
    assert x.q.grad is not None and torch.isfinite(x.q.grad).all()


def test_unknown_pass() -> None:
    with pytest.raises(ValueError):
        timing.pass_call(methods._sdpa_make(SHAPE), _inputs(), "sideways")


def test_host_us_per_call_arithmetic() -> None:
    ticks = iter([0.0, 0.002, 10.0, 10.001])  # two runs: 2 ms and 1 ms for 100 calls
    calls: list[int] = []
    syncs: list[int] = []
    us = overhead.host_us_per_call(
        lambda: calls.append(1),
        calls=100,
        warmup=5,
        runs=2,
        sync=lambda: syncs.append(1),
        clock=lambda: next(ticks),
    )
    assert us == pytest.approx(10.0)  # best run: 1 ms / 100 calls
    assert len(calls) == 5 + 200 and len(syncs) == 3


def test_host_us_per_call_rejects_zero() -> None:
    with pytest.raises(ValueError):
        overhead.host_us_per_call(lambda: None, calls=0)


@pytest.mark.parametrize("runs", [1, timing.OVERHEAD_MIN_LOOPS + 2])
def test_overhead_takes_the_best_of_several_loops(
    monkeypatch: pytest.MonkeyPatch, runs: int
) -> None:
    """Host overhead is the best of at least OVERHEAD_MIN_LOOPS loops, even with --runs 1."""
    loops: list[int] = []

    def fake_us(call: Any, calls: int, runs: int, sync: Any = None) -> float:
        loops.append(runs)
        return 1.0

    monkeypatch.setattr(overhead, "host_us_per_call", fake_us)
    device = timing.CudaDevice(
        warmup=1, reps=2, runs=runs, overhead_calls=2, device="cpu", flush_bytes=1 << 16
    )
    device.overhead(methods._sdpa_make(SHAPE), Shape(1, 64, 2, 32, False), "bf16", "fwd")
    assert loops == [max(runs, timing.OVERHEAD_MIN_LOOPS)]


@pytest.mark.parametrize("pass_", ["fwd", "fwdbwd"])
def test_overhead_pass_call(pass_: str) -> None:
    x = _inputs(Shape(1, 128, 2, 64, False))
    step = overhead.pass_call(methods._sdpa_make(SHAPE), x.q, x.k, x.v, x.dout, pass_)
    step()
    step()
    assert (x.q.grad is not None) == (pass_ == "fwdbwd")
    with pytest.raises(ValueError):
        overhead.pass_call(methods._sdpa_make(SHAPE), x.q, x.k, x.v, x.dout, "bwd")


@pytest.mark.parametrize(
    ("dtype", "pass_", "expected"),
    [
        # b=1 s=16384 h=16 d=128: n = 2^25 elements; lse = 16 * 16384 * 4 bytes
        ("bf16", "fwd", 4 * 2**25 * 2 + 16 * 16384 * 4),
        ("bf16", "fwdbwd", 8 * 2**25 * 2 + 16 * 16384 * 4 + 2**25 * 4),
        ("fp8", "fwd", 4 * 2**25 + 16 * 16384 * 4),
    ],
)
def test_theoretical_minimum(dtype: str, pass_: str, expected: int) -> None:
    shape = Shape(1, 16384, 16, 128, True)
    assert memory.theoretical_min_bytes(shape, dtype, pass_) == expected


def test_oom_is_recognized() -> None:
    assert timing.is_oom(RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert not timing.is_oom(RuntimeError("illegal memory access"))


class _StubEvent:
    """torch.cuda.Event on the CPU: perf_counter at record()."""

    def __init__(self, enable_timing: bool = False) -> None:
        self.t = 0.0

    def record(self, stream: Any = None) -> None:
        self.t = time.perf_counter()

    def elapsed_time(self, end: _StubEvent) -> float:
        return (end.t - self.t) * 1e3


def test_cuda_device_code_runs_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real device's code paths (timer, passes, check, memory, overhead, release) with
    torch.cuda's timing and memory functions stubbed and CPU tensors; the GPU run is what
    proves the numbers, this proves the plumbing."""
    monkeypatch.setattr(torch.cuda, "Event", _StubEvent)
    for name in ("synchronize", "empty_cache", "reset_peak_memory_stats", "_sleep"):
        monkeypatch.setattr(torch.cuda, name, lambda *args, **kw: None)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda *args: 1000)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *args: 5000)
    device = timing.CudaDevice(
        warmup=1, reps=2, runs=1, overhead_calls=2, device="cpu", flush_bytes=1 << 16,
        matmul_n=64, busy_s=0.0,
    )  # fmt: skip
    broken = methods.Method(
        "broken", "", ("fwd",), ("bf16",), make=lambda s: lambda q, k, v: q.missing_attribute
    )
    chosen = [
        methods.ioattn_method("reference"),
        methods.sdpa_method("sdpa-math", "MATH"),
        broken,
    ]
    settings = runner.Settings(
        head_dims=[32],
        seqlens=[64, 128],
        batch=1,
        heads=2,
        overhead_dims=(1, 64, 2, 32),
        overhead_calls=2,
    )
    report = runner.run(settings, chosen, device, memory_baselines=[methods.naive_method()])
    assert report.matmul_tflops and report.matmul_tflops > 0
    by = {(c.method, c.pass_, c.seqlen, c.causal): c for c in report.cells}
    for (method, _, _, _), c in by.items():
        if method in ("sdpa-math", "ioattn-reference"):
            assert c.status == "ok" and c.ms and c.ms > 0, c
    ours = by[("ioattn-reference", "fwd", 128, True)]
    assert ours.max_error is not None and ours.max_error <= (ours.tolerance or 0)
    assert ours.best_peer == "sdpa-math" and ours.vs_best_peer
    assert by[("broken", "fwd", 128, False)].error.startswith("AttributeError")
    memory_rows = {(r.method, r.pass_, r.seqlen): r for r in report.memory}
    assert memory_rows[("naive", "fwdbwd", 128)].peak_bytes == 4000
    assert memory_rows[("ioattn-reference", "fwdbwd", 128)].peak_bytes == 4000
    overhead_rows = {(r.method, r.pass_): r for r in report.overhead}
    assert overhead_rows[("sdpa-math", "fwdbwd")].us > 0
    assert overhead_rows[("ioattn-reference", "fwd")].us > 0
