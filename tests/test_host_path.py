"""The eager host path: plain CUDA tensors skip the dispatcher and call the CUDA kernel
function directly (``_ops._direct``), but anything that must see ``ioattn::fwd`` /
``ioattn::bwd`` as ops (torch dispatch and function modes, the profiler, functorch
transforms, tensor subclasses) still gets them, with the same results."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

import ioattn
from ioattn import _ops
from ioattn.testing import case_seed


class _RecordOps(TorchDispatchMode):
    """Records the name of every op that reaches the Python dispatch key."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.names.append(str(func))
        return func(*args, **(kwargs or {}))


class _PassFunctions(TorchFunctionMode):
    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        return func(*args, **(kwargs or {}))


WATCHERS: dict[str, Callable[[], contextlib.AbstractContextManager[Any]]] = {
    "dispatch_mode": _RecordOps,
    "function_mode": _PassFunctions,
    "profiler": lambda: torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]),
}


def test_nothing_watching_by_default() -> None:
    assert _ops.nothing_watching()


@pytest.mark.parametrize("watcher", list(WATCHERS))
def test_watchers_are_seen(watcher: str) -> None:
    with WATCHERS[watcher]():
        assert not _ops.nothing_watching()
    assert _ops.nothing_watching()


def test_functorch_transform_is_seen() -> None:
    seen: list[bool] = []

    def probe(x: torch.Tensor) -> torch.Tensor:
        seen.append(_ops.nothing_watching())
        return x

    torch.func.vmap(probe)(torch.zeros(2))
    assert seen == [False]


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: torch.zeros(2), id="cpu_tensor"),
        pytest.param(lambda: torch.nn.Parameter(torch.zeros(2)), id="subclass"),
    ],
)
def test_direct_refuses(make: Callable[[], torch.Tensor]) -> None:
    assert not _ops._direct(make(), None)


def _inputs(grad: bool) -> tuple[torch.Tensor, ...]:
    torch.manual_seed(case_seed("host_path", grad))
    q = torch.randn(2, 67, 4, 64, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(2, 91, 2, 64, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(2, 91, 2, 64, device="cuda", dtype=torch.bfloat16)
    return tuple(t.requires_grad_(grad) for t in (q, k, v))


@pytest.mark.gpu
def test_direct_accepts_plain_cuda_tensors() -> None:
    q, k, v = _inputs(grad=False)
    assert _ops._direct(q, k, v, None, None)


@pytest.mark.gpu
@pytest.mark.parametrize("watcher", list(WATCHERS))
def test_watched_forward_matches_direct(watcher: str) -> None:
    """Under a watcher the forward goes through the op, bitwise equal to the direct call."""
    q, k, v = _inputs(grad=False)
    direct = ioattn.flash_attn_func(q, k, v, causal=True)
    with WATCHERS[watcher]() as w:
        watched = ioattn.flash_attn_func(q, k, v, causal=True)
    if isinstance(w, _RecordOps):
        assert "ioattn.fwd.default" in w.names
    if isinstance(w, torch.profiler.profile):
        assert any(e.name == "ioattn::fwd" for e in w.events())
    assert torch.equal(direct, watched)


@pytest.mark.gpu
def test_watched_backward_matches_direct() -> None:
    """Forward and backward under a dispatch mode: both ops are seen, and the gradients equal
    those of the direct path bitwise (deterministic mode, so the dQ sums have one order)."""
    q, k, v = _inputs(grad=True)
    dout = torch.randn(2, 67, 4, 64, device="cuda", dtype=torch.bfloat16)

    def grads() -> tuple[torch.Tensor, ...]:
        q.grad = k.grad = v.grad = None
        ioattn.flash_attn_func(q, k, v, causal=True, deterministic=True).backward(dout)
        return q.grad, k.grad, v.grad

    direct = grads()
    with _RecordOps() as mode:
        watched = grads()
    assert "ioattn.fwd.default" in mode.names and "ioattn.bwd.default" in mode.names
    for a, b in zip(direct, watched, strict=True):
        assert torch.equal(a, b)
