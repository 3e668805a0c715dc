"""Problem shapes, FLOP counts and option parsing of the benchmark (no GPU, no torch).

The protocol is FlashAttention's (see the package docstring): batch * seqlen = 16384 tokens
and num_heads * head_dim = 2048, so every cell moves the same number of tokens and the same
hidden size. Forward FLOPs are 4 * b * h * s^2 * d (two matmuls of 2 * s^2 * d each), halved
when causal; backward is 2.5x the forward and forward + backward 3.5x.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

TOKENS = 16384
HIDDEN = 2048
DEFAULT_HEAD_DIMS = (64, 128, 256)
DEFAULT_SEQLENS = (512, 1024, 2048, 4096, 8192, 16384)
QUICK_HEAD_DIMS = (128,)
QUICK_SEQLENS = (1024, 8192)

PASSES = ("fwd", "bwd", "fwdbwd")
DTYPES = ("bf16", "fp16", "fp8")
PASS_FACTOR = {"fwd": 1.0, "bwd": 2.5, "fwdbwd": 3.5}
PASS_TITLES = {"fwd": "Forward", "bwd": "Backward", "fwdbwd": "Forward + backward"}
CAUSAL_CHOICES = {"both": (False, True), "no": (False,), "yes": (True,)}

_SIZE = re.compile(r"^\s*(\d+)\s*([kKmM]?)\s*$")


def parse_size(text: str) -> int:
    """``"512"`` -> 512, ``"1k"`` -> 1024, ``"16K"`` -> 16384, ``"1m"`` -> 1048576."""
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(f"not a size: {text!r} (expected e.g. 512, 1k, 16k)")
    value = int(match.group(1)) * {"": 1, "k": 1024, "m": 1024 * 1024}[match.group(2).lower()]
    if value <= 0:
        raise ValueError(f"size must be positive: {text!r}")
    return value


def parse_sizes(text: str) -> list[int]:
    """A comma-separated list of sizes, in order, without duplicates: ``"512,1k,1024"``."""
    values = [parse_size(part) for part in text.split(",") if part.strip()]
    if not values:
        raise ValueError(f"empty list: {text!r}")
    return list(dict.fromkeys(values))


def parse_choices(text: str, allowed: Sequence[str], what: str) -> list[str]:
    """A comma-separated subset of ``allowed`` (``"all"`` for every one), in the given order."""
    parts = [p.strip().lower() for p in text.split(",") if p.strip()]
    if parts == ["all"]:
        return list(allowed)
    bad = [p for p in parts if p not in allowed]
    if bad or not parts:
        raise ValueError(f"bad {what} {text!r}: choose from {', '.join(allowed)}")
    return list(dict.fromkeys(parts))


def parse_causal(text: str) -> list[bool]:
    """``both`` -> [False, True], ``no`` -> [False], ``yes`` -> [True]."""
    try:
        return list(CAUSAL_CHOICES[text.strip().lower()])
    except KeyError:
        raise ValueError(f"bad --causal {text!r}: choose from both, yes, no") from None


def parse_dims4(text: str) -> tuple[int, int, int, int]:
    """``"1,128,2,64"`` -> (batch, seqlen, heads, head_dim)."""
    values = [parse_size(part) for part in text.split(",")]
    if len(values) != 4:
        raise ValueError(f"expected batch,seqlen,heads,head_dim, got {text!r}")
    return values[0], values[1], values[2], values[3]


@dataclass(frozen=True)
class Shape:
    """One attention problem: q, k, v are (batch, seqlen, heads, head_dim)."""

    batch: int
    seqlen: int
    heads: int
    head_dim: int
    causal: bool

    @property
    def elements(self) -> int:
        """Elements of one of q, k, v or the output."""
        return self.batch * self.seqlen * self.heads * self.head_dim

    def label(self) -> str:
        mask = " causal" if self.causal else ""
        return f"b{self.batch} s{self.seqlen} h{self.heads} d{self.head_dim}{mask}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_shape(
    head_dim: int,
    seqlen: int,
    causal: bool,
    batch: int | None = None,
    heads: int | None = None,
) -> Shape:
    """The protocol's shape for (head_dim, seqlen); ``batch``/``heads`` override it."""
    b = batch if batch is not None else max(1, TOKENS // seqlen)
    h = heads if heads is not None else max(1, HIDDEN // head_dim)
    return Shape(b, seqlen, h, head_dim, causal)


def grid(
    head_dims: Iterable[int],
    seqlens: Iterable[int],
    causals: Iterable[bool],
    batch: int | None = None,
    heads: int | None = None,
) -> list[Shape]:
    """Every (head_dim, causal, seqlen) shape, in that nesting order."""
    seqlens, causals = list(seqlens), list(causals)
    return [make_shape(d, s, c, batch, heads) for d in head_dims for c in causals for s in seqlens]


def fwd_flops(shape: Shape) -> float:
    """Forward FLOPs by the FlashAttention convention (halved when causal)."""
    flops = 4.0 * shape.batch * shape.heads * shape.seqlen * shape.seqlen * shape.head_dim
    return flops / 2 if shape.causal else flops


def flops(shape: Shape, pass_: str) -> float:
    """FLOPs of ``pass_`` ("fwd", "bwd" or "fwdbwd")."""
    return fwd_flops(shape) * PASS_FACTOR[pass_]


def tflops(flop_count: float, ms: float) -> float:
    """TFLOPS of ``flop_count`` FLOPs done in ``ms`` milliseconds."""
    return flop_count / (ms * 1e-3) / 1e12
