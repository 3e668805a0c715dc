"""torch.library ops of ioattn (``torch.ops.ioattn.*``).

``ioattn::fwd`` computes ``(out, lse)``; ``ioattn::bwd`` computes ``(dq, dk, dv)`` from dout
and the forward's inputs, out and lse. The CPU kernels are the tiled reference; the CUDA
kernels allocate outputs (and the backward's workspace) with torch (the libraries never
allocate), fill the C ABI struct and launch the chosen library on the current stream of the
tensors' device. The fake kernels give shapes for torch.compile. The op expects arguments already checked by
``_validate`` (the public functions in ``interface.py`` do that); the libraries check the
struct again themselves.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ioattn import _abi, _backend, reference

__all__ = ["aligned_view", "bwd", "fwd", "fwd_autograd", "needs_copy"]

_LIB = torch.library.Library("ioattn", "FRAGMENT")  # kept alive by this module

_FWD_SCHEMA = (
    "(Tensor q, Tensor k, Tensor v, Tensor? cu_seqlens_q, Tensor? cu_seqlens_k, "
    "int max_seqlen_q, int max_seqlen_k, float softmax_scale, int window_left, "
    "int window_right, float softcap, bool deterministic) -> (Tensor out, Tensor lse)"
)

_BWD_SCHEMA = (
    "(Tensor dout, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, Tensor? cu_seqlens_q, "
    "Tensor? cu_seqlens_k, int max_seqlen_q, int max_seqlen_k, float softmax_scale, "
    "int window_left, int window_right, float softcap, bool deterministic) "
    "-> (Tensor dq, Tensor dk, Tensor dv)"
)

torch.library.define("ioattn::fwd", _FWD_SCHEMA, lib=_LIB)
torch.library.define("ioattn::bwd", _BWD_SCHEMA, lib=_LIB)

_register_fake = getattr(torch.library, "register_fake", None) or torch.library.impl_abstract

_DTYPE_CODES = {torch.float16: _abi.DTYPE_FP16, torch.bfloat16: _abi.DTYPE_BF16}
_ALIGN_BYTES = 16
_ALIGN_ELEMS = 8  # 16 bytes of fp16/bf16

_raw_stream = getattr(torch._C, "_cuda_getCurrentRawStream", None)


def _missing() -> bool:  # stands in for a check this torch lacks: assume something is watching
    return True


_dispatch_modes = getattr(torch._C, "_len_torch_dispatch_stack", None)
_function_modes = getattr(torch._C, "_is_torch_function_mode_enabled", _missing)
_profiling = getattr(torch.autograd, "_profiler_enabled", _missing)
_functorch_stack = getattr(getattr(torch._C, "_functorch", None), "peek_interpreter_stack", None)


def nothing_watching() -> bool:
    """True when no torch dispatch or torch function mode, functorch transform or profiler
    is active: nothing that must see ``ioattn::fwd`` / ``ioattn::bwd`` as an op."""
    if _dispatch_modes is None or _dispatch_modes():
        return False
    if _functorch_stack is None or _functorch_stack() is not None:
        return False
    return not (_function_modes() or _profiling())


def _direct(*tensors: Tensor | None) -> bool:
    """True when an eager call may run the CUDA kernel function (``_fwd_cuda``, ``_bwd_cuda``)
    itself instead of through the dispatcher, whose round trip into a Python kernel costs
    ~20 us of host time (an H100 host), most of this op's host overhead on a small problem:
    every tensor a plain CUDA ``torch.Tensor`` (no subclass, fake or functional tensor) and
    nothing watching (:func:`nothing_watching`)."""
    for t in tensors:
        if t is not None and (type(t) is not Tensor or not t.is_cuda):
            return False
    return nothing_watching()


def needs_copy(t: Tensor) -> bool:
    """True if ``t`` breaks the kernel's layout contract: data pointer not 16-byte aligned,
    last stride not 1, or a non-last stride that is not a multiple of 8 elements."""
    if t.numel() == 0:
        return False
    return _misaligned(t, t.stride())


def _misaligned(t: Tensor, strides: tuple[int, ...]) -> bool:
    if strides[-1] != 1 or t.data_ptr() % _ALIGN_BYTES:
        return True
    bits = 0
    for s in strides[:-1]:
        bits |= s
    return bits % _ALIGN_ELEMS != 0


def aligned_view(t: Tensor) -> Tensor:
    """``t`` itself when it meets the kernel's layout contract, else a fresh packed copy."""
    return _aligned(t)[0]


