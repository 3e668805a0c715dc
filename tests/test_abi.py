"""The ctypes binding matches the C ABI byte for byte (CPU: loading a library needs no GPU).

Library tests skip when ``libioattn_<name>.so`` is not built. The header test compiles a
tiny C program against ``src/include/ioattn/api.h`` and needs only a C compiler, so the
binding is checked even before any library exists.
"""

from __future__ import annotations

import ctypes
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from ioattn import _abi

ROOT = Path(__file__).resolve().parents[1]
HEADER = ROOT / "src" / "include" / "ioattn" / "api.h"
COMPILED_HEAD_DIMS = {64, 96, 128, 192, 256}


@pytest.fixture(params=["sm80", "sm90"])
def lib(request: pytest.FixtureRequest) -> _abi.Library:
    name = request.param
    loaded = _abi.load_library(name)
    if loaded is None:
        detail = _abi.load_error(name) or f"not found: {_abi.library_path(name)}"
        pytest.skip(f"libioattn_{name}.so is not built ({detail})")
    return loaded


def test_abi_version(lib: _abi.Library) -> None:
    assert lib.abi_version() == _abi.ABI_VERSION == 3


@pytest.mark.parametrize("struct_name", sorted(_abi.STRUCTS))
def test_struct_layout_matches_binding(lib: _abi.Library, struct_name: str) -> None:
    c_fields, c_size = lib.struct_layout(struct_name)
    py_fields, py_size = _abi.python_layout(_abi.STRUCTS[struct_name])
    print(f"{struct_name}: C {c_size} bytes, Python {py_size} bytes")
    assert [f[0] for f in c_fields] == [f[0] for f in py_fields], "field names or order differ"
    for c_field, py_field in zip(c_fields, py_fields):
        assert c_field == py_field, f"{struct_name}.{c_field[0]}: C {c_field}, Python {py_field}"
    assert c_size == py_size


def test_struct_layout_unknown_name(lib: _abi.Library) -> None:
    with pytest.raises(KeyError, match="no_such_struct"):
        lib.struct_layout("no_such_struct")


def test_struct_layout_respects_capacity(lib: _abi.Library) -> None:
    size = ctypes.c_int64(0)
    fields = (_abi.Field * 3)()
    raw = lib._cdll.ioattn_struct_layout
    count = raw(b"ioattn_fwd_args", fields, 3, ctypes.byref(size))
    assert count == len(_abi.FwdArgs._fields_)
    assert size.value == ctypes.sizeof(_abi.FwdArgs)
    assert [f.name.decode() for f in fields] == ["struct_size", "q", "k"]
    assert raw(b"ioattn_fwd_args", None, 0, ctypes.byref(size)) == count


