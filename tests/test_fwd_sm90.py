"""The sm90 (FlashAttention-3-style) forward against the sm80 one on random shapes.

Every other forward test runs once per library (conftest.fwd_library); this one draws random
problems (sizes, head dims, masks, softcap, GQA, dense or varlen) and requires the sm90 result
to be as accurate as the sm80 one: error vs the fp32 reference <= 2x the sm80 library's error
plus slack (the FA rule, with the sm80 kernel as the baseline). LSE likewise. The same check
runs on chosen cases: around the switch to the long-query kernels (and on which of its two
tile heights hd64 without a mask takes, checked by kernel name), on tiles whose warpgroups
skip key blocks, on end-aligned query tiles, on GQA-packed tiles, on the tail of the persistent
schedule. A last test makes every CTA of the persistent grid loop over many units of work
(paired tiles under a window mask, an odd number of query blocks) and checks that each query
row was computed.
"""

from __future__ import annotations

import random

import pytest
import torch

import ioattn
from conftest import sm90_skip_reason
from ioattn import _backend
from ioattn.testing import attention_ref, case_seed, check_fa_rule, kernel_skip_reason

pytestmark = pytest.mark.gpu

CASES = 40


def _draw(index: int) -> dict[str, object]:
    rng = random.Random(case_seed("sm90-diff", index))
    hk = rng.choice([1, 2, 4])
    window = rng.choice([(-1, -1), (-1, 0), (-1, 0), (rng.randint(0, 300), rng.randint(0, 300))])
    return {
        "batch": rng.randint(1, 4),
        "seqlen_q": rng.choice([1, 17, 64, 113, 128, 129, rng.randint(1, 1500)]),
        "seqlen_k": rng.choice([1, 17, 128, 177, 339, rng.randint(1, 1500)]),
        "heads": (hk * rng.choice([1, 2, 3]), hk),
        "head_dim": rng.choice([8, 40, 64, 72, 96, 128, 160, 192, 256]),
        "dtype": rng.choice([torch.float16, torch.bfloat16]),
        "window": window,
        "softcap": rng.choice([0.0, 0.0, 0.0, 15.0]),
        "varlen": rng.random() < 0.3,
    }


def _run(library: str, monkeypatch: pytest.MonkeyPatch, case: dict, q, k, v, cu_q, cu_k):
    monkeypatch.setenv(_backend.BACKEND_ENV, library)
    _backend.clear_cache()
    kw = {"window_size": case["window"], "softcap": case["softcap"], "return_attn_probs": True}
    if case["varlen"]:
        out, lse, _ = ioattn.flash_attn_varlen_func(
            q, k, v, cu_q, cu_k, case["seqlen_q"], case["seqlen_k"], **kw
        )
    else:
        out, lse, _ = ioattn.flash_attn_func(q, k, v, **kw)
    return out, lse


@pytest.mark.parametrize("index", range(CASES))
def test_sm90_matches_sm80(index: int, monkeypatch: pytest.MonkeyPatch) -> None:
    _check_against_sm80(_draw(index), case_seed("sm90-diff-data", index), monkeypatch)


def _case(
    *,
    head_dim: int,
    seqlen_q: int,
    seqlen_k: int | None = None,
    heads: tuple[int, int],
    window: tuple[int, int],
    batch: int,
    softcap: float = 0.0,
    varlen: bool = False,
) -> dict[str, object]:
    """A chosen bf16 case for _check_against_sm80 (the random ones come from _draw); seqlen_k
    defaults to seqlen_q."""
    return {
        "batch": batch, "seqlen_q": seqlen_q,
        "seqlen_k": seqlen_q if seqlen_k is None else seqlen_k, "heads": heads,
        "head_dim": head_dim, "dtype": torch.bfloat16, "window": window, "softcap": softcap,
        "varlen": varlen,
    }  # fmt: skip


