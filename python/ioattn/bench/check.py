"""Is an output right? A cheap check of ioattn's result before it is timed.

The fp32 reference is computed on a slice only: the first and last batch entry, the first and
last head, and ``rows`` query rows spread over the sequence (the first and the last included),
each against every key. Rule (FlashAttention's test rule): the max error of the output vs that
reference is at most twice the error of PyTorch's own attention in the same dtype (SDPA on
the same slice) plus the rounding slack of the dtype. An all-zero or garbage output fails by
orders of magnitude; a correct kernel passes with room to spare.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class CheckResult:
    """``ok`` with the numbers behind it; ``message`` says what is wrong when not ok."""

    ok: bool
    max_error: float
    tolerance: float
    message: str = ""


def query_rows(seqlen: int, count: int = 128) -> list[int]:
    """``count`` query rows spread evenly over ``[0, seqlen)``, first and last included."""
    if seqlen <= count:
        return list(range(seqlen))
    step = (seqlen - 1) / (count - 1)
    return sorted({round(i * step) for i in range(count)})


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Any, scale: float) -> Any:
    scores = (q @ k.transpose(0, 1)) * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def _same_dtype(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Any, scale: float) -> Any:
    """PyTorch's own attention in the input dtype (SDPA; a plain low-precision softmax(q k^T) v
    if SDPA refuses the slice), the yardstick of the tolerance."""
    try:
        return F.scaled_dot_product_attention(
            q.contiguous()[None, None],
            k.contiguous()[None, None],
            v.contiguous()[None, None],
            attn_mask=None if mask is None else mask[None, None],
            scale=scale,
        )[0, 0]
    except RuntimeError:
        return _attend(q, k, v, mask, scale)


def check_output(
    out: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool,
    rows: int = 128,
) -> CheckResult:
    """Compare ``out`` = attention(q, k, v) (all (b, s, h, d), seqlen_q == seqlen_k) with an
    fp32 reference on a slice; see the module docstring for the rule."""
    if tuple(out.shape) != tuple(q.shape):
        return CheckResult(False, math.inf, 0.0, f"wrong shape {tuple(out.shape)}")
    b, s, h, d = q.shape
    low = q.dtype if q.dtype in (torch.float16, torch.bfloat16) else torch.bfloat16
    scale = d**-0.5
    idx = torch.tensor(query_rows(s, rows), device=q.device)
    mask = None
    if causal:
        mask = torch.arange(s, device=q.device)[None, :] <= idx[:, None]
    err = torch_err = slack = 0.0
    with torch.no_grad():
        for bi in sorted({0, b - 1}):
            for hi in sorted({0, h - 1}):
                qs, ks, vs = q[bi, idx, hi], k[bi, :, hi], v[bi, :, hi]
                ref = _attend(qs.float(), ks.float(), vs.float(), mask, scale)
                same = _same_dtype(qs.to(low), ks.to(low), vs.to(low), mask, scale)
                got = out[bi, idx, hi].float()
                diff = (got - ref).abs().max().item()
                err = max(err, diff if math.isfinite(diff) else math.inf)  # max() drops NaN
                torch_err = max(torch_err, (same.float() - ref).abs().max().item())
                ref_low = ref.to(low)
                slack = max(slack, 2 * ((ref_low + 0.3 - 0.3) - ref_low).abs().max().item())
    tol = 2 * torch_err + slack
    ok = math.isfinite(err) and err <= tol
    message = "" if ok else f"wrong result: max |out - fp32 ref| = {err:.3g} > tolerance {tol:.3g}"
    return CheckResult(ok, err, tol, message)
