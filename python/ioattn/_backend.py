"""Backend choice: which kernel library (or the reference) runs a call.

* CPU tensors always run the PyTorch reference (``reference.py``).
* CUDA, compute capability 9.0: the sm90 library if present and it supports the arguments,
  else the sm80 library. Compute capability 8.x and newer than 9.0: the sm80 library (its
  compute_80 PTX runs GPUs newer than the build). Older than 8.0: an error.
* ``IOATTN_BACKEND=sm80|sm90|reference`` forces one. Forcing ``reference`` is the only way
  the reference ever runs CUDA tensors; it is never a silent fallback.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ioattn import _abi

BACKEND_ENV = "IOATTN_BACKEND"
BACKEND_NAMES = ("sm90", "sm80", "reference")


@dataclass(frozen=True)
class Backend:
    """A backend: ``name`` is "sm90", "sm80" or "reference"; ``library`` is None for the latter."""

    name: str
    library: _abi.Library | None = None
    forced: bool = False

    @property
    def is_reference(self) -> bool:
        return self.library is None


REFERENCE = Backend("reference")

_capability_cache: dict[int, tuple[int, int]] = {}
_candidates_cache: dict[tuple[int, str, str], tuple[Backend, ...]] = {}


def getenv(name: str) -> str:
    """``os.environ.get(name, "")`` (read on every call, so a changed variable takes effect)."""
    return os.environ.get(name, "")


def forced_backend() -> str | None:
    """The value of ``IOATTN_BACKEND`` (None when unset/empty); ValueError when invalid."""
    raw = getenv(BACKEND_ENV)
    if not raw:
        return None
    value = raw.strip().lower()
    if not value:
        return None
    if value not in BACKEND_NAMES:
        raise ValueError(
            f"{BACKEND_ENV}={os.environ[BACKEND_ENV]!r} is not a valid backend; "
            f"expected one of {', '.join(BACKEND_NAMES)} (or unset)"
        )
    return value


def device_capability(index: int) -> tuple[int, int]:
    """Compute capability of CUDA device ``index`` (cached)."""
    try:
        return _capability_cache[index]
    except KeyError:
        cap = tuple(torch.cuda.get_device_capability(index))
        _capability_cache[index] = (int(cap[0]), int(cap[1]))
        return _capability_cache[index]


def clear_cache() -> None:
    """Forget cached capabilities and candidate lists (for tests)."""
    _capability_cache.clear()
    _candidates_cache.clear()


def _not_built(name: str) -> str:
    detail = _abi.load_error(name) or f"not found: {_abi.library_path(name)}"
    return f"the {name} kernel library libioattn_{name}.so was not built or is unusable ({detail})"


def candidates(device: torch.device) -> tuple[Backend, ...]:
    """Backends that may run tensors on ``device``, in order of preference.

    Raises RuntimeError when none can (no library built, GPU too old, forced library
    missing) and ValueError for an invalid ``IOATTN_BACKEND``.
    """
    forced = forced_backend()
    if device.type == "cpu":
        return (REFERENCE,)
    if device.type != "cuda":
        raise RuntimeError(f"ioattn: tensors on {device} are not supported (only cpu and cuda)")
    index = device.index if device.index is not None else torch.cuda.current_device()
    key = (index, forced or "", getenv(_abi.LIBRARY_DIR_ENV))
    cached = _candidates_cache.get(key)
    if cached is None:
        cached = _compute_candidates(index, forced)
        _candidates_cache[key] = cached
    return cached


def _compute_candidates(index: int, forced: str | None) -> tuple[Backend, ...]:
    if forced == "reference":
        return (Backend("reference", None, forced=True),)
    major, minor = device_capability(index)
    where = f"cuda:{index} (compute capability {major}.{minor})"
    if major < 8:
        raise RuntimeError(
            f"ioattn: {where} is not supported: ioattn needs an Ampere (8.0) or newer GPU"
        )
    if forced is not None:
        lib = _abi.load_library(forced)
        if lib is None:
            raise RuntimeError(
                f"ioattn: {BACKEND_ENV}={forced} was requested but {_not_built(forced)}"
            )
        if forced == "sm90" and (major, minor) != (9, 0):
            raise RuntimeError(
                f"ioattn: {BACKEND_ENV}=sm90 was requested but {where} is not a Hopper "
                "(9.0) GPU; the sm90 library runs only on compute capability 9.0"
            )
        return (Backend(forced, lib, forced=True),)
    found: list[Backend] = []
    if (major, minor) == (9, 0):
        sm90 = _abi.load_library("sm90")
        if sm90 is not None:
            found.append(Backend("sm90", sm90))
    sm80 = _abi.load_library("sm80")
    if sm80 is not None:
        found.append(Backend("sm80", sm80))
    if not found:
        raise RuntimeError(
            f"ioattn: no kernel library can run tensors on {where}: {_not_built('sm80')}. "
            "This looks like a CPU-only install; install a CUDA build of ioattn, or set "
            f"{BACKEND_ENV}=reference to run the slow PyTorch reference on the GPU."
        )
    return tuple(found)


def select_backend(device: torch.device | str, args: _abi.FwdArgs | None = None) -> Backend:
    """The backend that runs a forward call on ``device``.

    Without ``args``: the preferred candidate for the device (see :func:`candidates`).
    With ``args``: see :func:`pick`. The reference is never chosen for CUDA tensors
    unless ``IOATTN_BACKEND=reference`` forces it.
    """
    device = torch.device(device)
    cands = candidates(device)
    if args is None:
        return cands[0]
    return pick(cands, args)


def pick(cands: tuple[Backend, ...], args: _abi.FwdArgs | _abi.BwdArgs) -> Backend:
    """The first candidate whose library supports ``args`` (``ioattn_fwd_supported``, or
    for :class:`~ioattn._abi.BwdArgs` ``ioattn_bwd_workspace_size``: every check but the
    workspace's).

    When none does: NotImplementedError if every library answered IOATTN_ERR_UNSUPPORTED
    (valid arguments with no kernel built for them), else RuntimeError; both carry the
    reason each library gave.
    """
    if isinstance(args, _abi.BwdArgs):
        return pick_bwd(cands, args)[0]
    return _first_supporting(cands, lambda lib: (lib.fwd_status(args), 0))[0]


def pick_bwd(cands: tuple[Backend, ...], args: _abi.BwdArgs) -> tuple[Backend, int]:
    """As :func:`pick` for the backward, with the workspace bytes the chosen library asks
    for (one ``ioattn_bwd_workspace_size`` call per library tried)."""
    return _first_supporting(cands, lambda lib: lib.bwd_workspace_size(args))


def _first_supporting(
    cands: tuple[Backend, ...], probe: Callable[[_abi.Library], tuple[int, int]]
) -> tuple[Backend, int]:
    """The first candidate for which ``probe(library)`` gives status OK, with the value the
    probe returned beside it (0 for the reference)."""
    if cands[0].is_reference:
        return cands[0], 0
    reasons = []
    unsupported_only = True
    for backend in cands:
        assert backend.library is not None
        status, value = probe(backend.library)
        if status == _abi.OK:
            return backend, value
        unsupported_only = unsupported_only and status == _abi.ERR_UNSUPPORTED
        reasons.append(f"{backend.name}: {backend.library.describe_status(status)}")
    message = "ioattn: no kernel library supports these arguments (" + "; ".join(reasons) + ")"
    if unsupported_only:
        raise NotImplementedError(message)
    raise RuntimeError(message)


def available_backends() -> list[str]:
    """Backends usable on this machine, in order of preference: built libraries, then
    "reference" (always). A listed library may still need a suitable GPU to run."""
    names = [name for name in ("sm90", "sm80") if _abi.load_library(name) is not None]
    names.append("reference")
    return names


def describe_backends() -> list[dict[str, Any]]:
    """One dict per library (name, path, loaded, error, build_info) plus the reference;
    for diagnostics such as ``python -m ioattn``."""
    result: list[dict[str, Any]] = []
    for name in ("sm90", "sm80"):
        lib = _abi.load_library(name)
        entry: dict[str, Any] = {
            "name": name,
            "path": str(_abi.library_path(name)),
            "loaded": lib is not None,
            "error": "" if lib is not None else _abi.load_error(name),
            "build_info": None,
        }
        if lib is not None:
            try:
                entry["build_info"] = lib.build_info()
            except ValueError as exc:  # malformed JSON
                entry["error"] = f"bad build_info JSON: {exc}"
        result.append(entry)
    result.append(
        {"name": "reference", "path": "", "loaded": True, "error": "", "build_info": None}
    )
    return result
