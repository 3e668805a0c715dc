"""Backward on the GPU vs autograd through the fp32 reference, by the FA rule for gradients
(error <= 3x PyTorch's same-precision error + slack).

Split by feature axis like test_fwd.py: a cross product only on the cheap axes (dtype x
causal), one test per other axis (seqlens, head dims, windows, softcap, GQA/MQA), then edge
cases (rows and keys that see nothing, empty sequences, strided inputs and dout).
"""

from __future__ import annotations

import pytest
import torch

import ioattn
from bwd_cases import ids as _ids
from bwd_cases import run_case
from ioattn.testing import attention_ref, case_seed, check_fa_rule

pytestmark = pytest.mark.gpu

DTYPES = [torch.float16, torch.bfloat16]
SEQLENS = [
    (1, 1),
    (1, 339),
    (17, 17),
    (17, 1023),
    (113, 203),
    (127, 127),
    (129, 129),
    (339, 113),
    (1023, 1023),
    (1023, 2049),
    (2049, 1023),
]
HEAD_DIMS = [40, 59, 64, 80, 96, 128, 192, 256]
WINDOWS = [(0, 0), (16, 0), (-1, 16), (64, 64), (3, -1), (255, 17)]
HEADS = {"mha": (6, 6), "gqa": (6, 2), "mqa": (6, 1)}


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
@pytest.mark.parametrize("seqlens", SEQLENS, ids=_ids)
def test_bwd_seqlens(seqlens: tuple[int, int], dtype: torch.dtype, causal: bool) -> None:
    run_case(*seqlens, 128, dtype, causal=causal)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
@pytest.mark.parametrize("head_dim", HEAD_DIMS)
@pytest.mark.parametrize("seqlens", [(113, 339), (1023, 129)], ids=_ids)
def test_bwd_head_dims(
    seqlens: tuple[int, int], head_dim: int, dtype: torch.dtype, causal: bool
) -> None:
    run_case(*seqlens, head_dim, dtype, causal=causal)


@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("window", WINDOWS, ids=_ids)
@pytest.mark.parametrize("seqlens", [(127, 129), (339, 1023), (1023, 339)], ids=_ids)
def test_bwd_window(seqlens: tuple[int, int], window: tuple[int, int], head_dim: int) -> None:
    run_case(*seqlens, head_dim, torch.bfloat16, window_size=window)


@pytest.mark.parametrize("head_dim", [64, 128, 256])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
@pytest.mark.parametrize("softcap", [15.0, 50.0])
def test_bwd_softcap(softcap: float, dtype: torch.dtype, causal: bool, head_dim: int) -> None:
    run_case(339, 339, head_dim, dtype, causal=causal, softcap=softcap)


@pytest.mark.parametrize("head_dim", [64, 128, 256])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("heads", list(HEADS.values()), ids=list(HEADS))
@pytest.mark.parametrize("seqlens", [(113, 203), (1023, 1023)], ids=_ids)
def test_bwd_gqa(
    seqlens: tuple[int, int], heads: tuple[int, int], causal: bool, head_dim: int
) -> None:
    run_case(*seqlens, head_dim, torch.bfloat16, causal=causal, heads=heads)


def test_bwd_fully_masked_rows_get_zero_dq() -> None:
    """Causal with seqlen_q > seqlen_k: the first rows see no key (dq = 0, never NaN); a
    window that hides the first keys from every row gives them dk = dv = 0."""
    torch.manual_seed(case_seed("bwd_masked"))
    q = torch.randn(2, 300, 4, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(2, 100, 4, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(2, 100, 4, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    out = ioattn.flash_attn_func(q, k, v, causal=True)
    dq, dk, dv = torch.autograd.grad(out, (q, k, v), torch.randn_like(out))
    assert torch.isfinite(dq).all() and torch.isfinite(dk).all() and torch.isfinite(dv).all()
    assert not dq[:, :200].any()
    out = ioattn.flash_attn_func(q, k, v, window_size=(10, 10))  # rows 0..189 see no key
    dq, dk, dv = torch.autograd.grad(out, (q, k, v), torch.randn_like(out))
    assert torch.isfinite(dq).all() and not dq[:, :190].any() and dq[:, 190:].any()
    run_case(300, 100, 64, torch.bfloat16, causal=True)
    run_case(100, 300, 64, torch.bfloat16, window_size=(0, 0))  # keys 0..199 see no query


@pytest.mark.parametrize("seqlens", [(0, 17), (17, 0), (0, 0)], ids=_ids)
def test_bwd_empty_sequences(seqlens: tuple[int, int]) -> None:
    sq, sk = seqlens
    q = torch.randn(2, sq, 4, 64, device="cuda", dtype=torch.float16, requires_grad=True)
    k = torch.randn(2, sk, 4, 64, device="cuda", dtype=torch.float16, requires_grad=True)
    v = torch.randn(2, sk, 4, 64, device="cuda", dtype=torch.float16, requires_grad=True)
    out = ioattn.flash_attn_func(q, k, v)
    dq, dk, dv = torch.autograd.grad(out, (q, k, v), torch.randn_like(out))
    assert dq.shape == q.shape and dk.shape == k.shape and dv.shape == v.shape
    for g in (dq, dk, dv):
        assert not g.any(), "no attention, no gradient"


def test_bwd_strided_inputs_and_dout() -> None:
    """q/k/v views into a packed qkv, and a dout that is a transposed view."""
    torch.manual_seed(case_seed("bwd_strided"))
    qkv = torch.randn(3, 333, 3, 6, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    q, k, v = qkv.unbind(2)
    out = ioattn.flash_attn_func(q, k, v, causal=True)
    dout = torch.randn(3, 6, 333, 64, device="cuda", dtype=torch.bfloat16).transpose(1, 2)
    (dqkv,) = torch.autograd.grad(out, (qkv,), dout)
    ref_out, _ = attention_ref(q, k, v, causal=True, upcast=True)
    (ref,) = torch.autograd.grad(ref_out, (qkv,), dout)
    pt_out, _ = attention_ref(q, k, v, causal=True, upcast=False, reorder_ops=True)
    (pt,) = torch.autograd.grad(pt_out, (qkv,), dout)
    check_fa_rule("dqkv", dqkv, ref, pt, rtol=3.0)