def test_build_info_shape(lib: _abi.Library) -> None:
    info = json.loads(lib.build_info_json())
    print(json.dumps(info)[:2000])
    assert info["library"] == lib.name
    assert info["abi"] == _abi.ABI_VERSION
    assert isinstance(info["cuda"], str) and info["cuda"].count(".") >= 1
    for key in ("sass", "ptx"):
        assert isinstance(info[key], list) and all(isinstance(a, int) for a in info[key])
    assert info["sass"] or info["ptx"], "no device code at all"
    if lib.name == "sm90":
        assert info["sass"] == [90] and not info["ptx"], "sm90 library is sm_90a SASS only"
    kernels = info["kernels"]
    assert isinstance(kernels, list) and kernels, "no kernels listed"
    for kernel in kernels:
        assert kernel["op"] in {"fwd", "bwd", "bwd_det", "bwd_pre", "bwd_post"}, kernel
        assert kernel["dtype"] in {"fp16", "bf16"}, kernel
        if kernel["op"] in {
            "fwd",
            "bwd",
            "bwd_det",
        }:  # attention variants; the helpers are per dtype (and head dim)
            assert kernel["head_dim"] in COMPILED_HEAD_DIMS, kernel
            assert isinstance(kernel["mask"], str), kernel
            assert isinstance(kernel["softcap"], bool), kernel
            assert isinstance(kernel["long_q"], bool), kernel
            assert isinstance(kernel["small_smem"], bool), kernel
            assert not (kernel["long_q"] and kernel["small_smem"]), kernel
    variants = {
        op: {
            (k["dtype"], k["head_dim"], k["mask"], k["softcap"])
            for k in kernels
            if k["op"] == op and not k["long_q"] and not k["small_smem"]
        }
        for op in ("fwd", "bwd", "bwd_det")
    }
    second = {
        flag: {
            (k["op"], k["dtype"], k["head_dim"], k["mask"], k["softcap"])
            for k in kernels
            if k["op"] in variants and k[flag]
        }
        for flag in ("long_q", "small_smem")
    }
    # a second tile config sits beside a default one, never alone: long-query tiles for the
    # sm90 forward, small-shared-memory tiles for sm80 (both backward modes alike)
    for flag, libs in (("long_q", {"sm90"}), ("small_smem", {"sm80"})):
        for op, *variant in second[flag]:
            assert lib.name in libs, f"{flag} kernel in {lib.name}"
            assert tuple(variant) in variants[op], f"{flag} kernel without its default"
    if lib.name == "sm80":
        det = {v[1:] for v in second["small_smem"] if v[0] == "bwd_det"}
        assert det == {v[1:] for v in second["small_smem"] if v[0] == "bwd"}
    assert variants["fwd"], "no forward kernel"
    if lib.name == "sm90":  # forward only so far: the dispatcher takes sm80's backward
        assert not variants["bwd"] and not variants["bwd_det"], "sm90 has no backward yet"
        return
    assert variants["bwd"] == variants["fwd"], "every forward variant has its backward"
    assert variants["bwd_det"] == variants["fwd"], "... and its deterministic backward"
    pre = [k["dtype"] for k in kernels if k["op"] == "bwd_pre"]
    assert sorted(pre) == sorted({d for d, *_ in variants["bwd"]}), "bwd_pre: one per dtype"
    # the postprocess reads the backward kernel's dq_accum layout, which its head dim fixes
    post = [(k["dtype"], k["head_dim"], k["small_smem"]) for k in kernels if k["op"] == "bwd_post"]
    configs = {(d, hd, False) for d, hd, *_ in variants["bwd"]}
    configs |= {(d, hd, True) for _, d, hd, *_ in second["small_smem"]}
    assert sorted(post) == sorted(configs), "bwd_post: one per (dtype, backward tile config)"

    assert lib.build_info() == info  # parsed once, cached


def test_status_strings(lib: _abi.Library) -> None:
    for status in _abi.STATUS_NAMES:
        assert lib.status_string(status), status
    assert isinstance(lib.last_error(), str)


def test_wrong_struct_size_is_abi_error(lib: _abi.Library) -> None:
    args = _abi.FwdArgs()
    args.struct_size = 8
    ok, reason = lib.fwd_supported(args)
    assert not ok and reason
    assert lib.fwd_status(args) == _abi.ERR_ABI


_LAYOUT_PROGRAM = r"""
#include <stddef.h>
#include <stdio.h>
#include "ioattn/api.h"
#define F(s, f) printf("%s %s %zu %zu\n", #s, #f, offsetof(s, f), sizeof(((s *)0)->f));
int main(void) {
@FIELDS@
@SIZES@
  printf("abi %d\n", IOATTN_ABI_VERSION);
  return 0;
}
"""


def test_binding_matches_header(tmp_path: Path) -> None:
    """Compile offsetof/sizeof of every field in api.h and compare with the ctypes mirror."""
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        pytest.skip("no C compiler to compile the api.h layout probe")
    if not HEADER.is_file():
        pytest.skip(f"{HEADER} not present (installed package without sources)")
    lines = []
    for c_name, struct in _abi.STRUCTS.items():
        lines += [f"  F({c_name}, {entry[0]})" for entry in struct._fields_]
    source = tmp_path / "layout.c"
    sizes = [f'  printf("%s @sizeof %zu\\n", "{c}", sizeof({c}));' for c in _abi.STRUCTS]
    program = _LAYOUT_PROGRAM.replace("@FIELDS@", "\n".join(lines))
    source.write_text(program.replace("@SIZES@", "\n".join(sizes)))
    exe = tmp_path / "layout"
    subprocess.run(
        [compiler, "-std=c99", "-I", str(HEADER.parents[1]), str(source), "-o", str(exe)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    output = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    c_fields: dict[str, list[tuple[str, int, int]]] = {}
    sizes: dict[str, int] = {}
    abi = None
    for line in output.splitlines():
        parts = line.split()
        if parts[0] == "abi":
            abi = int(parts[1])
        elif parts[1] == "@sizeof":
            sizes[parts[0]] = int(parts[2])
        else:
            c_fields.setdefault(parts[0], []).append((parts[1], int(parts[2]), int(parts[3])))
    assert abi == _abi.ABI_VERSION
    for c_name, struct in _abi.STRUCTS.items():
        py_fields, py_size = _abi.python_layout(struct)
        assert c_fields[c_name] == py_fields
        assert sizes[c_name] == py_size
