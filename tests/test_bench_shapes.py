"""ioattn.bench.shapes: the protocol's shapes, FLOP counts and option parsing."""

from __future__ import annotations

import pytest

from ioattn.bench import shapes as sh


@pytest.mark.parametrize(
    ("text", "value"),
    [("512", 512), ("1k", 1024), ("16K", 16384), (" 2k ", 2048), ("1m", 1 << 20), ("3", 3)],
)
def test_parse_size(text: str, value: int) -> None:
    assert sh.parse_size(text) == value


@pytest.mark.parametrize("text", ["", "k", "1.5k", "-2", "0", "12g", "1kk"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        sh.parse_size(text)


@pytest.mark.parametrize(
    ("text", "values"),
    [
        ("512,1k,2k,4k,8k,16k", [512, 1024, 2048, 4096, 8192, 16384]),
        ("1k,1024,512", [1024, 512]),  # duplicates dropped, order kept
        ("64,", [64]),
    ],
)
def test_parse_sizes(text: str, values: list[int]) -> None:
    assert sh.parse_sizes(text) == values


@pytest.mark.parametrize(
    ("text", "allowed", "expected"),
    [
        ("fwd", sh.PASSES, ["fwd"]),
        ("bwd,fwd", sh.PASSES, ["bwd", "fwd"]),
        ("all", sh.PASSES, list(sh.PASSES)),
        ("BF16, fp8", sh.DTYPES, ["bf16", "fp8"]),
    ],
)
def test_parse_choices(text: str, allowed: tuple[str, ...], expected: list[str]) -> None:
    assert sh.parse_choices(text, allowed, "x") == expected


@pytest.mark.parametrize("text", ["", "fp32", "fwd,back"])
def test_parse_choices_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="choose from"):
        sh.parse_choices(text, sh.PASSES + sh.DTYPES, "x")


@pytest.mark.parametrize(
    ("text", "causals"), [("both", [False, True]), ("yes", [True]), ("NO", [False])]
)
def test_parse_causal(text: str, causals: list[bool]) -> None:
    assert sh.parse_causal(text) == causals


def test_parse_causal_rejects() -> None:
    with pytest.raises(ValueError):
        sh.parse_causal("maybe")


def test_parse_dims4() -> None:
    assert sh.parse_dims4("1,128,2,64") == (1, 128, 2, 64)
    with pytest.raises(ValueError):
        sh.parse_dims4("1,128,2")


@pytest.mark.parametrize(
    ("head_dim", "seqlen", "batch", "heads"),
    [(64, 512, 32, 32), (128, 1024, 16, 16), (128, 16384, 1, 16), (256, 8192, 2, 8)],
)
def test_protocol_shapes(head_dim: int, seqlen: int, batch: int, heads: int) -> None:
    shape = sh.make_shape(head_dim, seqlen, causal=False)
    assert (shape.batch, shape.heads) == (batch, heads)
    assert shape.batch * shape.seqlen == sh.TOKENS
    assert shape.heads * shape.head_dim == sh.HIDDEN


def test_overrides_and_long_sequences() -> None:
    assert sh.make_shape(128, 32768, False).batch == 1  # never 0
    shape = sh.make_shape(128, 1024, True, batch=3, heads=5)
    assert (shape.batch, shape.heads, shape.causal) == (3, 5, True)


def test_grid_order_and_size() -> None:
    shapes = sh.grid([64, 128], [512, 1024, 2048], [False, True])
    assert len(shapes) == 12
    assert [(s.head_dim, s.causal, s.seqlen) for s in shapes[:4]] == [
        (64, False, 512),
        (64, False, 1024),
        (64, False, 2048),
        (64, True, 512),
    ]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("pass_", "factor"), [("fwd", 1.0), ("bwd", 2.5), ("fwdbwd", 3.5)])
def test_flops(causal: bool, pass_: str, factor: float) -> None:
    shape = sh.Shape(2, 4096, 16, 128, causal)
    full = 4.0 * 2 * 16 * 4096 * 4096 * 128
    expected = full * factor / (2 if causal else 1)
    assert sh.flops(shape, pass_) == pytest.approx(expected)


def test_protocol_flops_are_linear_in_seqlen() -> None:
    # batch * seqlen is fixed, so forward FLOPs = 4 * 16384 * 2048 * seqlen.
    for s in sh.DEFAULT_SEQLENS:
        assert sh.fwd_flops(sh.make_shape(64, s, False)) == 4.0 * sh.TOKENS * sh.HIDDEN * s


def test_tflops() -> None:
    assert sh.tflops(2e12, 1000.0) == pytest.approx(2.0)
    assert sh.tflops(sh.flops(sh.Shape(1, 16384, 16, 128, False), "fwd"), 3.0) == pytest.approx(
        733.0, rel=1e-3
    )


def test_shape_label_and_elements() -> None:
    shape = sh.Shape(2, 512, 8, 64, True)
    assert shape.elements == 2 * 512 * 8 * 64
    assert shape.label() == "b2 s512 h8 d64 causal"
    assert shape.to_dict() == {
        "batch": 2,
        "seqlen": 512,
        "heads": 8,
        "head_dim": 64,
        "causal": True,
    }
