"""Argument checks of the public API. They run before any kernel and never write to a tensor.

Errors name the argument and what was expected, e.g.
``ValueError: k: expected head_dim 64 (from q), got 128``.

* TypeError: a non-tensor where a tensor is needed, a wrong dtype (q, k, v must all be
  float16 or all bfloat16; cu_seqlens must be int32), non-int max_seqlen.
* ValueError: wrong device, rank or shape, head_dim outside [1, 256], num_heads not a
  multiple of num_heads_k, a last dimension that is not contiguous, bad cu_seqlens, bad
  scalar options.
* NotImplementedError: features the library does not have yet (dropout, ALiBi, paged KV).

The values inside cu_seqlens (starts at 0, never decreases, ends at the number of tokens,
max_seqlen large enough) are checked only for CPU tensors: reading a CUDA tensor would
synchronize the device. On CUDA a wrong cu_seqlens is the caller's contract to keep.
"""

from __future__ import annotations

import math
import operator
from typing import Any

import torch
from torch import Tensor

MAX_HEAD_DIM = 256
QKV_DTYPES = (torch.float16, torch.bfloat16)


def _type_name(x: object) -> str:
    return type(x).__name__


def _is_int(x: object) -> bool:
    """An int, a SymInt, or an integer scalar such as numpy.int64 (not bool, not a tensor)."""
    if isinstance(x, (bool, Tensor)):
        return False
    return isinstance(x, (int, torch.SymInt)) or hasattr(type(x), "__index__")


def _as_int(x: Any) -> Any:
    """A Python int from an integer scalar (SymInts pass through for torch.compile)."""
    return x if isinstance(x, (int, torch.SymInt)) else operator.index(x)


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float, torch.SymInt, torch.SymFloat)) and not isinstance(x, bool)


def check_unsupported(
    dropout_p: Any = 0.0, alibi_slopes: Any = None, block_table: Any = None
) -> None:
    """NotImplementedError for features that are not built yet; ValueError for a bad dropout_p."""
    if dropout_p == 0.0 and alibi_slopes is None and block_table is None:
        return  # the common case, cheaply
    if not _is_number(dropout_p) or not 0.0 <= float(dropout_p) <= 1.0:
        raise ValueError(f"dropout_p: expected a float in [0, 1], got {dropout_p!r}")
    if float(dropout_p) > 0.0:
        raise NotImplementedError(
            f"ioattn: dropout is not implemented yet (dropout_p={dropout_p}); pass dropout_p=0.0"
        )
    if alibi_slopes is not None:
        raise NotImplementedError("ioattn: ALiBi (alibi_slopes) is not implemented yet")
    if block_table is not None:
        raise NotImplementedError("ioattn: paged KV (block_table) is not implemented yet")


def check_tensor(name: str, t: object) -> Tensor:
    """TypeError unless ``t`` is a tensor."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {_type_name(t)}")
    return t


def _check_rank(name: str, t: Tensor, rank: int, layout: str) -> None:
    if t.dim() != rank:
        raise ValueError(
            f"{name}: expected a {rank}-D tensor {layout}, got {t.dim()}-D of shape "
            f"{tuple(t.shape)}"
        )


def _check_last_dim(name: str, t: Tensor) -> None:
    if t.stride(-1) != 1 and t.shape[-1] != 1:
        raise ValueError(
            f"{name}: the last dimension (head_dim) must be contiguous (stride(-1) == 1), "
            f"got stride {t.stride(-1)}; call .contiguous() first"
        )


def check_qkv(q: Any, k: Any, v: Any, varlen: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Checks q, k, v of the dense (4-D) or varlen (3-D) layout; returns them typed."""
    # Fast path for valid input (each tensor property read costs ~0.3-0.5 us); anything
    # unusual falls through to the detailed checks below, which name the problem.
    if isinstance(q, Tensor) and isinstance(k, Tensor) and isinstance(v, Tensor):
        dtype = q.dtype
        qs, ks = q.shape, k.shape
        if (
            (dtype is torch.float16 or dtype is torch.bfloat16)
            and k.dtype is dtype
            and v.dtype is dtype
            and len(qs) == (3 if varlen else 4)
            and ks == v.shape
            and 1 <= qs[-1] <= MAX_HEAD_DIM
            and ks[-1] == qs[-1]
            and (varlen or ks[0] == qs[0])
            and ks[-2] >= 1
            and qs[-2] % ks[-2] == 0
            and q.stride(-1) == 1
            and k.stride(-1) == 1
            and v.stride(-1) == 1
        ):
            device = q.device
            if k.device == device and v.device == device:
                return q, k, v
    return _check_qkv_detailed(q, k, v, varlen)


