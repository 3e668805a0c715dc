"""Test utilities shipped with ioattn (the FlashAttention test practice).

* :func:`attention_ref`: the reference pair. ``upcast=True`` is the fp32 oracle;
  ``upcast=False, reorder_ops=True`` is "PyTorch attention in the kernel's precision",
  whose error against the oracle calibrates what a kernel may be allowed.
* :func:`check_fa_rule`: FlashAttention's correctness rule,
  ``max|actual - ref| <= rtol * max|pt - ref| + atol``; prints both errors first.
* :func:`generate_random_padding_mask`, :func:`unpad_input`, :func:`pad_input`: varlen
  batches from padded ones.
"""

from __future__ import annotations

import math
import zlib

import torch
from torch import Tensor

from ioattn import _abi, _backend
from ioattn.reference import normalize_window

__all__ = [
    "attention_ref",
    "case_seed",
    "check_fa_rule",
    "fa_errors",
    "generate_random_padding_mask",
    "kernel_skip_reason",
    "pad_input",
    "reference_pair",
    "unpad_input",
]


def case_seed(*parts: object) -> int:
    """A stable per-test-case seed (independent of PYTHONHASHSEED)."""
    return zlib.crc32(repr(parts).encode()) & 0x7FFFFFFF


def _local_mask(
    seqlen_q: int,
    seqlen_k: int,
    window: tuple[int, int],
    query_padding_mask: Tensor | None,
    key_padding_mask: Tensor | None,
    batch: int,
    device: torch.device,
) -> Tensor:
    """Bool (batch, 1, seqlen_q, seqlen_k): True where a key is visible.

    Bottom-right alignment uses each sequence's real lengths (from the padding masks,
    whose True entries must form a prefix of each row)."""
    left, right = window
    i = torch.arange(seqlen_q, device=device).view(1, 1, -1, 1)
    j = torch.arange(seqlen_k, device=device).view(1, 1, 1, -1)
    if key_padding_mask is None:
        sk = torch.full((batch, 1, 1, 1), seqlen_k, device=device)
    else:
        sk = key_padding_mask.sum(-1).view(batch, 1, 1, 1)
    if query_padding_mask is None:
        sq = torch.full((batch, 1, 1, 1), seqlen_q, device=device)
    else:
        sq = query_padding_mask.sum(-1).view(batch, 1, 1, 1)
    mask = (j < sk) & (i < sq)
    if left >= 0:
        mask = mask & (j >= i + sk - sq - left)
    if right >= 0:
        mask = mask & (j <= i + sk - sq + right)
    return mask


