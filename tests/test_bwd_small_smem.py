"""The SM80 backward on GPUs with 99 KB of shared memory per block (sm_86/89: RTX 30xx/40xx, L4,
L40). Head dim 64 has smaller tiles for them beside its default ones; the library takes them
only where the default ones do not fit. ``IOATTN_MAX_SMEM_PER_BLOCK`` makes the library plan as
if the GPU allowed no more than that, so these tests run on any larger GPU."""

from __future__ import annotations

import pytest
import torch

import ioattn
from bwd_cases import ids, run_case
from ioattn.testing import kernel_skip_reason

pytestmark = pytest.mark.gpu

SM86_SMEM_PER_BLOCK = 101376  # cudaDevAttrMaxSharedMemoryPerBlockOptin of sm_86 and sm_89


@pytest.fixture
def smem_limit(monkeypatch: pytest.MonkeyPatch):
    def set_limit(nbytes: int) -> None:
        monkeypatch.setenv("IOATTN_MAX_SMEM_PER_BLOCK", str(nbytes))

    return set_limit


@pytest.mark.parametrize("deterministic", [False, True])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=ids)
@pytest.mark.parametrize("heads", [(6, 6), (6, 2)], ids=ids)
@pytest.mark.parametrize("seqlens", [(113, 339), (1023, 129)], ids=ids)
def test_bwd_small_smem_fa_rule(
    smem_limit,
    seqlens: tuple[int, int],
    heads: tuple[int, int],
    dtype: torch.dtype,
    causal: bool,
    deterministic: bool,
) -> None:
    smem_limit(SM86_SMEM_PER_BLOCK)
    run_case(*seqlens, 64, dtype, causal=causal, heads=heads, deterministic=deterministic)


@pytest.mark.parametrize(
    ("head_dim", "limit", "needs"),
    [(64, 65536, 99328), (128, SM86_SMEM_PER_BLOCK, 164864)],
    ids=["hd64-64KB", "hd128-99KB"],
)
def test_bwd_without_enough_smem_raises(smem_limit, head_dim: int, limit: int, needs: int) -> None:
    reason = kernel_skip_reason(torch.bfloat16, head_dim, 0.0)
    if reason:
        pytest.skip(reason)
    smem_limit(limit)
    q, k, v = (
        torch.randn(1, 128, 2, head_dim, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        for _ in range(3)
    )
    out = ioattn.flash_attn_func(q, k, v)  # the forward's tiles fit
    grads = (q.grad, k.grad, v.grad)
    with pytest.raises(NotImplementedError, match=f"needs {needs} bytes of shared memory"):
        out.sum().backward()
    assert (q.grad, k.grad, v.grad) == grads  # nothing written