def _aligned(t: Tensor) -> tuple[Tensor, tuple[int, ...]]:
    """``t`` or a packed copy that meets the layout contract, and its strides."""
    strides = t.stride()
    if not _misaligned(t, strides):
        return t, strides
    fresh = torch.empty(t.shape, dtype=t.dtype, device=t.device)
    fresh.copy_(t)
    return fresh, fresh.stride()


def _out_shapes(q: Tensor, cu_seqlens_q: Tensor | None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    if cu_seqlens_q is not None:
        total_q, h, _ = q.shape
        return tuple(q.shape), (h, total_q)
    b, sq, h, _ = q.shape
    return tuple(q.shape), (b, h, sq)


def _fwd_cpu(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    cu_seqlens_q: Tensor | None,
    cu_seqlens_k: Tensor | None,
    max_seqlen_q: int,
    max_seqlen_k: int,
    softmax_scale: float,
    window_left: int,
    window_right: int,
    softcap: float,
    deterministic: bool,
) -> tuple[Tensor, Tensor]:
    _backend.candidates(q.device)  # CPU: always the reference; still rejects a bad IOATTN_BACKEND
    return _reference(
        q, k, v, cu_seqlens_q, cu_seqlens_k, softmax_scale, window_left, window_right, softcap
    )


def _reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    cu_seqlens_q: Tensor | None,
    cu_seqlens_k: Tensor | None,
    softmax_scale: float,
    window_left: int,
    window_right: int,
    softcap: float,
) -> tuple[Tensor, Tensor]:
    out, lse = reference.attention_tiled(
        q,
        k,
        v,
        cu_seqlens_q,
        cu_seqlens_k,
        softmax_scale=softmax_scale,
        window_size=(window_left, window_right),
        softcap=softcap,
    )
    return out.contiguous(), lse.contiguous()


def _current_stream(index: int) -> int:
    if _raw_stream is not None:
        return int(_raw_stream(index))
    return int(torch.cuda.current_stream(index).cuda_stream)


def _fwd_cuda(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    cu_seqlens_q: Tensor | None,
    cu_seqlens_k: Tensor | None,
    max_seqlen_q: int,
    max_seqlen_k: int,
    softmax_scale: float,
    window_left: int,
    window_right: int,
    softcap: float,
    deterministic: bool,
) -> tuple[Tensor, Tensor]:
    # Hot path: every property access costs ~0.5 us, so shapes and strides are read once.
    qshape = q.shape
    num_heads, head_dim = qshape[-2], qshape[-1]
    out = q.new_empty(qshape)  # packed: strides follow from the shape
    if cu_seqlens_q is not None:
        assert cu_seqlens_k is not None
        total_q = qshape[0]
        lse = q.new_empty((num_heads, total_q), dtype=torch.float32)
        batch = cu_seqlens_q.shape[0] - 1
        seqlen_q, seqlen_k = max_seqlen_q, max_seqlen_k
        total_k = k.shape[0]
        no_keys = total_k == 0 or seqlen_k == 0
        empty = total_q == 0
    else:
        batch, seqlen_q = qshape[0], qshape[1]
        lse = q.new_empty((batch, num_heads, seqlen_q), dtype=torch.float32)
        seqlen_k = k.shape[1]
        total_q, total_k = batch * seqlen_q, batch * seqlen_k
        no_keys = seqlen_k == 0
        empty = batch == 0 or seqlen_q == 0
    if empty or num_heads == 0:
        return out, lse  # nothing to compute: never launch an empty grid
    if batch == 0 or no_keys:
        out.zero_()
        lse.fill_(-math.inf)
        return out, lse

    cands = _backend.candidates(q.device)
    index = q.get_device()
    if cands[0].is_reference:  # forced with IOATTN_BACKEND=reference
        with torch.cuda.device(index):
            return _reference(
                q,
                k,
                v,
                cu_seqlens_q,
                cu_seqlens_k,
                softmax_scale,
                window_left,
                window_right,
                softcap,
            )

    q, qs = _aligned(q)
    k, ks = _aligned(k)
    v, vs = _aligned(v)
    row = num_heads * head_dim
    if cu_seqlens_q is not None:
        assert cu_seqlens_k is not None
        # keep the (possibly copied) tensors referenced until the launch is enqueued
        cu_seqlens_q = cu_seqlens_q.contiguous()
        cu_seqlens_k = cu_seqlens_k.contiguous()
        cu_q_ptr, cu_k_ptr = cu_seqlens_q.data_ptr(), cu_seqlens_k.data_ptr()
        strides = (0, qs[0], qs[1], 0, ks[0], ks[1], 0, vs[0], vs[1], 0, row, head_dim, 0, total_q)
    else:
        cu_q_ptr = cu_k_ptr = None
        strides = (
            *qs[:3], *ks[:3], *vs[:3], seqlen_q * row, row, head_dim,
            num_heads * seqlen_q, seqlen_q,
        )  # fmt: skip
    args = _abi.FwdArgs(
        _abi.FWD_ARGS_SIZE,
        q.data_ptr(),
        k.data_ptr(),
        v.data_ptr(),
        out.data_ptr(),
        lse.data_ptr(),
        cu_q_ptr,
        cu_k_ptr,
        *strides,
        batch,
        seqlen_q,
        seqlen_k,
        total_q,
        total_k,
        num_heads,
        k.shape[-2],
        head_dim,
        window_left,
        window_right,
        softmax_scale,
        softcap,
        _DTYPE_CODES[q.dtype],
        index,
        _current_stream(index),
    )
    if torch.cuda.current_device() == index:
        _launch(cands, args)
    else:
        with torch.cuda.device(index):
            _launch(cands, args)
    return out, lse


