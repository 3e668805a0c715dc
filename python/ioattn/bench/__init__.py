"""``python -m ioattn bench``: ioattn's speed, memory and host overhead beside its peers.

Modules: ``shapes`` (protocol shapes, FLOPs, option parsing), ``methods`` (the registry of
ioattn backends and peers), ``runner`` (the GPU-independent control flow), ``timing`` (CUDA
timing and the real device), ``check`` (ioattn's output vs an fp32 reference), ``memory``,
``overhead``, ``report`` (JSON and Markdown), ``plot`` (PNG, matplotlib), ``environment``,
``progress``, ``fa3_jax_worker`` (FlashAttention-3 through JAX, in a subprocess) and ``cli``.
See ``python -m ioattn bench --help``.
"""

from __future__ import annotations

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark CLI with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    from ioattn.bench.cli import main as cli_main

    return cli_main(argv)
