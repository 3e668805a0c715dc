"""ctypes binding of the ioattn C ABI (``src/include/ioattn/api.h``).

Everything here mirrors the header byte for byte; ``tests/test_abi.py`` proves it against
``ioattn_struct_layout`` of a built library. Nothing in this module imports torch, and a
missing library is normal (CPU-only builds): :func:`load_library` returns ``None``.
"""

from __future__ import annotations

import ctypes
import json
import os
import threading
import warnings
from pathlib import Path
from typing import Any

ABI_VERSION = 3
"""The ABI version this binding was written for (``IOATTN_ABI_VERSION``)."""

LIBRARY_NAMES = ("sm80", "sm90")
"""Kernel libraries that may ship in ``ioattn/lib`` as ``libioattn_<name>.so``."""

LIBRARY_DIR_ENV = "IOATTN_LIBRARY_DIR"

# enum ioattn_dtype
DTYPE_FP16 = 0
DTYPE_BF16 = 1

# enum ioattn_status
OK = 0
ERR_UNSUPPORTED = 1
ERR_INVALID = 2
ERR_CUDA = 3
ERR_ABI = 4

STATUS_NAMES = {
    OK: "IOATTN_OK",
    ERR_UNSUPPORTED: "IOATTN_ERR_UNSUPPORTED",
    ERR_INVALID: "IOATTN_ERR_INVALID",
    ERR_CUDA: "IOATTN_ERR_CUDA",
    ERR_ABI: "IOATTN_ERR_ABI",
}

_i64 = ctypes.c_int64
_i32 = ctypes.c_int32
_ptr = ctypes.c_void_p


class FwdArgs(ctypes.Structure):
    """``ioattn_fwd_args``: pointers, int64 strides (in elements) and shapes of a forward call."""

    _fields_ = [
        ("struct_size", _i64),
        ("q", _ptr),
        ("k", _ptr),
        ("v", _ptr),
        ("out", _ptr),
        ("lse", _ptr),
        ("cu_seqlens_q", _ptr),
        ("cu_seqlens_k", _ptr),
        ("q_batch_stride", _i64),
        ("q_row_stride", _i64),
        ("q_head_stride", _i64),
        ("k_batch_stride", _i64),
        ("k_row_stride", _i64),
        ("k_head_stride", _i64),
        ("v_batch_stride", _i64),
        ("v_row_stride", _i64),
        ("v_head_stride", _i64),
        ("out_batch_stride", _i64),
        ("out_row_stride", _i64),
        ("out_head_stride", _i64),
        ("lse_batch_stride", _i64),
        ("lse_head_stride", _i64),
        ("batch", _i64),
        ("seqlen_q", _i64),
        ("seqlen_k", _i64),
        ("total_q", _i64),
        ("total_k", _i64),
        ("num_heads", _i64),
        ("num_heads_k", _i64),
        ("head_dim", _i64),
        ("window_left", _i64),
        ("window_right", _i64),
        ("softmax_scale", ctypes.c_float),
        ("softcap", ctypes.c_float),
        ("dtype", _i32),
        ("device", _i32),
        ("stream", _ptr),
    ]


FWD_ARGS_SIZE = ctypes.sizeof(FwdArgs)


def _strides(*names: str) -> list[tuple[str, type[ctypes._SimpleCData]]]:
    return [(f"{n}_{part}_stride", _i64) for n in names for part in ("batch", "row", "head")]