def _launch(cands: tuple[_backend.Backend, ...], args: _abi.FwdArgs) -> None:
    """Runs ``args`` on the first candidate library that supports them. The preferred one is
    simply asked to launch (one C call: ioattn_fwd plans first and launches nothing when it
    declines); only when it answers ERR_UNSUPPORTED does ``pick`` find the next one, or
    collect every library's reason."""
    first = cands[0].library
    assert first is not None
    status = first.fwd_launch(args)
    if status == _abi.ERR_UNSUPPORTED:
        backend = _backend.pick(cands, args)
        assert backend.library is not None
        backend.library.fwd(args)
    else:
        first.raise_for_fwd(status)


def _bwd_reference(
    dout: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    lse: Tensor,
    cu_seqlens_q: Tensor | None,
    cu_seqlens_k: Tensor | None,
    softmax_scale: float,
    window_left: int,
    window_right: int,
    softcap: float,
) -> tuple[Tensor, Tensor, Tensor]:
    dq, dk, dv = reference.attention_backward_tiled(
        dout,
        q,
        k,
        v,
        out,
        lse,
        cu_seqlens_q,
        cu_seqlens_k,
        softmax_scale=softmax_scale,
        window_size=(window_left, window_right),
        softcap=softcap,
    )
    return dq.contiguous(), dk.contiguous(), dv.contiguous()


