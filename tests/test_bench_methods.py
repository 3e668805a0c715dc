"""ioattn.bench.methods: the registry, selection by name, support and availability reasons."""

from __future__ import annotations

import os
import sys

import pytest
import torch

from ioattn import _backend
from ioattn.bench import methods
from ioattn.bench.shapes import Shape


def test_peer_registry() -> None:
    names = [m.name for m in methods.peer_methods()]
    assert names == [
        "sdpa-flash",
        "sdpa-cudnn",
        "sdpa-efficient",
        "flex",
        "fa3",
        "fa3-jax",
        "fa2",
    ]
    assert not any(m.ours for m in methods.peer_methods())
    by_name = {m.name: m for m in methods.peer_methods()}
    assert by_name["fa3"].passes == ("fwd",) and "fp8" in by_name["fa3"].dtypes
    assert by_name["fa3-jax"].head_dims == (128,) and by_name["fa3-jax"].worker


@pytest.mark.parametrize(
    "backends", [["sm90", "sm80", "reference"], ["sm80", "reference"], ["reference"]]
)
def test_ioattn_methods_follow_the_built_libraries(
    monkeypatch: pytest.MonkeyPatch, backends: list[str]
) -> None:
    monkeypatch.setattr(_backend, "available_backends", lambda: backends)
    found = methods.ioattn_methods()
    libs = [b for b in backends if b != "reference"]
    assert [m.name for m in found] == [f"ioattn-{b}{s}" for b in libs for s in ("", "-det")]
    assert [m.opt_in for m in found] == [False, True] * len(libs)
    assert all(m.ours and m.passes == ("fwd", "bwd", "fwdbwd") for m in found)
    assert all("fp8" not in m.dtypes for m in found)  # none yet: fp8 cells are skipped
    all_names = [m.name for m in methods.all_methods()]
    assert all_names[: len(found)] == [m.name for m in found]  # ioattn first


def test_forced_backend_sets_and_restores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOATTN_BACKEND", "sm90")
    with methods.forced_backend("sm80"):
        assert os.environ["IOATTN_BACKEND"] == "sm80"
    assert os.environ["IOATTN_BACKEND"] == "sm90"
    monkeypatch.delenv("IOATTN_BACKEND")
    with methods.ioattn_method("sm80").context():
        assert os.environ["IOATTN_BACKEND"] == "sm80"
    assert "IOATTN_BACKEND" not in os.environ


@pytest.mark.parametrize(
    ("pattern", "selected"),
    [
        ("ioattn", ["ioattn-sm90", "ioattn-sm80"]),
        ("sdpa", ["sdpa-flash", "sdpa-cudnn", "sdpa-efficient"]),
        ("sdpa-flash", ["sdpa-flash"]),
        ("fa3", ["fa3", "fa3-jax"]),  # a family prefix
        ("fa3-*", ["fa3-jax"]),
        ("*cudnn", ["sdpa-cudnn"]),
        ("ioattn-sm80,flex", ["ioattn-sm80", "flex"]),
        ("ioattn-*", ["ioattn-sm90", "ioattn-sm80"]),  # opt-in methods: by exact name only
        ("ioattn-sm80-det,ioattn-sm80", ["ioattn-sm80", "ioattn-sm80-det"]),
    ],
)
def test_select(pattern: str, selected: list[str]) -> None:
    registry = [methods.ioattn_method(b, det) for b in ("sm90", "sm80") for det in (False, True)]
    registry += methods.peer_methods()
    got = methods.select(registry, pattern.split(","))
    assert [m.name for m in got] == selected


def test_select_all_and_unknown() -> None:
    registry = methods.peer_methods()
    assert methods.select(registry, None) == registry
    det = methods.ioattn_method("sm80", deterministic=True)
    assert methods.select([det, *registry], None) == registry  # opt-in: not by default
    with pytest.raises(ValueError, match="matches nothing"):
        methods.select(registry, ["flash-attn-9"])


@pytest.mark.parametrize(
    ("pass_", "dtype", "head_dim", "words"),
    [
        ("fwd", "bf16", 128, None),
        ("bwd", "bf16", 128, "no bwd pass"),
        ("fwd", "fp16", 128, "no fp16"),
        ("fwd", "fp8", 64, "no head dim 64"),
    ],
)
def test_unsupported(pass_: str, dtype: str, head_dim: int, words: str | None) -> None:
    m = methods.Method(
        "x", "", ("fwd",), ("bf16", "fp8"), make=lambda s: None, head_dims=(128, 256)
    )
    reason = m.unsupported(pass_, dtype, head_dim)
    assert (reason is None) if words is None else (words in (reason or ""))


def test_import_reasons() -> None:
    assert methods.import_reason("json") is None
    assert methods.import_reason("no_such_module_xyz") == (
        "ModuleNotFoundError: No module named 'no_such_module_xyz'"
    )
    assert methods.find_reason("json", "os") is None
    assert methods.find_reason("json", "no_such_module_xyz") == (
        "ModuleNotFoundError: No module named 'no_such_module_xyz'"
    )
    assert methods.find_reason("no_such_pkg.sub") is not None


@pytest.mark.parametrize(
    ("name", "module"),
    [("fa3", "fa3_fwd_interface"), ("fa2", "flash_attn"), ("fa3-jax", "jax")],
)
def test_missing_peers_say_why(monkeypatch: pytest.MonkeyPatch, name: str, module: str) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed, even where it is
    method = next(m for m in methods.peer_methods() if m.name == name)
    reason = method.available() or ""
    assert "Error" in reason and module in reason


def test_sdpa_peers_are_available() -> None:
    sdpa = [m for m in methods.peer_methods() if m.name.startswith("sdpa-")]
    assert [m.available() for m in sdpa] == [None, None, None]  # torch >= 2.4


def test_sdpa_reason_for_an_unknown_backend() -> None:
    assert "no SDPBackend.WARP_DRIVE" in (methods._sdpa_reason("WARP_DRIVE") or "")


def test_naive_matches_sdpa_on_cpu() -> None:
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 64, 3, 32, generator=gen) for _ in range(3))
    for causal in (False, True):
        shape = Shape(2, 64, 3, 32, causal)
        naive = methods._naive_make(shape)(q, k, v)
        sdpa = methods._sdpa_make(shape)(q, k, v)
        assert naive.shape == q.shape
        torch.testing.assert_close(naive, sdpa, atol=1e-5, rtol=1e-5)


def test_worker_method_does_not_run_in_process() -> None:
    jax = next(m for m in methods.peer_methods() if m.name == "fa3-jax")
    with pytest.raises(RuntimeError, match="own process"):
        jax.make(Shape(1, 128, 1, 128, False))


def test_recompile_limits_are_raised() -> None:
    import torch._dynamo.config as config

    methods.raise_recompile_limits(5000)
    assert any(getattr(config, k, 0) >= 5000 for k in ("recompile_limit", "cache_size_limit"))
