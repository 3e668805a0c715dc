"""Shared pytest setup: the ``gpu`` and ``slow`` markers and the GPU skip rule.

A test marked ``gpu`` needs a CUDA device and the sm80 kernel library
(``ioattn/lib/libioattn_sm80.so`` or ``$IOATTN_LIBRARY_DIR``); without either it is skipped
with the reason. ``slow`` tests run unless deselected (``-m "not slow"``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch

from ioattn import _abi, _backend


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU and the built sm80 kernel library")
    config.addinivalue_line("markers", "slow: long-running test")


def gpu_skip_reason() -> str | None:
    """Why GPU tests cannot run here, or None when they can."""
    if not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False)"
    if os.environ.get(_backend.BACKEND_ENV, "").strip().lower() == "reference":
        return None  # forced reference on the GPU: the library is not needed
    if _abi.load_library("sm80") is None:
        detail = _abi.load_error("sm80") or f"not found: {_abi.library_path('sm80')}"
        return f"the sm80 kernel library is not built ({detail})"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = None
    checked = False
    for item in items:
        if item.get_closest_marker("gpu") is None:
            continue
        if not checked:
            reason = gpu_skip_reason()
            checked = True
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(autouse=True)
def _fresh_backend_caches() -> Iterator[None]:
    """Each test sees fresh library/backend caches (tests monkeypatch the environment)."""
    yield
    _backend.clear_cache()


def sm90_skip_reason() -> str | None:
    """Why the sm90 library cannot run here (None when it can): it needs a Hopper (9.0)."""
    if not torch.cuda.is_available():
        return "no CUDA device"
    if torch.cuda.get_device_capability() != (9, 0):
        return f"the sm90 library runs only on compute capability 9.0, not {torch.cuda.get_device_capability()}"
    if _abi.load_library("sm90") is None:
        detail = _abi.load_error("sm90") or f"not found: {_abi.library_path('sm90')}"
        return f"the sm90 kernel library is not built ({detail})"
    return None


@pytest.fixture(params=["sm80", "sm90"])
def fwd_library(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs a forward test once per kernel library, forced with IOATTN_BACKEND.

    A run forced to the reference backend keeps it (the sm80 case runs on it, the sm90 one is
    skipped).
    """
    name: str = request.param
    if _backend.forced_backend() == "reference":
        if name == "sm90":
            pytest.skip("IOATTN_BACKEND=reference run")
        return "reference"
    if name == "sm90" and (reason := sm90_skip_reason()) is not None:
        pytest.skip(reason)
    monkeypatch.setenv(_backend.BACKEND_ENV, name)
    return name


@pytest.fixture
def cuda() -> torch.device:
    """The CUDA device GPU tests run on."""
    return torch.device("cuda", torch.cuda.current_device())
