"""The backward GPU test case shared by test_bwd.py, test_bwd_deterministic.py and
test_small_smem.py: one forward + backward through ioattn vs autograd through the fp32
reference, by the FA rule (error <= 2x PyTorch's same-precision error + slack for the output,
3x for the gradients)."""

from __future__ import annotations

import pytest
import torch

import ioattn
from ioattn.testing import attention_ref, case_seed, check_fa_rule, kernel_skip_reason


def ids(value: object) -> str:
    if isinstance(value, torch.dtype):
        return str(value).removeprefix("torch.")
    if isinstance(value, tuple):
        return "x".join(str(v) for v in value)
    return str(value)


def _grads(out: torch.Tensor, inputs: tuple[torch.Tensor, ...], dout: torch.Tensor) -> tuple:
    return torch.autograd.grad(out, inputs, dout)


def run_case(
    seqlen_q: int,
    seqlen_k: int,
    head_dim: int,
    dtype: torch.dtype,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    heads: tuple[int, int] = (6, 6),
    batch: int | None = None,
    deterministic: bool = False,
) -> None:
    """One forward + backward vs the reference pair; checks dq, dk, dv by the FA rule."""
    reason = kernel_skip_reason(dtype, head_dim, softcap)
    if reason:
        pytest.skip(reason)
    torch.manual_seed(
        case_seed("bwd", seqlen_q, seqlen_k, head_dim, str(dtype), causal, window_size, softcap,
                  heads)
    )  # fmt: skip
    h, hk = heads
    if batch is None:
        batch = 4 if seqlen_q * seqlen_k <= 1024 * 1024 else 2
    q = torch.randn(batch, seqlen_q, h, head_dim, device="cuda", dtype=dtype)
    if softcap > 0:
        q = q * (softcap / 4)  # logits reach the tanh region
    k = torch.randn(batch, seqlen_k, hk, head_dim, device="cuda", dtype=dtype)
    v = torch.randn(batch, seqlen_k, hk, head_dim, device="cuda", dtype=dtype)
    dout = torch.randn(batch, seqlen_q, h, head_dim, device="cuda", dtype=dtype)
    inputs = tuple(t.requires_grad_(True) for t in (q, k, v))
    kwargs = {"causal": causal, "window_size": window_size, "softcap": softcap}

    out = ioattn.flash_attn_func(*inputs, **kwargs, deterministic=deterministic)
    dq, dk, dv = _grads(out, inputs, dout)
    out_ref, _ = attention_ref(*inputs, upcast=True, **kwargs)
    ref = _grads(out_ref, inputs, dout)
    out_pt, _ = attention_ref(*inputs, upcast=False, reorder_ops=True, **kwargs)
    pt = _grads(out_pt, inputs, dout)
    rtol_out = 3.0 if softcap > 0 else 2.0  # as test_fwd.py
    check_fa_rule("out", out.detach(), out_ref.detach(), out_pt.detach(), rtol=rtol_out)
    for name, got, r, p in zip(("dq", "dk", "dv"), (dq, dk, dv), ref, pt):
        assert got.shape == r.shape and got.dtype == dtype, name
        check_fa_rule(name, got, r, p, rtol=3.0)