def attention_ref(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    query_padding_mask: Tensor | None = None,
    key_padding_mask: Tensor | None = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    softmax_scale: float | None = None,
    upcast: bool = True,
    reorder_ops: bool = False,
) -> tuple[Tensor, Tensor]:
    """Dense attention over padded batches, the FA way.

    Args:
        q: (batch, seqlen_q, num_heads, head_dim); k, v: (batch, seqlen_k, num_heads_k, head_dim).
        query_padding_mask: bool (batch, seqlen_q), True for real tokens (a prefix per row).
        key_padding_mask: bool (batch, seqlen_k), likewise.
        upcast: compute in fp32 (the oracle) instead of the inputs' dtype.
        reorder_ops: scale k instead of q, to model the error of reordering operations.

    Returns:
        ``(out, lse)``: out in the inputs' dtype, zero on padded or fully masked query rows;
        lse float32 (batch, num_heads, seqlen_q), -inf on those rows.
    """
    dtype_og = q.dtype
    if upcast:
        q, k, v = q.float(), k.float(), v.float()
    b, sq, h, d = q.shape
    sk, hk = k.shape[1], k.shape[2]
    scale = 1.0 / math.sqrt(d) if softmax_scale is None else float(softmax_scale)
    k = k.repeat_interleave(h // hk, dim=2)
    v = v.repeat_interleave(h // hk, dim=2)
    if reorder_ops:
        scores = torch.einsum("bthd,bshd->bhts", q, k * scale)
    else:
        scores = torch.einsum("bthd,bshd->bhts", q * scale, k)
    if softcap > 0:
        scores = torch.tanh(scores / softcap) * softcap
    window = normalize_window(causal, window_size)
    mask = _local_mask(sq, sk, window, query_padding_mask, key_padding_mask, b, q.device)
    scores = scores.masked_fill(~mask, float("-inf"))
    lse = torch.logsumexp(scores.float(), dim=-1)
    attn = torch.softmax(scores, dim=-1)
    # Fully masked rows: softmax gives NaN; FA's convention is probability 0.
    attn = attn.masked_fill(~mask.any(dim=-1, keepdim=True), 0.0).to(v.dtype)
    out = torch.einsum("bhts,bshd->bthd", attn, v)
    if query_padding_mask is not None:
        out = out.masked_fill(~query_padding_mask.view(b, sq, 1, 1), 0.0)
    return out.to(dtype_og), lse


def fa_errors(actual: Tensor, ref: Tensor, pt: Tensor) -> tuple[float, float, float, float]:
    """(max, mean) of |actual - ref| and of |pt - ref| over positions where ref is finite."""
    finite = torch.isfinite(ref)
    a = (actual.double() - ref.double()).abs()[finite]
    p = (pt.double() - ref.double()).abs()[finite]
    if a.numel() == 0:
        return 0.0, 0.0, 0.0, 0.0
    return a.max().item(), a.mean().item(), p.max().item(), p.mean().item()


def check_fa_rule(
    name: str,
    actual: Tensor,
    ref: Tensor,
    pt: Tensor,
    rtol: float = 2.0,
    atol: float | None = None,
) -> None:
    """Assert FlashAttention's rule: ``max|actual - ref| <= rtol * max|pt - ref| + atol``.

    ``ref`` is the fp32 oracle (rounded to the kernel's dtype, as in FA's tests), ``pt``
    the same-precision PyTorch result. The default ``atol`` is twice the rounding error of
    one add/subtract of 0.3 at the magnitude of ``ref`` in ``actual``'s dtype. Where ``ref``
    is not finite (lse of a fully masked row is -inf), ``actual`` must equal it exactly.
    Both errors are printed before anything is asserted. A NaN in ``actual`` fails unless
    ``pt`` has one too.
    """
    assert actual.shape == ref.shape == pt.shape, (
        f"{name}: shapes differ: actual {tuple(actual.shape)}, ref {tuple(ref.shape)}, "
        f"pt {tuple(pt.shape)}"
    )
    if atol is None:
        r = ref.to(actual.dtype)
        finite_r = torch.where(torch.isfinite(r), r, torch.zeros_like(r))
        slack = (finite_r + 0.3 - 0.3 - finite_r).abs()
        atol = 2.0 * (slack.max().item() if slack.numel() else 0.0)
    err, err_mean, pt_err, pt_mean = fa_errors(actual, ref, pt)
    print(
        f"{name}: max|actual-ref| = {err:.3e} (mean {err_mean:.3e}); "
        f"max|pt-ref| = {pt_err:.3e} (mean {pt_mean:.3e}); "
        f"bound = {rtol} * {pt_err:.3e} + {atol:.3e} = {rtol * pt_err + atol:.3e}"
    )
    actual_nan = bool(torch.isnan(actual).any())
    pt_nan = bool(torch.isnan(pt).any())
    assert not (actual_nan and not pt_nan), f"{name}: actual has NaN but pt does not"
    nonfinite = ~torch.isfinite(ref)
    if bool(nonfinite.any()):
        bad = int((actual[nonfinite] != ref[nonfinite]).sum())
        assert bad == 0, f"{name}: {bad} positions where ref is not finite differ in actual"
    assert err <= rtol * pt_err + atol, (
        f"{name}: max error {err:.3e} exceeds {rtol} x PyTorch's error {pt_err:.3e} + "
        f"atol {atol:.3e}"
    )


def generate_random_padding_mask(
    max_seqlen: int,
    batch_size: int,
    device: torch.device | str,
    mode: str = "random",
    zero_lengths: bool = False,
) -> Tensor:
    """Bool (batch_size, max_seqlen) mask, True on a prefix of each row (the real tokens).

    mode "full": every length is max_seqlen; "random": lengths in
    [max(min_len, max_seqlen - 20), max_seqlen]; "third": in [max_seqlen // 3, max_seqlen].
    ``zero_lengths=True`` sets every 5th length and the last one to 0 (min_len is 0 then).
    Uses torch's default generator (seed it first).
    """
    if mode == "full":
        lengths = torch.full((batch_size,), max_seqlen, dtype=torch.long)
    elif mode == "random":
        low = max(0 if zero_lengths else 1, max_seqlen - 20)
        lengths = torch.randint(low, max_seqlen + 1, (batch_size,))
    elif mode == "third":
        lengths = torch.randint(max_seqlen // 3, max_seqlen + 1, (batch_size,))
    else:
        raise ValueError(f"mode: expected 'full', 'random' or 'third', got {mode!r}")
    if zero_lengths and batch_size > 0:
        lengths[::5] = 0
        lengths[-1] = 0
    positions = torch.arange(max_seqlen).unsqueeze(0)
    return (positions < lengths.unsqueeze(1)).to(device)


def unpad_input(
    hidden: Tensor, attention_mask: Tensor
) -> tuple[Tensor, Tensor, Tensor, int, Tensor]:
    """Packs the real tokens of a padded batch.

    Args:
        hidden: (batch, seqlen, ...).
        attention_mask: bool (batch, seqlen), True for real tokens.

    Returns:
        ``(unpadded, indices, cu_seqlens, max_seqlen, seqused)``: unpadded (total, ...);
        indices (total,) into the flattened (batch * seqlen) rows; cu_seqlens int32
        (batch + 1,); the longest length as an int; seqused int32 (batch,) the lengths.
    """
    lengths = attention_mask.sum(dim=-1, dtype=torch.int32)
    indices = torch.nonzero(attention_mask.flatten(), as_tuple=False).flatten()
    max_seqlen = int(lengths.max().item()) if lengths.numel() else 0
    cu_seqlens = torch.zeros(lengths.shape[0] + 1, dtype=torch.int32, device=hidden.device)
    cu_seqlens[1:] = torch.cumsum(lengths, dim=0, dtype=torch.int32).to(hidden.device)
    flat = hidden.reshape(-1, *hidden.shape[2:])
    return flat.index_select(0, indices.to(hidden.device)), indices, cu_seqlens, max_seqlen, lengths


def pad_input(hidden: Tensor, indices: Tensor, batch: int, seqlen: int) -> Tensor:
    """Inverse of :func:`unpad_input`: scatters (total, ...) rows into zeros (batch, seqlen, ...)."""
    out = hidden.new_zeros((batch * seqlen, *hidden.shape[1:]))
    out.index_copy_(0, indices.to(hidden.device), hidden)
    return out.view(batch, seqlen, *hidden.shape[1:])


def reference_pair(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    query_padding_mask: Tensor | None = None,
    key_padding_mask: Tensor | None = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    softmax_scale: float | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(out_ref, lse_ref, out_pt, lse_pt)``: the fp32 oracle and the same-precision
    PyTorch attention (``reorder_ops=True``), as :func:`check_fa_rule` wants them."""
    kwargs = {
        "query_padding_mask": query_padding_mask,
        "key_padding_mask": key_padding_mask,
        "causal": causal,
        "window_size": window_size,
        "softcap": softcap,
        "softmax_scale": softmax_scale,
    }
    out_ref, lse_ref = attention_ref(q, k, v, upcast=True, **kwargs)  # type: ignore[arg-type]
    out_pt, lse_pt = attention_ref(
        q,
        k,
        v,
        upcast=False,
        reorder_ops=True,
        **kwargs,  # type: ignore[arg-type]
    )
    return out_ref, lse_ref, out_pt, lse_pt


def kernel_skip_reason(
    dtype: torch.dtype,
    head_dim: int,
    softcap: float = 0.0,
    library: str | None = None,
    exact: bool = False,
) -> str | None:
    """Why the built kernel library cannot run a forward of this kind (None if it can).

    ``library`` defaults to the one ``IOATTN_BACKEND`` forces, else sm80 (which the dispatcher
    falls back to). Reads ``ioattn_build_info()``: a pruned development build may lack a
    dtype, the large head dims (the library runs a head_dim padded up to the next compiled
    size) or softcap. ``exact``: the head dim itself must be compiled, for tests of one head
    dim's own tiles (a pruned build would run it padded in a larger head dim's kernel). With
    ``IOATTN_BACKEND=reference`` nothing is skipped.
    """
    forced = _backend.forced_backend()
    if forced == "reference":
        return None
    library = library or forced or "sm80"
    lib = _abi.load_library(library)
    if lib is None:
        return f"the {library} kernel library is not built"
    name = {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, str(dtype))
    kernels = [k for k in lib.build_info().get("kernels", []) if k.get("op") == "fwd"]
    dims = [
        int(k["head_dim"])
        for k in kernels
        if k.get("dtype") == name and (softcap == 0.0 or k.get("softcap"))
    ]
    feature = f"{name} forward" + (" with softcap" if softcap else "")
    if not dims:
        return f"this {library} build has no {feature} kernel"
    padded = -(-head_dim // 8) * 8
    if padded > max(dims):
        return f"this {library} build compiles {feature} only up to head_dim {max(dims)}"
    if exact and padded not in dims:
        return f"this {library} build has no {feature} kernel of head_dim {padded} itself"
    return None
