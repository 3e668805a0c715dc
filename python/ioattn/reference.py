"""Exact attention in PyTorch: the test oracle and the CPU backend.

Layout follows the kernels: dense q (batch, seqlen_q, num_heads, head_dim), k/v (batch,
seqlen_k, num_heads_k, head_dim); varlen q (total_q, num_heads, head_dim) with ``cu_seqlens``.
Mask semantics are those of ``api.h``: key j is visible from query i iff j < seqlen_k and,
with ``off = seqlen_k - seqlen_q`` (bottom-right alignment),
``window_left >= 0 -> j >= i + off - window_left`` and
``window_right >= 0 -> j <= i + off + window_right``. Query head ``h`` reads key/value head
``h // (num_heads // num_heads_k)``. A row that sees no key gets out = 0 and lse = -inf.

Two forward paths and a backward:

* :func:`attention_naive` materializes the full score matrix in fp32 (the oracle).
* :func:`attention_tiled` walks key blocks with the online softmax (running max, rescale),
  in fp32, in O(seqlen) memory; it serves CPU tensors and a forced reference on CUDA.
* :func:`attention_backward_tiled` is FlashAttention's backward in PyTorch: scores recomputed
  tile by tile from the saved LSE, fp32 math, O(seqlen) memory.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = [
    "attention_backward_tiled",
    "attention_naive",
    "attention_tiled",
    "normalize_window",
    "visible_mask",
]


def normalize_window(
    causal: bool, window_size: tuple[int, int] | list[int] = (-1, -1)
) -> tuple[int, int]:
    """(window_left, window_right) from FA-style arguments; causal forces window_right = 0."""
    left, right = int(window_size[0]), int(window_size[1])
    if causal:
        right = 0
    return left, right


def visible_mask(
    seqlen_q: int,
    seqlen_k: int,
    window_left: int,
    window_right: int,
    device: torch.device | str | None = None,
    q_start: int = 0,
    q_end: int | None = None,
    k_start: int = 0,
    k_end: int | None = None,
) -> Tensor:
    """Bool (rows, cols) mask of visible keys for query rows [q_start, q_end), keys [k_start, k_end)."""
    q_end = seqlen_q if q_end is None else q_end
    k_end = seqlen_k if k_end is None else k_end
    i = torch.arange(q_start, q_end, device=device).unsqueeze(1)
    j = torch.arange(k_start, k_end, device=device).unsqueeze(0)
    off = seqlen_k - seqlen_q
    mask = (i < seqlen_q) & (j < seqlen_k)
    if window_left >= 0:
        mask = mask & (j >= i + off - window_left)
    if window_right >= 0:
        mask = mask & (j <= i + off + window_right)
    return mask


def _key_range(
    q_start: int, q_end: int, seqlen_q: int, seqlen_k: int, window_left: int, window_right: int
) -> tuple[int, int]:
    """[lo, hi) of keys any row in [q_start, q_end) may see (empty if lo >= hi)."""
    off = seqlen_k - seqlen_q
    lo = max(0, q_start + off - window_left) if window_left >= 0 else 0
    hi = min(seqlen_k, q_end - 1 + off + window_right + 1) if window_right >= 0 else seqlen_k
    return lo, hi


def _scores(qf: Tensor, kf: Tensor, scale: float, softcap: float) -> Tensor:
    """fp32 scores: qf (b, hk, g, m, d) x kf (b, hk, n, d) -> (b, hk, g, m, n)."""
    s = torch.matmul(qf, kf.unsqueeze(2).transpose(-1, -2))
    if softcap > 0.0:
        return torch.tanh(s * (scale / softcap)) * softcap
    return s * scale


def _grouped(x: Tensor, num_heads_k: int) -> Tensor:
    """(b, s, h, d) -> fp32 (b, hk, g, s, d) with head h = hk_index * g + g_index."""
    b, s, h, d = x.shape
    return x.float().reshape(b, s, num_heads_k, h // num_heads_k, d).permute(0, 2, 3, 1, 4)


def _ungrouped(x: Tensor) -> Tensor:
    """(b, hk, g, s, d) -> (b, s, hk * g, d)."""
    b, hk, g, s, d = x.shape
    return x.permute(0, 3, 1, 2, 4).reshape(b, s, hk * g, d)


def _check_common(q: Tensor, k: Tensor, v: Tensor, varlen: bool) -> None:
    rank = 3 if varlen else 4
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != rank:
            raise ValueError(f"{name}: expected a {rank}-D tensor, got shape {tuple(t.shape)}")
    if k.shape != v.shape:
        raise ValueError(f"v: expected shape {tuple(k.shape)} (from k), got {tuple(v.shape)}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"k: expected head_dim {q.shape[-1]} (from q), got {k.shape[-1]}")
    hk = k.shape[-2]
    if hk == 0 or q.shape[-2] % hk != 0:
        raise ValueError(f"num_heads {q.shape[-2]} is not a multiple of num_heads_k {hk}")


def _scale_of(q: Tensor, softmax_scale: float | None) -> float:
    return 1.0 / math.sqrt(q.shape[-1]) if softmax_scale is None else float(softmax_scale)


def _naive_dense(
    q: Tensor, k: Tensor, v: Tensor, scale: float, wl: int, wr: int, softcap: float
) -> tuple[Tensor, Tensor]:
    b, sq, h, d = q.shape
    sk, hk = k.shape[1], k.shape[2]
    s = _scores(_grouped(q, hk), _grouped(k, hk)[:, :, 0], scale, softcap)
    mask = visible_mask(sq, sk, wl, wr, q.device)
    s = s.masked_fill(~mask, float("-inf"))
    lse = torch.logsumexp(s, dim=-1)  # -inf where a row sees nothing
    p = torch.exp(s - torch.where(torch.isinf(lse), torch.zeros_like(lse), lse).unsqueeze(-1))
    out = torch.matmul(p, _grouped(v, hk)[:, :, 0].unsqueeze(2))
    return _ungrouped(out), lse.reshape(b, h, sq)


def _tiled_dense(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    scale: float,
    wl: int,
    wr: int,
    softcap: float,
    block_q: int | None,
    block_k: int,
) -> tuple[Tensor, Tensor]:
    """Online-softmax attention over key blocks; fp32 out (b, sq, h, d), lse (b, h, sq)."""
    b, sq, h, d = q.shape
    sk, hk = k.shape[1], k.shape[2]
    g = h // hk
    out = torch.zeros(b, sq, h, d, dtype=torch.float32, device=q.device)
    lse = torch.full((b, h, sq), float("-inf"), dtype=torch.float32, device=q.device)
    if b == 0 or sq == 0 or h == 0 or sk == 0:
        return out, lse
    if block_q is None:
        # Bound one score tile to about 2^24 fp32 elements.
        block_q = max(16, min(4096, (1 << 24) // max(1, b * h * block_k)))
    for qs in range(0, sq, block_q):
        qe = min(sq, qs + block_q)
        lo, hi = _key_range(qs, qe, sq, sk, wl, wr)
        if lo >= hi:
            continue  # every row of this block is fully masked: out 0, lse -inf
        qf = _grouped(q[:, qs:qe], hk)  # (b, hk, g, m, d)
        m_rows = qe - qs
        row_max = torch.full((b, hk, g, m_rows), float("-inf"), device=q.device)
        row_sum = torch.zeros((b, hk, g, m_rows), device=q.device)
        acc = torch.zeros((b, hk, g, m_rows, d), device=q.device)
        for ks in range(lo, hi, block_k):
            ke = min(hi, ks + block_k)
            kf = k[:, ks:ke].float().permute(0, 2, 1, 3)  # (b, hk, n, d)
            vf = v[:, ks:ke].float().permute(0, 2, 1, 3)
            s = _scores(qf, kf, scale, softcap)
            if wl >= 0 or wr >= 0:
                mask = visible_mask(sq, sk, wl, wr, q.device, qs, qe, ks, ke)
                s = s.masked_fill(~mask, float("-inf"))
            new_max = torch.maximum(row_max, s.amax(dim=-1))
            # Rows that have seen no key yet keep max -inf; subtract 0 there so exp gives 0.
            safe_max = torch.where(torch.isinf(new_max), torch.zeros_like(new_max), new_max)
            p = torch.exp(s - safe_max.unsqueeze(-1))
            alpha = torch.exp(row_max - safe_max)
            row_sum = row_sum * alpha + p.sum(dim=-1)
            acc = acc * alpha.unsqueeze(-1) + torch.matmul(p, vf.unsqueeze(2))
            row_max = new_max
        seen = row_sum > 0
        denom = torch.where(seen, row_sum, torch.ones_like(row_sum))
        acc = acc / denom.unsqueeze(-1)
        block_lse = torch.where(
            seen, row_max + torch.log(denom), torch.full_like(row_max, -math.inf)
        )
        out[:, qs:qe] = _ungrouped(acc)
        lse[:, :, qs:qe] = block_lse.reshape(b, h, m_rows)
    return out, lse


DenseFn = Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]


def _run(
    dense_fn: DenseFn,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    cu_seqlens_q: Tensor | None,
    cu_seqlens_k: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """Dense or varlen driver around a dense kernel (returns fp32 out)."""
    if (cu_seqlens_q is None) != (cu_seqlens_k is None):
        raise ValueError("cu_seqlens_q and cu_seqlens_k must be given together")
    if cu_seqlens_q is None:
        _check_common(q, k, v, varlen=False)
        return dense_fn(q, k, v)
    assert cu_seqlens_k is not None
    _check_common(q, k, v, varlen=True)
    total_q, h, d = q.shape
    out = torch.zeros(total_q, h, d, dtype=torch.float32, device=q.device)
    lse = torch.full((h, total_q), float("-inf"), dtype=torch.float32, device=q.device)
    cq = [int(x) for x in cu_seqlens_q.tolist()]
    ck = [int(x) for x in cu_seqlens_k.tolist()]
    if len(cq) != len(ck):
        raise ValueError("cu_seqlens_q and cu_seqlens_k must have the same length")
    for i in range(len(cq) - 1):
        q0, q1, k0, k1 = cq[i], cq[i + 1], ck[i], ck[i + 1]
        if q1 <= q0:
            continue
        o_i, l_i = dense_fn(q[None, q0:q1], k[None, k0:k1], v[None, k0:k1])
        out[q0:q1] = o_i[0]
        lse[:, q0:q1] = l_i[0]
    return out, lse


def attention_naive(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    cu_seqlens_q: Tensor | None = None,
    cu_seqlens_k: Tensor | None = None,
    *,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """Full-matrix attention in fp32 (the oracle).

    Returns ``(out, lse)``, both **fp32**: out shaped like q; lse (batch, num_heads,
    seqlen_q), or (num_heads, total_q) for varlen. ``softmax_scale=None`` is
    1/sqrt(head_dim); ``causal`` sets window_right to 0.
    """
    scale = _scale_of(q, softmax_scale)
    wl, wr = normalize_window(causal, window_size)

    def dense(qq: Tensor, kk: Tensor, vv: Tensor) -> tuple[Tensor, Tensor]:
        if qq.shape[0] * qq.shape[1] * qq.shape[2] == 0 or kk.shape[1] == 0:
            b, sq, h, d = qq.shape
            o = torch.zeros(b, sq, h, d, dtype=torch.float32, device=qq.device)
            return o, torch.full((b, h, sq), float("-inf"), device=qq.device)
        return _naive_dense(qq, kk, vv, scale, wl, wr, float(softcap))

    return _run(dense, q, k, v, cu_seqlens_q, cu_seqlens_k)


def attention_tiled(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    cu_seqlens_q: Tensor | None = None,
    cu_seqlens_k: Tensor | None = None,
    *,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    block_q: int | None = None,
    block_k: int = 256,
) -> tuple[Tensor, Tensor]:
    """Attention tiled over keys with the online softmax, fp32 math, O(seqlen) memory.

    Never materializes the seqlen_q x seqlen_k matrix (one block_q x block_k tile at a
    time; blocks a window excludes are skipped). Returns ``(out, lse)``: out in q's dtype
    and shape; lse fp32 (batch, num_heads, seqlen_q), or (num_heads, total_q) for varlen.
    """
    if block_k <= 0 or (block_q is not None and block_q <= 0):
        raise ValueError("block_q and block_k must be positive")
    scale = _scale_of(q, softmax_scale)
    wl, wr = normalize_window(causal, window_size)

    def dense(qq: Tensor, kk: Tensor, vv: Tensor) -> tuple[Tensor, Tensor]:
        return _tiled_dense(qq, kk, vv, scale, wl, wr, float(softcap), block_q, block_k)

    out, lse = _run(dense, q, k, v, cu_seqlens_q, cu_seqlens_k)
    return out.to(q.dtype), lse


def _tiled_backward_dense(
    dout: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    lse: Tensor,
    scale: float,
    wl: int,
    wr: int,
    softcap: float,
    block_q: int,
    block_k: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """fp32 (dq, dk, dv) of one dense batch: P recomputed from lse per (query, key) tile."""
    b, sq, h, d = q.shape
    sk, hk = k.shape[1], k.shape[2]
    g = h // hk
    dq = torch.zeros(b, sq, h, d, dtype=torch.float32, device=q.device)
    dk = torch.zeros(b, sk, hk, d, dtype=torch.float32, device=q.device)
    dv = torch.zeros(b, sk, hk, d, dtype=torch.float32, device=q.device)
    if b == 0 or sq == 0 or h == 0 or sk == 0:
        return dq, dk, dv
    # D = rowsum(dO o O), and LSE with +inf for rows that saw no key (so their P is 0).
    dsum = (dout.float() * out.float()).sum(-1)  # (b, sq, h)
    dsum = dsum.reshape(b, sq, hk, g).permute(0, 2, 3, 1)  # (b, hk, g, sq)
    lse_g = lse.float().reshape(b, hk, g, sq)
    lse_g = torch.where(torch.isneginf(lse_g), torch.full_like(lse_g, math.inf), lse_g)
    for qs in range(0, sq, block_q):
        qe = min(sq, qs + block_q)
        lo, hi = _key_range(qs, qe, sq, sk, wl, wr)
        if lo >= hi:
            continue
        qf = _grouped(q[:, qs:qe], hk)  # (b, hk, g, m, d)
        dof = _grouped(dout[:, qs:qe], hk)
        row_lse = lse_g[..., qs:qe].unsqueeze(-1)
        row_d = dsum[..., qs:qe].unsqueeze(-1)
        dq_blk = torch.zeros_like(qf)
        for ks in range(lo, hi, block_k):
            ke = min(hi, ks + block_k)
            kf = k[:, ks:ke].float().permute(0, 2, 1, 3)  # (b, hk, n, d)
            vf = v[:, ks:ke].float().permute(0, 2, 1, 3)
            raw = torch.matmul(qf, kf.unsqueeze(2).transpose(-1, -2))  # (b, hk, g, m, n)
            if softcap > 0.0:
                t = torch.tanh(raw * (scale / softcap))
                s, dscore = t * softcap, (1.0 - t * t) * scale
            else:
                s, dscore = raw * scale, None
            if wl >= 0 or wr >= 0:
                mask = visible_mask(sq, sk, wl, wr, q.device, qs, qe, ks, ke)
                s = s.masked_fill(~mask, float("-inf"))
            p = torch.exp(s - row_lse)
            dv[:, ks:ke] += torch.einsum("bhgmn,bhgmd->bnhd", p, dof)
            dp = torch.matmul(dof, vf.unsqueeze(2).transpose(-1, -2))
            ds = p * (dp - row_d)
            ds = ds * dscore if dscore is not None else ds * scale
            dq_blk += torch.matmul(ds, kf.unsqueeze(2))
            dk[:, ks:ke] += torch.einsum("bhgmn,bhgmd->bnhd", ds, qf)
        dq[:, qs:qe] = _ungrouped(dq_blk)
    return dq, dk, dv


def attention_backward_tiled(
    dout: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    lse: Tensor,
    cu_seqlens_q: Tensor | None = None,
    cu_seqlens_k: Tensor | None = None,
    *,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    block_q: int = 128,
    block_k: int = 256,
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients ``(dq, dk, dv)`` of attention given ``dout``, the forward's ``out`` and ``lse``.

    Layouts as :func:`attention_tiled` (lse as it returns it). Math in fp32, one
    (block_q x block_k) score tile at a time; the gradients come back in the inputs' dtype.
    GQA/MQA: dk and dv sum over the query heads of a group.
    """
    if block_k <= 0 or block_q <= 0:
        raise ValueError("block_q and block_k must be positive")
    if (cu_seqlens_q is None) != (cu_seqlens_k is None):
        raise ValueError("cu_seqlens_q and cu_seqlens_k must be given together")
    scale = _scale_of(q, softmax_scale)
    wl, wr = normalize_window(causal, window_size)

    def dense(
        do_: Tensor, qq: Tensor, kk: Tensor, vv: Tensor, oo: Tensor, ll: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        return _tiled_backward_dense(
            do_, qq, kk, vv, oo, ll, scale, wl, wr, float(softcap), block_q, block_k
        )

    if cu_seqlens_q is None:
        _check_common(q, k, v, varlen=False)
        dq, dk, dv = dense(dout, q, k, v, out, lse)
    else:
        assert cu_seqlens_k is not None
        _check_common(q, k, v, varlen=True)
        dq = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
        dk = torch.zeros(k.shape, dtype=torch.float32, device=q.device)
        dv = torch.zeros(v.shape, dtype=torch.float32, device=q.device)
        cq = [int(x) for x in cu_seqlens_q.tolist()]
        ck = [int(x) for x in cu_seqlens_k.tolist()]
        if len(cq) != len(ck):
            raise ValueError("cu_seqlens_q and cu_seqlens_k must have the same length")
        for i in range(len(cq) - 1):
            q0, q1, k0, k1 = cq[i], cq[i + 1], ck[i], ck[i + 1]
            if q1 <= q0 or k1 <= k0:
                continue
            dq_i, dk_i, dv_i = dense(
                dout[None, q0:q1],
                q[None, q0:q1],
                k[None, k0:k1],
                v[None, k0:k1],
                out[None, q0:q1],
                lse[None, :, q0:q1],
            )
            dq[q0:q1], dk[k0:k1], dv[k0:k1] = dq_i[0], dk_i[0], dv_i[0]
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)
