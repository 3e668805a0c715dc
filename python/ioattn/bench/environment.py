"""Where a run happened: GPU, clocks, driver, CUDA, versions, ioattn's libraries, git, date.

The libraries are recorded with their sha256: which binary ran, whatever git says about the tree
(a copy of a checkout can carry git metadata older than its files).

Everything is best effort: a missing ``nvidia-smi``, ``git`` or package leaves its field out
(or None) and never stops the benchmark.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import platform
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from ioattn import _dist

DISTRIBUTIONS = (
    *_dist.DISTRIBUTIONS,  # whichever distribution installed ioattn
    "torch",
    "triton",
    "numpy",
    "matplotlib",
    "jax",
    "jaxlib",
    "flash-attn",
    "fa3-fwd",
    "flash-attn3-jax",
)
CLOCK_QUERY = ["nvidia-smi", "--query-gpu=clocks.sm,clocks.max.sm,clocks.mem", "--format=csv"]
DRIVER_QUERY = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]


def _run(cmd: list[str], cwd: str | Path | None = None) -> str | None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=20, cwd=cwd)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def parse_csv(text: str | None) -> list[dict[str, str]]:
    """``nvidia-smi --format=csv`` output (a header line, one line per GPU) as dicts."""
    if not text:
        return []
    lines = [line for line in text.splitlines() if line.strip()]
    head = [h.strip() for h in lines[0].split(",")]
    return [dict(zip(head, (v.strip() for v in line.split(",")))) for line in lines[1:]]


def versions() -> dict[str, str]:
    found = {}
    for dist in DISTRIBUTIONS:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[dist] = metadata.version(dist)
    return found


def git_revision() -> dict[str, Any]:
    """HEAD and whether the tree is dirty, from the working directory's or the package's repo."""
    for where in (Path.cwd(), Path(__file__).resolve().parent):
        head = _run(["git", "rev-parse", "HEAD"], cwd=where)
        if head:
            status = _run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where)
            return {"commit": head, "dirty": bool(status), "where": str(where)}
    return {}


def _gpu() -> dict[str, Any]:
    import torch

    if not torch.cuda.is_available():
        return {"name": None}
    index = torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    return {
        "index": index,
        "name": props.name,
        "capability": ".".join(map(str, torch.cuda.get_device_capability(index))),
        "sm_count": props.multi_processor_count,
        "memory_gib": round(props.total_memory / 2**30, 1),
    }


def file_digest(path: str | Path) -> dict[str, Any]:
    """sha256 (hex) and size in bytes of a file; {} where it cannot be read."""
    digest = hashlib.sha256()
    size = 0
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
    except OSError:
        return {}
    return {"sha256": digest.hexdigest(), "bytes": size}


def _ioattn() -> dict[str, Any]:
    import ioattn
    from ioattn import _backend

    libraries = _backend.describe_backends()
    for lib in libraries:
        if lib["loaded"] and lib["path"]:
            lib.update(file_digest(lib["path"]))
    return {
        "version": ioattn.__version__,
        "path": str(Path(ioattn.__file__).parent),
        "libraries": libraries,
    }


def collect(argv: list[str]) -> dict[str, Any]:
    """The environment of this run (``argv``: the benchmark's own arguments)."""
    import torch

    env: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python -m ioattn bench " + shlex.join(argv),
        "argv": list(sys.argv),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cuda": torch.version.cuda,
        "versions": versions(),
        "git": git_revision(),
    }
    env["versions"].setdefault("torch", torch.__version__)
    sections = {"gpu": _gpu, "ioattn": _ioattn}
    for key, fn in sections.items():
        try:
            env[key] = fn()
        except Exception as exc:
            env[key] = {"error": f"{type(exc).__name__}: {exc}"}
    try:
        env["cudnn"] = torch.backends.cudnn.version()
    except Exception:
        env["cudnn"] = None
    env["clocks"] = parse_csv(_run(CLOCK_QUERY))
    driver = _run(DRIVER_QUERY)
    env["driver"] = driver.splitlines()[0].strip() if driver else None
    return env
