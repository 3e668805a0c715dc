"""The PyTorch reference: tiled online softmax vs the full-matrix oracle (CPU)."""

from __future__ import annotations

import math

import pytest
import torch

from ioattn import reference
from ioattn.testing import attention_ref, case_seed

SEQLENS = [(0, 5), (5, 0), (1, 1), (1, 7), (7, 1), (17, 33), (33, 17), (129, 300), (300, 129)]
MASKS = {
    "none": (False, (-1, -1)),
    "causal": (False, (-1, 0)),
    "causal_flag": (True, (-1, -1)),
    "window": (False, (5, 3)),
    "window_diag": (False, (0, 0)),
    "left_only": (False, (20, -1)),
    "right_only": (False, (-1, 2)),
    "causal_window": (True, (7, -1)),
}
HEADS = {"mha": (6, 6), "gqa": (6, 2), "mqa": (6, 1)}


def _qkv(
    b: int, sq: int, sk: int, h: int, hk: int, d: int, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    q = torch.randn(b, sq, h, d, dtype=dtype)
    k = torch.randn(b, sk, hk, d, dtype=dtype)
    v = torch.randn(b, sk, hk, d, dtype=dtype)
    return q, k, v


def _assert_same(
    out: torch.Tensor, lse: torch.Tensor, out2: torch.Tensor, lse2: torch.Tensor, atol: float = 2e-5
) -> None:
    assert not torch.isnan(out).any() and not torch.isnan(lse).any()
    assert torch.equal(torch.isinf(lse), torch.isinf(lse2)), "fully masked rows differ"
    torch.testing.assert_close(out.float(), out2.float(), atol=atol, rtol=1e-5)
    finite = torch.isfinite(lse2)
    torch.testing.assert_close(lse[finite], lse2[finite], atol=atol, rtol=1e-5)


@pytest.mark.parametrize("heads", list(HEADS))
@pytest.mark.parametrize("mask", list(MASKS))
@pytest.mark.parametrize("seqlens", SEQLENS, ids=lambda s: f"{s[0]}x{s[1]}")
def test_tiled_matches_naive(seqlens: tuple[int, int], mask: str, heads: str) -> None:
    torch.manual_seed(case_seed("tiled", seqlens, mask, heads))
    sq, sk = seqlens
    h, hk = HEADS[heads]
    causal, window = MASKS[mask]
    q, k, v = _qkv(2, sq, sk, h, hk, 16)
    out_n, lse_n = reference.attention_naive(q, k, v, causal=causal, window_size=window)
    out_t, lse_t = reference.attention_tiled(
        q, k, v, causal=causal, window_size=window, block_q=16, block_k=32
    )
    assert out_t.shape == q.shape and out_t.dtype == q.dtype
    assert lse_t.shape == (2, h, sq) and lse_t.dtype == torch.float32
    _assert_same(out_t, lse_t, out_n, lse_n)


@pytest.mark.parametrize("mask", ["none", "causal", "window"])
@pytest.mark.parametrize("seqlens", [(1, 1), (7, 1), (33, 17), (129, 300)], ids=str)
def test_naive_matches_attention_ref(seqlens: tuple[int, int], mask: str) -> None:
    """Two independently written fp32 references agree (oracle sanity)."""
    torch.manual_seed(case_seed("ref", seqlens, mask))
    causal, window = MASKS[mask]
    q, k, v = _qkv(3, *seqlens, 4, 2, 24)
    out_n, lse_n = reference.attention_naive(q, k, v, causal=causal, window_size=window)
    out_r, lse_r = attention_ref(q, k, v, causal=causal, window_size=window)
    _assert_same(out_n, lse_n, out_r, lse_r)


@pytest.mark.parametrize("softcap", [0.0, 5.0, 30.0])
@pytest.mark.parametrize("seqlens", [(17, 33), (129, 129)], ids=str)
def test_softcap(seqlens: tuple[int, int], softcap: float) -> None:
    torch.manual_seed(case_seed("softcap", seqlens, softcap))
    q, k, v = _qkv(2, *seqlens, 4, 4, 32)
    q = q * 4  # logits in the tanh region
    out_n, lse_n = reference.attention_naive(q, k, v, softcap=softcap, causal=True)
    out_t, lse_t = reference.attention_tiled(q, k, v, softcap=softcap, causal=True, block_k=16)
    out_r, lse_r = attention_ref(q, k, v, softcap=softcap, causal=True)
    _assert_same(out_t, lse_t, out_n, lse_n)
    _assert_same(out_n, lse_n, out_r, lse_r)
    if softcap > 0:
        plain, _ = reference.attention_naive(q, k, v, causal=True)
        assert not torch.allclose(plain, out_n, atol=1e-3), "softcap had no effect"


def test_explicit_small_example() -> None:
    """Bottom-right causal on a hand-checkable case: sq=2, sk=3, scale 1."""
    q = torch.tensor([[[[1.0]], [[2.0]]]])  # (1, 2, 1, 1)
    k = torch.tensor([[[[1.0]], [[0.0]], [[-1.0]]]])  # (1, 3, 1, 1)
    v = torch.tensor([[[[10.0]], [[20.0]], [[30.0]]]])
    for fn in (reference.attention_naive, reference.attention_tiled):
        out, lse = fn(q, k, v, causal=True, softmax_scale=1.0)
        # row 0 sees keys 0, 1 (scores 1, 0); row 1 sees keys 0..2 (scores 2, 0, -2)
        w0 = torch.softmax(torch.tensor([1.0, 0.0]), 0)
        w1 = torch.softmax(torch.tensor([2.0, 0.0, -2.0]), 0)
        expect = torch.stack(
            [w0 @ torch.tensor([10.0, 20.0]), w1 @ torch.tensor([10.0, 20.0, 30.0])]
        )
        torch.testing.assert_close(out.view(2), expect)
        torch.testing.assert_close(
            lse.view(2),
            torch.tensor([math.log(math.e + 1), math.log(math.e**2 + 1 + math.e**-2)]),
        )


def test_default_scale() -> None:
    torch.manual_seed(0)
    q, k, v = _qkv(1, 5, 7, 2, 2, 40)
    out_default, _ = reference.attention_tiled(q, k, v)
    out_explicit, _ = reference.attention_tiled(q, k, v, softmax_scale=1 / math.sqrt(40))
    out_other, _ = reference.attention_tiled(q, k, v, softmax_scale=0.5)
    torch.testing.assert_close(out_default, out_explicit)
    assert not torch.allclose(out_default, out_other)


@pytest.mark.parametrize(
    "case",
    [
        ("causal_sq_gt_sk", 10, 4, True, (-1, -1)),
        ("window_diag_sq_gt_sk", 12, 3, False, (0, 0)),
        ("right_bound_sq_gt_sk", 10, 4, False, (-1, 1)),
    ],
    ids=lambda c: c[0],
)
@pytest.mark.parametrize("fn", ["naive", "tiled"])
def test_fully_masked_rows(case: tuple, fn: str) -> None:
    name, sq, sk, causal, window = case
    torch.manual_seed(case_seed("masked", name))
    q, k, v = _qkv(2, sq, sk, 3, 3, 8)
    run = reference.attention_naive if fn == "naive" else reference.attention_tiled
    out, lse = run(q, k, v, causal=causal, window_size=window)
    mask = reference.visible_mask(sq, sk, *reference.normalize_window(causal, window))
    dead = ~mask.any(dim=1)
    assert dead.any(), "test case has no fully masked row"
    assert not torch.isnan(out).any() and not torch.isnan(lse).any()
    assert torch.equal(out[:, dead], torch.zeros_like(out[:, dead]))
    assert torch.isneginf(lse[:, :, dead]).all()
    assert torch.isfinite(lse[:, :, ~dead]).all()


def test_seqlen_k_zero_and_empty() -> None:
    q, k, v = _qkv(2, 5, 0, 2, 2, 8)
    for fn in (reference.attention_naive, reference.attention_tiled):
        out, lse = fn(q, k, v)
        assert torch.equal(out, torch.zeros_like(q)) and torch.isneginf(lse).all()
    q, k, v = _qkv(0, 5, 3, 2, 2, 8)
    out, lse = reference.attention_tiled(q, k, v)
    assert out.shape == (0, 5, 2, 8) and lse.shape == (0, 2, 5)


def _per_sequence(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_q: list[int],
    cu_k: list[int],
    causal: bool,
    window: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor]:
    outs, lses = [], []
    for i in range(len(cu_q) - 1):
        qi = q[None, cu_q[i] : cu_q[i + 1]]
        ki, vi = k[None, cu_k[i] : cu_k[i + 1]], v[None, cu_k[i] : cu_k[i + 1]]
        o, l_ = reference.attention_naive(qi, ki, vi, causal=causal, window_size=window)
        outs.append(o[0])
        lses.append(l_[0])
    return torch.cat(outs), torch.cat(lses, dim=1)


VARLEN = {
    "plain": ([0, 5, 12, 40], [0, 7, 7, 30]),
    "zero_q": ([0, 0, 9, 9, 20], [0, 4, 10, 31, 31]),
    "all_zero_k": ([0, 3, 5], [0, 0, 0]),
    "single": ([0, 17], [0, 33]),
}


@pytest.mark.parametrize("mask", ["none", "causal", "window"])
@pytest.mark.parametrize("cu", list(VARLEN))
@pytest.mark.parametrize("fn", ["naive", "tiled"])
def test_varlen_matches_per_sequence(fn: str, cu: str, mask: str) -> None:
    torch.manual_seed(case_seed("varlen", cu, mask))
    cu_q, cu_k = VARLEN[cu]
    causal, window = MASKS[mask]
    q = torch.randn(cu_q[-1], 4, 16)
    k = torch.randn(cu_k[-1], 2, 16)
    v = torch.randn(cu_k[-1], 2, 16)
    run = reference.attention_naive if fn == "naive" else reference.attention_tiled
    out, lse = run(
        q,
        k,
        v,
        torch.tensor(cu_q, dtype=torch.int32),
        torch.tensor(cu_k, dtype=torch.int32),
        causal=causal,
        window_size=window,
    )
    assert lse.shape == (4, cu_q[-1])
    out_ref, lse_ref = _per_sequence(q, k, v, cu_q, cu_k, causal, window)
    _assert_same(out, lse, out_ref, lse_ref)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_inputs(dtype: torch.dtype) -> None:
    """Half inputs: tiled computes in fp32 and rounds once; it matches the oracle to ~1 ulp."""
    torch.manual_seed(case_seed("dtype", str(dtype)))
    q, k, v = _qkv(2, 65, 130, 4, 2, 32, dtype)
    out_t, lse_t = reference.attention_tiled(q, k, v, causal=True, block_k=32)
    out_n, lse_n = reference.attention_naive(q, k, v, causal=True)
    assert out_t.dtype == dtype
    # one rounding of a value the two fp32 paths agree on to ~1e-6: at most ~1 ulp apart
    torch.testing.assert_close(out_t, out_n.to(dtype), atol=1e-5, rtol=2**-7)
    torch.testing.assert_close(lse_t, lse_n, atol=1e-5, rtol=1e-5)


def test_tiled_never_builds_full_matrix(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every score tile the tiled path builds is at most block_q x block_k."""
    shapes: list[tuple[int, ...]] = []
    real = reference._scores

    def spy(qf: torch.Tensor, kf: torch.Tensor, scale: float, softcap: float) -> torch.Tensor:
        s = real(qf, kf, scale, softcap)
        shapes.append(tuple(s.shape))
        return s

    monkeypatch.setattr(reference, "_scores", spy)
    q, k, v = _qkv(1, 200, 300, 2, 2, 8)
    reference.attention_tiled(q, k, v, block_q=64, block_k=50)
    assert shapes and all(s[-2] <= 64 and s[-1] <= 50 for s in shapes), shapes


def test_window_skips_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """A narrow window visits only the key blocks it can see (O(window) work per block)."""
    calls: list[int] = []
    real = reference._scores

    def spy(qf: torch.Tensor, kf: torch.Tensor, scale: float, softcap: float) -> torch.Tensor:
        calls.append(kf.shape[-2])
        return real(qf, kf, scale, softcap)

    monkeypatch.setattr(reference, "_scores", spy)
    q, k, v = _qkv(1, 512, 512, 1, 1, 8)
    reference.attention_tiled(q, k, v, window_size=(4, 0), block_q=64, block_k=64)
    # 8 query blocks; each sees at most 2 key blocks of 64 (its diagonal and the one before)
    assert len(calls) <= 16, calls
