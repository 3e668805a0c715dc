"""``deterministic=True`` backward: correct by the FA rule, and bitwise identical over 100 runs
while the caching allocator is kept busy (the workspace lands at different addresses and the
GPU's L2 holds other data from run to run)."""

from __future__ import annotations

import pytest
import torch

import ioattn
from bwd_cases import ids, run_case
from ioattn.testing import case_seed, generate_random_padding_mask, kernel_skip_reason, unpad_input

pytestmark = pytest.mark.gpu

REPEATS = 100


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=ids)
@pytest.mark.parametrize("heads", [(6, 6), (6, 2), (6, 1)], ids=ids)
@pytest.mark.parametrize("seqlens", [(1, 339), (129, 1023), (1023, 1023), (2049, 339)], ids=ids)
def test_bwd_deterministic_fa_rule(
    seqlens: tuple[int, int], heads: tuple[int, int], dtype: torch.dtype, causal: bool
) -> None:
    run_case(*seqlens, 128, dtype, causal=causal, heads=heads, deterministic=True)


@pytest.mark.parametrize("head_dim", [64, 256])
def test_bwd_deterministic_head_dims(head_dim: int) -> None:
    run_case(339, 1023, head_dim, torch.bfloat16, causal=True, deterministic=True)


def _dense_problem(
    batch: int, sq: int, sk: int, heads: tuple[int, int], head_dim: int, dtype: torch.dtype
) -> tuple[tuple[torch.Tensor, ...], torch.Tensor, dict]:
    h, hk = heads
    q = torch.randn(batch, sq, h, head_dim, device="cuda", dtype=dtype)
    k = torch.randn(batch, sk, hk, head_dim, device="cuda", dtype=dtype)
    v = torch.randn(batch, sk, hk, head_dim, device="cuda", dtype=dtype)
    dout = torch.randn(batch, sq, h, head_dim, device="cuda", dtype=dtype)
    return (q, k, v), dout, {}


def _varlen_problem(
    batch: int, sq: int, sk: int, heads: tuple[int, int], head_dim: int, dtype: torch.dtype
) -> tuple[tuple[torch.Tensor, ...], torch.Tensor, dict]:
    (q, k, v), dout, _ = _dense_problem(batch, sq, sk, heads, head_dim, dtype)
    q_mask = generate_random_padding_mask(sq, batch, "cuda", zero_lengths=True)
    k_mask = generate_random_padding_mask(sk, batch, "cuda", zero_lengths=True)
    q_unpad, _, cu_q, max_q, _ = unpad_input(q, q_mask)
    k_unpad, _, cu_k, max_k, _ = unpad_input(k, k_mask)
    v_unpad, _, _, _, _ = unpad_input(v, k_mask)
    dout_unpad, _, _, _, _ = unpad_input(dout, q_mask)
    extra = {"cu_seqlens_q": cu_q, "cu_seqlens_k": cu_k, "max_seqlen_q": max_q,
             "max_seqlen_k": max_k}  # fmt: skip
    return (q_unpad, k_unpad, v_unpad), dout_unpad, extra


# (name, batch, seqlen_q, seqlen_k, heads, head_dim, causal): many key blocks per query row,
# so that the default (atomic) mode has many adds in flight on each dQ element.
CASES = [
    ("dense-mha-causal", 2, 1023, 2049, (4, 4), 128, True),
    ("dense-gqa", 1, 2049, 4096, (8, 2), 64, False),
    ("dense-mqa-hd256", 2, 513, 1537, (4, 1), 256, True),
    ("varlen-gqa", 5, 777, 1500, (6, 2), 128, False),
]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=ids)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bwd_deterministic_is_bitwise_reproducible(case: tuple, dtype: torch.dtype) -> None:
    name, batch, sq, sk, heads, head_dim, causal = case
    reason = kernel_skip_reason(dtype, head_dim)
    if reason:
        pytest.skip(reason)
    torch.manual_seed(case_seed("bwd_deterministic", name, str(dtype)))
    make = _varlen_problem if name.startswith("varlen") else _dense_problem
    inputs, dout, extra = make(batch, sq, sk, heads, head_dim, dtype)
    leaves = tuple(t.requires_grad_(True) for t in inputs)
    fn = ioattn.flash_attn_varlen_func if extra else ioattn.flash_attn_func
    out = fn(*leaves, **extra, causal=causal, deterministic=True)

    first = torch.autograd.grad(out, leaves, dout, retain_graph=True)
    # The default mode differs only in the order of dQ's fp32 sums: dK and dV (reduced per key
    # block in registers either way) are identical, dQ agrees to rounding.
    out_default = fn(*leaves, **extra, causal=causal)
    dq, dk, dv = torch.autograd.grad(out_default, leaves, dout)
    assert torch.equal(dk, first[1]) and torch.equal(dv, first[2])
    torch.testing.assert_close(first[0], dq, rtol=2**-6, atol=1e-3 * float(dq.abs().max()))

    gen = torch.Generator(device="cpu").manual_seed(1)
    held: list[torch.Tensor] = []
    for rep in range(REPEATS):
        # Memory pressure: a few live blocks of random size, rewritten every run, so that the
        # workspace and the gradients move around and L2 holds other data.
        size = int(torch.randint(1 << 16, 1 << 24, (1,), generator=gen))
        held.append(torch.empty(size, dtype=torch.float32, device="cuda").uniform_())
        if len(held) > 4:
            held.pop(int(torch.randint(0, len(held), (1,), generator=gen)))
        again = torch.autograd.grad(out, leaves, dout, retain_graph=True)
        for label, a, b in zip(("dq", "dk", "dv"), first, again):
            assert torch.equal(a, b), f"{label} differs from the first run at repeat {rep}"