class BwdArgs(ctypes.Structure):
    """``ioattn_bwd_args``: a backward call (forward's tensors, dout, dq/dk/dv, workspace)."""

    _fields_ = [
        ("struct_size", _i64),
        ("q", _ptr),
        ("k", _ptr),
        ("v", _ptr),
        ("out", _ptr),
        ("lse", _ptr),
        ("dout", _ptr),
        ("dq", _ptr),
        ("dk", _ptr),
        ("dv", _ptr),
        ("cu_seqlens_q", _ptr),
        ("cu_seqlens_k", _ptr),
        ("workspace", _ptr),
        ("workspace_bytes", _i64),
        *_strides("q", "k", "v", "out", "dout", "dq", "dk", "dv"),
        ("lse_batch_stride", _i64),
        ("lse_head_stride", _i64),
        ("batch", _i64),
        ("seqlen_q", _i64),
        ("seqlen_k", _i64),
        ("total_q", _i64),
        ("num_heads", _i64),
        ("num_heads_k", _i64),
        ("head_dim", _i64),
        ("window_left", _i64),
        ("window_right", _i64),
        ("softmax_scale", ctypes.c_float),
        ("softcap", ctypes.c_float),
        ("dtype", _i32),
        ("device", _i32),
        ("deterministic", _i32),
        ("reserved", _i32),
        ("stream", _ptr),
    ]


BWD_ARGS_SIZE = ctypes.sizeof(BwdArgs)


class Field(ctypes.Structure):
    """``ioattn_field``: one field of an ABI struct as reported by ``ioattn_struct_layout``."""

    _fields_ = [
        ("name", ctypes.c_char_p),
        ("offset", _i64),
        ("size", _i64),
    ]


STRUCTS: dict[str, type[ctypes.Structure]] = {
    "ioattn_fwd_args": FwdArgs,
    "ioattn_bwd_args": BwdArgs,
    "ioattn_field": Field,
}
"""The Python mirror of every struct that ``ioattn_struct_layout`` knows, by C name."""


def python_layout(struct: type[ctypes.Structure]) -> tuple[list[tuple[str, int, int]], int]:
    """Field (name, offset, size) list and ``sizeof`` of a ctypes mirror, for comparisons."""
    fields = []
    for entry in struct._fields_:
        name = entry[0]
        descr = getattr(struct, name)
        fields.append((name, int(descr.offset), int(descr.size)))
    return fields, ctypes.sizeof(struct)


