"""Which distribution installed the ``ioattn`` module.

One module ships in several distributions: ``ioattn`` (a source build with whatever CUDA the
builder had) and one wheel per CUDA major, ``ioattn-cu12`` and ``ioattn-cu13`` (their kernel
libraries link the CUDA 12 or 13 runtime statically; see README "Install"). Install one.
"""

from __future__ import annotations

from importlib import metadata

DISTRIBUTIONS = ("ioattn", "ioattn-cu12", "ioattn-cu13")


def installed() -> list[str]:
    """Names of the installed distributions that provide ``ioattn``."""
    found = []
    for name in DISTRIBUTIONS:
        try:
            metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        found.append(name)
    return found


def version() -> str:
    """The version of the installed ioattn distribution (``0.0.0+unknown`` from a source tree)."""
    for name in installed():
        return metadata.version(name)
    return "0.0.0+unknown"