def _bwd_cpu(
    dout: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    lse: Tensor,
    cu_seqlens_q: Tensor | None,
    cu_seqlens_k: Tensor | None,
    max_seqlen_q: int,
    max_seqlen_k: int,
    softmax_scale: float,
    window_left: int,
    window_right: int,
    softcap: float,
    deterministic: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    _backend.candidates(q.device)  # CPU: always the reference; still rejects a bad IOATTN_BACKEND
    return _bwd_reference(
        dout, q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, softmax_scale, window_left,
        window_right, softcap,
    )  # fmt: skip


def _bwd_cuda(
    dout: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    lse: Tensor,
    cu_seqlens_q: Tensor | None,
    cu_seqlens_k: Tensor | None,
    max_seqlen_q: int,
    max_seqlen_k: int,
    softmax_scale: float,
    window_left: int,
    window_right: int,
    softcap: float,
    deterministic: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    qshape, kshape = q.shape, k.shape
    num_heads, head_dim = qshape[-2], qshape[-1]
    dq = q.new_empty(qshape)  # packed: strides follow from the shapes
    dk = k.new_empty(kshape)
    dv = v.new_empty(kshape)
    if dq.numel() == 0 or dk.numel() == 0:
        # No queries or no keys: no attention, so zero gradients (never an empty grid).
        return dq.zero_(), dk.zero_(), dv.zero_()

    cands = _backend.candidates(q.device)
    index = q.get_device()
    if cands[0].is_reference:  # forced with IOATTN_BACKEND=reference
        with torch.cuda.device(index):
            return _bwd_reference(
                dout, q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, softmax_scale,
                window_left, window_right, softcap,
            )  # fmt: skip

    dout, ds = _aligned(dout)
    q, qs = _aligned(q)
    k, ks = _aligned(k)
    v, vs = _aligned(v)
    out, os_ = _aligned(out)
    lse = lse.contiguous()
    row = num_heads * head_dim
    row_k = kshape[-2] * head_dim
    if cu_seqlens_q is not None:
        assert cu_seqlens_k is not None
        cu_seqlens_q = cu_seqlens_q.contiguous()
        cu_seqlens_k = cu_seqlens_k.contiguous()
        cu_q_ptr, cu_k_ptr = cu_seqlens_q.data_ptr(), cu_seqlens_k.data_ptr()
        batch = cu_seqlens_q.shape[0] - 1
        total_q = qshape[0]
        seqlen_q, seqlen_k = max_seqlen_q, max_seqlen_k
        strides = (
            0, qs[0], qs[1], 0, ks[0], ks[1], 0, vs[0], vs[1], 0, os_[0], os_[1],
            0, ds[0], ds[1], 0, row, head_dim, 0, row_k, head_dim, 0, row_k, head_dim,
            0, total_q,
        )  # fmt: skip
    else:
        cu_q_ptr = cu_k_ptr = None
        batch, seqlen_q = qshape[0], qshape[1]
        seqlen_k = kshape[1]
        total_q = batch * seqlen_q
        strides = (
            *qs[:3], *ks[:3], *vs[:3], *os_[:3], *ds[:3],
            seqlen_q * row, row, head_dim, seqlen_k * row_k, row_k, head_dim,
            seqlen_k * row_k, row_k, head_dim, num_heads * seqlen_q, seqlen_q,
        )  # fmt: skip
    args = _abi.BwdArgs(
        _abi.BWD_ARGS_SIZE,
        q.data_ptr(),
        k.data_ptr(),
        v.data_ptr(),
        out.data_ptr(),
        lse.data_ptr(),
        dout.data_ptr(),
        dq.data_ptr(),
        dk.data_ptr(),
        dv.data_ptr(),
        cu_q_ptr,
        cu_k_ptr,
        None,
        0,
        *strides,
        batch,
        seqlen_q,
        seqlen_k,
        total_q,
        num_heads,
        kshape[-2],
        head_dim,
        window_left,
        window_right,
        softmax_scale,
        softcap,
        _DTYPE_CODES[q.dtype],
        index,
        int(deterministic),
        0,
        _current_stream(index),
    )
    if torch.cuda.current_device() == index:
        _launch_bwd(cands, args, q.device)
    else:
        with torch.cuda.device(index):
            _launch_bwd(cands, args, q.device)
    return dq, dk, dv


def _launch_bwd(
    cands: tuple[_backend.Backend, ...], args: _abi.BwdArgs, device: torch.device
) -> Tensor:
    """Picks the library, allocates the workspace it asks for and launches. The workspace may be
    freed once the kernels are enqueued: the caching allocator reuses it only in stream order."""
    backend, nbytes = _backend.pick_bwd(cands, args)
    library = backend.library
    assert library is not None
    workspace = torch.empty(max(nbytes, 1), dtype=torch.uint8, device=device)
    args.workspace = workspace.data_ptr()
    args.workspace_bytes = nbytes
    library.bwd(args)
    return workspace


def _bwd_fake(
    dout: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    lse: Tensor,
    cu_seqlens_q: Tensor | None,
    cu_seqlens_k: Tensor | None,
    max_seqlen_q: int,
    max_seqlen_k: int,
    softmax_scale: float,
    window_left: int,
    window_right: int,
    softcap: float,
    deterministic: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _fwd_fake(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    cu_seqlens_q: Tensor | None,
    cu_seqlens_k: Tensor | None,
    max_seqlen_q: int,
    max_seqlen_k: int,
    softmax_scale: float,
    window_left: int,
    window_right: int,
    softcap: float,
    deterministic: bool,
) -> tuple[Tensor, Tensor]:
    out_shape, lse_shape = _out_shapes(q, cu_seqlens_q)
    out = q.new_empty(out_shape)
    lse = q.new_empty(lse_shape, dtype=torch.float32)
    return out, lse


# Registered explicitly (the decorator forms return None on some torch versions, which would
# leave these module names unusable).
torch.library.impl("ioattn::fwd", "cpu", _fwd_cpu, lib=_LIB)
torch.library.impl("ioattn::fwd", "cuda", _fwd_cuda, lib=_LIB)
_register_fake("ioattn::fwd", _fwd_fake, lib=_LIB)
torch.library.impl("ioattn::bwd", "cpu", _bwd_cpu, lib=_LIB)
torch.library.impl("ioattn::bwd", "cuda", _bwd_cuda, lib=_LIB)
_register_fake("ioattn::bwd", _bwd_fake, lib=_LIB)


# Autograd: ioattn::fwd is differentiable in q, k, v through ioattn::bwd, which recomputes
# attention from the saved out and lse (FlashAttention's memory trade). lse is an output for
# the caller's information only: it is marked non-differentiable.
#
# The kernel sits at the op's Autograd dispatch key, as torch.library.register_autograd would
# put it, but written out: register_autograd re-binds the schema's defaults on every call
# (~100 us per forward in torch 2.11), most of this op's host cost on a small problem. Below
# it, eager calls on plain CUDA tensors run the CUDA kernel functions directly (_direct).
class _FwdAutograd(torch.autograd.Function):
    # apply(q, k, v, cu_seqlens_q, cu_seqlens_k, params): the scalar tail of the schema
    # (max_seqlen_q ... deterministic) travels as one tuple, since apply's host cost grows
    # with the number of arguments (12 us less per call than 12 arguments, an H100 host).
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        cu_seqlens_q: Tensor | None,
        cu_seqlens_k: Tensor | None,
        params: tuple[Any, ...],
    ) -> tuple[Tensor, Tensor]:
        out, lse = _fwd_below_autograd(q, k, v, cu_seqlens_q, cu_seqlens_k, *params)
        ctx.save_for_backward(q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k)
        ctx.params = params  # the bwd schema's tail, too
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx: Any, dout: Tensor, _dlse: Tensor | None) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k = ctx.saved_tensors
        args = (dout, q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, *ctx.params)
        if torch.is_grad_enabled():  # create_graph=True: through ioattn::bwd's autograd
            dq, dk, dv = torch.ops.ioattn.bwd.default(*args)
        elif _direct(dout, q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k):
            dq, dk, dv = _bwd_cuda(*args)  # the usual case: straight to the kernel function
        else:  # below autograd (nothing to record), through the dispatcher
            with torch._C._AutoDispatchBelowAutograd():
                dq, dk, dv = torch.ops.ioattn.bwd.default(*args)
        return dq, dk, dv, None, None, None


def fwd_autograd(*args: Any) -> tuple[Tensor, Tensor]:
    """The Autograd kernel of ``ioattn::fwd`` (same arguments). Eager callers may call it
    directly, saving the dispatcher's round trip into it."""
    q, k, v = args[:3]
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        return _FwdAutograd.apply(q, k, v, args[3], args[4], args[5:])
    return _fwd_below_autograd(*args)


def _fwd_below_autograd(*args: Any) -> tuple[Tensor, Tensor]:
    """``ioattn::fwd`` below the Autograd key: the CUDA kernel function itself where
    :func:`_direct` allows, else through the dispatcher (to the CUDA / CPU / fake kernel)."""
    if _direct(*args[:5]):
        return _fwd_cuda(*args)
    with torch._C._AutoDispatchBelowAutograd():
        return torch.ops.ioattn.fwd.default(*args)


def _bwd_backward(ctx: Any, *grads: Tensor) -> tuple[Tensor | None, ...]:
    raise NotImplementedError(
        "ioattn: double backward (a gradient of the attention backward) is not implemented"
    )


_LIB.impl("fwd", fwd_autograd, "Autograd")
torch.library.register_autograd(
    "ioattn::bwd", _bwd_backward, setup_context=lambda ctx, inputs, output: None, lib=_LIB
)


def fwd(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    cu_seqlens_q: Tensor | None,
    cu_seqlens_k: Tensor | None,
    max_seqlen_q: int,
    max_seqlen_k: int,
    softmax_scale: float,
    window_left: int,
    window_right: int,
    softcap: float,
    deterministic: bool = False,
) -> tuple[Tensor, Tensor]:
    """``torch.ops.ioattn.fwd``: (out like q, lse fp32 (b, h, s_q) or (h, total_q)).
    Differentiable in q, k, v; ``deterministic`` is read by the backward only."""
    return torch.ops.ioattn.fwd(
        q,
        k,
        v,
        cu_seqlens_q,
        cu_seqlens_k,
        max_seqlen_q,
        max_seqlen_k,
        softmax_scale,
        window_left,
        window_right,
        softcap,
        deterministic,
    )


def bwd(
    dout: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    lse: Tensor,
    cu_seqlens_q: Tensor | None,
    cu_seqlens_k: Tensor | None,
    max_seqlen_q: int,
    max_seqlen_k: int,
    softmax_scale: float,
    window_left: int,
    window_right: int,
    softcap: float,
    deterministic: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """``torch.ops.ioattn.bwd``: (dq like q, dk like k, dv like v), all packed."""
    return torch.ops.ioattn.bwd(
        dout,
        q,
        k,
        v,
        out,
        lse,
        cu_seqlens_q,
        cu_seqlens_k,
        max_seqlen_q,
        max_seqlen_k,
        softmax_scale,
        window_left,
        window_right,
        softcap,
        deterministic,
    )
