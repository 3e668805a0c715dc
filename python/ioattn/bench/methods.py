"""The registry of benchmarked methods: ioattn's backends and the peers.

A :class:`Method` says which passes, dtypes and head dims it supports, how to build its
attention function for a shape (``make``: returns ``fn(q, k, v) -> out``, all
(batch, seqlen, heads, head_dim)), whether it can run here (``available``: None or the reason
it cannot, usually the ImportError text) and what to enter around its calls (``context``:
``IOATTN_BACKEND`` for ioattn's backends, ``sdpa_kernel`` for SDPA's). A method with
``worker`` set runs in a subprocess of its own (FlashAttention-3's JAX binding).

Nothing here touches a GPU until a ``make`` result is called, so the registry imports and is
listed on any machine.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import importlib
import importlib.util
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from ioattn.bench.shapes import PASSES, Shape

AttnFn = Callable[[Any, Any, Any], Any]
"""``fn(q, k, v) -> out``; tensors (batch, seqlen, heads, head_dim)."""

OURS_PREFIX = "ioattn-"
GATED_DTYPES = ("fp8",)
"""dtypes that peers are timed in only where an ioattn backend has them too."""


def _always() -> str | None:
    return None


@dataclass(frozen=True)
class Method:
    """One benchmarked attention implementation."""

    name: str
    description: str
    passes: tuple[str, ...]
    dtypes: tuple[str, ...]
    make: Callable[[Shape], AttnFn]
    available: Callable[[], str | None] = _always
    head_dims: tuple[int, ...] | None = None
    context: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext
    ours: bool = False
    worker: str | None = None
    opt_in: bool = False
    """Run only when asked for by its exact name (not by default, a family or a glob)."""

    def unsupported(self, pass_: str, dtype: str, head_dim: int) -> str | None:
        """Why this method has no such cell (None when it has one)."""
        if dtype not in self.dtypes:
            return f"{self.name} has no {dtype} ({'/'.join(self.dtypes)} only)"
        if pass_ not in self.passes:
            return f"{self.name} has no {pass_} pass ({'/'.join(self.passes)} only)"
        if self.head_dims is not None and head_dim not in self.head_dims:
            dims = "/".join(map(str, self.head_dims))
            return f"{self.name} has no head dim {head_dim} ({dims} only)"
        return None


# ---------------------------------------------------------------------------------------------
# availability helpers


def import_reason(module: str) -> str | None:
    """None if ``module`` imports, else the error's text (ImportError or anything else)."""
    try:
        importlib.import_module(module)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}".splitlines()[0]
    return None


def find_reason(*modules: str) -> str | None:
    """None if every module can be found (without importing it), else an ImportError-like text."""
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            return f"ModuleNotFoundError: No module named '{module}'"
    return None


def _sdpa_reason(backend: str) -> str | None:
    reason = import_reason("torch.nn.attention")
    if reason:
        return reason
    from torch.nn.attention import SDPBackend

    if not hasattr(SDPBackend, backend):
        import torch

        return f"torch {torch.__version__} has no SDPBackend.{backend}"
    return None


def _flex_reason() -> str | None:
    return import_reason("torch.nn.attention.flex_attention") or find_reason("triton")


# ---------------------------------------------------------------------------------------------
# ioattn


@contextlib.contextmanager
def forced_backend(name: str) -> Iterator[None]:
    """``IOATTN_BACKEND=name`` inside the block (restored afterwards)."""
    key = "IOATTN_BACKEND"
    old = os.environ.get(key)
    os.environ[key] = name
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def _ioattn_make(shape: Shape, deterministic: bool = False) -> AttnFn:
    import ioattn

    causal = shape.causal

    def run(q: Any, k: Any, v: Any) -> Any:
        return ioattn.flash_attn_func(q, k, v, causal=causal, deterministic=deterministic)

    return run


