"""torch.library registration: ``torch.library.opcheck`` of both ops (schema, fake kernel,
autograd registration, AOT dispatch) and ``torch.compile(fullgraph=True)`` of a module that
calls the dense and varlen functions, forward and backward, against eager. CPU (reference
kernels, aot_eager) and GPU (the libraries, inductor)."""

from __future__ import annotations

import pytest
import torch

import ioattn
from ioattn.testing import case_seed

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]
# aot_eager on the CPU keeps CI free of a C++ toolchain dependency; the GPU gets inductor.
BACKENDS = {"cpu": "aot_eager", "cuda": "inductor"}


def _qkv(device: str, b: int, sq: int, sk: int, grad: bool) -> tuple[torch.Tensor, ...]:
    q = torch.randn(b, sq, 4, 32, dtype=torch.bfloat16, device=device)
    k = torch.randn(b, sk, 2, 32, dtype=torch.bfloat16, device=device)
    v = torch.randn(b, sk, 2, 32, dtype=torch.bfloat16, device=device)
    return tuple(t.requires_grad_(grad) for t in (q, k, v))


# (name, fwd args after q, k, v): dense causal GQA; varlen with a window and softcap.
def _fwd_args(device: str, varlen: bool) -> tuple:
    if not varlen:
        q, k, v = _qkv(device, 2, 9, 11, grad=True)
        return (q, k, v, None, None, 9, 11, 0.2, -1, 2, 0.0, False)
    q, k, v = (t.detach()[0].requires_grad_(True) for t in _qkv(device, 1, 9, 11, grad=False))
    cu_q = torch.tensor([0, 3, 3, 9], dtype=torch.int32, device=device)
    cu_k = torch.tensor([0, 4, 5, 11], dtype=torch.int32, device=device)
    return (q, k, v, cu_q, cu_k, 6, 6, 0.2, 3, -1, 5.0, True)


@pytest.mark.parametrize("varlen", [False, True], ids=["dense", "varlen"])
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_fwd(device: str, varlen: bool) -> None:
    """q, k, v require grad, so opcheck also checks the autograd registration of ioattn::fwd
    and runs its backward (ioattn::bwd) under AOT dispatch."""
    torch.manual_seed(case_seed("opcheck_fwd", device, varlen))
    torch.library.opcheck(torch.ops.ioattn.fwd.default, _fwd_args(device, varlen))


@pytest.mark.parametrize("varlen", [False, True], ids=["dense", "varlen"])
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_bwd(device: str, varlen: bool) -> None:
    torch.manual_seed(case_seed("opcheck_bwd", device, varlen))
    q, k, v, cu_q, cu_k, *params = _fwd_args(device, varlen)
    q, k, v = (t.detach() for t in (q, k, v))
    out, lse = torch.ops.ioattn.fwd.default(q, k, v, cu_q, cu_k, *params)
    dout = torch.randn_like(out)
    torch.library.opcheck(
        torch.ops.ioattn.bwd.default, (dout, q, k, v, out, lse, cu_q, cu_k, *params)
    )


def test_double_backward_raises() -> None:
    q, k, v = _qkv("cpu", 1, 5, 7, grad=True)
    out = ioattn.flash_attn_func(q, k, v)
    (dq,) = torch.autograd.grad(out.sum(), (q,), create_graph=True)
    with pytest.raises(NotImplementedError, match="double backward"):
        dq.sum().backward()


class _Block(torch.nn.Module):
    """Dense causal attention, then varlen attention over the same tokens split in two
    sequences: both public entry points in one graph."""

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, s, h, d = q.shape
        x = ioattn.flash_attn_func(q, k, v, causal=True)
        cu = torch.arange(0, b * s + 1, s, dtype=torch.int32, device=q.device)
        flat = (t.reshape(b * s, -1, d) for t in (x, k, v))
        y = ioattn.flash_attn_varlen_func(*flat, cu, cu, s, s, softcap=10.0)
        return y.reshape(b, s, h, d) * 2


@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_fullgraph_fwd_bwd(device: str) -> None:
    """No graph breaks (fullgraph=True), outputs and gradients equal to eager, also on a
    second sequence length (the recompile with dynamic shapes)."""
    torch.manual_seed(case_seed("compile", device))
    module = _Block()
    compiled = torch.compile(module, backend=BACKENDS[device], fullgraph=True)
    for seqlen in (64, 96):
        q, k, v = _qkv(device, 2, seqlen, seqlen, grad=True)
        k, v = (t.detach().repeat_interleave(2, dim=2).requires_grad_(True) for t in (k, v))
        dout = torch.randn_like(q)
        want = module(q, k, v)
        want_grads = torch.autograd.grad(want, (q, k, v), dout)
        got = compiled(q, k, v)
        got_grads = torch.autograd.grad(got, (q, k, v), dout)
        torch.testing.assert_close(got, want)
        for g, w in zip(got_grads, want_grads):
            torch.testing.assert_close(g, w)
