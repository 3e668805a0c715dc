"""Host overhead: wall-clock microseconds per call of a problem so small that launching it
costs more than running it, so the number is what the Python/C++ layers and the launches
cost on the host (what a decode step or a tiny layer pays on every call).

Measured with ``time.perf_counter`` over ``calls`` back-to-back calls and one synchronize at
the end (the GPU runs behind the host, so host time is what is left), after a warm-up; the
best of ``runs`` such loops.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

DEFAULT_DIMS = (1, 128, 2, 64)  # batch, seqlen, heads, head_dim
DEFAULT_CALLS = 200


def host_us_per_call(
    call: Callable[[], Any],
    calls: int = DEFAULT_CALLS,
    warmup: int = 20,
    runs: int = 3,
    sync: Callable[[], Any] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Best over ``runs`` of (wall time of ``calls`` calls + one ``sync``) / ``calls``, in µs."""
    if calls <= 0 or runs <= 0:
        raise ValueError("calls and runs must be positive")
    for _ in range(warmup):
        call()
    if sync is not None:
        sync()
    best = float("inf")
    for _ in range(runs):
        start = clock()
        for _ in range(calls):
            call()
        if sync is not None:
            sync()
        best = min(best, (clock() - start) / calls * 1e6)
    return best


def pass_call(fn: Callable[..., Any], q: Any, k: Any, v: Any, dout: Any, pass_: str) -> Any:
    """The call that ``pass_`` ("fwd" or "fwdbwd") repeats: a forward, or a forward and a
    backward with the gradients reset first (as a training step would)."""
    if pass_ == "fwd":
        return lambda: fn(q, k, v)
    if pass_ != "fwdbwd":
        raise ValueError(f"host overhead is measured for fwd and fwdbwd, not {pass_!r}")

    def step() -> None:
        q.grad = k.grad = v.grad = None
        fn(q, k, v).backward(dout)

    return step
