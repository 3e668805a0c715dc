"""Every bad input raises the right exception, names the argument, and writes nothing (CPU)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
import torch

import ioattn

B, SQ, SK, H, HK, D = 2, 5, 7, 4, 2, 64
DT = torch.float16


def _dense() -> dict[str, Any]:
    return {
        "q": torch.randn(B, SQ, H, D, dtype=DT),
        "k": torch.randn(B, SK, HK, D, dtype=DT),
        "v": torch.randn(B, SK, HK, D, dtype=DT),
    }


def _varlen() -> dict[str, Any]:
    return {
        "q": torch.randn(9, H, D, dtype=DT),
        "k": torch.randn(12, HK, D, dtype=DT),
        "v": torch.randn(12, HK, D, dtype=DT),
        "cu_seqlens_q": torch.tensor([0, 4, 9], dtype=torch.int32),
        "cu_seqlens_k": torch.tensor([0, 5, 12], dtype=torch.int32),
        "max_seqlen_q": 5,
        "max_seqlen_k": 7,
    }


def _set(**changes: Any) -> Callable[[dict[str, Any]], None]:
    def apply(kw: dict[str, Any]) -> None:
        for key, value in changes.items():
            kw[key] = value(kw) if callable(value) else value

    return apply


def _noncontig_last(kw: dict[str, Any]) -> torch.Tensor:
    return torch.randn(B, SQ, H, 2 * D, dtype=DT)[..., ::2]


# (id, mutation, exception type, text the message must contain)
DENSE_CASES = [
    ("q_not_tensor", _set(q=[1.0]), TypeError, "q: expected a torch.Tensor, got list"),
    ("k_none", _set(k=None), TypeError, "k: expected a torch.Tensor, got NoneType"),
    ("q_fp32", _set(q=lambda kw: kw["q"].float()), TypeError, "q: expected dtype"),
    (
        "k_bf16",
        _set(k=lambda kw: kw["k"].bfloat16()),
        TypeError,
        "k: expected dtype torch.float16 (from q), got torch.bfloat16",
    ),
    ("v_fp32", _set(v=lambda kw: kw["v"].float()), TypeError, "v: expected dtype"),
    (
        "k_device",
        _set(k=lambda kw: kw["k"].to("meta")),
        ValueError,
        "k: expected device cpu (from q), got meta",
    ),
    ("v_device", _set(v=lambda kw: kw["v"].to("meta")), ValueError, "v: expected device"),
    ("q_rank3", _set(q=lambda kw: kw["q"][0]), ValueError, "q: expected a 4-D tensor"),
    ("v_rank5", _set(v=lambda kw: kw["v"][None]), ValueError, "v: expected a 4-D tensor"),
    (
        "k_batch",
        _set(k=lambda kw: kw["k"][:1], v=lambda kw: kw["v"][:1]),
        ValueError,
        "k: expected batch 2 (from q), got 1",
    ),
    (
        "v_seqlen",
        _set(v=lambda kw: kw["v"][:, :3]),
        ValueError,
        "v: expected seqlen_k 7 (from k), got 3",
    ),
    (
        "k_head_dim",
        _set(k=lambda kw: torch.randn(B, SK, HK, 128, dtype=DT)),
        ValueError,
        "k: expected head_dim 64 (from q), got 128",
    ),
    (
        "v_head_dim",
        _set(v=lambda kw: torch.randn(B, SK, HK, 32, dtype=DT)),
        ValueError,
        "v: expected head_dim 64 (from q), got 32",
    ),
    (
        "head_dim_320",
        _set(
            q=lambda kw: torch.randn(B, SQ, H, 320, dtype=DT),
            k=lambda kw: torch.randn(B, SK, HK, 320, dtype=DT),
            v=lambda kw: torch.randn(B, SK, HK, 320, dtype=DT),
        ),
        ValueError,
        "q: expected head_dim in [1, 256], got 320",
    ),
    (
        "head_dim_0",
        _set(
            q=lambda kw: torch.randn(B, SQ, H, 0, dtype=DT),
            k=lambda kw: torch.randn(B, SK, HK, 0, dtype=DT),
            v=lambda kw: torch.randn(B, SK, HK, 0, dtype=DT),
        ),
        ValueError,
        "q: expected head_dim in [1, 256], got 0",
    ),
    (
        "heads_not_multiple",
        _set(
            k=lambda kw: torch.randn(B, SK, 3, D, dtype=DT),
            v=lambda kw: torch.randn(B, SK, 3, D, dtype=DT),
        ),
        ValueError,
        "k: expected num_heads_k to divide num_heads 4 (from q), got num_heads_k 3",
    ),
    (
        "v_heads",
        _set(v=lambda kw: torch.randn(B, SK, 1, D, dtype=DT)),
        ValueError,
        "v: expected num_heads_k 2 (from k), got 1",
    ),
    (
        "q_last_dim_strided",
        _set(q=_noncontig_last),
        ValueError,
        "q: the last dimension (head_dim) must be contiguous (stride(-1) == 1), got stride 2",
    ),
    ("window_minus2", _set(window_size=(-2, 0)), ValueError, "window_size: expected values >= -1"),
    (
        "window_float",
        _set(window_size=(1.5, 0)),
        ValueError,
        "window_size: expected a (left, right)",
    ),
    ("window_three", _set(window_size=(1, 2, 3)), ValueError, "window_size"),
    ("window_int", _set(window_size=4), ValueError, "window_size"),
    ("softcap_negative", _set(softcap=-1.0), ValueError, "softcap: expected a finite float >= 0"),
    ("softcap_nan", _set(softcap=float("nan")), ValueError, "softcap"),
    ("scale_inf", _set(softmax_scale=float("inf")), ValueError, "softmax_scale: expected a finite"),
    ("scale_nan", _set(softmax_scale=float("nan")), ValueError, "softmax_scale"),
    ("scale_str", _set(softmax_scale="0.1"), ValueError, "softmax_scale"),
    (
        "scale_zero",
        _set(softmax_scale=0.0),
        ValueError,
        "softmax_scale: expected a finite float > 0",
    ),
    ("scale_negative", _set(softmax_scale=-0.125), ValueError, "softmax_scale"),
    ("dropout_range", _set(dropout_p=1.5), ValueError, "dropout_p"),
    ("dropout", _set(dropout_p=0.1), NotImplementedError, "dropout is not implemented"),
    ("alibi", _set(alibi_slopes=lambda kw: torch.ones(H)), NotImplementedError, "ALiBi"),
]


VARLEN_CASES = [
    ("q_rank4", _set(q=lambda kw: kw["q"][None]), ValueError, "q: expected a 3-D tensor"),
    (
        "k_total",
        _set(v=lambda kw: kw["v"][:10]),
        ValueError,
        "v: expected total_k 12 (from k), got 10",
    ),
    (
        "cu_q_int64",
        _set(cu_seqlens_q=lambda kw: kw["cu_seqlens_q"].long()),
        TypeError,
        "cu_seqlens_q: expected dtype torch.int32, got torch.int64",
    ),
    (
        "cu_k_list",
        _set(cu_seqlens_k=[0, 5, 12]),
        TypeError,
        "cu_seqlens_k: expected a torch.Tensor, got list",
    ),
    ("cu_q_none", _set(cu_seqlens_q=None), TypeError, "cu_seqlens_q: expected a torch.Tensor"),
    (
        "cu_q_rank2",
        _set(cu_seqlens_q=lambda kw: kw["cu_seqlens_q"][None]),
        ValueError,
        "cu_seqlens_q: expected a 1-D tensor",
    ),
    (
        "cu_q_device",
        _set(cu_seqlens_q=lambda kw: kw["cu_seqlens_q"].to("meta")),
        ValueError,
        "cu_seqlens_q: expected device cpu (from q), got meta",
    ),
    (
        "cu_k_length",
        _set(cu_seqlens_k=torch.tensor([0, 5, 10, 12], dtype=torch.int32)),
        ValueError,
        "cu_seqlens_k: expected 3 elements (batch + 1, from cu_seqlens_q), got 4",
    ),
    (
        "cu_empty",
        _set(
            cu_seqlens_q=torch.zeros(0, dtype=torch.int32),
            cu_seqlens_k=torch.zeros(0, dtype=torch.int32),
        ),
        ValueError,
        "cu_seqlens_q: expected batch + 1 >= 1 elements",
    ),
    (
        "cu_q_start",
        _set(cu_seqlens_q=torch.tensor([1, 4, 9], dtype=torch.int32)),
        ValueError,
        "cu_seqlens_q: expected the first value to be 0, got 1",
    ),
    (
        "cu_k_decreasing",
        _set(cu_seqlens_k=torch.tensor([0, 13, 12], dtype=torch.int32)),
        ValueError,
        "cu_seqlens_k: expected non-decreasing values",
    ),
    (
        "cu_q_last",
        _set(cu_seqlens_q=torch.tensor([0, 4, 8], dtype=torch.int32)),
        ValueError,
        "cu_seqlens_q: expected the last value to equal the number of tokens 9, got 8",
    ),
    (
        "max_q_negative",
        _set(max_seqlen_q=-1),
        ValueError,
        "max_seqlen_q: expected a non-negative int, got -1",
    ),
    (
        "max_k_too_small",
        _set(max_seqlen_k=6),
        ValueError,
        "max_seqlen_k: expected at least the longest sequence in cu_seqlens_k (7), got 6",
    ),
    ("max_q_float", _set(max_seqlen_q=5.0), TypeError, "max_seqlen_q: expected an int"),
    (
        "paged_kv",
        _set(block_table=lambda kw: torch.zeros(2, 1, dtype=torch.int32)),
        NotImplementedError,
        "paged KV",
    ),
    ("varlen_dropout", _set(dropout_p=0.5), NotImplementedError, "dropout"),
]


def _snapshot(kw: dict[str, Any]) -> list[tuple[torch.Tensor, torch.Tensor, int]]:
    return [
        (t, t.clone(), t._version)
        for t in kw.values()
        if isinstance(t, torch.Tensor) and t.device.type == "cpu"
    ]


def _assert_untouched(snap: list[tuple[torch.Tensor, torch.Tensor, int]]) -> None:
    for t, copy, version in snap:
        assert t._version == version, "a caller tensor was written in place"
        assert torch.equal(t, copy) or (t.isnan() & copy.isnan()).any()


@pytest.mark.parametrize(
    "mutate,exc,text", [c[1:] for c in DENSE_CASES], ids=[c[0] for c in DENSE_CASES]
)
def test_dense_bad_input(mutate: Callable, exc: type[Exception], text: str) -> None:
    kw = _dense()
    mutate(kw)
    snap = _snapshot(kw)
    with pytest.raises(exc, match=re.escape(text)):
        ioattn.flash_attn_func(**kw)
    _assert_untouched(snap)


@pytest.mark.parametrize(
    "mutate,exc,text", [c[1:] for c in VARLEN_CASES], ids=[c[0] for c in VARLEN_CASES]
)
def test_varlen_bad_input(mutate: Callable, exc: type[Exception], text: str) -> None:
    kw = _varlen()
    mutate(kw)
    snap = _snapshot(kw)
    with pytest.raises(exc, match=re.escape(text)):
        ioattn.flash_attn_varlen_func(**kw)
    _assert_untouched(snap)


def test_valid_inputs_pass() -> None:
    """The base inputs of the cases above are valid (so each case fails for its own reason)."""
    assert ioattn.flash_attn_func(**_dense()).shape == (B, SQ, H, D)
    assert ioattn.flash_attn_varlen_func(**_varlen()).shape == (9, H, D)


@pytest.mark.parametrize(
    "call,text",
    [
        (
            lambda: ioattn.flash_attn_qkvpacked_func(torch.randn(B, SQ, 2, H, D, dtype=DT)),
            "qkv: expected size 3 in dimension 2",
        ),
        (
            lambda: ioattn.flash_attn_qkvpacked_func(torch.randn(B, SQ, 3, H, dtype=DT)),
            "qkv: expected a 5-D tensor",
        ),
        (
            lambda: ioattn.flash_attn_kvpacked_func(
                torch.randn(B, SQ, H, D, dtype=DT), torch.randn(B, SK, 3, HK, D, dtype=DT)
            ),
            "kv: expected size 2 in dimension 2",
        ),
        (
            lambda: ioattn.flash_attn_varlen_qkvpacked_func(
                torch.randn(9, 3, H, D, dtype=DT)[None], torch.tensor([0, 9], dtype=torch.int32), 9
            ),
            "qkv: expected a 4-D tensor",
        ),
        (
            lambda: ioattn.flash_attn_varlen_kvpacked_func(
                torch.randn(9, H, D, dtype=DT),
                torch.randn(9, 1, HK, D, dtype=DT),
                torch.tensor([0, 9], dtype=torch.int32),
                torch.tensor([0, 9], dtype=torch.int32),
                9,
                9,
            ),
            "kv: expected size 2 in dimension 1",
        ),
    ],
    ids=["qkv_parts", "qkv_rank", "kv_parts", "varlen_qkv_rank", "varlen_kv_parts"],
)
def test_packed_bad_shape(call: Callable[[], Any], text: str) -> None:
    with pytest.raises(ValueError, match=re.escape(text)):
        call()


def test_packed_not_tensor() -> None:
    with pytest.raises(TypeError, match=re.escape("qkv: expected a torch.Tensor, got tuple")):
        ioattn.flash_attn_qkvpacked_func((1, 2, 3))


def test_lse_is_not_differentiable() -> None:
    kw = _dense()
    kw["q"].requires_grad_(True)
    out, lse, probs = ioattn.flash_attn_func(**kw, return_attn_probs=True)
    assert out.requires_grad and not lse.requires_grad and probs is None


def test_inference_under_no_grad() -> None:
    kw = _dense()
    kw["q"].requires_grad_(True)
    with torch.no_grad():
        out = ioattn.flash_attn_func(**kw)
    assert not out.requires_grad


def test_integer_scalars_are_accepted() -> None:
    """numpy integers work where ints are expected (max_seqlen, window_size)."""
    np = pytest.importorskip("numpy")
    kw = _varlen()
    expect = ioattn.flash_attn_varlen_func(**kw, window_size=(3, 1))
    kw["max_seqlen_q"], kw["max_seqlen_k"] = np.int64(5), np.int32(7)
    got = ioattn.flash_attn_varlen_func(**kw, window_size=(np.int64(3), np.int16(1)))
    assert torch.equal(got, expect)
    with pytest.raises(TypeError, match="max_seqlen_k: expected an int, got bool"):
        ioattn.flash_attn_varlen_func(**{**_varlen(), "max_seqlen_k": True})


def test_deterministic_is_accepted() -> None:
    kw = _dense()
    a = ioattn.flash_attn_func(**kw, deterministic=True)
    b = ioattn.flash_attn_func(**kw)
    assert torch.equal(a, b)
