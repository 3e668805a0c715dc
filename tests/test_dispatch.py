"""Backend choice (CPU): capabilities and libraries are faked with monkeypatch."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import ioattn
from ioattn import _abi, _backend, _ops, reference

CUDA0 = torch.device("cuda", 0)


class FakeLibrary:
    """Stands in for _abi.Library: answers fwd_supported (``asked``) and ioattn_fwd (``tried``;
    ``launched`` when it answers OK) with a fixed status."""

    def __init__(self, name: str, status: int = _abi.OK, reason: str = "") -> None:
        self.name = name
        self.status = status
        self.reason = reason
        self.asked = 0
        self.tried = 0
        self.launched = 0

    def fwd_status(self, args: _abi.FwdArgs) -> int:
        self.asked += 1
        return self.status

    def fwd_launch(self, args: _abi.FwdArgs) -> int:
        self.tried += 1
        self.launched += self.status == _abi.OK
        return self.status

    def fwd(self, args: _abi.FwdArgs) -> None:
        self.raise_for_fwd(self.fwd_launch(args))

    def raise_for_fwd(self, status: int) -> None:
        if status != _abi.OK:
            raise _abi.AbiError(f"{self.name}: {self.describe_status(status)}", status)

    def describe_status(self, status: int) -> str:
        return f"{_abi.STATUS_NAMES[status]}: {self.reason}"


Installer = Callable[..., None]


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Installer:
    """fake(cc, sm80=..., sm90=...) installs a device capability and fake libraries."""

    def install(
        cc: tuple[int, int], sm80: FakeLibrary | None = None, sm90: FakeLibrary | None = None
    ) -> None:
        libs = {"sm80": sm80, "sm90": sm90}
        monkeypatch.setattr(_backend, "device_capability", lambda index: cc)
        monkeypatch.setattr(_abi, "load_library", lambda name: libs[name])
        _backend.clear_cache()

    monkeypatch.delenv(_backend.BACKEND_ENV, raising=False)
    return install


def test_cpu_tensors_use_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _backend.select_backend("cpu").name == "reference"
    monkeypatch.setenv(_backend.BACKEND_ENV, "sm80")  # a GPU library cannot run CPU tensors
    assert _backend.select_backend("cpu").name == "reference"


def test_cpu_call_runs_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = reference.attention_tiled

    def spy(*args: object, **kwargs: object) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(kwargs)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(reference, "attention_tiled", spy)
    q = torch.randn(1, 3, 2, 8, dtype=torch.bfloat16)
    ioattn.flash_attn_func(q, q, q, causal=True, softmax_scale=0.5)
    assert len(calls) == 1
    assert calls[0]["softmax_scale"] == 0.5 and calls[0]["window_size"] == (-1, 0)


@pytest.mark.parametrize("value", ["sm70", "cuda", "REFERENCEX", "1"])
def test_invalid_env_value(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(_backend.BACKEND_ENV, value)
    with pytest.raises(
        ValueError, match=f"IOATTN_BACKEND={re.escape(repr(value))} is not a valid backend"
    ):
        _backend.select_backend("cpu")
    q = torch.randn(1, 3, 2, 8, dtype=torch.float16)
    with pytest.raises(ValueError, match="IOATTN_BACKEND"):
        ioattn.flash_attn_func(q, q, q)


@pytest.mark.parametrize("value", ["sm80", "SM90", " reference "])
def test_env_value_is_case_and_space_insensitive(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(_backend.BACKEND_ENV, value)
    assert _backend.forced_backend() == value.strip().lower()


def test_hopper_prefers_sm90(fake: Installer) -> None:
    sm80, sm90 = FakeLibrary("sm80"), FakeLibrary("sm90")
    fake((9, 0), sm80=sm80, sm90=sm90)
    assert [b.name for b in _backend.candidates(CUDA0)] == ["sm90", "sm80"]
    assert _backend.select_backend(CUDA0, _abi.FwdArgs()).name == "sm90"
    assert sm90.asked == 1 and sm80.asked == 0


def test_hopper_falls_back_to_sm80_when_sm90_declines(fake: Installer) -> None:
    sm80 = FakeLibrary("sm80")
    sm90 = FakeLibrary("sm90", _abi.ERR_UNSUPPORTED, "no softcap kernel")
    fake((9, 0), sm80=sm80, sm90=sm90)
    assert _backend.select_backend(CUDA0, _abi.FwdArgs()).name == "sm80"
    assert sm90.asked == 1 and sm80.asked == 1


def test_hopper_without_sm90_library(fake: Installer) -> None:
    fake((9, 0), sm80=FakeLibrary("sm80"))
    assert _backend.select_backend(CUDA0, _abi.FwdArgs()).name == "sm80"


@pytest.mark.parametrize("cc", [(8, 0), (8, 6), (8, 9), (10, 0), (12, 0)])
def test_non_hopper_uses_sm80(fake: Installer, cc: tuple[int, int]) -> None:
    sm90 = FakeLibrary("sm90")
    fake(cc, sm80=FakeLibrary("sm80"), sm90=sm90)
    assert [b.name for b in _backend.candidates(CUDA0)] == ["sm80"]
    assert _backend.select_backend(CUDA0, _abi.FwdArgs()).name == "sm80"
    assert sm90.asked == 0


@pytest.mark.parametrize("cc", [(7, 5), (7, 0), (6, 1)])
def test_old_gpu_is_rejected(fake: Installer, cc: tuple[int, int]) -> None:
    fake(cc, sm80=FakeLibrary("sm80"))
    with pytest.raises(RuntimeError, match=r"needs an Ampere \(8\.0\) or newer GPU"):
        _backend.select_backend(CUDA0)


def test_no_library_never_falls_back_to_reference(fake: Installer) -> None:
    fake((8, 0))
    with pytest.raises(RuntimeError, match="no kernel library can run tensors on cuda:0") as info:
        _backend.select_backend(CUDA0)
    assert "IOATTN_BACKEND=reference" in str(info.value)


def test_forced_reference_on_cuda(fake: Installer, monkeypatch: pytest.MonkeyPatch) -> None:
    fake((9, 0), sm80=FakeLibrary("sm80"), sm90=FakeLibrary("sm90"))
    monkeypatch.setenv(_backend.BACKEND_ENV, "reference")
    backend = _backend.select_backend(CUDA0, _abi.FwdArgs())
    assert backend.name == "reference" and backend.forced and backend.is_reference


def test_forced_sm80_on_hopper(fake: Installer, monkeypatch: pytest.MonkeyPatch) -> None:
    sm90 = FakeLibrary("sm90")
    fake((9, 0), sm80=FakeLibrary("sm80"), sm90=sm90)
    monkeypatch.setenv(_backend.BACKEND_ENV, "sm80")
    assert _backend.select_backend(CUDA0, _abi.FwdArgs()).name == "sm80"
    assert sm90.asked == 0


def test_forced_library_missing(fake: Installer, monkeypatch: pytest.MonkeyPatch) -> None:
    fake((9, 0), sm80=FakeLibrary("sm80"))
    monkeypatch.setenv(_backend.BACKEND_ENV, "sm90")
    with pytest.raises(RuntimeError, match="IOATTN_BACKEND=sm90 was requested but the sm90"):
        _backend.select_backend(CUDA0)


def test_forced_sm90_on_ampere(fake: Installer, monkeypatch: pytest.MonkeyPatch) -> None:
    fake((8, 0), sm80=FakeLibrary("sm80"), sm90=FakeLibrary("sm90"))
    monkeypatch.setenv(_backend.BACKEND_ENV, "sm90")
    with pytest.raises(RuntimeError, match="runs only on compute capability 9.0"):
        _backend.select_backend(CUDA0)


def test_unsupported_everywhere_is_not_implemented(fake: Installer) -> None:
    fake(
        (9, 0),
        sm80=FakeLibrary("sm80", _abi.ERR_UNSUPPORTED, "head_dim 256 not built"),
        sm90=FakeLibrary("sm90", _abi.ERR_UNSUPPORTED, "head_dim 256 not built"),
    )
    with pytest.raises(NotImplementedError) as info:
        _backend.select_backend(CUDA0, _abi.FwdArgs())
    message = str(info.value)
    assert "sm90: IOATTN_ERR_UNSUPPORTED: head_dim 256 not built" in message
    assert "sm80: IOATTN_ERR_UNSUPPORTED" in message


def _launch() -> None:
    _ops._launch(_backend.candidates(CUDA0), _abi.FwdArgs())


def test_launch_is_one_call_when_the_preferred_library_runs_it(fake: Installer) -> None:
    sm80, sm90 = FakeLibrary("sm80"), FakeLibrary("sm90")
    fake((9, 0), sm80=sm80, sm90=sm90)
    _launch()
    assert (sm90.tried, sm90.asked, sm90.launched) == (1, 0, 1)
    assert (sm80.tried, sm80.asked) == (0, 0)


def test_launch_falls_back_when_the_preferred_library_declines(fake: Installer) -> None:
    sm80 = FakeLibrary("sm80")
    sm90 = FakeLibrary("sm90", _abi.ERR_UNSUPPORTED, "no softcap kernel")
    fake((9, 0), sm80=sm80, sm90=sm90)
    _launch()
    assert (sm90.launched, sm80.launched) == (0, 1)


def test_launch_failure_is_not_retried_elsewhere(fake: Installer) -> None:
    sm80 = FakeLibrary("sm80")
    sm90 = FakeLibrary("sm90", _abi.ERR_CUDA, "launch failed")
    fake((9, 0), sm80=sm80, sm90=sm90)
    with pytest.raises(_abi.AbiError, match="IOATTN_ERR_CUDA: launch failed"):
        _launch()
    assert (sm80.tried, sm80.asked) == (0, 0)


def test_launch_unsupported_everywhere_is_not_implemented(fake: Installer) -> None:
    sm80 = FakeLibrary("sm80", _abi.ERR_UNSUPPORTED, "head_dim 256 not built")
    sm90 = FakeLibrary("sm90", _abi.ERR_UNSUPPORTED, "head_dim 256 not built")
    fake((9, 0), sm80=sm80, sm90=sm90)
    with pytest.raises(NotImplementedError, match="sm80: IOATTN_ERR_UNSUPPORTED"):
        _launch()
    assert sm80.launched == sm90.launched == 0


def test_invalid_args_is_runtime_error(fake: Installer) -> None:
    fake((8, 0), sm80=FakeLibrary("sm80", _abi.ERR_INVALID, "q pointer not 16-byte aligned"))
    with pytest.raises(RuntimeError, match="IOATTN_ERR_INVALID: q pointer not 16-byte aligned"):
        _backend.select_backend(CUDA0, _abi.FwdArgs())


def test_missing_library_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No monkeypatched loader: an empty IOATTN_LIBRARY_DIR means no library at all."""
    monkeypatch.setenv(_abi.LIBRARY_DIR_ENV, str(tmp_path))
    assert _abi.load_library("sm80") is None
    assert _abi.load_library("sm90") is None
    assert str(tmp_path / "libioattn_sm80.so") in _abi.load_error("sm80")
    assert ioattn.available_backends() == ["reference"]
    monkeypatch.setattr(_backend, "device_capability", lambda index: (8, 0))
    monkeypatch.setenv(_backend.BACKEND_ENV, "sm80")
    with pytest.raises(RuntimeError, match="was not built") as info:
        _backend.select_backend(CUDA0)
    assert str(tmp_path) in str(info.value)