class AbiError(RuntimeError):
    """A non-OK status from a library call; ``status`` holds the ``ioattn_status`` code."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class AbiVersionError(RuntimeError):
    """A library built for another ``IOATTN_ABI_VERSION`` than this binding."""


class Library:
    """One loaded kernel library (``libioattn_sm80.so`` or ``libioattn_sm90.so``)."""

    def __init__(self, path: str | os.PathLike[str], name: str | None = None) -> None:
        self.path = Path(path)
        self.name = name if name is not None else self.path.stem.removeprefix("libioattn_")
        # RTLD_LOCAL: the libraries export the same symbols; keep them apart.
        self._cdll = ctypes.CDLL(str(self.path), mode=ctypes.RTLD_LOCAL)
        lib = self._cdll

        lib.ioattn_abi_version.argtypes = []
        lib.ioattn_abi_version.restype = _i32
        version = int(lib.ioattn_abi_version())
        if version != ABI_VERSION:  # its other functions may differ or be missing
            raise AbiVersionError(
                f"{self.path} has ABI version {version} but this ioattn Python package expects "
                f"{ABI_VERSION}; the library is ignored (reinstall ioattn)"
            )
        lib.ioattn_struct_layout.argtypes = [
            ctypes.c_char_p,
            ctypes.POINTER(Field),
            _i32,
            ctypes.POINTER(_i64),
        ]
        lib.ioattn_struct_layout.restype = _i32
        lib.ioattn_build_info.argtypes = []
        lib.ioattn_build_info.restype = ctypes.c_char_p
        lib.ioattn_status_string.argtypes = [_i32]
        lib.ioattn_status_string.restype = ctypes.c_char_p
        lib.ioattn_last_error.argtypes = []
        lib.ioattn_last_error.restype = ctypes.c_char_p
        lib.ioattn_fwd_supported.argtypes = [ctypes.POINTER(FwdArgs)]
        lib.ioattn_fwd_supported.restype = _i32
        lib.ioattn_fwd.argtypes = [ctypes.POINTER(FwdArgs)]
        lib.ioattn_fwd.restype = _i32
        lib.ioattn_bwd_workspace_size.argtypes = [ctypes.POINTER(BwdArgs), ctypes.POINTER(_i64)]
        lib.ioattn_bwd_workspace_size.restype = _i32
        lib.ioattn_bwd_supported.argtypes = [ctypes.POINTER(BwdArgs)]
        lib.ioattn_bwd_supported.restype = _i32
        lib.ioattn_bwd.argtypes = [ctypes.POINTER(BwdArgs)]
        lib.ioattn_bwd.restype = _i32

        # Bound once: attribute lookups on a CDLL are not free.
        self._fwd_supported = lib.ioattn_fwd_supported
        self._fwd = lib.ioattn_fwd
        self._bwd_workspace_size = lib.ioattn_bwd_workspace_size
        self._bwd_supported = lib.ioattn_bwd_supported
        self._bwd = lib.ioattn_bwd
        self._last_error = lib.ioattn_last_error
        self._status_string = lib.ioattn_status_string
        self._build_info: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"Library({self.name!r}, {str(self.path)!r})"

    def abi_version(self) -> int:
        """``IOATTN_ABI_VERSION`` the library was built with."""
        return int(self._cdll.ioattn_abi_version())

    def build_info_json(self) -> str:
        """The raw JSON text of ``ioattn_build_info()``."""
        raw = self._cdll.ioattn_build_info()
        return raw.decode("utf-8") if raw else "{}"

    def build_info(self) -> dict[str, Any]:
        """``ioattn_build_info()`` parsed (once; later calls return the cached dict)."""
        if self._build_info is None:
            self._build_info = json.loads(self.build_info_json())
        return self._build_info

    def struct_layout(self, name: str) -> tuple[list[tuple[str, int, int]], int]:
        """Fields ``(name, offset, size)`` in declaration order and ``sizeof`` of struct ``name``.

        Raises ``KeyError`` if the library does not know the struct.
        """
        size = _i64(0)
        count = self._cdll.ioattn_struct_layout(name.encode(), None, 0, ctypes.byref(size))
        if count < 0:
            raise KeyError(f"{self.name}: ioattn_struct_layout does not know struct {name!r}")
        fields = (Field * max(count, 1))()
        got = self._cdll.ioattn_struct_layout(name.encode(), fields, count, ctypes.byref(size))
        result = [
            ((f.name or b"").decode("utf-8"), int(f.offset), int(f.size))
            for f in fields[: min(got, count)]
        ]
        return result, int(size.value)

    def status_string(self, status: int) -> str:
        """Human-readable name of a status code."""
        raw = self._status_string(status)
        return raw.decode("utf-8", "replace") if raw else STATUS_NAMES.get(status, str(status))

    def last_error(self) -> str:
        """``ioattn_last_error()`` of the calling thread."""
        raw = self._last_error()
        return raw.decode("utf-8", "replace") if raw else ""

    def describe_status(self, status: int) -> str:
        """Status name plus ``ioattn_last_error()`` text, for messages."""
        message = self.last_error()
        name = self.status_string(status)
        return f"{name}: {message}" if message else name

    def fwd_supported(self, args: FwdArgs) -> tuple[bool, str]:
        """Whether ``fwd(args)`` would run; the reason (``ioattn_last_error``) when not."""
        status = self._fwd_supported(ctypes.byref(args))
        if status == OK:
            return True, ""
        return False, self.describe_status(status)

    def fwd_status(self, args: FwdArgs) -> int:
        """``ioattn_fwd_supported`` status code (``OK``, ``ERR_UNSUPPORTED``, ...)."""
        return int(self._fwd_supported(ctypes.byref(args)))

    def fwd(self, args: FwdArgs) -> None:
        """Launch the forward pass on ``args.stream``; raises :class:`AbiError` on failure."""
        self.raise_for_fwd(self.fwd_launch(args))

    def fwd_launch(self, args: FwdArgs) -> int:
        """Launch the forward pass on ``args.stream`` and return ``ioattn_fwd``'s status. The
        library plans before it launches: a refusal (``ERR_UNSUPPORTED``, ...) launched
        nothing."""
        return int(self._fwd(ctypes.byref(args)))

    def raise_for_fwd(self, status: int) -> None:
        """:class:`AbiError` for an ``ioattn_fwd`` status other than ``OK``."""
        if status != OK:
            raise AbiError(
                f"ioattn ({self.name}): ioattn_fwd failed: {self.describe_status(status)}", status
            )

    def bwd_workspace_size(self, args: BwdArgs) -> tuple[int, int]:
        """``(status, bytes)`` of ``ioattn_bwd_workspace_size``: the workspace ``bwd`` needs."""
        size = _i64(0)
        status = int(self._bwd_workspace_size(ctypes.byref(args), ctypes.byref(size)))
        return status, int(size.value)

    def bwd_status(self, args: BwdArgs) -> int:
        """``ioattn_bwd_supported`` status code (``OK``, ``ERR_UNSUPPORTED``, ...)."""
        return int(self._bwd_supported(ctypes.byref(args)))

    def bwd(self, args: BwdArgs) -> None:
        """Launch the backward pass on ``args.stream``; raises :class:`AbiError` on failure."""
        status = self._bwd(ctypes.byref(args))
        if status != OK:
            raise AbiError(
                f"ioattn ({self.name}): ioattn_bwd failed: {self.describe_status(status)}", status
            )


def library_dir() -> Path:
    """Where kernel libraries are looked up: ``$IOATTN_LIBRARY_DIR`` or ``ioattn/lib``."""
    env = os.environ.get(LIBRARY_DIR_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parent / "lib"


def library_path(name: str, directory: Path | None = None) -> Path:
    """Path of ``libioattn_<name>.so`` in ``directory`` (default :func:`library_dir`)."""
    return (directory if directory is not None else library_dir()) / f"libioattn_{name}.so"


_cache: dict[tuple[str, str], Library | None] = {}
_load_errors: dict[tuple[str, str], str] = {}
_lock = threading.Lock()


def load_library(name: str) -> Library | None:
    """Load ``libioattn_<name>.so`` once (per directory); ``None`` when absent or unusable.

    An unusable library (it does not load, or it reports another ABI version) gives a
    warning once and ``None``; :func:`load_error` says why.
    """
    if name not in LIBRARY_NAMES:
        raise ValueError(f"unknown ioattn library {name!r}; expected one of {LIBRARY_NAMES}")
    directory = os.environ.get(LIBRARY_DIR_ENV) or ""
    key = (name, directory)
    try:
        return _cache[key]
    except KeyError:
        pass
    with _lock:
        if key in _cache:
            return _cache[key]
        lib, error = _load(name)
        _cache[key] = lib
        if error:
            _load_errors[key] = error
    if error and lib is None and not error.startswith("not found"):
        warnings.warn(f"ioattn: {error}", RuntimeWarning, stacklevel=2)
    return lib


def load_error(name: str) -> str:
    """Why :func:`load_library` returned ``None`` for ``name`` ('' if it loaded or was not tried)."""
    key = (name, os.environ.get(LIBRARY_DIR_ENV) or "")
    return _load_errors.get(key, "")


def clear_cache() -> None:
    """Forget loaded libraries (tests that change ``IOATTN_LIBRARY_DIR`` use this)."""
    with _lock:
        _cache.clear()
        _load_errors.clear()


def _load(name: str) -> tuple[Library | None, str]:
    path = library_path(name)
    if not path.is_file():
        return None, f"not found: {path}"
    try:
        lib = Library(path, name)
    except AbiVersionError as exc:
        return None, str(exc)
    except (OSError, AttributeError) as exc:
        return None, f"could not load {path}: {exc}"
    return lib, ""
