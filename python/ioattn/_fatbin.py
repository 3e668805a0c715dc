"""What device code a kernel library carries, read from its ELF file without CUDA tools.

The kernel libraries link one fat binary per kernel into their ``.nv_fatbin`` section
(cmake/gen_kernels.py). This module lists, per fat binary, its entries: SASS (``ELF``) or PTX,
and the arch. ``tests/test_packaging.py`` checks it against cuobjdump; ``ci/check_wheel.py``
uses it to prove that a wheel's libraries hold every arch they claim. Standard library only.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

FATBIN_MAGIC = 0xBA55ED50
KIND_PTX, KIND_ELF = 1, 2


@dataclass(frozen=True)
class FatbinEntry:
    kind: int  # KIND_PTX or KIND_ELF
    arch: int  # 80 for sm_80 / compute_80


def elf_sections(path: Path) -> dict[str, bytes]:
    """Section name -> contents of a little-endian ELF64 file."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError(f"{path}: not a little-endian ELF64 file")
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    names_at = headers[shstrndx][4]
    sections = {}
    for name_off, sh_type, _flags, _addr, offset, size, *_ in headers:
        start = names_at + name_off
        name = data[start : data.index(b"\0", start)].decode()
        sections[name] = b"" if sh_type == 8 else data[offset : offset + size]  # 8: NOBITS
    return sections


def parse_fatbins(blob: bytes) -> list[list[FatbinEntry]]:
    """The entries of every fat binary in an .nv_fatbin section, one list per fat binary.

    Layout: a 16-byte header (magic u32, version u16, header size u16, payload size u64), then
    entries, each with a header of kind u16 (1 PTX, 2 ELF), u16, header size u32, payload size
    u64, ..., arch u32 at byte 28. Entry headers are never compressed; fat binaries are 8-byte
    aligned inside the section, with zero padding between them.
    """
    fatbins = []
    off = 0
    while off + 16 <= len(blob):
        magic, _version, header_size, size = struct.unpack_from("<IHHQ", blob, off)
        if magic != FATBIN_MAGIC:
            off += 8
            continue
        entries = []
        pos, end = off + header_size, off + header_size + size
        while pos + 32 <= end:
            kind, _, entry_header, entry_size = struct.unpack_from("<HHIQ", blob, pos)
            (arch,) = struct.unpack_from("<I", blob, pos + 28)
            entries.append(FatbinEntry(kind, arch))
            pos += entry_header + entry_size
        fatbins.append(entries)
        off = end
    return fatbins


def library_fatbins(path: Path) -> list[list[FatbinEntry]]:
    """The fat binaries of a kernel library (empty when it has no .nv_fatbin section)."""
    return parse_fatbins(elf_sections(path).get(".nv_fatbin", b""))


def archs(fatbins: list[list[FatbinEntry]], kind: int) -> set[int]:
    return {e.arch for entries in fatbins for e in entries if e.kind == kind}
