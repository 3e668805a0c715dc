"""Forward on the GPU vs the fp32 reference, by the FA rule (error <= 2x PyTorch's + slack).

The matrix is split by feature axis so the whole file runs in well under a minute on an
H100: a full cross product only on the cheap axes (dtype x causal), one test per other
axis (seqlens, head dims, windows, softcap, GQA/MQA) and a short list of combinations.
"""

from __future__ import annotations

import math

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
# last third scores 12x (one jump, long after the first blocks fixed the max), or 64x (a jump
# of more than 128 in log2 units for many rows: exponentials taken against the running max
# before the jump overflow to +inf, which the SM90 stale-max path must catch).
KEY_GAINS = {
    "rising": lambda n: 1.0 + 7.0 * torch.arange(n, dtype=torch.float32) / max(n - 1, 1),
    "spike": lambda n: torch.ones(n).index_fill_(0, torch.tensor([2 * n // 3]), 12.0),
    "surge": lambda n: torch.ones(n).index_fill_(0, torch.tensor([2 * n // 3]), 64.0),
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
@pytest.mark.parametrize("head_dim", [64, 128, 192, 256])
@pytest.mark.parametrize("key_gain", list(KEY_GAINS))
@pytest.mark.parametrize("seqlen_q", [256, 339, 700])
def test_fwd_moving_max(
    seqlen_q: int, key_gain: str, head_dim: int, dtype: torch.dtype, causal: bool
) -> None:
    """Row maxima that move by large steps across key blocks (the running max and its
    rescaling of O, which a kernel may defer while the max moves little, and the SM90
    stale-max path, which exponentiates before it knows the block's max, for both rows of a
    thread at once or a row at a time). At hd64 seqlen_q 256 takes 128-row SM90 tiles, 339
    192-row ones without a mask, and 700 192-row ones under a causal mask too."""
    run_case(seqlen_q, 1023, head_dim, dtype, causal=causal, key_gain=key_gain)


@pytest.mark.parametrize(("group", "seqlen_q"), [(6, 21), (5, 76)])
@pytest.mark.parametrize("head_dim", [64, 128])
def test_fwd_does_not_depend_on_what_ran_before(head_dim: int, group: int, seqlen_q: int) -> None:
    """Bitwise the same result whatever ran on the GPU before. A GQA-packed tile of `group`
    query heads leaves the last rows of its Q buffer unloaded (6 heads x 21 positions: 126 of
    128 rows; at hd64, 5 x 38 of the 192-row tiles, which 76 positions take). Those rows keep
    what the previous kernel left there, and, never stored, must not steer the stored ones
    beside them: the SM90 stale-max path votes per warp on whether a key block's exponentials
    stand, and the exact path it falls back to rounds differently."""
    dtype = torch.bfloat16
    reason = kernel_skip_reason(dtype, head_dim)
    if reason:
        pytest.skip(reason)
    torch.manual_seed(case_seed("deterministic-after", head_dim))
    # Scores 0 but at key 700, which scores 10 in log2 units: the stale max (0, from the first
    # key block) takes it (p = 2^10, within the stale path's bound), the exact max moves to it.
    q = torch.zeros(16, seqlen_q, group, head_dim, device="cuda", dtype=dtype)
    q[..., 0] = 1.0
    k = torch.zeros(16, 1023, 1, head_dim, device="cuda", dtype=dtype)
    k[:, 700, :, 0] = 10.0 / (head_dim**-0.5 * math.log2(math.e))
    v = torch.randn(16, 1023, 1, head_dim, device="cuda", dtype=dtype)
    # Leaves its Q tiles, scaled by `gain`, where the packed tiles' unloaded rows are: at 30
    # their scores at key 700 overflow (where positive), at 0 they stay 0.
    other = torch.randn(16, 1023, group, head_dim, device="cuda", dtype=dtype)
    results = []
    for gain in (0.0, 30.0):
        ioattn.flash_attn_func(other * gain, other, other)
        results.append(ioattn.flash_attn_func(q, k, v, return_attn_probs=True)[:2])
    assert torch.equal(results[0][0], results[1][0])
    assert torch.equal(results[0][1], results[1][1])


@pytest.mark.parametrize("seqlen", [512, 1536])
@pytest.mark.parametrize("head_dim", [64, 128, 256])
def test_fwd_far_negative_scores(head_dim: int, seqlen: int) -> None:
    """Every score far below 0 (about -16 sqrt(head_dim) in natural units, below -126 in log2
    units) under a sliding window whose rows see nothing in their tile's first key block: rows
    whose max is still -inf when their first keys arrive must find them, though exponentials
    of those scores against 0 underflow (the SM90 stale-max path). seqlen 512 and 1536 take
    hd64's 128- and 192-row tiles; 1536 has too many query blocks for mirrored pairs at hd128,
    so every tile walks its keys first to last."""
    dtype = torch.bfloat16
    reason = kernel_skip_reason(dtype, head_dim)
    if reason:
        pytest.skip(reason)
    torch.manual_seed(case_seed("far-negative", head_dim, seqlen))
    shape = (1, seqlen, 2, head_dim)
    q = (4.0 + 0.1 * torch.randn(shape, device="cuda")).to(dtype)
    k = (-4.0 + 0.1 * torch.randn(shape, device="cuda")).to(dtype)
    v = torch.randn(shape, device="cuda", dtype=dtype)
    window = (16, 0)
    out, lse, _ = ioattn.flash_attn_func(q, k, v, window_size=window, return_attn_probs=True)
    assert torch.isfinite(lse).all()
    out_ref, lse_ref, out_pt, lse_pt = reference_pair(q, k, v, window_size=window)
    check_fa_rule("out", out, out_ref, out_pt)
    check_fa_rule("lse", lse, lse_ref, lse_pt, atol=1e-3)


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