# A second kernel for long query sequences (sm90/tile_config.h, fwd_long_min_seqlen_q): hd64 with
# a window mask from seqlen_q 640 on (192-row tiles); hd64 without a mask chooses by padded rows
# (TILE_HEIGHT_CASES). hd128 and hd256 have one kernel per mask, which these cases check on long
# sequences. Both sides of the switch, seqlen_q above and below seqlen_k (fully masked top rows
# under causal masks), a local window, softcap, GQA, varlen with an empty sequence.
LONG_Q_CASES = {
    "639-causal": (639, 639, (-1, 0), 0.0, False),
    "640x700-causal": (640, 700, (-1, 0), 0.0, False),
    "2047-causal": (2047, 2047, (-1, 0), 0.0, False),
    "2048-causal": (2048, 2048, (-1, 0), 0.0, False),
    "2048x1800-causal": (2048, 1800, (-1, 0), 0.0, False),
    "3001x2600-local": (3001, 2600, (300, 40), 0.0, False),
    "2500x3100-causal-softcap": (2500, 3100, (-1, 0), 15.0, False),
    "2500-causal-varlen": (2500, 2500, (-1, 0), 0.0, True),
    "2047x1000-full": (2047, 1000, (-1, -1), 0.0, False),
    "2048x2100-full": (2048, 2100, (-1, -1), 0.0, False),
    "2300-full-softcap": (2300, 2300, (-1, -1), 15.0, False),
    "2500-full-varlen": (2500, 2500, (-1, -1), 0.0, True),
}


@pytest.mark.parametrize("head_dim", [64, 128, 256])
@pytest.mark.parametrize("name", LONG_Q_CASES)
def test_sm90_long_query_kernel(name: str, head_dim: int, monkeypatch: pytest.MonkeyPatch) -> None:
    sq, sk, window, softcap, varlen = LONG_Q_CASES[name]
    case = _case(
        head_dim=head_dim,
        seqlen_q=sq,
        seqlen_k=sk,
        heads=(4, 2),
        window=window,
        batch=3 if varlen else 1,
        softcap=softcap,
        varlen=varlen,
    )
    _check_against_sm80(case, case_seed("sm90-long-q", name, head_dim), monkeypatch)


# hd64 without a mask: 192-row tiles (the long_q kernel, three consumers) unless 128-row ones
# (the default, two) pad more than 15% fewer query rows (sm90/tile_config.h,
# fwd_default_tiles_pay). Both sides of each flip of ceil(s / 128) x 128 against
# ceil(s / 192) x 192; GQA-packed calls, where the rows are those of a packed tile (one query
# against 8 query heads per K/V head: 128 rows against 192; 96 queries against 4: 3 x 128
# against 2 x 192); softcap; varlen, whose longest sequence decides. name: (case, 192-row
# kernel expected).
_HD64_FULL = {"head_dim": 64, "window": (-1, -1)}
TILE_HEIGHT_CASES = {
    "128": (_case(**_HD64_FULL, batch=2, seqlen_q=128, heads=(2, 2)), False),
    "160": (_case(**_HD64_FULL, batch=2, seqlen_q=160, heads=(2, 2)), True),
    "193x300": (_case(**_HD64_FULL, batch=2, seqlen_q=193, seqlen_k=300, heads=(2, 2)), False),
    "256-softcap": (_case(**_HD64_FULL, batch=2, seqlen_q=256, heads=(2, 2), softcap=15.0), False),
    "257": (_case(**_HD64_FULL, batch=2, seqlen_q=257, heads=(2, 2)), True),
    "640": (_case(**_HD64_FULL, batch=1, seqlen_q=640, heads=(2, 2)), False),
    "641": (_case(**_HD64_FULL, batch=1, seqlen_q=641, heads=(2, 2)), True),
    "200-varlen": (_case(**_HD64_FULL, batch=3, seqlen_q=200, heads=(2, 2), varlen=True), False),
    "300-varlen": (_case(**_HD64_FULL, batch=3, seqlen_q=300, heads=(2, 2), varlen=True), True),
    "1x700-group8": (_case(**_HD64_FULL, batch=2, seqlen_q=1, seqlen_k=700, heads=(16, 2)), False),
    "96-group4": (_case(**_HD64_FULL, batch=2, seqlen_q=96, heads=(8, 2)), True),
}