def _check_qkv_detailed(q: Any, k: Any, v: Any, varlen: bool) -> tuple[Tensor, Tensor, Tensor]:
    q = check_tensor("q", q)
    k = check_tensor("k", k)
    v = check_tensor("v", v)
    if q.dtype not in QKV_DTYPES:
        raise TypeError(f"q: expected dtype torch.float16 or torch.bfloat16, got {q.dtype}")
    for name, t in (("k", k), ("v", v)):
        if t.dtype != q.dtype:
            raise TypeError(f"{name}: expected dtype {q.dtype} (from q), got {t.dtype}")
    for name, t in (("k", k), ("v", v)):
        if t.device != q.device:
            raise ValueError(f"{name}: expected device {q.device} (from q), got {t.device}")
    if varlen:
        rank = 3
        q_layout = "(total_q, num_heads, head_dim)"
        kv_layout = "(total_k, num_heads_k, head_dim)"
    else:
        rank = 4
        q_layout = "(batch, seqlen_q, num_heads, head_dim)"
        kv_layout = "(batch, seqlen_k, num_heads_k, head_dim)"
    _check_rank("q", q, rank, q_layout)
    _check_rank("k", k, rank, kv_layout)
    _check_rank("v", v, rank, kv_layout)
    head_dim = q.shape[-1]
    if not 1 <= head_dim <= MAX_HEAD_DIM:
        raise ValueError(f"q: expected head_dim in [1, {MAX_HEAD_DIM}], got {head_dim}")
    for name, t in (("k", k), ("v", v)):
        if t.shape[-1] != head_dim:
            raise ValueError(f"{name}: expected head_dim {head_dim} (from q), got {t.shape[-1]}")
    if not varlen:
        for name, t in (("k", k), ("v", v)):
            if t.shape[0] != q.shape[0]:
                raise ValueError(f"{name}: expected batch {q.shape[0]} (from q), got {t.shape[0]}")
        if v.shape[1] != k.shape[1]:
            raise ValueError(f"v: expected seqlen_k {k.shape[1]} (from k), got {v.shape[1]}")
    elif v.shape[0] != k.shape[0]:
        raise ValueError(f"v: expected total_k {k.shape[0]} (from k), got {v.shape[0]}")
    if v.shape[-2] != k.shape[-2]:
        raise ValueError(f"v: expected num_heads_k {k.shape[-2]} (from k), got {v.shape[-2]}")
    num_heads, num_heads_k = q.shape[-2], k.shape[-2]
    if num_heads_k < 1:
        raise ValueError(f"k: expected at least 1 head, got num_heads_k {num_heads_k}")
    if num_heads % num_heads_k != 0:
        raise ValueError(
            f"k: expected num_heads_k to divide num_heads {num_heads} (from q), "
            f"got num_heads_k {num_heads_k}"
        )
    for name, t in (("q", q), ("k", k), ("v", v)):
        _check_last_dim(name, t)
    return q, k, v


def check_packed(name: str, t: object, varlen: bool, parts: int) -> Tensor:
    """Checks a packed qkv (parts=3) or kv (parts=2) tensor before it is unbound."""
    t = check_tensor(name, t)
    heads = "num_heads" if parts == 3 else "num_heads_k"
    if varlen:
        rank, layout, axis = 4, f"(total, {parts}, {heads}, head_dim)", 1
    else:
        rank, layout, axis = 5, f"(batch, seqlen, {parts}, {heads}, head_dim)", 2
    _check_rank(name, t, rank, layout)
    if t.shape[axis] != parts:
        raise ValueError(
            f"{name}: expected size {parts} in dimension {axis} {layout}, got shape "
            f"{tuple(t.shape)}"
        )
    return t


def _can_read_values(t: Tensor) -> bool:
    """True when reading t's values is cheap and possible (a real CPU tensor, not tracing)."""
    if t.device.type != "cpu" or type(t) is not Tensor:
        return False
    compiling = getattr(torch.compiler, "is_compiling", None)
    return not (compiling is not None and compiling())