def ioattn_method(backend: str, deterministic: bool = False) -> Method:
    """ioattn forced onto one backend ("sm90", "sm80") with ``IOATTN_BACKEND``; with
    ``deterministic`` the opt-in method ``ioattn-<backend>-det`` (``deterministic=True``).

    Every pass is listed: a backward that raises NotImplementedError is reported as
    "backward not implemented" at run time, so the cells light up once it exists.
    """
    suffix = "-det" if deterministic else ""
    return Method(
        name=OURS_PREFIX + backend + suffix,
        description=f"ioattn.flash_attn_func{'(deterministic=True)' if deterministic else ''}, "
        f"IOATTN_BACKEND={backend}",
        passes=PASSES,
        dtypes=("bf16", "fp16"),
        make=functools.partial(_ioattn_make, deterministic=deterministic),
        context=functools.partial(forced_backend, backend),
        ours=True,
        opt_in=deterministic,
    )


def ioattn_methods() -> list[Method]:
    """Per kernel library that loads here (``available_backends()``): the default method and
    the opt-in deterministic one."""
    from ioattn import _backend

    backends = [b for b in _backend.available_backends() if b != "reference"]
    return [ioattn_method(b, det) for b in backends for det in (False, True)]


# ---------------------------------------------------------------------------------------------
# PyTorch: SDPA backends, FlexAttention, naive


def _sdpa_context(backend: str) -> AbstractContextManager[Any]:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(getattr(SDPBackend, backend))


def _sdpa_make(shape: Shape) -> AttnFn:
    from torch.nn.functional import scaled_dot_product_attention as sdpa

    causal = shape.causal

    def run(q: Any, k: Any, v: Any) -> Any:
        # (b, s, h, d) -> transposed views (b, h, s, d), no copies; the output back likewise.
        out = sdpa(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=causal)
        return out.transpose(1, 2)

    return run


def sdpa_method(name: str, backend: str) -> Method:
    return Method(
        name=name,
        description=f"torch SDPA under sdpa_kernel(SDPBackend.{backend})",
        passes=PASSES,
        dtypes=("bf16", "fp16"),
        make=_sdpa_make,
        available=functools.partial(_sdpa_reason, backend),
        context=functools.partial(_sdpa_context, backend),
    )


def raise_recompile_limits(limit: int = 4096) -> None:
    """Every shape is a new graph for ``torch.compile(dynamic=False)``: without this, dynamo
    falls back to eager FlexAttention (N x N scores) after a handful of shapes."""
    import torch._dynamo.config as config

    for key in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit"):
        if hasattr(config, key):
            setattr(config, key, max(int(getattr(config, key)), limit))


@functools.cache
def _compiled_flex() -> Callable[..., Any]:
    import torch
    from torch.nn.attention.flex_attention import flex_attention

    raise_recompile_limits()
    return torch.compile(flex_attention, dynamic=False)


def _causal(b: Any, h: Any, q_idx: Any, kv_idx: Any) -> Any:
    return q_idx >= kv_idx


@functools.lru_cache(maxsize=16)
def _causal_block_mask(seqlen: int, device: str) -> Any:
    from torch.nn.attention.flex_attention import create_block_mask

    return create_block_mask(_causal, None, None, seqlen, seqlen, device=device)


def _flex_make(shape: Shape) -> AttnFn:
    flex = _compiled_flex()
    causal, seqlen = shape.causal, shape.seqlen

    def run(q: Any, k: Any, v: Any) -> Any:
        mask = _causal_block_mask(seqlen, str(q.device)) if causal else None
        out = flex(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), block_mask=mask)
        return out.transpose(1, 2)

    return run


def flex_method() -> Method:
    return Method(
        name="flex",
        description="torch.compile(flex_attention), causal through create_block_mask",
        passes=PASSES,
        dtypes=("bf16", "fp16"),
        make=_flex_make,
        available=_flex_reason,
    )


def _naive_make(shape: Shape) -> AttnFn:
    import torch

    causal, scale = shape.causal, shape.head_dim**-0.5

    def run(q: Any, k: Any, v: Any) -> Any:
        qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        scores = torch.matmul(qt, kt.transpose(-2, -1)).float() * scale
        if causal:
            s = scores.shape[-1]
            above = torch.ones(s, s, dtype=torch.bool, device=q.device).triu(1)
            scores = scores.masked_fill(above, float("-inf"))
        probs = torch.softmax(scores, dim=-1).to(q.dtype)
        return torch.matmul(probs, vt).transpose(1, 2)

    return run


