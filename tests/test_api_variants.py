"""The packed and varlen variants equal the plain call (CPU and GPU)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
import torch

import ioattn
from ioattn import _validate, reference
from ioattn.testing import case_seed

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]
DTYPES = [torch.float16, torch.bfloat16]


def _same(actual: torch.Tensor, expected: torch.Tensor, device: str) -> None:
    """Bitwise on CPU (same reference math); one rounding step of slack on a GPU kernel,
    whose tiling may legitimately depend on the strides it is given."""
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    if device == "cpu":
        assert torch.equal(actual, expected)
    else:
        torch.testing.assert_close(actual, expected)


@pytest.mark.parametrize("head_dim", [64, 59])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_qkvpacked(device: str, dtype: torch.dtype, causal: bool, head_dim: int) -> None:
    torch.manual_seed(case_seed("qkvpacked", str(dtype), causal, head_dim))
    qkv = torch.randn(3, 37, 3, 4, head_dim, dtype=dtype, device=device)
    out = ioattn.flash_attn_qkvpacked_func(qkv, causal=causal)
    q, k, v = qkv.unbind(2)
    _same(out, ioattn.flash_attn_func(q, k, v, causal=causal), device)
    _same(
        out,
        ioattn.flash_attn_func(q.contiguous(), k.contiguous(), v.contiguous(), causal=causal),
        device,
    )


@pytest.mark.parametrize("heads", [(6, 6), (6, 2), (6, 1)], ids=["mha", "gqa", "mqa"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_kvpacked(device: str, dtype: torch.dtype, heads: tuple[int, int]) -> None:
    torch.manual_seed(case_seed("kvpacked", str(dtype), heads))
    h, hk = heads
    q = torch.randn(2, 29, h, 32, dtype=dtype, device=device)
    kv = torch.randn(2, 45, 2, hk, 32, dtype=dtype, device=device)
    out = ioattn.flash_attn_kvpacked_func(q, kv, window_size=(8, 3))
    k, v = kv.unbind(2)
    _same(out, ioattn.flash_attn_func(q, k, v, window_size=(8, 3)), device)


CU_Q = [0, 5, 5, 40, 41]
CU_K = [0, 9, 20, 20, 57]


def _cu(values: list[int], device: str) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int32, device=device)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_varlen_qkvpacked(device: str, dtype: torch.dtype, causal: bool) -> None:
    torch.manual_seed(case_seed("varlen_qkvpacked", str(dtype), causal))
    qkv = torch.randn(CU_Q[-1], 3, 4, 64, dtype=dtype, device=device)
    cu = _cu(CU_Q, device)
    out = ioattn.flash_attn_varlen_qkvpacked_func(qkv, cu, 35, causal=causal)
    q, k, v = qkv.unbind(1)
    _same(out, ioattn.flash_attn_varlen_func(q, k, v, cu, cu, 35, 35, causal=causal), device)


@pytest.mark.parametrize("heads", [(4, 4), (4, 1)], ids=["mha", "mqa"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_varlen_kvpacked(device: str, dtype: torch.dtype, heads: tuple[int, int]) -> None:
    torch.manual_seed(case_seed("varlen_kvpacked", str(dtype), heads))
    h, hk = heads
    q = torch.randn(CU_Q[-1], h, 64, dtype=dtype, device=device)
    kv = torch.randn(CU_K[-1], 2, hk, 64, dtype=dtype, device=device)
    args = (_cu(CU_Q, device), _cu(CU_K, device), 35, 37)
    out = ioattn.flash_attn_varlen_kvpacked_func(q, kv, *args, causal=True)
    k, v = kv.unbind(1)
    _same(out, ioattn.flash_attn_varlen_func(q, k, v, *args, causal=True), device)


@pytest.mark.parametrize("device", DEVICES)
def test_varlen_equal_lengths_equals_dense(device: str) -> None:
    torch.manual_seed(case_seed("varlen_dense"))
    b, sq, sk = 3, 21, 34
    q = torch.randn(b, sq, 4, 64, dtype=torch.bfloat16, device=device)
    k = torch.randn(b, sk, 2, 64, dtype=torch.bfloat16, device=device)
    v = torch.randn(b, sk, 2, 64, dtype=torch.bfloat16, device=device)
    dense, lse = ioattn.flash_attn_func(q, k, v, causal=True, return_attn_probs=True)[:2]
    cu_q = torch.arange(0, (b + 1) * sq, sq, dtype=torch.int32, device=device)
    cu_k = torch.arange(0, (b + 1) * sk, sk, dtype=torch.int32, device=device)
    var, var_lse = ioattn.flash_attn_varlen_func(
        q.flatten(0, 1),
        k.flatten(0, 1),
        v.flatten(0, 1),
        cu_q,
        cu_k,
        sq,
        sk,
        causal=True,
        return_attn_probs=True,
    )[:2]
    torch.testing.assert_close(var.view(b, sq, 4, 64), dense)
    torch.testing.assert_close(var_lse.view(4, b, sq).transpose(0, 1), lse)


def _calls(device: str) -> list[tuple[str, Callable[..., Any], tuple[Any, ...], tuple[int, ...]]]:
    b, s, h, d = 2, 9, 4, 32
    dt = torch.float16
    q = torch.randn(b, s, h, d, dtype=dt, device=device)
    kv = torch.randn(b, s, 2, h, d, dtype=dt, device=device)
    qkv = torch.randn(b, s, 3, h, d, dtype=dt, device=device)
    cu = torch.tensor([0, 4, 9], dtype=torch.int32, device=device)
    return [
        ("func", ioattn.flash_attn_func, (q, q, q), (b, h, s)),
        ("qkvpacked", ioattn.flash_attn_qkvpacked_func, (qkv,), (b, h, s)),
        ("kvpacked", ioattn.flash_attn_kvpacked_func, (q, kv), (b, h, s)),
        ("varlen", ioattn.flash_attn_varlen_func, (q[0], q[0], q[0], cu, cu, 5, 5), (h, s)),
        ("varlen_qkvpacked", ioattn.flash_attn_varlen_qkvpacked_func, (qkv[0], cu, 5), (h, s)),
        (
            "varlen_kvpacked",
            ioattn.flash_attn_varlen_kvpacked_func,
            (q[0], kv[0], cu, cu, 5, 5),
            (h, s),
        ),
    ]


@pytest.mark.parametrize("index", range(6))
@pytest.mark.parametrize("device", DEVICES)
def test_return_attn_probs(device: str, index: int) -> None:
    torch.manual_seed(case_seed("probs", index))
    name, fn, args, lse_shape = _calls(device)[index]
    out = fn(*args)
    assert isinstance(out, torch.Tensor), name
    result = fn(*args, return_attn_probs=True)
    assert isinstance(result, tuple) and len(result) == 3, name
    out2, lse, probs = result
    assert torch.equal(out, out2)
    assert lse.shape == lse_shape and lse.dtype == torch.float32 and probs is None


@pytest.mark.parametrize("head_dim", [1, 8, 40, 59, 111, 250])
def test_padded_head_dim_matches_oracle(head_dim: int) -> None:
    """Head dims that are not a multiple of 8 are padded internally and sliced back; the
    default scale uses the caller's head_dim."""
    torch.manual_seed(case_seed("pad", head_dim))
    q = torch.randn(2, 19, 3, head_dim, dtype=torch.bfloat16)
    k = torch.randn(2, 23, 3, head_dim, dtype=torch.bfloat16)
    v = torch.randn(2, 23, 3, head_dim, dtype=torch.bfloat16)
    out, lse, _ = ioattn.flash_attn_func(q, k, v, causal=True, return_attn_probs=True)
    assert out.shape == q.shape
    ref, ref_lse = reference.attention_naive(q, k, v, causal=True)
    torch.testing.assert_close(out, ref.to(out.dtype))
    torch.testing.assert_close(lse, ref_lse)


