"""Memory layouts: strided views, misaligned tensors, streams, devices, huge tensors.

The layout helpers are tested on the CPU; the rest needs a GPU and the kernel library.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

import ioattn
from ioattn import _backend, _ops
from ioattn.testing import case_seed, check_fa_rule, kernel_skip_reason, reference_pair

DT = torch.bfloat16


# ---------------------------------------------------------------- CPU: layout helpers


def test_contiguous_tensor_is_used_as_is() -> None:
    t = torch.randn(2, 16, 4, 64, dtype=DT)
    assert not _ops.needs_copy(t) and _ops.aligned_view(t) is t


@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.randn(2, 16, 8, 64, dtype=DT).transpose(1, 2),  # (b, h, s, d) view
        lambda: torch.randn(2, 16, 3, 4, 64, dtype=DT)[:, :, 1],  # slice of packed qkv
        lambda: torch.randn(2, 16, 8, 64, dtype=DT)[:, :, ::2],  # strided heads
        lambda: torch.randn(2, 16, 4, 128, dtype=DT)[..., :64],  # head_dim slice
        lambda: torch.randn(2, 16, 4, 64, dtype=DT).expand(2, 16, 4, 64),
        lambda: torch.randn(1, 16, 4, 64, dtype=DT).expand(3, 16, 4, 64),  # stride 0 batch
    ],
    ids=["transposed", "packed_slice", "strided_heads", "head_dim_slice", "expand", "batch_bcast"],
)
def test_aligned_views_need_no_copy(make: Callable[[], torch.Tensor]) -> None:
    t = make()
    assert not _ops.needs_copy(t), t.stride()


@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.randn(2, 16, 4, 72, dtype=DT)[..., 4:68],  # 8-byte offset pointer
        lambda: torch.randn(2, 16, 4 * 64 + 4, dtype=DT)[..., : 4 * 64].unflatten(-1, (4, 64)),
        lambda: torch.randn(2, 16, 4, 65, dtype=DT)[..., 1:],  # 2-byte offset, odd strides
    ],
    ids=["offset_pointer", "row_stride_260", "odd_offset"],
)
def test_misaligned_tensors_are_copied(make: Callable[[], torch.Tensor]) -> None:
    t = make()
    assert _ops.needs_copy(t)
    fixed = _ops.aligned_view(t)
    assert fixed is not t and torch.equal(fixed, t) and not _ops.needs_copy(fixed)


def test_size_one_dim_with_odd_stride_is_copied() -> None:
    """torch calls this contiguous (size-1 dims are ignored) but the ABI sees its stride."""
    base = torch.randn(4 * 64 * 3 + 3, dtype=DT)
    t = base.as_strided((1, 3, 4, 64), (5, 256, 64, 1), storage_offset=0)
    assert _ops.needs_copy(t)
    assert not _ops.needs_copy(_ops.aligned_view(t))


def test_misaligned_inputs_give_the_same_answer_on_cpu() -> None:
    torch.manual_seed(0)
    base = torch.randn(2, 16, 4, 72, dtype=DT)
    q = base[..., 4:68]
    out = ioattn.flash_attn_func(q, q, q, causal=True)
    assert torch.equal(
        out, ioattn.flash_attn_func(q.contiguous(), q.contiguous(), q.contiguous(), causal=True)
    )


# ---------------------------------------------------------------- GPU


def _check(name: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kw: object) -> None:
    out, lse, _ = ioattn.flash_attn_func(q, k, v, return_attn_probs=True, **kw)
    assert out.shape == q.shape
    out_ref, lse_ref, out_pt, lse_pt = reference_pair(
        q.contiguous(),
        k.contiguous(),
        v.contiguous(),
        **kw,  # type: ignore[arg-type]
    )
    check_fa_rule(f"{name} out", out, out_ref, out_pt)
    check_fa_rule(f"{name} lse", lse, lse_ref, lse_pt, atol=1e-4)


def _skip_unbuilt(head_dim: int) -> None:
    reason = kernel_skip_reason(DT, head_dim)
    if reason:
        pytest.skip(reason)


LAYOUTS = [
    "transposed",
    "qkv_slice",
    "strided_heads",
    "head_dim_slice",
    "offset_pointer",
    "odd_row_stride",
    "broadcast_batch",
]


def _make_layout(kind: str, b: int, s: int, h: int, d: int) -> tuple[torch.Tensor, ...]:
    dev = "cuda"
    if kind == "transposed":
        return tuple(torch.randn(b, h, s, d, device=dev, dtype=DT).transpose(1, 2) for _ in "qkv")
    if kind == "qkv_slice":
        return torch.randn(b, s, 3, h, d, device=dev, dtype=DT).unbind(2)
    if kind == "strided_heads":
        return tuple(torch.randn(b, s, 2 * h, d, device=dev, dtype=DT)[:, :, ::2] for _ in "qkv")
    if kind == "head_dim_slice":
        return tuple(torch.randn(b, s, h, 2 * d, device=dev, dtype=DT)[..., :d] for _ in "qkv")
    if kind == "offset_pointer":
        return tuple(
            torch.randn(b, s, h, d + 8, device=dev, dtype=DT)[..., 4 : d + 4] for _ in "qkv"
        )
    if kind == "odd_row_stride":
        return tuple(
            torch.randn(b, s, h * d + 4, device=dev, dtype=DT)[..., : h * d].unflatten(-1, (h, d))
            for _ in "qkv"
        )
    if kind == "broadcast_batch":
        q = torch.randn(b, s, h, d, device=dev, dtype=DT)
        k = torch.randn(1, s, h, d, device=dev, dtype=DT).expand(b, s, h, d)
        v = torch.randn(1, s, h, d, device=dev, dtype=DT).expand(b, s, h, d)
        return q, k, v
    raise AssertionError(kind)


@pytest.mark.gpu
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("kind", LAYOUTS)
def test_fwd_layouts(
    kind: str, causal: bool, fwd_library: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _skip_unbuilt(64)
    torch.manual_seed(case_seed("layout", kind, causal))
    q, k, v = _make_layout(kind, 3, 129, 4, 64)
    before = [t.clone() for t in (q, k, v)]
    if fwd_library == "sm90" and kind == "broadcast_batch":
        # TMA cannot map a stride-0 dimension: forced, the sm90 library refuses with the
        # reason; unforced, the dispatcher falls back to the sm80 library.
        with pytest.raises(NotImplementedError, match="stride-0"):
            ioattn.flash_attn_func(q, k, v, causal=causal)
        monkeypatch.delenv(_backend.BACKEND_ENV)
        _backend.clear_cache()
    _check(kind, q, k, v, causal=causal)
    for t, copy in zip((q, k, v), before):
        assert torch.equal(t, copy), "caller tensor changed"


@pytest.mark.gpu
@pytest.mark.usefixtures("fwd_library")
def test_fwd_varlen_strided() -> None:
    """Varlen q/k/v as slices of a packed (total, 3, h, d) tensor with an odd head stride."""
    _skip_unbuilt(64)
    torch.manual_seed(case_seed("varlen_strided"))
    qkv = torch.randn(100, 3, 6, 64, device="cuda", dtype=DT)
    cu = torch.tensor([0, 37, 37, 100], dtype=torch.int32, device="cuda")
    out = ioattn.flash_attn_varlen_qkvpacked_func(qkv, cu, 63, causal=True)
    q, k, v = (t.contiguous() for t in qkv.unbind(1))
    expect = ioattn.flash_attn_varlen_func(q, k, v, cu, cu, 63, 63, causal=True)
    torch.testing.assert_close(out, expect)


@pytest.mark.gpu
@pytest.mark.usefixtures("fwd_library")
def test_fwd_on_non_default_stream() -> None:
    """The kernel runs on the current stream: work queued before it on that stream (here a
    sleep, then the copy that fills q) is finished when it reads q."""
    _skip_unbuilt(64)
    torch.manual_seed(case_seed("stream"))
    src = torch.randn(2, 257, 4, 64, device="cuda", dtype=DT)
    k = torch.randn(2, 257, 4, 64, device="cuda", dtype=DT)
    v = torch.randn(2, 257, 4, 64, device="cuda", dtype=DT)
    q = torch.zeros_like(src)
    torch.cuda.synchronize()
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        torch.cuda._sleep(50_000_000)  # tens of ms on the side stream
        q.copy_(src)
        out = ioattn.flash_attn_func(q, k, v, causal=True)
    stream.synchronize()
    expect = ioattn.flash_attn_func(src, k, v, causal=True)
    torch.testing.assert_close(out, expect, atol=0, rtol=0)


@pytest.mark.gpu
@pytest.mark.usefixtures("fwd_library")
def test_fwd_cuda_graph_capture() -> None:
    """A call can be captured in a CUDA graph (no allocation or sync inside the library)."""
    _skip_unbuilt(64)
    torch.manual_seed(case_seed("graph"))
    q = torch.randn(2, 129, 4, 64, device="cuda", dtype=DT)
    k = torch.randn(2, 129, 4, 64, device="cuda", dtype=DT)
    v = torch.randn(2, 129, 4, 64, device="cuda", dtype=DT)
    ioattn.flash_attn_func(q, k, v, causal=True)  # warm up outside the capture
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        ioattn.flash_attn_func(q, k, v, causal=True)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = ioattn.flash_attn_func(q, k, v, causal=True)
    q.copy_(torch.randn_like(q))
    graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(out, ioattn.flash_attn_func(q, k, v, causal=True), atol=0, rtol=0)


@pytest.mark.gpu
def test_fwd_on_second_device() -> None:
    """Tensors on cuda:1 while cuda:0 is current run on cuda:1."""
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")
    _skip_unbuilt(64)
    torch.manual_seed(case_seed("device1"))
    with torch.cuda.device(0):
        q, k, v = (torch.randn(2, 129, 4, 64, device="cuda:1", dtype=DT) for _ in "qkv")
        _check("cuda:1", q, k, v, causal=True)


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.usefixtures("fwd_library")
def test_fwd_past_2_pow_31_elements() -> None:
    """q, k, v and out hold more than 2^31 elements each (64-bit address math); the
    batch entries at the start, in the middle, across the 2^31 boundary and at the end
    are checked against the reference."""
    _skip_unbuilt(128)
    b, s, h, d = 8200, 128, 16, 128  # 2.15e9 elements, 4.3 GB per bf16 tensor
    assert b * s * h * d > 2**31
    free, _ = torch.cuda.mem_get_info()
    if free < 5 * b * s * h * d * 2:
        pytest.skip(f"needs ~{5 * b * s * h * d * 2 / 2**30:.0f} GiB free GPU memory")
    torch.manual_seed(case_seed("huge"))
    q = torch.randn(b, s, h, d, device="cuda", dtype=DT)
    k = torch.randn(b, s, h, d, device="cuda", dtype=DT)
    v = torch.randn(b, s, h, d, device="cuda", dtype=DT)
    out, lse, _ = ioattn.flash_attn_func(q, k, v, causal=True, return_attn_probs=True)
    boundary = 2**31 // (s * h * d)  # first batch entry at or past element 2^31
    for i in sorted({0, b // 2, boundary - 1, boundary, b - 2, b - 1}):
        sl = slice(i, i + 1)
        out_ref, lse_ref, out_pt, lse_pt = reference_pair(q[sl], k[sl], v[sl], causal=True)
        check_fa_rule(f"out[{i}]", out[sl], out_ref, out_pt)
        check_fa_rule(f"lse[{i}]", lse[sl], lse_ref, lse_pt, atol=1e-4)