def naive_method() -> Method:
    """softmax(q k^T) v with the N x N scores materialized (fp32 softmax); memory baseline."""
    return Method(
        name="naive",
        description="PyTorch matmul + fp32 softmax + matmul, N x N scores materialized",
        passes=PASSES,
        dtypes=("bf16", "fp16"),
        make=_naive_make,
    )


# ---------------------------------------------------------------------------------------------
# FlashAttention-2 / -3


def _fa3_make(shape: Shape) -> AttnFn:
    import fa3_fwd_interface  # type: ignore[import-not-found]

    causal = shape.causal

    def run(q: Any, k: Any, v: Any) -> Any:
        out = fa3_fwd_interface.flash_attn_func(q, k, v, causal=causal)
        return out[0] if isinstance(out, tuple) else out

    return run


def fa3_method() -> Method:
    return Method(
        name="fa3",
        description="FlashAttention-3 forward (fa3_fwd_interface.flash_attn_func)",
        passes=("fwd",),
        dtypes=("bf16", "fp8"),
        make=_fa3_make,
        available=functools.partial(import_reason, "fa3_fwd_interface"),
    )


def _fa2_make(shape: Shape) -> AttnFn:
    from flash_attn import flash_attn_func  # type: ignore[import-not-found]

    causal = shape.causal

    def run(q: Any, k: Any, v: Any) -> Any:
        return flash_attn_func(q, k, v, causal=causal)

    return run


def fa2_method() -> Method:
    return Method(
        name="fa2",
        description="FlashAttention-2 (flash_attn.flash_attn_func)",
        passes=PASSES,
        dtypes=("bf16", "fp16"),
        make=_fa2_make,
        available=functools.partial(import_reason, "flash_attn"),
    )


def _in_worker(shape: Shape) -> AttnFn:
    raise RuntimeError("this method runs in its own process (see fa3_jax_worker)")


def fa3_jax_method() -> Method:
    return Method(
        name="fa3-jax",
        description="FlashAttention-3 through JAX (flash_attn3_jax.flash_mha), own process",
        passes=PASSES,
        dtypes=("bf16", "fp16"),
        make=_in_worker,
        available=functools.partial(find_reason, "jax", "flash_attn3_jax"),
        head_dims=(128,),
        worker="ioattn.bench.fa3_jax_worker",
    )


# ---------------------------------------------------------------------------------------------
# the registry


def peer_methods() -> list[Method]:
    """Every peer, whether or not it imports here (``available`` says)."""
    return [
        sdpa_method("sdpa-flash", "FLASH_ATTENTION"),
        sdpa_method("sdpa-cudnn", "CUDNN_ATTENTION"),
        sdpa_method("sdpa-efficient", "EFFICIENT_ATTENTION"),
        flex_method(),
        fa3_method(),
        fa3_jax_method(),
        fa2_method(),
    ]


def all_methods() -> list[Method]:
    """ioattn's loadable backends first, then the peers."""
    return [*ioattn_methods(), *peer_methods()]


def matches(name: str, pattern: str) -> bool:
    """``pattern`` is a name, a family prefix ("ioattn", "sdpa") or a glob ("sdpa-*")."""
    pattern = pattern.strip().lower()
    return name == pattern or name.startswith(pattern + "-") or fnmatch.fnmatch(name, pattern)


def select(methods: Sequence[Method], patterns: Sequence[str] | None) -> list[Method]:
    """The methods matching any of ``patterns`` (all but the opt-in ones when None, which
    match their exact name only); ValueError for a pattern that matches nothing."""
    if not patterns:
        return [m for m in methods if not m.opt_in]

    def chosen(m: Method, p: str) -> bool:
        return m.name == p.strip().lower() if m.opt_in else matches(m.name, p)

    unmatched = [p for p in patterns if not any(chosen(m, p) for m in methods)]
    if unmatched:
        known = ", ".join(m.name for m in methods)
        raise ValueError(f"--methods {','.join(unmatched)} matches nothing here (known: {known})")
    return [m for m in methods if any(chosen(m, p) for p in patterns)]
