"""Public attention functions, with FlashAttention-2's names, arguments and defaults.

Layouts: dense q (batch, seqlen_q, num_heads, head_dim), k/v (batch, seqlen_k, num_heads_k,
head_dim); varlen q (total_q, num_heads, head_dim), k/v (total_k, num_heads_k, head_dim)
with int32 ``cu_seqlens`` of length batch + 1. fp16 or bf16; head_dim <= 256 (sizes that
are not a multiple of 8 are zero-padded internally and the output sliced back).

Semantics:

* ``softmax_scale=None`` means 1/sqrt(head_dim) of the caller's head_dim.
* Masks align to the bottom-right corner when seqlen_q != seqlen_k: query i sees key j iff
  ``i + seqlen_k - seqlen_q - window_size[0] <= j <= i + seqlen_k - seqlen_q + window_size[1]``
  (a -1 bound is unbounded). ``causal=True`` sets ``window_size[1] = 0``. A query row that
  sees no key gets output 0 (and log-sum-exp -inf), never NaN.
* ``softcap > 0`` computes scores as ``softcap * tanh(q.k * softmax_scale / softcap)``.
* MQA/GQA: num_heads must be a multiple of num_heads_k; query head h reads key/value head
  ``h // (num_heads // num_heads_k)``.

Training: ``backward()`` through an output gives dq, dk, dv (FlashAttention-2's backward:
attention recomputed from the saved log-sum-exp, O(seqlen) memory). ``deterministic=True``
makes the gradients bitwise reproducible run to run (dQ is summed in a fixed order instead of
with atomics; somewhat slower, with a larger workspace). Not implemented yet, with
NotImplementedError: dropout (``dropout_p > 0``), ALiBi (``alibi_slopes``) and paged KV
(``block_table``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ioattn import _ops, _validate  # _ops also registers torch.ops.ioattn

__all__ = [
    "flash_attn_func",
    "flash_attn_kvpacked_func",
    "flash_attn_qkvpacked_func",
    "flash_attn_varlen_func",
    "flash_attn_varlen_kvpacked_func",
    "flash_attn_varlen_qkvpacked_func",
]

_FWD_OP = torch.ops.ioattn.fwd.default  # registered by ioattn._ops (imported above)


def _forward(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    cu_seqlens_q: Tensor | None,
    cu_seqlens_k: Tensor | None,
    max_seqlen_q: int,
    max_seqlen_k: int,
    softmax_scale: Any,
    causal: bool,
    window: tuple[int, int],
    softcap: float,
    deterministic: bool,
) -> tuple[Tensor, Tensor]:
    """Shared tail of every public function: defaults, head_dim padding, the op."""
    head_dim = q.shape[-1]
    scale = _validate.check_scale(softmax_scale, head_dim)
    window_left, window_right = _validate.effective_window(
        causal, window, max_seqlen_q, max_seqlen_k
    )
    pad = (-head_dim) % 8
    if pad:
        q, k, v = (F.pad(t, (0, pad)) for t in (q, k, v))
    args = (
        q,
        k,
        v,
        cu_seqlens_q,
        cu_seqlens_k,
        max_seqlen_q,
        max_seqlen_k,
        scale,
        window_left,
        window_right,
        softcap,
        deterministic,
    )
    # Differentiable in q, k, v. Traced, the op goes into the graph as it is; eager, its
    # Autograd kernel is called straight away (one dispatcher round trip less per call).
    out, lse = _FWD_OP(*args) if torch.compiler.is_compiling() else _ops.fwd_autograd(*args)
    if pad:
        out = out[..., :head_dim]
    return out, lse


def _result(out: Tensor, lse: Tensor, return_attn_probs: bool) -> Any:
    return (out, lse, None) if return_attn_probs else out


def _dense(
    q: Any,
    k: Any,
    v: Any,
    dropout_p: Any,
    softmax_scale: Any,
    causal: bool,
    window_size: Any,
    softcap: Any,
    alibi_slopes: Any,
    deterministic: Any,
) -> tuple[Tensor, Tensor]:
    _validate.check_unsupported(dropout_p, alibi_slopes)
    q, k, v = _validate.check_qkv(q, k, v, varlen=False)
    window = _validate.check_window(window_size)
    cap = _validate.check_softcap(softcap)
    return _forward(
        q, k, v, None, None, q.shape[1], k.shape[1], softmax_scale, bool(causal), window, cap,
        bool(deterministic),
    )  # fmt: skip


def _varlen(
    q: Any,
    k: Any,
    v: Any,
    cu_seqlens_q: Any,
    cu_seqlens_k: Any,
    max_seqlen_q: Any,
    max_seqlen_k: Any,
    dropout_p: Any,
    softmax_scale: Any,
    causal: bool,
    window_size: Any,
    softcap: Any,
    alibi_slopes: Any,
    deterministic: Any,
    block_table: Any = None,
) -> tuple[Tensor, Tensor]:
    _validate.check_unsupported(dropout_p, alibi_slopes, block_table)
    q, k, v = _validate.check_qkv(q, k, v, varlen=True)
    cu_q, cu_k, max_q, max_k = _validate.check_varlen(
        q, k, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k
    )
    window = _validate.check_window(window_size)
    cap = _validate.check_softcap(softcap)
    return _forward(
        q,
        k,
        v,
        cu_q,
        cu_k,
        max_q,
        max_k,
        softmax_scale,
        bool(causal),
        window,
        cap,
        bool(deterministic),
    )


def flash_attn_func(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: Tensor | None = None,
    deterministic: bool = False,
    return_attn_probs: bool = False,
) -> Tensor | tuple[Tensor, Tensor, None]:
    """Exact attention, dense batch.

    Args:
        q: (batch, seqlen_q, num_heads, head_dim), float16 or bfloat16.
        k: (batch, seqlen_k, num_heads_k, head_dim), same dtype and device as q.
        v: (batch, seqlen_k, num_heads_k, head_dim).
        dropout_p: must be 0.0 (dropout is not implemented yet: NotImplementedError).
        softmax_scale: scale of q.k; None means 1/sqrt(head_dim).
        causal: causal mask aligned to the bottom-right corner.
        window_size: (left, right) sliding window; -1 is unbounded.
        softcap: softcapping of the scores; 0.0 is off.
        alibi_slopes: must be None (ALiBi is not implemented yet: NotImplementedError).
        deterministic: make the backward pass bitwise reproducible on a given GPU (dQ summed
            in a fixed order, not with atomics).
        return_attn_probs: also return the log-sum-exp (see Returns).

    Returns:
        ``out`` (batch, seqlen_q, num_heads, head_dim) in q's dtype; with
        ``return_attn_probs=True`` the tuple ``(out, softmax_lse, None)`` where
        ``softmax_lse`` is float32 (batch, num_heads, seqlen_q), the natural-log
        log-sum-exp of each row's scaled scores (-inf for a row that sees no key). The third
        item (FA2's attention probabilities, only returned with dropout) is always None.
    """
    out, lse = _dense(
        q, k, v, dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes,
        deterministic,
    )  # fmt: skip
    return _result(out, lse, return_attn_probs)


def flash_attn_qkvpacked_func(
    qkv: Tensor,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: Tensor | None = None,
    deterministic: bool = False,
    return_attn_probs: bool = False,
) -> Tensor | tuple[Tensor, Tensor, None]:
    """Exact attention with q, k, v packed in one tensor (same number of heads).

    Args:
        qkv: (batch, seqlen, 3, num_heads, head_dim), float16 or bfloat16.
        Other arguments: as in :func:`flash_attn_func`.

    Returns:
        ``out`` (batch, seqlen, num_heads, head_dim); with ``return_attn_probs=True``
        ``(out, softmax_lse, None)``, softmax_lse float32 (batch, num_heads, seqlen).
    """
    qkv = _validate.check_packed("qkv", qkv, varlen=False, parts=3)
    q, k, v = qkv.unbind(2)
    out, lse = _dense(
        q, k, v, dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes,
        deterministic,
    )  # fmt: skip
    return _result(out, lse, return_attn_probs)


def flash_attn_kvpacked_func(
    q: Tensor,
    kv: Tensor,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: Tensor | None = None,
    deterministic: bool = False,
    return_attn_probs: bool = False,
) -> Tensor | tuple[Tensor, Tensor, None]:
    """Exact attention with k and v packed in one tensor.

    Args:
        q: (batch, seqlen_q, num_heads, head_dim), float16 or bfloat16.
        kv: (batch, seqlen_k, 2, num_heads_k, head_dim).
        Other arguments: as in :func:`flash_attn_func`.

    Returns:
        ``out`` (batch, seqlen_q, num_heads, head_dim); with ``return_attn_probs=True``
        ``(out, softmax_lse, None)``, softmax_lse float32 (batch, num_heads, seqlen_q).
    """
    kv = _validate.check_packed("kv", kv, varlen=False, parts=2)
    k, v = kv.unbind(2)
    out, lse = _dense(
        q, k, v, dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes,
        deterministic,
    )  # fmt: skip
    return _result(out, lse, return_attn_probs)


def flash_attn_varlen_func(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    cu_seqlens_q: Tensor,
    cu_seqlens_k: Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: Tensor | None = None,
    deterministic: bool = False,
    return_attn_probs: bool = False,
    block_table: Tensor | None = None,
) -> Tensor | tuple[Tensor, Tensor, None]:
    """Exact attention over a batch of variable-length sequences packed along dim 0.

    Args:
        q: (total_q, num_heads, head_dim), float16 or bfloat16.
        k: (total_k, num_heads_k, head_dim).
        v: (total_k, num_heads_k, head_dim).
        cu_seqlens_q: int32 (batch + 1,): sequence b's queries are rows
            [cu_seqlens_q[b], cu_seqlens_q[b + 1]) of q. Starts at 0, ends at total_q.
        cu_seqlens_k: int32 (batch + 1,), the same for k and v.
        max_seqlen_q: the longest query sequence (an upper bound is fine).
        max_seqlen_k: the longest key sequence.
        block_table: must be None (paged KV is not implemented yet: NotImplementedError).
        Other arguments: as in :func:`flash_attn_func`; masks apply within each sequence.

    The values of cu_seqlens are checked for CPU tensors only (reading CUDA tensors would
    synchronize the device).

    Returns:
        ``out`` (total_q, num_heads, head_dim); with ``return_attn_probs=True``
        ``(out, softmax_lse, None)``, softmax_lse float32 (num_heads, total_q).
    """
    out, lse = _varlen(
        q,
        k,
        v,
        cu_seqlens_q,
        cu_seqlens_k,
        max_seqlen_q,
        max_seqlen_k,
        dropout_p,
        softmax_scale,
        causal,
        window_size,
        softcap,
        alibi_slopes,
        deterministic,
        block_table,
    )
    return _result(out, lse, return_attn_probs)


def flash_attn_varlen_qkvpacked_func(
    qkv: Tensor,
    cu_seqlens: Tensor,
    max_seqlen: int,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: Tensor | None = None,
    deterministic: bool = False,
    return_attn_probs: bool = False,
) -> Tensor | tuple[Tensor, Tensor, None]:
    """Variable-length attention with q, k, v packed in one tensor.

    Args:
        qkv: (total, 3, num_heads, head_dim), float16 or bfloat16.
        cu_seqlens: int32 (batch + 1,), used for queries and keys.
        max_seqlen: the longest sequence.
        Other arguments: as in :func:`flash_attn_varlen_func`.

    Returns:
        ``out`` (total, num_heads, head_dim); with ``return_attn_probs=True``
        ``(out, softmax_lse, None)``, softmax_lse float32 (num_heads, total).
    """
    qkv = _validate.check_packed("qkv", qkv, varlen=True, parts=3)
    q, k, v = qkv.unbind(1)
    out, lse = _varlen(
        q,
        k,
        v,
        cu_seqlens,
        cu_seqlens,
        max_seqlen,
        max_seqlen,
        dropout_p,
        softmax_scale,
        causal,
        window_size,
        softcap,
        alibi_slopes,
        deterministic,
    )
    return _result(out, lse, return_attn_probs)


def flash_attn_varlen_kvpacked_func(
    q: Tensor,
    kv: Tensor,
    cu_seqlens_q: Tensor,
    cu_seqlens_k: Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: Tensor | None = None,
    deterministic: bool = False,
    return_attn_probs: bool = False,
) -> Tensor | tuple[Tensor, Tensor, None]:
    """Variable-length attention with k and v packed in one tensor.

    Args:
        q: (total_q, num_heads, head_dim), float16 or bfloat16.
        kv: (total_k, 2, num_heads_k, head_dim).
        Other arguments: as in :func:`flash_attn_varlen_func`.

    Returns:
        ``out`` (total_q, num_heads, head_dim); with ``return_attn_probs=True``
        ``(out, softmax_lse, None)``, softmax_lse float32 (num_heads, total_q).
    """
    kv = _validate.check_packed("kv", kv, varlen=True, parts=2)
    k, v = kv.unbind(1)
    out, lse = _varlen(
        q,
        k,
        v,
        cu_seqlens_q,
        cu_seqlens_k,
        max_seqlen_q,
        max_seqlen_k,
        dropout_p,
        softmax_scale,
        causal,
        window_size,
        softcap,
        alibi_slopes,
        deterministic,
    )
    return _result(out, lse, return_attn_probs)