def test_broken_library_warns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "libioattn_sm80.so").write_bytes(b"not an ELF file")
    monkeypatch.setenv(_abi.LIBRARY_DIR_ENV, str(tmp_path))
    with pytest.warns(RuntimeWarning, match="could not load"):
        assert _abi.load_library("sm80") is None
    assert "could not load" in _abi.load_error("sm80")
    info = {entry["name"]: entry for entry in _backend.describe_backends()}
    assert not info["sm80"]["loaded"] and "could not load" in info["sm80"]["error"]
    assert info["reference"]["loaded"]


def test_unknown_library_name() -> None:
    with pytest.raises(ValueError, match="unknown ioattn library"):
        _abi.load_library("sm75")


def test_import_never_needs_a_library(tmp_path: Path) -> None:
    """`import ioattn` works with no library and no GPU (fresh interpreter)."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, IOATTN_LIBRARY_DIR=str(tmp_path), CUDA_VISIBLE_DEVICES="")
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(ioattn.__file__).parents[1]), env.get("PYTHONPATH", "")]
    )
    code = "import ioattn; print(ioattn.available_backends())"
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['reference']"


_STUB_SOURCE = r"""
#include <stdint.h>
#include <string.h>
static char last[128];
int32_t ioattn_abi_version(void) { return STUB_ABI; }
int32_t ioattn_struct_layout(const char *n, void *f, int32_t c, int64_t *s) { return -1; }
const char *ioattn_build_info(void) {
  return "{\"library\": \"sm80\", \"abi\": 1, \"cuda\": \"0.0\", \"sass\": [], \"ptx\": [],"
         " \"kernels\": []}";
}
const char *ioattn_status_string(int32_t s) { return s ? "IOATTN_ERR_UNSUPPORTED" : "IOATTN_OK"; }
const char *ioattn_last_error(void) { return last; }
int32_t ioattn_fwd_supported(const int64_t *args) {
  /* head_dim is field 29 (all fields before it are 8 bytes) */
  if (args[29] > 128) { strcpy(last, "stub: head_dim > 128"); return 1; }
  last[0] = 0;
  return 0;
}
int32_t ioattn_fwd(const int64_t *args) { strcpy(last, "stub: no device"); return 3; }
int32_t ioattn_bwd_workspace_size(const int64_t *args, int64_t *bytes) { *bytes = 0; return 0; }
int32_t ioattn_bwd_supported(const int64_t *args) { return 0; }
int32_t ioattn_bwd(const int64_t *args) { strcpy(last, "stub: no device"); return 3; }
"""


def _build_stub(directory: Path, abi: int) -> None:
    import shutil
    import subprocess

    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        pytest.skip("no C compiler to build a stub kernel library")
    source = directory / "stub.c"
    source.write_text(_STUB_SOURCE)
    subprocess.run(
        [compiler, "-shared", "-fPIC", f"-DSTUB_ABI={abi}", str(source), "-o",
         str(directory / "libioattn_sm80.so")],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip


def test_abi_mismatch_is_ignored_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _build_stub(tmp_path, abi=_abi.ABI_VERSION + 1)
    monkeypatch.setenv(_abi.LIBRARY_DIR_ENV, str(tmp_path))
    other = f"ABI version {_abi.ABI_VERSION + 1}"
    with pytest.warns(RuntimeWarning, match=f"has {other} but"):
        assert _abi.load_library("sm80") is None
    assert other in _abi.load_error("sm80")
    assert ioattn.available_backends() == ["reference"]


def test_stub_library_through_ctypes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real shared library behind the binding: support query, refusal reasons, failures."""
    _build_stub(tmp_path, abi=_abi.ABI_VERSION)
    monkeypatch.setenv(_abi.LIBRARY_DIR_ENV, str(tmp_path))
    monkeypatch.delenv(_backend.BACKEND_ENV, raising=False)
    monkeypatch.setattr(_backend, "device_capability", lambda index: (8, 0))
    lib = _abi.load_library("sm80")
    assert lib is not None and lib.abi_version() == _abi.ABI_VERSION
    assert lib.build_info()["library"] == "sm80"
    assert ioattn.available_backends() == ["sm80", "reference"]
    args = _abi.FwdArgs(struct_size=_abi.FWD_ARGS_SIZE, head_dim=64)
    assert lib.fwd_supported(args) == (True, "")
    assert _backend.select_backend(CUDA0, args).library is lib
    with pytest.raises(RuntimeError, match="IOATTN_ERR_UNSUPPORTED: stub: no device") as info:
        lib.fwd(args)
    assert isinstance(info.value, _abi.AbiError) and info.value.status == _abi.ERR_CUDA
    args.head_dim = 256
    assert lib.fwd_supported(args) == (False, "IOATTN_ERR_UNSUPPORTED: stub: head_dim > 128")
    with pytest.raises(NotImplementedError, match="sm80: IOATTN_ERR_UNSUPPORTED: stub: head_dim"):
        _backend.select_backend(CUDA0, args)