def test_caller_tensors_not_modified_by_padding() -> None:
    q = torch.randn(1, 5, 2, 59, dtype=torch.float16)
    before = q.clone()
    version = q._version
    ioattn.flash_attn_func(q, q, q)
    assert q._version == version and torch.equal(q, before)


@pytest.mark.parametrize("sq,sk", list(itertools.product(range(6), range(6))))
def test_effective_window_is_exact(sq: int, sk: int) -> None:
    """Rewriting a window bound to -1 never changes which keys a row sees."""
    for left, right, causal in itertools.product(range(-1, 8), range(-1, 8), (False, True)):
        asked = reference.visible_mask(sq, sk, *reference.normalize_window(causal, (left, right)))
        used = reference.visible_mask(
            sq, sk, *_validate.effective_window(causal, (left, right), sq, sk)
        )
        assert torch.equal(asked, used), (sq, sk, left, right, causal)


def test_effective_window_rewrites() -> None:
    assert _validate.effective_window(False, (200, 300), 100, 200) == (-1, -1)
    assert _validate.effective_window(True, (5, 7), 100, 200) == (5, 0)
    assert _validate.effective_window(True, (-1, -1), 1, 50) == (-1, -1)  # decode: causal is moot
    # right bound 50 >= seqlen_k but < seqlen_q - 1 still masks rows: kept
    assert _validate.effective_window(False, (-1, 50), 100, 20) == (-1, 50)


@pytest.mark.parametrize("device", DEVICES)
def test_large_window_equals_unbounded(device: str) -> None:
    torch.manual_seed(case_seed("large_window"))
    q = torch.randn(2, 33, 2, 64, dtype=torch.float16, device=device)
    k = torch.randn(2, 47, 2, 64, dtype=torch.float16, device=device)
    full = ioattn.flash_attn_func(q, k, k)
    assert torch.equal(ioattn.flash_attn_func(q, k, k, window_size=(47, 33)), full)
    causal = ioattn.flash_attn_func(q, k, k, causal=True)
    assert torch.equal(ioattn.flash_attn_func(q, k, k, window_size=(1000, 0)), causal)
