"""ioattn: exact, IO-aware attention for NVIDIA GPUs (FlashAttention family).

The public functions copy FlashAttention-2's API (``flash_attn_func`` and friends). CUDA
tensors run the prebuilt kernel libraries in ``ioattn/lib``; CPU tensors run an exact
PyTorch reference. Importing ioattn never fails for want of a GPU or a kernel library.
"""

from __future__ import annotations

from ioattn import _dist
from ioattn._backend import available_backends
from ioattn.interface import (
    flash_attn_func,
    flash_attn_kvpacked_func,
    flash_attn_qkvpacked_func,
    flash_attn_varlen_func,
    flash_attn_varlen_kvpacked_func,
    flash_attn_varlen_qkvpacked_func,
)

__version__ = _dist.version()

__all__ = [
    "__version__",
    "available_backends",
    "flash_attn_func",
    "flash_attn_kvpacked_func",
    "flash_attn_qkvpacked_func",
    "flash_attn_varlen_func",
    "flash_attn_varlen_kvpacked_func",
    "flash_attn_varlen_qkvpacked_func",
]
