"""``python -m ioattn bench`` end to end on a GPU (skipped without one): the quick run and a
short backward run, each in its own process, checked through the JSON they write."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ioattn import _backend

pytestmark = pytest.mark.gpu


def _bench(tmp_path: Path, *argv: str, timeout: int = 1200) -> tuple[dict[str, Any], str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("IOATTN_BACKEND", None)
    proc = subprocess.run(
        [sys.executable, "-m", "ioattn", "bench", "--out", str(tmp_path), "--prefix", "run"]
        + list(argv),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    return json.loads((tmp_path / "run.json").read_text()), log


def _ours() -> list[str]:
    return [f"ioattn-{b}" for b in _backend.available_backends() if b != "reference"]


def test_quick_run(tmp_path: Path) -> None:
    data, log = _bench(tmp_path, "--quick", "--no-progress")
    env = data["environment"]
    assert env["gpu"]["name"] and env["gpu"]["sm_count"] > 0
    assert env["ioattn"]["libraries"] and env["versions"]["torch"]
    assert data["matmul_tflops"] > 10
    cells = data["cells"]
    assert {(c["head_dim"], c["seqlen"], c["pass"]) for c in cells} == {
        (128, 1024, "fwd"),
        (128, 8192, "fwd"),
    }
    for method in [*_ours(), "sdpa-flash"]:
        mine = [c for c in cells if c["method"] == method]
        assert len(mine) == 4, method  # 2 seqlens x causal and not
        assert all(c["status"] == "ok" and c["tflops"] > 1 for c in mine), mine
    for c in cells:
        if c["ours"]:
            assert c["max_error"] <= c["tolerance"]
            assert c["best_peer"] and c["vs_best_peer"] > 0
        assert c["status"] in ("ok", "skipped", "error")
    memory = {(r["method"], r["pass"]): r for r in data["memory"] if r["seqlen"] == 1024}
    for method in _ours():
        assert memory[(method, "fwd")]["status"] == "ok"
        assert memory[(method, "fwd")]["peak_bytes"] >= memory[(method, "fwd")]["min_bytes"] * 0.9
    assert memory[("sdpa-flash", "fwdbwd")]["status"] == "ok"
    assert memory[("naive", "fwdbwd")]["status"] in ("ok", "error")
    overhead = {(r["method"], r["pass"]): r for r in data["overhead"]}
    assert overhead[("sdpa-flash", "fwd")]["us"] > 0
    for method in _ours():
        assert overhead[(method, "fwd")]["us"] > 0
    assert (tmp_path / "run.md").exists()
    assert "## Forward, bf16 (TFLOPS)" in log


def test_backward_passes(tmp_path: Path) -> None:
    data, _ = _bench(
        tmp_path,
        "--passes", "bwd,fwdbwd", "--seqlens", "1k", "--head-dims", "128", "--causal", "both",
        "--methods", "ioattn,sdpa", "--reps", "5", "--runs", "1", "--no-overhead",
        "--no-memory", "--no-plots", "--no-progress",
    )  # fmt: skip
    cells = data["cells"]
    for c in cells:
        if c["method"] in ("sdpa-flash", "sdpa-efficient"):
            assert c["status"] == "ok" and c["tflops"] > 1, c
        if c["ours"]:  # lights up once the backward exists
            assert c["status"] == "ok" or c["skipped"] == "backward not implemented", c
