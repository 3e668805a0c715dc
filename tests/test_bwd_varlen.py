"""Varlen backward on the GPU, with zero-length sequences, vs autograd through the padded
fp32 reference (FA rule for gradients)."""

from __future__ import annotations

import pytest
import torch

import ioattn
from ioattn.testing import (
    attention_ref,
    case_seed,
    check_fa_rule,
    generate_random_padding_mask,
    kernel_skip_reason,
    pad_input,
    unpad_input,
)

pytestmark = pytest.mark.gpu

SEQLENS = [(1, 1), (17, 113), (113, 203), (339, 339), (1023, 129), (129, 1023)]
ZERO = ["none", "k", "qk"]  # which side gets zero-length sequences (every 5th and the last)


def _ids(value: object) -> str:
    if isinstance(value, tuple):
        return "x".join(str(v) for v in value)
    return str(value)


@pytest.mark.parametrize("zero", ZERO)
@pytest.mark.parametrize("mha_type", ["mha", "gqa"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("seqlens", SEQLENS, ids=_ids)
def test_bwd_varlen(seqlens: tuple[int, int], causal: bool, mha_type: str, zero: str) -> None:
    dtype = torch.bfloat16
    head_dim = 64 if mha_type == "mha" else 128
    reason = kernel_skip_reason(dtype, head_dim)
    if reason:
        pytest.skip(reason)
    torch.manual_seed(case_seed("bwd_varlen", seqlens, causal, mha_type, zero))
    sq, sk = seqlens
    batch, h = 7, 6
    hk = 6 if mha_type == "mha" else 2
    q = torch.randn(batch, sq, h, head_dim, device="cuda", dtype=dtype)
    k = torch.randn(batch, sk, hk, head_dim, device="cuda", dtype=dtype)
    v = torch.randn(batch, sk, hk, head_dim, device="cuda", dtype=dtype)
    dout = torch.randn(batch, sq, h, head_dim, device="cuda", dtype=dtype)
    q_mask = generate_random_padding_mask(sq, batch, "cuda", zero_lengths=zero == "qk")
    k_mask = generate_random_padding_mask(sk, batch, "cuda", zero_lengths=zero != "none")

    q_unpad, q_idx, cu_q, max_q, _ = unpad_input(q, q_mask)
    k_unpad, k_idx, cu_k, max_k, _ = unpad_input(k, k_mask)
    v_unpad, _, _, _, _ = unpad_input(v, k_mask)
    dout_unpad, _, _, _, _ = unpad_input(dout, q_mask)
    leaves = tuple(t.requires_grad_(True) for t in (q_unpad, k_unpad, v_unpad))
    out = ioattn.flash_attn_varlen_func(*leaves, cu_q, cu_k, max_q, max_k, causal=causal)
    grads = torch.autograd.grad(out, leaves, dout_unpad)

    dense = tuple(t.requires_grad_(True) for t in (q, k, v))
    kwargs = {"query_padding_mask": q_mask, "key_padding_mask": k_mask, "causal": causal}
    out_ref, _ = attention_ref(*dense, upcast=True, **kwargs)  # type: ignore[arg-type]
    ref = torch.autograd.grad(out_ref, dense, dout)
    out_pt, _ = attention_ref(*dense, upcast=False, reorder_ops=True, **kwargs)  # type: ignore[arg-type]
    pt = torch.autograd.grad(out_pt, dense, dout)
    for name, got, r, p, idx, s in zip(
        ("dq", "dk", "dv"), grads, ref, pt, (q_idx, k_idx, k_idx), (sq, sk, sk)
    ):
        got_padded = pad_input(got, idx, batch, s)
        check_fa_rule(name, got_padded, r, p, rtol=3.0)
