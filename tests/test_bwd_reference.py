"""The PyTorch reference backward (CPU backend and test oracle) against autograd through the
full-matrix fp32 oracle; and training through the public API on CPU tensors."""

from __future__ import annotations

import pytest
import torch

import ioattn
from ioattn import reference
from ioattn.testing import case_seed


def _naive_grads(
    dout: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_q: torch.Tensor | None = None,
    cu_k: torch.Tensor | None = None,
    **kwargs: object,
) -> tuple[torch.Tensor, ...]:
    """Autograd of attention_naive in float64 (an oracle independent of the tiled backward)."""
    leaves = [t.detach().double().requires_grad_(True) for t in (q, k, v)]
    out, _ = reference.attention_naive(*leaves, cu_q, cu_k, **kwargs)  # type: ignore[arg-type]
    out.backward(dout.double())
    return tuple(t.grad for t in leaves)  # type: ignore[misc]


def _tiled_grads(
    dout: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_q: torch.Tensor | None = None,
    cu_k: torch.Tensor | None = None,
    **kwargs: object,
) -> tuple[torch.Tensor, ...]:
    out, lse = reference.attention_tiled(q, k, v, cu_q, cu_k, **kwargs)  # type: ignore[arg-type]
    return reference.attention_backward_tiled(
        dout,
        q,
        k,
        v,
        out,
        lse,
        cu_q,
        cu_k,
        block_q=16,
        block_k=32,
        **kwargs,  # type: ignore[arg-type]
    )


def _assert_close(actual: tuple[torch.Tensor, ...], expected: tuple[torch.Tensor, ...]) -> None:
    for name, a, e in zip(("dq", "dk", "dv"), actual, expected):
        assert a.shape == e.shape, name
        assert torch.isfinite(a).all(), f"{name} has non-finite values"
        torch.testing.assert_close(a.double(), e, atol=2e-5, rtol=2e-5, msg=name)


CASES = {
    "square": {"seqlens": (17, 17)},
    "sq_lt_sk": {"seqlens": (17, 113)},
    "sq_gt_sk": {"seqlens": (113, 17)},
    "one": {"seqlens": (1, 1)},
    "causal": {"seqlens": (33, 47), "causal": True},
    "causal_sq_gt_sk": {"seqlens": (47, 33), "causal": True},  # rows that see no key
    "window": {"seqlens": (65, 65), "window_size": (7, 3)},
    "softcap": {"seqlens": (29, 41), "softcap": 3.0},
    "gqa": {"seqlens": (29, 41), "heads": (6, 2)},
    "mqa_causal": {"seqlens": (29, 41), "heads": (4, 1), "causal": True},
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_tiled_backward_matches_autograd(case: str) -> None:
    spec = dict(CASES[case])
    sq, sk = spec.pop("seqlens")
    h, hk = spec.pop("heads", (2, 2))
    torch.manual_seed(case_seed("bwd_ref", case))
    q = torch.randn(2, sq, h, 16)
    k = torch.randn(2, sk, hk, 16)
    v = torch.randn(2, sk, hk, 16)
    dout = torch.randn(2, sq, h, 16)
    _assert_close(_tiled_grads(dout, q, k, v, **spec), _naive_grads(dout, q, k, v, **spec))


@pytest.mark.parametrize("causal", [False, True])
def test_tiled_backward_varlen_with_empty_sequences(causal: bool) -> None:
    torch.manual_seed(case_seed("bwd_ref_varlen", causal))
    cu_q = torch.tensor([0, 5, 5, 22, 30], dtype=torch.int32)
    cu_k = torch.tensor([0, 9, 12, 12, 40], dtype=torch.int32)  # sequence 2 has no keys
    q = torch.randn(30, 4, 16)
    k = torch.randn(40, 2, 16)
    v = torch.randn(40, 2, 16)
    dout = torch.randn(30, 4, 16)
    got = _tiled_grads(dout, q, k, v, cu_q, cu_k, causal=causal)
    _assert_close(got, _naive_grads(dout, q, k, v, cu_q, cu_k, causal=causal))
    assert not got[0][12:22].any(), "queries of a sequence without keys get dq = 0"
    assert not got[1][9:12].any() and not got[2][9:12].any(), "keys no query sees: dk = dv = 0"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_public_api_trains_on_cpu(dtype: torch.dtype) -> None:
    """backward() through flash_attn_func on CPU tensors runs the reference backward."""
    torch.manual_seed(case_seed("bwd_cpu_api", str(dtype)))
    q, k, v = (torch.randn(2, 37, 4, 37, dtype=dtype, requires_grad=True) for _ in range(3))
    out = ioattn.flash_attn_func(q, k, v, causal=True)
    dout = torch.randn_like(out)
    out.backward(dout)
    expected = _naive_grads(dout, q, k, v, causal=True)
    for name, t, e in zip(("q", "k", "v"), (q, k, v), expected):
        assert t.grad is not None and t.grad.dtype == dtype and t.grad.shape == t.shape, name
        torch.testing.assert_close(t.grad.double(), e, atol=3e-2, rtol=3e-2, msg=name)
