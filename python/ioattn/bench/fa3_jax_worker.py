"""FlashAttention-3 through JAX (``flash_attn3_jax.flash_mha``), timed in a process of its own.

JAX and torch each bring their own CUDA libraries and allocator, so the JAX peer never shares
the benchmark's process: the parent (:func:`run_in_subprocess`) starts this file as a script
(``python .../fa3_jax_worker.py``; ``python -m ioattn.bench.fa3_jax_worker`` works too but
imports torch through the ``ioattn`` package first), writes one JSON request to its stdin and
reads one JSON object per line from its stdout:

* request: ``{"warmup", "reps", "runs", "calls", "flush_bytes", "jobs": [job, ...]}``, a job
  ``{"id", "kind": "time"|"overhead", "pass": "fwd"|"bwd"|"fwdbwd", "dtype": "bf16"|"fp16",
  "batch", "seqlen", "heads", "head_dim", "causal"}``;
* replies: ``{"info": {...versions...}}`` first, then per job ``{"id", "ms"}`` (time),
  ``{"id", "us"}`` (overhead), ``{"id", "error"}`` or ``{"id", "skipped"}``; or a single
  ``{"fatal": text, "skip": bool}`` when JAX or flash_attn3_jax cannot be used at all.

Timing: ``time.perf_counter`` around each call and ``block_until_ready``, after zeroing a
256 MB buffer (cold L2); median of ``reps`` calls after ``warmup`` calls, best of ``runs``.
Unlike CUDA events this includes JAX's dispatch and synchronization latency (tens of µs),
which matters only for the shortest cells. Backward: only the VJP of a forward computed
outside the timed region. The process runs with ``XLA_PYTHON_CLIENT_PREALLOCATE=false``.

This file imports nothing but the standard library until it runs as the worker.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

ENV = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false", "PYTHONUNBUFFERED": "1"}


# ---------------------------------------------------------------------------------------------
# parent side


def run_in_subprocess(
    request: dict[str, Any], command: Sequence[str] | None = None
) -> Iterator[dict[str, Any]]:
    """Run the worker on ``request``; yield its info and one result per job, in the order
    they come. Jobs it never answered get an error (with the tail of its stderr), or its
    fatal reason when it could not start (skipped when that was an ImportError)."""
    cmd = list(command) if command else [sys.executable, str(Path(__file__).resolve())]
    pending = [job["id"] for job in request.get("jobs", [])]
    env = dict(os.environ, **ENV)
    with tempfile.TemporaryFile(mode="w+") as errors:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors, text=True, env=env
        )
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(json.dumps(request))
            proc.stdin.close()
        except BrokenPipeError:
            pass
        fatal: dict[str, Any] | None = None
        try:
            for line in proc.stdout:
                msg = _parse(line)
                if msg is None:
                    continue
                if "fatal" in msg:
                    fatal = msg
                elif "info" in msg:
                    yield msg
                elif msg.get("id") in pending:
                    pending.remove(msg["id"])
                    yield msg
        finally:
            if proc.poll() is None and pending and fatal is None:  # the caller gave up early
                proc.kill()
        code = proc.wait()
        errors.seek(0)
        tail = " ".join(errors.read()[-600:].split())
    for job_id in pending:
        if fatal is not None:
            key = "skipped" if fatal.get("skip") else "error"
            yield {"id": job_id, key: str(fatal["fatal"])}
        else:
            yield {"id": job_id, "error": f"worker exited ({code}) without a result: {tail}"}


def _parse(line: str) -> dict[str, Any] | None:
    try:
        msg = json.loads(line)
    except ValueError:
        return None
    return msg if isinstance(msg, dict) else None


# ---------------------------------------------------------------------------------------------
# worker side (imports JAX)


def _protocol_stream() -> TextIO:
    """A private copy of stdout for the replies; fd 1 then points at stderr, so whatever
    JAX, XLA or the extension print cannot corrupt the protocol."""
    sys.stdout.flush()
    stream = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    return stream


def _median_s(
    call: Callable[[], Any],
    ready: Callable[[Any], Any],
    flush: Callable[[], Any],
    reps: int,
    warmup: int,
) -> float:
    for _ in range(warmup):
        ready(call())
    times = []
    for _ in range(reps):
        flush()
        start = time.perf_counter()
        ready(call())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class _Worker:
    def __init__(self, request: dict[str, Any], emit: Callable[[dict[str, Any]], None]) -> None:
        import jax
        import jax.numpy as jnp
        from flash_attn3_jax import flash_mha  # type: ignore[import-not-found]

        self.jax, self.jnp, self.flash_mha = jax, jnp, flash_mha
        self.request, self.emit = request, emit
        self.reps = int(request.get("reps", 30))
        self.runs = max(1, int(request.get("runs", 1)))
        self.warmup = int(request.get("warmup", 10))
        self.calls = int(request.get("calls", 200))
        words = int(request.get("flush_bytes", 256 * 1024 * 1024)) // 4
        self._flush_buf = jnp.zeros((words,), jnp.float32)
        self._zero = jax.jit(lambda x: x * 0, donate_argnums=0)

    def ready(self, value: Any) -> Any:
        return self.jax.block_until_ready(value)

    def flush(self) -> None:
        self._flush_buf = self.ready(self._zero(self._flush_buf))

    def arrays(self, job: dict[str, Any]) -> tuple[Any, ...]:
        jax, jnp = self.jax, self.jnp
        dtype = {"bf16": jnp.bfloat16, "fp16": jnp.float16}[job["dtype"]]
        dims = (job["batch"], job["seqlen"], job["heads"], job["head_dim"])
        make_key = getattr(jax.random, "key", None) or jax.random.PRNGKey
        keys = jax.random.split(make_key(job["seqlen"] * 1000 + job["head_dim"]), 4)
        return tuple(jax.random.normal(key, dims, dtype=dtype) for key in keys)

    def calls_for(self, job: dict[str, Any]) -> Callable[[], Any]:
        """The call that ``job['pass']`` times (JIT-compiled; the backward replays the VJP of
        one forward, jitted when JAX allows passing it to jit, else called as it is)."""
        jax = self.jax
        q, k, v, dout = self.arrays(job)
        causal = bool(job["causal"])

        def attn(q: Any, k: Any, v: Any) -> Any:
            return self.flash_mha(q, k, v, is_causal=causal)

        pass_ = job["pass"]
        if pass_ == "fwd":
            fwd = jax.jit(attn)
            return lambda: fwd(q, k, v)
        if pass_ == "fwdbwd":
            both = jax.jit(lambda q, k, v, g: jax.vjp(attn, q, k, v)[1](g))
            return lambda: both(q, k, v, dout)
        _, vjp_fn = jax.vjp(attn, q, k, v)
        try:
            apply = jax.jit(lambda fn, g: fn(g))
            self.ready(apply(vjp_fn, dout))
            return lambda: apply(vjp_fn, dout)
        except Exception:
            return lambda: vjp_fn(dout)

    def run(self, job: dict[str, Any]) -> dict[str, Any]:
        call = self.calls_for(job)
        if job.get("kind") == "overhead":
            best = float("inf")
            for _ in range(self.warmup):
                self.ready(call())
            for _ in range(self.runs):
                start = time.perf_counter()
                out = None
                for _ in range(self.calls):
                    out = call()
                self.ready(out)
                best = min(best, (time.perf_counter() - start) / self.calls * 1e6)
            return {"id": job["id"], "us": best}
        best = min(
            _median_s(call, self.ready, self.flush, self.reps, self.warmup)
            for _ in range(self.runs)
        )
        return {"id": job["id"], "ms": best * 1e3}


def _versions() -> dict[str, Any]:
    from importlib import metadata

    found = {}
    for dist in ("jax", "jaxlib", "flash-attn3-jax", "jax-cuda12-plugin", "jax-cuda13-plugin"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[dist] = metadata.version(dist)
    return found


def main() -> int:
    out = _protocol_stream()

    def emit(msg: dict[str, Any]) -> None:
        out.write(json.dumps(msg) + "\n")
        out.flush()

    request = json.loads(sys.stdin.read() or "{}")
    try:
        worker = _Worker(request, emit)
        devices = [str(d) for d in worker.jax.devices("gpu")]  # RuntimeError: none
    except ImportError as exc:
        emit({"fatal": f"{type(exc).__name__}: {exc}", "skip": True})
        return 0
    except Exception as exc:
        emit({"fatal": f"{type(exc).__name__}: {exc}".splitlines()[0][:300], "skip": False})
        return 0
    emit({"info": {"versions": _versions(), "devices": devices}})
    for job in request.get("jobs", []):
        try:
            emit(worker.run(job))
        except Exception as exc:
            text = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            if "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower():
                text = "out of memory"
            emit({"id": job["id"], "error": text})
    return 0


if __name__ == "__main__":
    # Run as a script, this file's folder is sys.path[0]: its siblings (timing.py, memory.py,
    # ...) must not shadow anything JAX imports.
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    sys.exit(main())