def _sm90_kernel_names(case: dict, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The sm90 forward kernels that one call of the case launches (profiler, CUDA activity)."""
    monkeypatch.setenv(_backend.BACKEND_ENV, "sm90")
    _backend.clear_cache()
    b, sq, sk, d = case["batch"], case["seqlen_q"], case["seqlen_k"], case["head_dim"]
    h, hk = case["heads"]
    kw = {"window_size": case["window"], "softcap": case["softcap"]}
    if case["varlen"]:  # the longest sequence at the maximum, one empty: b - 1 x seqlen_q + 1
        lens = [sq, 0, *[1] * (b - 2)]
        cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], device="cuda").int()
        q = torch.randn(sum(lens), h, d, device="cuda", dtype=case["dtype"])
        k = torch.randn(sum(lens), hk, d, device="cuda", dtype=case["dtype"])

        def call() -> None:
            ioattn.flash_attn_varlen_func(q, k, k, cu, cu, sq, sq, **kw)
    else:
        q = torch.randn(b, sq, h, d, device="cuda", dtype=case["dtype"])
        k = torch.randn(b, sk, hk, d, device="cuda", dtype=case["dtype"])

        def call() -> None:
            ioattn.flash_attn_func(q, k, k, **kw)

    call()  # loads the library and the kernel outside the profile
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        call()
        torch.zeros(1, device="cuda").add_(1)  # a kernel the profiler must see in any case
        torch.cuda.synchronize()
    names = [e.name for e in prof.events()]
    if not names:
        pytest.skip("the profiler recorded no CUDA kernel here (CUPTI unavailable)")
    return [n for n in names if n.startswith("ioattn_sm90_fwd_")]


@pytest.mark.parametrize("name", TILE_HEIGHT_CASES)
def test_sm90_hd64_tile_height(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    case, long_expected = TILE_HEIGHT_CASES[name]
    _check_against_sm80(case, case_seed("sm90-tile-height", name), monkeypatch)
    kernels = _sm90_kernel_names(case, monkeypatch)
    assert len(kernels) == 1, kernels
    assert kernels[0].endswith("_long") == long_expected, kernels


def test_sm90_hd64_tile_height_needs_the_shared_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """A call the rule gives to the 128-row tiles stays on the 192-row ones where the device's
    shared memory per block (lowered by IOATTN_MAX_SMEM_PER_BLOCK) holds the 192-row kernel
    (91 KB) but not the 128-row one (115 KB)."""
    monkeypatch.setenv("IOATTN_MAX_SMEM_PER_BLOCK", str(100 * 1024))
    case, long_expected = TILE_HEIGHT_CASES["256-softcap"]
    assert not long_expected
    _check_against_sm80(case, case_seed("sm90-tile-height-smem"), monkeypatch)
    kernels = _sm90_kernel_names(case, monkeypatch)
    assert len(kernels) == 1 and kernels[0].endswith("_long"), kernels


# Tiles whose key blocks do not line up with their rows (hd64 192 x 128 from seqlen_q 640,
# hd192 128 x 112, hd256 128 x 64): a consumer warpgroup skips
# the key blocks its own 64 rows do not see (MainloopFwd::warpgroup_blocks). Trailing blocks
# under causal masks, with seqlen_q above and below seqlen_k; leading ones under a left window
# edge; a last tile whose third warpgroup lies past the sequence; rows that see no key at all
# (seqlen_q > seqlen_k, causal).
SKIP_CASES = {
    "hd64-2176x2048-causal": _case(
        head_dim=64, batch=2, seqlen_q=2176, seqlen_k=2048, heads=(4, 2), window=(-1, 0)
    ),
    "hd64-2100x2500-causal": _case(
        head_dim=64, batch=2, seqlen_q=2100, seqlen_k=2500, heads=(4, 2), window=(-1, 0)
    ),
    "hd64-2400-local": _case(head_dim=64, batch=2, seqlen_q=2400, heads=(4, 2), window=(150, 0)),
    "hd192-700x650-causal": _case(
        head_dim=192, batch=2, seqlen_q=700, seqlen_k=650, heads=(4, 2), window=(-1, 0)
    ),
    "hd256-640-causal": _case(head_dim=256, batch=2, seqlen_q=640, heads=(4, 2), window=(-1, 0)),
    "hd256-900x500-causal": _case(
        head_dim=256, batch=2, seqlen_q=900, seqlen_k=500, heads=(4, 2), window=(-1, 0)
    ),
    "hd256-777-local": _case(head_dim=256, batch=2, seqlen_q=777, heads=(4, 2), window=(100, 30)),
}


@pytest.mark.parametrize("name", SKIP_CASES)
def test_sm90_warpgroup_skips_unseen_blocks(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _check_against_sm80(SKIP_CASES[name], case_seed("sm90-skip", name), monkeypatch)


# Where warpgroups skip the key blocks their rows do not see (the SKIP_CASES kernels), query
# tiles are aligned to the end of the sequence (FwdKernel::Work::first_row): a ragged first tile
# starts before row 0. Its rows before 0 must be neither stored nor counted; with seqlen_q >
# seqlen_k under a causal mask the first tile's rows see no key (O = 0, LSE = -inf, the
# zero-store path) or only some of them do; with seqlen_q < seqlen_k the rows before 0 would
# see keys; varlen sequences each have their own offset, and a row before 0 there is the
# previous sequence's last row.
END_ALIGNED_CASES = {
    "hd64-2100x1500-causal": _case(
        head_dim=64, batch=2, seqlen_q=2100, seqlen_k=1500, heads=(4, 2), window=(-1, 0)
    ),
    "hd64-2150x2100-causal": _case(
        head_dim=64, batch=2, seqlen_q=2150, seqlen_k=2100, heads=(4, 2), window=(-1, 0)
    ),
    "hd64-2200x2900-causal": _case(
        head_dim=64, batch=2, seqlen_q=2200, seqlen_k=2900, heads=(4, 2), window=(-1, 0)
    ),
    "hd64-2333-local": _case(head_dim=64, batch=2, seqlen_q=2333, heads=(4, 2), window=(100, 0)),
    "hd64-2900-causal-varlen": _case(
        head_dim=64, batch=5, seqlen_q=2900, heads=(4, 2), window=(-1, 0), varlen=True
    ),
    "hd256-1000x700-causal": _case(
        head_dim=256, batch=2, seqlen_q=1000, seqlen_k=700, heads=(4, 2), window=(-1, 0)
    ),
    "hd256-2100-causal-varlen": _case(
        head_dim=256, batch=5, seqlen_q=2100, heads=(4, 2), window=(-1, 0), varlen=True
    ),
}


@pytest.mark.parametrize("name", END_ALIGNED_CASES)
def test_sm90_end_aligned_tiles(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _check_against_sm80(END_ALIGNED_CASES[name], case_seed("sm90-end-aligned", name), monkeypatch)


# GQA packing (sm90/tile_rows.cuh): where seqlen_q leaves most of a tile empty, the query heads
# of a K/V head's group share its tiles (row r: position r / group of the group's head
# r % group). Decoding (one query), a few queries, a group that does not divide the tile (3, 7:
# rows past group x positions are never loaded), the largest groups (16 at hd256: 8 positions a
# tile; 32 at hd64), masks that hide some of a position's keys (causal with seqlen_q <
# seqlen_k, local), softcap, varlen with empty sequences, 2-3 packed tiles per group (which the
# window kernels run as single tiles, not pairs). (The host packs where that takes fewer tiles,
# so these shapes run packed.)
PACK_CASES = {
    "hd128-decode-g8": _case(
        head_dim=128, batch=2, seqlen_q=1, seqlen_k=3000, heads=(16, 2), window=(-1, -1)
    ),
    "hd128-decode-g8-causal": _case(
        head_dim=128, batch=2, seqlen_q=1, seqlen_k=3000, heads=(16, 2), window=(-1, 0)
    ),
    "hd64-17q-g4-causal": _case(
        head_dim=64, batch=2, seqlen_q=17, seqlen_k=900, heads=(8, 2), window=(-1, 0)
    ),
    "hd64-5q-g3-local": _case(
        head_dim=64, batch=2, seqlen_q=5, seqlen_k=700, heads=(6, 2), window=(40, 3)
    ),
    "hd64-9q-g7-full": _case(
        head_dim=64, batch=2, seqlen_q=9, seqlen_k=513, heads=(14, 2), window=(-1, -1)
    ),
    "hd64-3q-g32-causal": _case(
        head_dim=64, batch=2, seqlen_q=3, seqlen_k=333, heads=(32, 1), window=(-1, 0)
    ),
    "hd256-2q-g16-causal": _case(
        head_dim=256, batch=2, seqlen_q=2, seqlen_k=1100, heads=(16, 1), window=(-1, 0)
    ),
    "hd96-4q-g4-softcap": _case(
        head_dim=96, batch=2, seqlen_q=4, seqlen_k=800, heads=(8, 2), window=(-1, -1), softcap=15.0
    ),
    "hd128-12q-g8-causal-varlen": _case(
        head_dim=128,
        batch=4,
        seqlen_q=12,
        seqlen_k=2000,
        heads=(16, 2),
        window=(-1, 0),
        varlen=True,
    ),
    "hd64-40q-g4-full-2tiles": _case(
        head_dim=64, batch=2, seqlen_q=40, seqlen_k=1000, heads=(8, 2), window=(-1, -1)
    ),
    "hd128-64q-g4-causal-2tiles": _case(
        head_dim=128, batch=2, seqlen_q=64, seqlen_k=300, heads=(8, 2), window=(-1, 0)
    ),
    "hd64-70q-g4-local-3tiles": _case(
        head_dim=64, batch=2, seqlen_q=70, seqlen_k=500, heads=(8, 2), window=(60, 0)
    ),
    "hd256-70q-g4-causal-varlen-3tiles": _case(
        head_dim=256, batch=4, seqlen_q=70, seqlen_k=700, heads=(8, 2), window=(-1, 0), varlen=True
    ),
}


@pytest.mark.parametrize("name", PACK_CASES)
def test_sm90_gqa_packed_tiles(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _check_against_sm80(PACK_CASES[name], case_seed("sm90-gqa-pack", name), monkeypatch)


# Paired causal/local schedules with at least two pairs per CTA end in a tail of single tiles
# (PersistentTileScheduler, sm90::fwd_tail_split: hd64, and hd128 from 16 query blocks, or from 4
# where the pairs' last round would keep less than half the CTAs busy). With the 132 SMs of an
# H100 SXM: the tail starting inside a (head, batch) (j0 > 0) or at one (j0 = 0), odd and even
# block counts (middle blocks in the tail), two tail rounds (32+ query blocks), GQA, a local
# window, varlen with short sequences, hd128 with 10 blocks (280 pairs: 16 in the last round).
TAIL_CASES = {
    "hd64-6000-causal-gqa": _case(
        head_dim=64, batch=1, seqlen_q=6000, heads=(20, 4), window=(-1, 0)
    ),
    "hd64-2500-local": _case(head_dim=64, batch=4, seqlen_q=2500, heads=(24, 24), window=(300, 20)),
    "hd64-4000-causal-varlen": _case(
        head_dim=64, batch=12, seqlen_q=4000, heads=(8, 8), window=(-1, 0), varlen=True
    ),
    "hd128-2100-causal": _case(
        head_dim=128, batch=3, seqlen_q=2100, heads=(12, 12), window=(-1, 0)
    ),
    "hd128-2816-causal-j0": _case(
        head_dim=128, batch=2, seqlen_q=2816, heads=(12, 6), window=(-1, 0)
    ),
    "hd128-1280-causal-short-round": _case(
        head_dim=128, batch=7, seqlen_q=1280, heads=(8, 8), window=(-1, 0)
    ),
}


@pytest.mark.parametrize("name", TAIL_CASES)
def test_sm90_tail_of_single_tiles(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _check_against_sm80(TAIL_CASES[name], case_seed("sm90-tail", name), monkeypatch)


# Mirrored pairs (common/scheduler.cuh, sm90::fwd_mirrored_pairs): under a window mask, where
# a sequence has few query blocks (hd128 up to 11, hd192 up to 8, hd256 up to 12; all of these
# shapes fill the mirrored schedule's last round no worse than the pairs'), a CTA runs block j of
# (head, batch) 2 g, then block num_blocks - 1 - j of 2 g + 1 with its key blocks walked last to
# first; hd64's short-query kernel takes them for an odd block count and walks both tiles first to
# last. An odd count of (head, batch) pairs (the last pair has no second half), GQA, end-aligned
# tiles whose warpgroups skip blocks (hd192, hd256), seqlen_q != seqlen_k both ways, a local
# window, varlen sequences of different lengths in one pair.
MIRROR_CASES = {
    "hd64-384-causal-odd": _case(head_dim=64, batch=1, seqlen_q=384, heads=(3, 3), window=(-1, 0)),
    "hd64-600x900-causal": _case(
        head_dim=64, batch=2, seqlen_q=600, seqlen_k=900, heads=(3, 3), window=(-1, 0)
    ),
    "hd64-333-local-varlen": _case(
        head_dim=64, batch=5, seqlen_q=333, heads=(4, 4), window=(100, 20), varlen=True
    ),
    "hd128-512-causal-odd": _case(
        head_dim=128, batch=1, seqlen_q=512, heads=(3, 3), window=(-1, 0)
    ),
    "hd128-600x1000-causal": _case(
        head_dim=128, batch=2, seqlen_q=600, seqlen_k=1000, heads=(4, 2), window=(-1, 0)
    ),
    "hd128-900-causal-varlen": _case(
        head_dim=128, batch=5, seqlen_q=900, heads=(4, 4), window=(-1, 0), varlen=True
    ),
    "hd128-1300-causal-odd": _case(
        head_dim=128, batch=1, seqlen_q=1300, heads=(3, 3), window=(-1, 0)
    ),
    "hd192-1000-local-odd": _case(
        head_dim=192, batch=3, seqlen_q=1000, heads=(5, 5), window=(200, 40)
    ),
    "hd256-777-causal-gqa": _case(
        head_dim=256, batch=2, seqlen_q=777, heads=(4, 2), window=(-1, 0)
    ),
    "hd256-1500x1400-causal": _case(
        head_dim=256, batch=1, seqlen_q=1500, seqlen_k=1400, heads=(2, 1), window=(-1, 0)
    ),
}


@pytest.mark.parametrize("name", MIRROR_CASES)
def test_sm90_mirrored_pairs(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _check_against_sm80(MIRROR_CASES[name], case_seed("sm90-mirror", name), monkeypatch)


# The TMA-store epilogue (EpilogueFwd::store_tma, hd128 kernels with a window mask, dense and
# unpacked): O goes out in boxes of 64 rows x 64 columns, which the tensor map clips at
# seqlen_q and head_dim (head dims 112 and 120 run on the hd128 kernel), beside tiles that see no
# key (stored from registers) and a tile of one row; the O buffer is reused tile after tile.
TMA_STORE_CASES = {
    "hd128-127-causal": _case(head_dim=128, batch=2, seqlen_q=127, heads=(4, 2), window=(-1, 0)),
    "hd120-339-local": _case(head_dim=120, batch=3, seqlen_q=339, heads=(2, 2), window=(60, 10)),
    "hd112-1023x777-causal": _case(
        head_dim=112, batch=2, seqlen_q=1023, seqlen_k=777, heads=(4, 4), window=(-1, 0)
    ),
    "hd128-1x300-causal": _case(
        head_dim=128, batch=3, seqlen_q=1, seqlen_k=300, heads=(4, 4), window=(-1, 0)
    ),
}


@pytest.mark.parametrize("name", TMA_STORE_CASES)
def test_sm90_tma_store_epilogue(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _check_against_sm80(TMA_STORE_CASES[name], case_seed("sm90-tma-store", name), monkeypatch)


def _check_against_sm80(case: dict, seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    if (reason := sm90_skip_reason()) is not None:
        pytest.skip(reason)
    for library in ("sm80", "sm90"):
        reason = kernel_skip_reason(case["dtype"], case["head_dim"], case["softcap"], library)
        if reason:
            pytest.skip(reason)
    torch.manual_seed(seed)
    b, sq, sk, d = case["batch"], case["seqlen_q"], case["seqlen_k"], case["head_dim"]
    h, hk = case["heads"]
    dt = case["dtype"]
    q = torch.randn(b, sq, h, d, device="cuda", dtype=dt)
    k = torch.randn(b, sk, hk, d, device="cuda", dtype=dt)
    v = torch.randn(b, sk, hk, d, device="cuda", dtype=dt)
    if case["softcap"]:
        q = q * 4
    cu_q = cu_k = None
    if case["varlen"]:
        # b sequences of random lengths <= the maxima (some empty), packed
        lens_q = torch.randint(0, sq + 1, (b,)).tolist()
        lens_k = torch.randint(0, sk + 1, (b,)).tolist()
        q = torch.cat([q[i, : lens_q[i]] for i in range(b)])
        k = torch.cat([k[i, : lens_k[i]] for i in range(b)])
        v = torch.cat([v[i, : lens_k[i]] for i in range(b)])
        cu_q = torch.tensor([0, *torch.tensor(lens_q).cumsum(0).tolist()], dtype=torch.int32)
        cu_k = torch.tensor([0, *torch.tensor(lens_k).cumsum(0).tolist()], dtype=torch.int32)
        cu_q, cu_k = cu_q.cuda(), cu_k.cuda()
    out80, lse80 = _run("sm80", monkeypatch, case, q, k, v, cu_q, cu_k)
    out90, lse90 = _run("sm90", monkeypatch, case, q, k, v, cu_q, cu_k)
    assert not out90.isnan().any() and not lse90.isnan().any()
    if case["varlen"]:
        refs = []
        for i in range(b):
            qs = slice(int(cu_q[i]), int(cu_q[i + 1]))
            ks = slice(int(cu_k[i]), int(cu_k[i + 1]))
            o, lse = attention_ref(
                q[qs][None], k[ks][None], v[ks][None], window_size=case["window"],
                softcap=case["softcap"],
            )  # fmt: skip
            refs.append((o[0], lse[0]))
        out_ref = torch.cat([o for o, _ in refs])
        lse_ref = torch.cat([lse for _, lse in refs], dim=-1)
    else:
        out_ref, lse_ref = attention_ref(
            q, k, v, window_size=case["window"], softcap=case["softcap"]
        )
    rtol = 3.0 if case["softcap"] else 2.0
    check_fa_rule("out", out90, out_ref, out80, rtol=rtol)
    finite = torch.isfinite(lse_ref)
    assert torch.equal(torch.isfinite(lse90), finite), "rows without keys must have lse -inf"
    check_fa_rule("lse", lse90[finite], lse_ref[finite], lse80[finite], rtol=rtol, atol=1e-4)


@pytest.mark.parametrize("varlen", [False, True], ids=["dense", "varlen"])
@pytest.mark.parametrize(
    "window", [(-1, -1), (-1, 0), (200, 50)], ids=["full", "causal", "local"]
)  # fmt: skip
def test_sm90_persistent_grid_covers_every_tile(
    window: tuple[int, int], varlen: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """17 query blocks x 96 (head, batch) pairs: ~10 units per CTA on a 132-SM H100."""
    if (reason := sm90_skip_reason()) is not None:
        pytest.skip(reason)
    for library in ("sm80", "sm90"):
        if reason := kernel_skip_reason(torch.bfloat16, 64, 0.0, library):
            pytest.skip(reason)
    torch.manual_seed(7)
    b, s, h, d = 3, 2049, 32, 64
    q = torch.randn(b, s, h, d, device="cuda", dtype=torch.bfloat16)
    k = torch.randn_like(q)
    v = torch.randn_like(q) + 1.0  # outputs near 1: a row left unwritten cannot pass
    case = {"window": window, "softcap": 0.0, "varlen": varlen, "seqlen_q": s, "seqlen_k": s}
    cu = None
    if varlen:  # three sequences: the longest sets the block count, the others end early
        lens = [s, 1500, 640]
        q, k, v = (torch.cat([t[i, : lens[i]] for i in range(b)]) for t in (q, k, v))
        cu = torch.tensor([0, lens[0], lens[0] + lens[1], sum(lens)], dtype=torch.int32)
        cu = cu.cuda()
    out80, lse80 = _run("sm80", monkeypatch, case, q, k, v, cu, cu)
    out90, lse90 = _run("sm90", monkeypatch, case, q, k, v, cu, cu)
    torch.testing.assert_close(out90, out80, atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(lse90, lse80, atol=1e-3, rtol=1e-4)
