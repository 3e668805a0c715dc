"""Degenerate problems: fully masked rows, empty sequences, empty batches, large logits.

Runs on the CPU (the reference backend) and on the GPU (the kernel library): both must give
out == 0 exactly and lse == -inf for a row that sees no key, and never NaN.
"""

from __future__ import annotations

import pytest
import torch

import ioattn
from ioattn import reference
from ioattn.testing import case_seed, check_fa_rule, kernel_skip_reason, reference_pair

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]
# Once per kernel library (conftest.fwd_library); the CPU cases run on the reference under both.
pytestmark = pytest.mark.usefixtures("fwd_library")
DTYPES = [torch.float16, torch.bfloat16]


def _skip_unbuilt(device: str, dtype: torch.dtype, head_dim: int, softcap: float = 0.0) -> None:
    if device == "cuda":
        reason = kernel_skip_reason(dtype, head_dim, softcap)
        if reason:
            pytest.skip(reason)


def _qkv(
    device: str, dtype: torch.dtype, b: int, sq: int, sk: int, h: int = 4, hk: int = 2, d: int = 64
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    q = torch.randn(b, sq, h, d, device=device, dtype=dtype)
    k = torch.randn(b, sk, hk, d, device=device, dtype=dtype)
    v = torch.randn(b, sk, hk, d, device=device, dtype=dtype)
    return q, k, v


# (name, seqlen_q, seqlen_k, causal, window)
MASKED = [
    ("causal_sq_gt_sk", 300, 17, True, (-1, -1)),
    ("causal_sq_gt_sk_tile_edge", 257, 128, True, (-1, -1)),
    ("window_diag_sq_gt_sk", 200, 40, False, (0, 0)),
    ("window_right_bound", 130, 64, False, (-1, 2)),
    ("causal_window_left", 512, 100, True, (10, -1)),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", MASKED, ids=lambda c: c[0])
@pytest.mark.parametrize("device", DEVICES)
def test_fully_masked_rows(device: str, case: tuple, dtype: torch.dtype) -> None:
    name, sq, sk, causal, window = case
    _skip_unbuilt(device, dtype, 64)
    torch.manual_seed(case_seed("masked", name, str(dtype)))
    q, k, v = _qkv(device, dtype, 3, sq, sk)
    out, lse, _ = ioattn.flash_attn_func(
        q, k, v, causal=causal, window_size=window, return_attn_probs=True
    )
    visible = reference.visible_mask(
        sq, sk, *reference.normalize_window(causal, window), device=device
    )
    dead = ~visible.any(dim=1)
    assert dead.any() and not dead.all(), "case must have dead and live rows"
    assert not torch.isnan(out).any(), "NaN in out"
    assert not torch.isnan(lse).any(), "NaN in lse"
    assert torch.equal(out[:, dead], torch.zeros_like(out[:, dead])), "dead rows must be exactly 0"
    assert torch.isneginf(lse[:, :, dead]).all(), "dead rows must have lse -inf"
    assert torch.isfinite(lse[:, :, ~dead]).all()
    out_ref, lse_ref, out_pt, lse_pt = reference_pair(q, k, v, causal=causal, window_size=window)
    check_fa_rule("out", out, out_ref, out_pt)
    check_fa_rule("lse", lse, lse_ref, lse_pt, atol=1e-4)


# Window edges as a C caller may pass them (the Python API turns edges that exclude no key into
# -1): past int32 and int64's half; the host caps them before the kernels' 32-bit mask math.
# (name, edges passed, the window they amount to)
WIDE_EDGES = [
    ("both_past_int32", (2**40, 2**33), (-1, -1)),
    ("left_near_int64_max", (2**63 - 1, 0), (-1, 0)),
    ("right_past_int32", (5, 2**35), (5, -1)),
]


@pytest.mark.parametrize("case", WIDE_EDGES, ids=lambda c: c[0])
@pytest.mark.parametrize("device", DEVICES)
def test_window_edges_past_int32(device: str, case: tuple) -> None:
    name, (left, right), window = case
    _skip_unbuilt(device, torch.bfloat16, 64)
    torch.manual_seed(case_seed("wide-edges", name))
    q, k, v = _qkv(device, torch.bfloat16, 2, 300, 200)
    out, lse = torch.ops.ioattn.fwd(
        q, k, v, None, None, 300, 200, 64**-0.5, left, right, 0.0, False
    )
    out_ref, lse_ref, out_pt, lse_pt = reference_pair(q, k, v, window_size=window)
    check_fa_rule("out", out, out_ref, out_pt)
    check_fa_rule("lse", lse, lse_ref, lse_pt, atol=1e-4)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("device", DEVICES)
def test_seqlen_k_zero(device: str, causal: bool) -> None:
    _skip_unbuilt(device, torch.bfloat16, 64)
    q, k, v = _qkv(device, torch.bfloat16, 2, 33, 0)
    out, lse, _ = ioattn.flash_attn_func(q, k, v, causal=causal, return_attn_probs=True)
    assert out.shape == q.shape and lse.shape == (2, 4, 33)
    assert torch.equal(out, torch.zeros_like(out))
    assert torch.isneginf(lse).all()


@pytest.mark.parametrize("device", DEVICES)
def test_seqlen_q_zero(device: str) -> None:
    q, k, v = _qkv(device, torch.float16, 2, 0, 50)
    out, lse, _ = ioattn.flash_attn_func(q, k, v, causal=True, return_attn_probs=True)
    assert out.shape == (2, 0, 4, 64) and lse.shape == (2, 4, 0)
    assert out.dtype == torch.float16 and lse.dtype == torch.float32


@pytest.mark.parametrize("device", DEVICES)
def test_batch_zero(device: str) -> None:
    q, k, v = _qkv(device, torch.bfloat16, 0, 10, 20)
    out, lse, _ = ioattn.flash_attn_func(q, k, v, return_attn_probs=True)
    assert out.shape == (0, 10, 4, 64) and lse.shape == (0, 4, 10)


@pytest.mark.parametrize("device", DEVICES)
def test_varlen_total_q_zero(device: str) -> None:
    q = torch.randn(0, 4, 64, device=device, dtype=torch.float16)
    k = torch.randn(30, 2, 64, device=device, dtype=torch.float16)
    cu_q = torch.tensor([0, 0, 0], dtype=torch.int32, device=device)
    cu_k = torch.tensor([0, 10, 30], dtype=torch.int32, device=device)
    out, lse, _ = ioattn.flash_attn_varlen_func(q, k, k, cu_q, cu_k, 0, 20, return_attn_probs=True)
    assert out.shape == (0, 4, 64) and lse.shape == (4, 0)


@pytest.mark.parametrize("device", DEVICES)
def test_varlen_batch_zero(device: str) -> None:
    q = torch.randn(0, 4, 64, device=device, dtype=torch.bfloat16)
    cu = torch.zeros(1, dtype=torch.int32, device=device)
    out, lse, _ = ioattn.flash_attn_varlen_func(
        q, q[:, :2], q[:, :2], cu, cu, 0, 0, return_attn_probs=True
    )
    assert out.shape == (0, 4, 64) and lse.shape == (4, 0)


@pytest.mark.parametrize("device", DEVICES)
def test_varlen_all_keys_empty(device: str) -> None:
    _skip_unbuilt(device, torch.bfloat16, 64)
    q = torch.randn(25, 4, 64, device=device, dtype=torch.bfloat16)
    k = torch.randn(0, 2, 64, device=device, dtype=torch.bfloat16)
    cu_q = torch.tensor([0, 5, 25], dtype=torch.int32, device=device)
    cu_k = torch.zeros(3, dtype=torch.int32, device=device)
    out, lse, _ = ioattn.flash_attn_varlen_func(
        q, k, k, cu_q, cu_k, 20, 0, causal=True, return_attn_probs=True
    )
    assert torch.equal(out, torch.zeros_like(out)) and torch.isneginf(lse).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("seqlen", [1, 2, 5, 17, 128])
@pytest.mark.parametrize("device", DEVICES)
def test_large_logits(device: str, seqlen: int, dtype: torch.dtype) -> None:
    """Scaled-up inputs (FA's overflow test): no inf/NaN, still within the FA rule."""
    _skip_unbuilt(device, dtype, 64)
    torch.manual_seed(case_seed("large", seqlen, str(dtype)))
    q, k, v = _qkv(device, dtype, 2, seqlen, seqlen)
    q, k, v = q * 5, k * 3, v * 3
    out, lse, _ = ioattn.flash_attn_func(q, k, v, causal=True, return_attn_probs=True)
    assert torch.isfinite(out).all() and torch.isfinite(lse).all()
    out_ref, lse_ref, out_pt, lse_pt = reference_pair(q, k, v, causal=True)
    check_fa_rule("out", out, out_ref, out_pt)
    check_fa_rule("lse", lse, lse_ref, lse_pt, atol=1e-3)


@pytest.mark.parametrize("device", DEVICES)
def test_decode_single_query(device: str) -> None:
    """seqlen_q 1 (decode), MQA, long keys; causal is moot at seqlen_q 1 (bottom-right)."""
    _skip_unbuilt(device, torch.bfloat16, 128)
    torch.manual_seed(case_seed("decode"))
    q, k, v = _qkv(device, torch.bfloat16, 4, 1, 2049, h=8, hk=1, d=128)
    out = ioattn.flash_attn_func(q, k, v, causal=True)
    assert torch.equal(out, ioattn.flash_attn_func(q, k, v, causal=False))
    out_ref, _, out_pt, _ = reference_pair(q, k, v, causal=True)
    check_fa_rule("out", out, out_ref, out_pt)
