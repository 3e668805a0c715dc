"""Memory: peak bytes that torch allocates for a forward or a forward + backward, and the
least any exact attention can need.

The minimum counts q, k, v and the output in the input dtype plus the fp32 log-sum-exp
(b * h * s * 4 bytes) for a forward; a forward + backward adds dout, dq, dk, dv in the input
dtype and an fp32 dQ accumulator (b * s * h * d * 4 bytes), as FlashAttention-2/3 keep.
A method that materializes the N x N scores (naive attention) needs O(N^2) on top.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ioattn.bench.shapes import Shape

ELEMENT_BYTES = {"bf16": 2, "fp16": 2, "fp8": 1}


def theoretical_min_bytes(shape: Shape, dtype: str, pass_: str) -> int:
    """The least bytes a pass keeps alive (see the module docstring)."""
    n = shape.elements
    size = ELEMENT_BYTES[dtype]
    lse = shape.batch * shape.heads * shape.seqlen * 4
    if pass_ == "fwd":
        return 4 * n * size + lse
    return 8 * n * size + lse + n * 4


def measure_peak_bytes(
    fn: Callable[..., Any], shape: Shape, dtype: str, pass_: str, make_inputs: Callable[..., Any]
) -> int:
    """Peak bytes torch allocates for one ``pass_`` ("fwd" or "fwdbwd") of ``fn`` on fresh
    inputs, the inputs included, after one warm-up call (compilation and lazily created
    workspaces do not count). The forward alone runs under ``torch.no_grad()``."""
    import torch

    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    inputs = make_inputs(shape, dtype, grad=pass_ != "fwd")
    if pass_ == "fwd":
        inputs.dout = None  # not part of a forward
    _one_pass(fn, inputs, pass_)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    _one_pass(fn, inputs, pass_)
    torch.cuda.synchronize()
    return int(torch.cuda.max_memory_allocated() - base)


def _one_pass(fn: Callable[..., Any], inputs: Any, pass_: str) -> None:
    """One forward (no grad) or forward + backward; gradients and outputs are dropped."""
    import torch

    q, k, v = inputs.q, inputs.k, inputs.v
    if pass_ == "fwd":
        with torch.no_grad():
            fn(q, k, v)
        return
    q.grad = k.grad = v.grad = None
    fn(q, k, v).backward(inputs.dout)
    q.grad = k.grad = v.grad = None
