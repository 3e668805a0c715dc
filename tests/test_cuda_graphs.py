"""CUDA graphs and streams: forward + backward captured on a side stream replays with new
input values and matches eager; every kernel runs on the caller's current stream.

Capture runs in torch's default "global" error mode, where a host synchronization or a
cudaMalloc inside the library would make the capture fail: passing it shows the library
does neither."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

import ioattn
from ioattn.testing import case_seed

pytestmark = pytest.mark.gpu

Tensors = tuple[torch.Tensor, ...]


def _dense(causal: bool, deterministic: bool) -> Callable[..., torch.Tensor]:
    def f(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return ioattn.flash_attn_func(q, k, v, causal=causal, deterministic=deterministic)

    return f


def _varlen(causal: bool, deterministic: bool) -> Callable[..., torch.Tensor]:
    """Three sequences of lengths 100, 0 and 157 packed in the 257 rows of q (k likewise).
    cu_seqlens is made once, outside any capture (a graph replays fixed device buffers)."""
    cu = torch.tensor([0, 100, 100, 257], dtype=torch.int32, device="cuda")

    def f(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        flat = (t.reshape(-1, t.shape[2], t.shape[3]) for t in (q, k, v))
        out = ioattn.flash_attn_varlen_func(
            *flat, cu, cu, 157, 157, causal=causal, deterministic=deterministic
        )
        return out.reshape(q.shape)

    return f


FUNCTIONS = {"dense": _dense, "varlen": _varlen}


def _inputs(seed: int) -> Tensors:
    """q (1, 257, 8, 64), k/v with 2 heads (GQA), dout like q; bf16 on the GPU."""
    gen = torch.Generator(device="cuda").manual_seed(seed)
    shapes = [(1, 257, 8, 64), (1, 257, 2, 64), (1, 257, 2, 64), (1, 257, 8, 64)]
    return tuple(torch.randn(s, generator=gen, device="cuda", dtype=torch.bfloat16) for s in shapes)


def _fwd_bwd(f: Callable[..., torch.Tensor], q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
             dout: torch.Tensor) -> Tensors:  # fmt: skip
    out = f(q, k, v)
    return (out, *torch.autograd.grad(out, (q, k, v), dout))


def _eager(f: Callable[..., torch.Tensor], values: Tensors) -> Tensors:
    q, k, v, dout = values
    leaves = tuple(t.clone().requires_grad_(True) for t in (q, k, v))
    return tuple(t.detach() for t in _fwd_bwd(f, *leaves, dout))


@pytest.mark.parametrize("deterministic", [False, True], ids=["atomic", "deterministic"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("kind", list(FUNCTIONS))
def test_graph_capture_and_replay(kind: str, causal: bool, deterministic: bool) -> None:
    f = FUNCTIONS[kind](causal, deterministic)
    seed = case_seed("graph", kind, causal, deterministic)
    static = [t.clone() for t in _inputs(seed)]
    q, k, v = (t.requires_grad_(True) for t in static[:3])
    dout = static[3]

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm up (loads the kernels) on the side stream
        for _ in range(2):
            _fwd_bwd(f, q, k, v, dout)
    torch.cuda.current_stream().wait_stream(side)

    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=side):
        captured = _fwd_bwd(f, q, k, v, dout)

    for replay in range(3):
        values = _inputs(seed + 1 + replay)
        with torch.no_grad():
            for dst, src in zip(static, values):
                dst.copy_(src)
        graph.replay()
        torch.cuda.synchronize()
        want = _eager(f, values)
        for name, got, w in zip(("out", "dq", "dk", "dv"), captured, want):
            if deterministic:
                assert torch.equal(got, w), f"{name}: replay {replay} differs from eager"
            else:
                torch.testing.assert_close(got, w, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("kind", list(FUNCTIONS))
def test_runs_on_the_current_stream(kind: str) -> None:
    """On a non-blocking side stream, the inputs are written after a long sleep kernel and
    then used: a library launching anywhere but the current stream reads stale inputs."""
    f = FUNCTIONS[kind](True, False)
    values = _inputs(case_seed("stream", kind))
    want = _eager(f, values)
    stale = [torch.zeros_like(t) for t in values]
    torch.cuda.synchronize()

    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        torch.cuda._sleep(50_000_000)  # tens of ms on any GPU: the other streams run ahead
        for dst, src in zip(stale, values):
            dst.copy_(src)
        q, k, v = (t.requires_grad_(True) for t in stale[:3])
        got = tuple(t.detach() for t in _fwd_bwd(f, q, k, v, stale[3]))
    side.synchronize()
    for name, g, w in zip(("out", "dq", "dk", "dv"), got, want):
        torch.testing.assert_close(g, w, msg=lambda m, n=name: f"{n}: {m}")
