"""Varlen forward on the GPU, with zero-length sequences, vs the padded/per-sequence reference."""

from __future__ import annotations

import pytest
import torch

import ioattn
from ioattn.testing import (
    case_seed,
    check_fa_rule,
    generate_random_padding_mask,
    kernel_skip_reason,
    pad_input,
    reference_pair,
    unpad_input,
)

# Every test runs once per kernel library (conftest.fwd_library).
pytestmark = [pytest.mark.gpu, pytest.mark.usefixtures("fwd_library")]

DTYPES = [torch.float16, torch.bfloat16]
SEQLENS = [(1, 1), (17, 113), (113, 203), (339, 339), (1023, 129), (129, 1023)]
# which side gets zero-length sequences (every 5th and the last)
ZERO = ["none", "k", "qk"]


def _ids(value: object) -> str:
    if isinstance(value, torch.dtype):
        return str(value).removeprefix("torch.")
    if isinstance(value, tuple):
        return "x".join(str(v) for v in value)
    return str(value)


def _lse_rows(lse_bhs: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """(batch, heads, seqlen) padded lse -> (heads, total) rows picked by unpad indices."""
    b, h, s = lse_bhs.shape
    return lse_bhs.permute(0, 2, 1).reshape(b * s, h).index_select(0, indices).t()


@pytest.mark.parametrize("zero", ZERO)
@pytest.mark.parametrize("mha_type", ["mha", "gqa"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
@pytest.mark.parametrize("seqlens", SEQLENS, ids=_ids)
def test_fwd_varlen(
    seqlens: tuple[int, int],
    dtype: torch.dtype,
    causal: bool,
    mha_type: str,
    zero: str,
) -> None:
    head_dim = 64 if mha_type == "mha" else 128  # pairwise with the head layout
    reason = kernel_skip_reason(dtype, head_dim)
    if reason:
        pytest.skip(reason)
    torch.manual_seed(case_seed("varlen", seqlens, str(dtype), causal, mha_type, zero))
    sq, sk = seqlens
    batch, h = 9, 6
    hk = 6 if mha_type == "mha" else 2
    device = "cuda"
    q = torch.randn(batch, sq, h, head_dim, device=device, dtype=dtype)
    k = torch.randn(batch, sk, hk, head_dim, device=device, dtype=dtype)
    v = torch.randn(batch, sk, hk, head_dim, device=device, dtype=dtype)
    q_mask = generate_random_padding_mask(sq, batch, device, "random", zero_lengths=zero == "qk")
    k_mask = generate_random_padding_mask(sk, batch, device, "random", zero_lengths=zero != "none")
    q_unpad, q_idx, cu_q, max_q, _ = unpad_input(q, q_mask)
    k_unpad, _, cu_k, max_k, k_lens = unpad_input(k, k_mask)
    v_unpad, _, _, _, _ = unpad_input(v, k_mask)

    out_unpad, lse, _ = ioattn.flash_attn_varlen_func(
        q_unpad,
        k_unpad,
        v_unpad,
        cu_q,
        cu_k,
        max_q,
        max_k,
        causal=causal,
        return_attn_probs=True,
    )
    assert out_unpad.shape == q_unpad.shape and lse.shape == (h, q_unpad.shape[0])
    out = pad_input(out_unpad, q_idx, batch, sq)
    out_ref, lse_ref, out_pt, lse_pt = reference_pair(
        q, k, v, query_padding_mask=q_mask, key_padding_mask=k_mask, causal=causal
    )
    check_fa_rule("out", out, out_ref, out_pt)
    check_fa_rule("lse", lse, _lse_rows(lse_ref, q_idx), _lse_rows(lse_pt, q_idx), atol=1e-4)

    # Queries of a sequence with no keys: exactly 0 and -inf.
    empty_k = (k_lens == 0).nonzero().flatten().tolist()
    cu = cu_q.tolist()
    for b in empty_k:
        rows = slice(cu[b], cu[b + 1])
        assert torch.equal(out_unpad[rows], torch.zeros_like(out_unpad[rows]))
        assert torch.isneginf(lse[:, rows]).all()
    if zero != "none":
        assert empty_k, "the padding generator made no zero-length key sequence"


# Explicit lists: zero-length q, zero-length k, both, length 1, a long one.
CU_CASES = {
    # lengths q: 0, 7, 0, 1, 200, 131; k: 5, 0, 0, 1, 300, 511
    "mixed": ([0, 0, 7, 7, 8, 208, 339], [0, 5, 5, 5, 6, 306, 817]),
    "all_empty_k": ([0, 3, 10], [0, 0, 0]),
    "first_empty_q": ([0, 0, 129], [0, 64, 193]),
    "single": ([0, 1023], [0, 2049]),
}


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("case", list(CU_CASES))
def test_fwd_varlen_per_sequence(case: str, causal: bool) -> None:
    """Each sequence of a varlen call equals the dense reference on that sequence alone."""
    dtype, head_dim, h, hk = torch.bfloat16, 128, 4, 2
    reason = kernel_skip_reason(dtype, head_dim)
    if reason:
        pytest.skip(reason)
    torch.manual_seed(case_seed("per_sequence", case, causal))
    cu_q_list, cu_k_list = CU_CASES[case]
    device = "cuda"
    q = torch.randn(cu_q_list[-1], h, head_dim, device=device, dtype=dtype)
    k = torch.randn(cu_k_list[-1], hk, head_dim, device=device, dtype=dtype)
    v = torch.randn(cu_k_list[-1], hk, head_dim, device=device, dtype=dtype)
    cu_q = torch.tensor(cu_q_list, dtype=torch.int32, device=device)
    cu_k = torch.tensor(cu_k_list, dtype=torch.int32, device=device)
    lens_q = [b - a for a, b in zip(cu_q_list, cu_q_list[1:])]
    lens_k = [b - a for a, b in zip(cu_k_list, cu_k_list[1:])]
    # max_seqlen may be an upper bound; use a loose one on purpose
    out, lse, _ = ioattn.flash_attn_varlen_func(
        q,
        k,
        v,
        cu_q,
        cu_k,
        max(lens_q) + 5,
        max(lens_k) + 3,
        causal=causal,
        return_attn_probs=True,
    )
    for b in range(len(lens_q)):
        q0, q1, k0, k1 = cu_q_list[b], cu_q_list[b + 1], cu_k_list[b], cu_k_list[b + 1]
        if q1 == q0:
            continue
        if k1 == k0:
            assert torch.equal(out[q0:q1], torch.zeros_like(out[q0:q1]))
            assert torch.isneginf(lse[:, q0:q1]).all()
            continue
        ref = reference_pair(q[None, q0:q1], k[None, k0:k1], v[None, k0:k1], causal=causal)
        out_ref, lse_ref, out_pt, lse_pt = ref
        check_fa_rule(f"out[{b}]", out[None, q0:q1], out_ref, out_pt)
        check_fa_rule(f"lse[{b}]", lse[None, :, q0:q1], lse_ref, lse_pt, atol=1e-4)