def check_varlen(
    q: Tensor,
    k: Tensor,
    cu_seqlens_q: Any,
    cu_seqlens_k: Any,
    max_seqlen_q: Any,
    max_seqlen_k: Any,
) -> tuple[Tensor, Tensor, Any, Any]:
    """Checks cu_seqlens and max_seqlen; returns (cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
    max_seqlen_k) with the maxima as Python ints (or SymInts while tracing)."""
    # Fast path: well-formed CUDA metadata (whose values are never read; see module doc).
    if (
        isinstance(cu_seqlens_q, Tensor)
        and isinstance(cu_seqlens_k, Tensor)
        and type(max_seqlen_q) is int
        and type(max_seqlen_k) is int
        and max_seqlen_q >= 0
        and max_seqlen_k >= 0
        and cu_seqlens_q.dtype is torch.int32
        and cu_seqlens_k.dtype is torch.int32
    ):
        shape = cu_seqlens_q.shape
        if len(shape) == 1 and shape[0] >= 1 and cu_seqlens_k.shape == shape:
            device = q.device
            if (
                device.type == "cuda"
                and cu_seqlens_q.device == device
                and cu_seqlens_k.device == device
            ):
                return cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k
    cu_q = check_tensor("cu_seqlens_q", cu_seqlens_q)
    cu_k = check_tensor("cu_seqlens_k", cu_seqlens_k)
    for name, t in (("cu_seqlens_q", cu_q), ("cu_seqlens_k", cu_k)):
        if t.dtype != torch.int32:
            raise TypeError(f"{name}: expected dtype torch.int32, got {t.dtype}")
        if t.device != q.device:
            raise ValueError(f"{name}: expected device {q.device} (from q), got {t.device}")
        if t.dim() != 1:
            raise ValueError(
                f"{name}: expected a 1-D tensor (batch + 1,), got shape {tuple(t.shape)}"
            )
    if cu_q.shape[0] < 1:
        raise ValueError("cu_seqlens_q: expected batch + 1 >= 1 elements, got 0")
    if cu_k.shape[0] != cu_q.shape[0]:
        raise ValueError(
            f"cu_seqlens_k: expected {cu_q.shape[0]} elements (batch + 1, from cu_seqlens_q), "
            f"got {cu_k.shape[0]}"
        )
    for name, m in (("max_seqlen_q", max_seqlen_q), ("max_seqlen_k", max_seqlen_k)):
        if not _is_int(m):
            raise TypeError(f"{name}: expected an int, got {_type_name(m)}")
        if m < 0:
            raise ValueError(f"{name}: expected a non-negative int, got {m}")
    for name, t, total, m, mname in (
        ("cu_seqlens_q", cu_q, q.shape[0], max_seqlen_q, "max_seqlen_q"),
        ("cu_seqlens_k", cu_k, k.shape[0], max_seqlen_k, "max_seqlen_k"),
    ):
        if _can_read_values(t):
            _check_cu_values(name, t, int(total), _as_int(m), mname)
    return cu_q, cu_k, _as_int(max_seqlen_q), _as_int(max_seqlen_k)


def _check_cu_values(name: str, t: Tensor, total: int, max_seqlen: int, mname: str) -> None:
    values = t.tolist()
    if values[0] != 0:
        raise ValueError(f"{name}: expected the first value to be 0, got {values[0]}")
    lengths = [b - a for a, b in zip(values[:-1], values[1:])]
    for i, n in enumerate(lengths):
        if n < 0:
            raise ValueError(
                f"{name}: expected non-decreasing values, got {values[i]} then {values[i + 1]} "
                f"at index {i}"
            )
    if values[-1] != total:
        raise ValueError(
            f"{name}: expected the last value to equal the number of tokens {total}, "
            f"got {values[-1]}"
        )
    longest = max(lengths, default=0)
    if longest > max_seqlen:
        raise ValueError(
            f"{mname}: expected at least the longest sequence in {name} ({longest}), "
            f"got {max_seqlen}"
        )


def check_window(window_size: Any) -> tuple[int, int]:
    """(left, right) from a 2-sequence of ints >= -1 (-1 = unbounded)."""
    if window_size == (-1, -1) and type(window_size) is tuple:
        return -1, -1  # the default, cheaply
    if not isinstance(window_size, (tuple, list)) or len(window_size) != 2:
        raise ValueError(f"window_size: expected a (left, right) pair of ints, got {window_size!r}")
    left, right = window_size
    if not _is_int(left) or not _is_int(right):
        raise ValueError(f"window_size: expected a (left, right) pair of ints, got {window_size!r}")
    if left < -1 or right < -1:
        raise ValueError(
            f"window_size: expected values >= -1 (-1 = unbounded), got {tuple(window_size)!r}"
        )
    return _as_int(left), _as_int(right)


def check_softcap(softcap: Any) -> float:
    """softcap as a float >= 0 (0 = off)."""
    if type(softcap) is float and softcap == 0.0:
        return 0.0
    if not _is_number(softcap) or not math.isfinite(float(softcap)) or float(softcap) < 0.0:
        raise ValueError(f"softcap: expected a finite float >= 0 (0 = off), got {softcap!r}")
    return float(softcap)


def check_scale(softmax_scale: Any, head_dim: int) -> float:
    """softmax_scale, defaulting to 1/sqrt(head_dim) (the unpadded head_dim)."""
    if softmax_scale is None:
        return 1.0 / math.sqrt(head_dim)
    # > 0: the kernels subtract the row maximum of the unscaled scores, which is the maximum of
    # the scaled ones only for a positive scale.
    if not _is_number(softmax_scale) or not (0.0 < float(softmax_scale) < math.inf):
        raise ValueError(
            f"softmax_scale: expected a finite float > 0 or None, got {softmax_scale!r}"
        )
    return float(softmax_scale)


def effective_window(
    causal: bool, window: tuple[int, int], seqlen_q: int, seqlen_k: int
) -> tuple[int, int]:
    """Kernel window from FA arguments: causal sets right to 0; a bound that cannot exclude
    any key of any row (left >= seqlen_k - 1, right >= seqlen_q - 1, with bottom-right
    alignment) becomes -1. The result is always equivalent to the request; seqlen_q and
    seqlen_k are maxima for varlen, which keeps the rewrite exact for every sequence."""
    left, right = window
    if causal:
        right = 0
    if left >= 0 and left >= seqlen_k - 1:
        left = -1
    if right >= 0 and right >= seqlen_q - 1:
        right = -1
    return left, right
