"""Fake methods and a fake device for the benchmark's tests (no GPU, no timing).

A fake method's function is called by the fake device as ``fn(kind, shape, None)`` where kind
is "check", a pass name, "memory:<pass>" or "overhead:<pass>"; it returns a number (ms, MiB
or µs) or raises what the test asked for (for the kind or for its pass).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from ioattn.bench.check import CheckResult
from ioattn.bench.methods import Method
from ioattn.bench.report import Report
from ioattn.bench.runner import Settings, run
from ioattn.bench.shapes import PASSES, Shape, fwd_flops


def fake_method(
    name: str,
    tflops: float = 100.0,
    *,
    ours: bool = False,
    passes: tuple[str, ...] = PASSES,
    dtypes: tuple[str, ...] = ("bf16", "fp16"),
    head_dims: tuple[int, ...] | None = None,
    missing: str | None = None,
    raises: dict[str, BaseException] | None = None,
    wrong: bool = False,
    worker: str | None = None,
) -> Method:
    """A method that runs at ``tflops`` on every cell (ms derived from the FLOPs)."""
    raises = raises or {}

    def make(shape: Shape) -> Any:
        def fn(kind: str, shape_: Shape, _: Any) -> Any:
            for key in (kind, kind.split(":")[-1]):  # "memory:bwd" also raises what "bwd" does
                if key in raises:
                    raise raises[key]
            if kind == "check":
                return "wrong" if wrong else "right"
            if kind.startswith("memory:"):
                return 64.0
            if kind.startswith("overhead:"):
                return 10.0 if ours else 20.0
            factor = {"fwd": 1.0, "bwd": 2.5, "fwdbwd": 3.5}[kind]
            return fwd_flops(shape_) * factor / (tflops * 1e12) * 1e3

        return fn

    return Method(
        name=name,
        description=f"fake {name}",
        passes=passes,
        dtypes=dtypes,
        make=make,
        available=lambda: missing,
        head_dims=head_dims,
        ours=ours,
        worker=worker,
    )


class FakeDevice:
    """The runner's device, made up: every measurement asks the method's fake function."""

    def __init__(
        self,
        matmul: float = 800.0,
        worker: Callable[[dict[str, Any]], Iterator[dict[str, Any]]] | None = None,
    ) -> None:
        self.matmul = matmul
        self.worker = worker
        self.released = 0
        self.timed: list[tuple[str, Shape]] = []
        self.requests: list[dict[str, Any]] = []

    def matmul_tflops(self) -> float:
        return self.matmul

    def inputs(self, shape: Shape, dtype: str) -> Any:
        return (shape, dtype)

    def check(self, fn: Any, inputs: Any, shape: Shape) -> CheckResult:
        if fn("check", shape, None) == "right":
            return CheckResult(True, 0.001, 0.01)
        return CheckResult(False, 1.5, 0.01, "wrong result: max |out - fp32 ref| = 1.5")

    def time(self, fn: Any, inputs: Any, pass_: str) -> float:
        shape = inputs[0]
        self.timed.append((pass_, shape))
        return float(fn(pass_, shape, None))

    def memory(self, fn: Any, shape: Shape, dtype: str, pass_: str) -> int:
        return int(fn(f"memory:{pass_}", shape, None) * 2**20)

    def overhead(self, fn: Any, shape: Shape, dtype: str, pass_: str) -> float:
        return float(fn(f"overhead:{pass_}", shape, None))

    def release(self, collect: bool = False) -> None:
        self.released += 1

    def describe(self, exc: BaseException) -> str:
        if isinstance(exc, MemoryError):
            return "out of memory"
        return f"{type(exc).__name__}: {exc}"

    def run_worker(self, method: Method, request: dict[str, Any]) -> Iterator[dict[str, Any]]:
        self.requests.append(request)
        if self.worker is None:
            return iter(())
        return self.worker(request)


def small_settings(**kw: Any) -> Settings:
    """Two seqlens, one head dim, both masks, every pass, bf16; memory and overhead on."""
    base: dict[str, Any] = {
        "head_dims": [128],
        "seqlens": [1024, 4096],
        "causals": [False, True],
        "dtypes": ["bf16"],
        "passes": list(PASSES),
    }
    base.update(kw)
    return Settings(**base)


def fake_run(methods: list[Method], device: FakeDevice | None = None, **kw: Any) -> Report:
    """Run the real runner with fakes."""
    return run(small_settings(**kw), methods, device or FakeDevice())
