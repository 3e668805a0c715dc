"""Forward on the GPU vs the fp32 reference, by the FA rule (error <= 2x PyTorch's + slack).

The matrix is split by feature axis so the whole file runs in well under a minute on an
H100: a full cross product only on the cheap axes (dtype x causal), one test per other
axis (seqlens, head dims, windows, softcap, GQA/MQA) and a short list of combinations.
"""

from __future__ import annotations

import pytest
import torch

import ioattn
from ioattn.testing import case_seed, check_fa_rule, kernel_skip_reason, reference_pair

# Every test runs once per kernel library (conftest.fwd_library).
pytestmark = [pytest.mark.gpu, pytest.mark.usefixtures("fwd_library")]

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
    (2049, 2049),
]
HEAD_DIMS = [40, 59, 64, 80, 96, 128, 192, 256]
WINDOWS = [(0, 0), (16, 0), (-1, 16), (64, 64), (3, -1), (255, 17)]
HEADS = {"mha": (6, 6), "gqa": (6, 2), "mqa": (6, 1)}
# Per-key gains: scores grow 8x along the keys (the max keeps moving), or one key in the
# last third scores 12x (one jump, long after the first blocks fixed the max).
KEY_GAINS = {
    "rising": lambda n: 1.0 + 7.0 * torch.arange(n, dtype=torch.float32) / max(n - 1, 1),
    "spike": lambda n: torch.ones(n).index_fill_(0, torch.tensor([2 * n // 3]), 12.0),
}


def _ids(value: object) -> str:
    if isinstance(value, torch.dtype):
        return str(value).removeprefix("torch.")
    if isinstance(value, tuple):
        return "x".join(str(v) for v in value)
    return str(value)


def run_case(
    seqlen_q: int,
    seqlen_k: int,
    head_dim: int,
    dtype: torch.dtype,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    heads: tuple[int, int] = (6, 6),
    softmax_scale: float | None = None,
    batch: int | None = None,
    key_gain: str | None = None,
) -> None:
    """One forward vs the reference pair; checks out and lse by the FA rule.

    key_gain scales the keys along the sequence (KEY_GAINS), so that a row's running max moves
    by large steps from one key block to another.
    """
    reason = kernel_skip_reason(dtype, head_dim, softcap)
    if reason:
        pytest.skip(reason)
    seed = case_seed(seqlen_q, seqlen_k, head_dim, str(dtype), causal, window_size, softcap, heads)
    torch.manual_seed(seed)
    h, hk = heads
    if batch is None:
        batch = 9 if seqlen_q * seqlen_k <= 1024 * 1024 else 2
    device = "cuda"
    q = torch.randn(batch, seqlen_q, h, head_dim, device=device, dtype=dtype)
    if softcap > 0:
        q = q * (softcap / 4)  # logits reach the tanh region
    k = torch.randn(batch, seqlen_k, hk, head_dim, device=device, dtype=dtype)
    if key_gain is not None:
        k = k * KEY_GAINS[key_gain](seqlen_k).to(device, dtype)[None, :, None, None]
    v = torch.randn(batch, seqlen_k, hk, head_dim, device=device, dtype=dtype)
    out, lse, _ = ioattn.flash_attn_func(
        q,
        k,
        v,
        softmax_scale=softmax_scale,
        causal=causal,
        window_size=window_size,
        softcap=softcap,
        return_attn_probs=True,
    )
    out_ref, lse_ref, out_pt, lse_pt = reference_pair(
        q,
        k,
        v,
        causal=causal,
        window_size=window_size,
        softcap=softcap,
        softmax_scale=softmax_scale,
    )
    assert out.shape == q.shape and out.dtype == dtype
    assert lse.shape == (batch, h, seqlen_q) and lse.dtype == torch.float32
    rtol = 3.0 if softcap > 0 else 2.0
    check_fa_rule("out", out, out_ref, out_pt, rtol=rtol)
    check_fa_rule("lse", lse, lse_ref, lse_pt, rtol=rtol, atol=1e-4)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
@pytest.mark.parametrize("seqlens", SEQLENS, ids=_ids)
def test_fwd_seqlens(seqlens: tuple[int, int], dtype: torch.dtype, causal: bool) -> None:
    run_case(*seqlens, 128, dtype, causal=causal)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
@pytest.mark.parametrize("head_dim", HEAD_DIMS)
@pytest.mark.parametrize("seqlens", [(113, 339), (1023, 129)], ids=_ids)
def test_fwd_head_dims(
    seqlens: tuple[int, int], head_dim: int, dtype: torch.dtype, causal: bool
) -> None:
    run_case(*seqlens, head_dim, dtype, causal=causal)


@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
@pytest.mark.parametrize("window", WINDOWS, ids=_ids)
@pytest.mark.parametrize("seqlens", [(127, 129), (339, 1023), (1023, 339)], ids=_ids)
def test_fwd_window(
    seqlens: tuple[int, int], window: tuple[int, int], dtype: torch.dtype, head_dim: int
) -> None:
    run_case(*seqlens, head_dim, dtype, window_size=window)


@pytest.mark.parametrize("window", [(32, -1), (100, 0)], ids=_ids)
@pytest.mark.parametrize("seqlens", [(129, 1023), (1023, 129)], ids=_ids)
def test_fwd_causal_window(seqlens: tuple[int, int], window: tuple[int, int]) -> None:
    run_case(*seqlens, 128, torch.bfloat16, causal=True, window_size=window)


@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
@pytest.mark.parametrize("softcap", [15.0, 50.0])
@pytest.mark.parametrize("seqlens", [(339, 339), (113, 1023)], ids=_ids)
def test_fwd_softcap(
    seqlens: tuple[int, int], softcap: float, dtype: torch.dtype, causal: bool, head_dim: int
) -> None:
    run_case(*seqlens, head_dim, dtype, causal=causal, softcap=softcap)


@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
@pytest.mark.parametrize("mha_type", ["gqa", "mqa"])
@pytest.mark.parametrize("seqlens", [(113, 203), (1023, 1023), (1, 1023)], ids=_ids)
def test_fwd_gqa(
    seqlens: tuple[int, int], mha_type: str, dtype: torch.dtype, causal: bool, head_dim: int
) -> None:
    run_case(*seqlens, head_dim, dtype, causal=causal, heads=HEADS[mha_type])


# Hand-picked combinations of every axis (pairwise coverage of the interactions).
COMBOS = [
    # seqlen_q, seqlen_k, head_dim, dtype, causal, window, softcap, heads
    (113, 203, 59, torch.float16, True, (-1, -1), 15.0, (6, 2)),
    (339, 1023, 80, torch.bfloat16, False, (64, 64), 30.0, (6, 1)),
    (1023, 339, 192, torch.float16, True, (100, -1), 0.0, (6, 2)),
    (2049, 2049, 256, torch.bfloat16, True, (-1, -1), 0.0, (8, 1)),
    (17, 2049, 96, torch.bfloat16, False, (16, 0), 50.0, (6, 6)),
    (129, 127, 40, torch.float16, False, (0, 0), 0.0, (6, 3)),
    (1, 2049, 128, torch.float16, True, (255, -1), 15.0, (8, 2)),
    (2049, 17, 64, torch.bfloat16, True, (-1, -1), 0.0, (6, 1)),
]


@pytest.mark.parametrize("combo", COMBOS, ids=lambda c: "-".join(_ids(x) for x in c))
def test_fwd_combinations(combo: tuple) -> None:
    sq, sk, d, dtype, causal, window, softcap, heads = combo
    run_case(sq, sk, d, dtype, causal=causal, window_size=window, softcap=softcap, heads=heads)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
@pytest.mark.parametrize("head_dim", [64, 128, 256])
@pytest.mark.parametrize("key_gain", list(KEY_GAINS))
def test_fwd_moving_max(key_gain: str, head_dim: int, dtype: torch.dtype, causal: bool) -> None:
    """Row maxima that move by large steps across key blocks (the running max and its
    rescaling of O, which a kernel may defer while the max moves little)."""
    run_case(339, 1023, head_dim, dtype, causal=causal, key_gain=key_gain)


@pytest.mark.parametrize("scale", [0.05, 0.5])
def test_fwd_softmax_scale(scale: float) -> None:
    run_case(339, 339, 64, torch.bfloat16, causal=True, softmax_scale=scale)


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
def test_fwd_is_deterministic(dtype: torch.dtype) -> None:
    reason = kernel_skip_reason(dtype, 128)
    if reason:
        pytest.skip(reason)
    torch.manual_seed(case_seed("deterministic", str(dtype)))
    q = torch.randn(4, 1023, 6, 128, device="cuda", dtype=dtype)
    k = torch.randn(4, 1023, 2, 128, device="cuda", dtype=dtype)
    v = torch.randn(4, 1023, 2, 128, device="cuda", dtype=dtype)
    first = ioattn.flash_attn_func(q, k, v, causal=True, return_attn_probs=True)
    for _ in range(5):
        again = ioattn.flash_attn_func(q, k, v, causal=True, return_attn_probs=True)
        assert torch.equal(again[0], first[0]) and torch.equal(again[1], first[1])
