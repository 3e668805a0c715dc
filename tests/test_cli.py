"""`python -m ioattn` (the main job) and `ioattn info`, on the CPU."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest
import torch

import ioattn
from ioattn import _cli


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("IOATTN_BACKEND", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _field(out: str, name: str) -> str:
    """Value of an `  name  value` line of the Environment section."""
    for line in out.splitlines():
        if line.startswith(f"  {name} "):
            return line[len(name) + 2 :].strip()
    raise AssertionError(f"no {name!r} line in:\n{out}")


def test_main_job_on_cpu() -> None:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "ioattn", "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(),
    )
    elapsed = time.perf_counter() - start
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    for section in (
        "== Environment",
        "== Kernel libraries",
        "== Correctness",
        "== Timing",
        "Result: PASS",
    ):
        assert section in out, f"missing {section!r} in:\n{out}"
    for field in ("python", "torch", "CUDA available", "GPU", "compute capability", "backend"):
        assert f"  {field}" in out, f"missing environment field {field!r}"
    assert "the GPU kernels were NOT used" in out
    assert "reference" in _field(out, "backend")
    assert _field(out, "checks run on") == "cpu"
    assert "FAIL" not in out
    assert out.count(" PASS") >= 4, out
    assert elapsed < 60, f"the CPU main job took {elapsed:.0f} s; it must stay well under a minute"


def test_console_script_entry_point_runs() -> None:
    # `ioattn info` through the installed console script when it is on PATH, else via -m.
    script = shutil.which("ioattn")
    cmd = [script] if script else [sys.executable, "-m", "ioattn"]
    proc = subprocess.run(
        [*cmd, "--device", "cpu", "info"], capture_output=True, text=True, timeout=120, env=_env()
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "== Environment" in proc.stdout
    assert "== Kernel libraries" in proc.stdout
    assert "== Correctness" not in proc.stdout


def test_info_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli.main(["--device", "cpu", "info"]) == 0
    out = capsys.readouterr().out
    assert "== Environment" in out
    assert _field(out, "checks run on") == "cpu"
    assert "sm80" in out


def test_wrong_results_fail(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kwargs: object) -> torch.Tensor:
        return torch.zeros_like(q)

    monkeypatch.setattr(ioattn, "flash_attn_func", broken)
    assert _cli.main(["--device", "cpu", "--no-timing"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out
    assert "Result: FAIL" in out


def test_help_lists_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        _cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "info" in out
    assert "--device" in out


def test_kernel_summary_groups_by_op_and_dtype() -> None:
    kernels = [
        {"op": "fwd", "dtype": "bf16", "head_dim": 128, "mask": "window", "softcap": True},
        {"op": "fwd", "dtype": "bf16", "head_dim": 64, "mask": "none", "softcap": False},
        {"op": "fwd", "dtype": "fp16", "head_dim": 64, "mask": "none", "softcap": False},
    ]
    lines = _cli._kernel_summary(kernels)
    assert len(lines) == 2
    assert lines[0].startswith("fwd bf16: head_dim 64,128")
    assert "mask none/window" in lines[0]
    assert "(2 kernels)" in lines[0]


def test_bench_arguments_go_to_the_benchmark(monkeypatch: pytest.MonkeyPatch) -> None:
    from ioattn import bench

    seen: list[list[str]] = []
    monkeypatch.setattr(bench, "main", lambda argv: seen.append(argv) or 0)
    assert _cli.main(["bench", "--quick", "--device", "x"]) == 0
    assert seen == [["--quick", "--device", "x"]]


def test_gpu_cases_follow_the_compiled_kernel_table() -> None:
    class FakeLibrary:
        def build_info(self) -> dict:
            kernels = [
                {"op": "fwd", "dtype": dt, "head_dim": d, "mask": "full"}
                for dt, d in (("bf16", 64), ("bf16", 128), ("fp16", 64), ("e4m3", 128))
            ]
            return {"library": "sm80", "kernels": kernels}

    env = _cli._Env(torch.device("cpu"), True, "sm80", "", FakeLibrary(), [])
    cases = _cli._cases(env)
    built = {(c.dtype, c.head_dim) for c in cases}
    assert built == {("bf16", 64), ("bf16", 128), ("fp16", 64)}  # no kernel, no check
    extras = [
        c for c in cases if c.heads_k != c.heads or c.seqlen_q != c.seqlen_k or c.window != (-1, -1)
    ]
    assert extras and all((c.dtype, c.head_dim) == ("bf16", 128) for c in extras)
