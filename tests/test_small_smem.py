"""Kernels for GPUs with less shared memory per block than an H100 (an A100 allows 163 KB,
sm_86/89 99 KB). The SM80 forward's tiles take 96 KB at most, so every GPU runs its default
kernels; beside its default tiles, the backward has smaller ones at every head dim (97 KB at
most for 64-192, 137 KB for 256), which the library takes only where the default ones do not
fit. ``IOATTN_MAX_SMEM_PER_BLOCK`` makes it plan as if the GPU allowed no more
than that, so these tests run on any larger GPU."""

from __future__ import annotations

import pytest
import torch

import ioattn
from bwd_cases import ids, run_case
from ioattn.testing import case_seed, check_fa_rule, kernel_skip_reason, reference_pair

pytestmark = pytest.mark.gpu

SM86_SMEM_PER_BLOCK = 101376  # cudaDevAttrMaxSharedMemoryPerBlockOptin of sm_86 and sm_89
A100_SMEM_PER_BLOCK = 166912  # ... of sm_80

# (head dim, the smaller GPU it runs on); head dim 256 has no tiles for sm_86/89
SMALL_GPUS = [(64, SM86_SMEM_PER_BLOCK), (96, SM86_SMEM_PER_BLOCK), (128, SM86_SMEM_PER_BLOCK),
              (192, SM86_SMEM_PER_BLOCK), (256, A100_SMEM_PER_BLOCK)]  # fmt: skip


@pytest.fixture
def smem_limit(monkeypatch: pytest.MonkeyPatch):
    def set_limit(nbytes: int) -> None:
        monkeypatch.setenv("IOATTN_MAX_SMEM_PER_BLOCK", str(nbytes))

    return set_limit


@pytest.mark.parametrize("limit", [A100_SMEM_PER_BLOCK, SM86_SMEM_PER_BLOCK], ids=["a100", "sm86"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=ids)
def test_fwd_hd256_on_smaller_gpus(smem_limit, dtype: torch.dtype, limit: int) -> None:
    reason = kernel_skip_reason(dtype, 256, 0.0, exact=True)
    if reason:
        pytest.skip(reason)
    smem_limit(limit)
    torch.manual_seed(case_seed("fwd-small-smem", str(dtype), limit))
    q, k, v = (torch.randn(2, 339, 4, 256, device="cuda", dtype=dtype) for _ in range(3))
    out, lse, _ = ioattn.flash_attn_func(q, k, v, return_attn_probs=True)
    out_ref, lse_ref, out_pt, lse_pt = reference_pair(q, k, v)
    check_fa_rule("out", out, out_ref, out_pt)
    check_fa_rule("lse", lse, lse_ref, lse_pt, atol=1e-4)


@pytest.mark.parametrize("deterministic", [False, True])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=ids)
@pytest.mark.parametrize("seqlens", [(113, 339), (1023, 129)], ids=ids)
@pytest.mark.parametrize(("head_dim", "limit"), SMALL_GPUS, ids=[f"hd{hd}" for hd, _ in SMALL_GPUS])
def test_bwd_small_smem_fa_rule(
    smem_limit,
    head_dim: int,
    limit: int,
    seqlens: tuple[int, int],
    dtype: torch.dtype,
    causal: bool,
    deterministic: bool,
) -> None:
    if reason := kernel_skip_reason(dtype, head_dim, 0.0, exact=True):
        pytest.skip(reason)  # the smaller tiles under test are this head dim's own
    smem_limit(limit)
    run_case(*seqlens, head_dim, dtype, causal=causal, heads=(6, 2), deterministic=deterministic)


@pytest.mark.parametrize(
    ("head_dim", "limit", "needs"),
    [(256, SM86_SMEM_PER_BLOCK, 139776), (128, 65536, 74240)],
    ids=["hd256-99KB", "hd128-64KB"],
)
def test_bwd_without_enough_smem_raises(smem_limit, head_dim: int, limit: int, needs: int) -> None:
    reason = kernel_skip_reason(torch.bfloat16, head_dim, 0.0, exact=True)
    if reason:
        pytest.skip(reason)
    smem_limit(limit)
    q, k, v = (
        torch.randn(1, 128, 2, head_dim, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        for _ in range(3)
    )
    out = ioattn.flash_attn_func(q, k, v, causal=True)  # the forward's tiles fit (64 KB causal)
    grads = (q.grad, k.grad, v.grad)
    with pytest.raises(NotImplementedError, match=f"needs {needs} bytes of shared memory"):
        out.sum().backward()
    assert (q.grad, k.grad, v.grad) == grads  # nothing written
