"""ioattn.bench.plot and ``--plot-only``: PNGs and Markdown redrawn from a saved report JSON."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from ioattn.bench import cli, plot
from ioattn.bench.report import Report

needs_matplotlib = pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is None,
    reason="matplotlib is not installed (nox -s tests installs it)",
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _cell(method: str, pass_: str, hd: int, causal: bool, s: int, tflops: float | None) -> dict:
    status = "ok" if tflops else "skipped"
    return {
        "method": method,
        "pass": pass_,
        "dtype": "bf16",
        "batch": 16384 // s,
        "seqlen": s,
        "heads": 2048 // hd,
        "head_dim": hd,
        "causal": causal,
        "ours": method.startswith("ioattn"),
        "status": status,
        "tflops": tflops,
        "ms": 1.0 if tflops else None,
        "error": None,
        "skipped": None if tflops else "backward not implemented",
    }


def _memory(method: str, pass_: str, hd: int, s: int, mib: float | None) -> dict:
    return {
        "method": method,
        "pass": pass_,
        "dtype": "bf16",
        "batch": 16384 // s,
        "seqlen": s,
        "heads": 2048 // hd,
        "head_dim": hd,
        "causal": False,
        "status": "ok" if mib else "error",
        "error": None if mib else "out of memory",
        "peak_bytes": int(mib * 2**20) if mib else None,
        "min_bytes": 160 * 2**20,
    }


@pytest.fixture
def saved_report(tmp_path: Path) -> Path:
    """A small report JSON, as a GPU run would have written it."""
    cells, memory = [], []
    speed = {"ioattn-sm80": 330.0, "sdpa-flash": 310.0, "sdpa-cudnn": 600.0, "fa3": 700.0}
    for hd in (64, 128):
        for causal in (False, True):
            for s in (512, 2048, 16384):
                for method, tf in speed.items():
                    cells.append(_cell(method, "fwd", hd, causal, s, tf * (0.7 if causal else 1)))
                    if method != "fa3":
                        ours = method.startswith("ioattn")
                        cells.append(_cell(method, "bwd", hd, causal, s, None if ours else tf / 2))
        for s in (512, 2048, 16384):
            memory.append(_memory("naive", "fwdbwd", hd, s, None if s > 2048 else s / 2.0))
            memory.append(_memory("sdpa-flash", "fwdbwd", hd, s, 200.0))
            memory.append(_memory("ioattn-sm80", "fwd", hd, s, 130.0))
    data = {
        "schema": "ioattn-bench/2",
        "matmul_tflops": 760.0,
        "environment": {"gpu": {"name": "NVIDIA H100 80GB HBM3", "sm_count": 132}},
        "config": {"reps": 30, "runs": 3},
        "cells": cells,
        "memory": memory,
        "overhead": [],
        "notes": [],
    }
    path = tmp_path / "run" / "h100.json"
    path.parent.mkdir()
    path.write_text(json.dumps(data))
    return path


def _is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 5000


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("NVIDIA H100 80GB HBM3", "h100"),
        ("NVIDIA H200", "h200"),
        ("NVIDIA A100-SXM4-80GB", "a100"),
        ("NVIDIA GeForce RTX 4090", "nvidia_geforce_rtx_4090"),
        (None, "gpu"),
    ],
)
def test_gpu_slug(name: str | None, slug: str) -> None:
    assert plot.gpu_slug(name) == slug


@needs_matplotlib
def test_plots_from_saved_json(saved_report: Path, tmp_path: Path) -> None:
    report = Report.load(saved_report)
    written = plot.plot_report(report, tmp_path / "plots", "h100")
    assert set(written) == {"fwd/bf16", "bwd/bf16", "memory/bf16"}
    assert written["fwd/bf16"].name == "h100_fwd_bf16.png"
    assert all(_is_png(p) for p in written.values())


@needs_matplotlib
def test_nothing_to_plot_writes_nothing(tmp_path: Path) -> None:
    assert plot.plot_report(Report(), tmp_path, "x") == {}
    assert list(tmp_path.iterdir()) == []


@needs_matplotlib
def test_plot_only_cli(
    saved_report: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "elsewhere"
    assert cli.main(["--plot-only", str(saved_report), "--out", str(folder)]) == 0
    for name in ("h100_fwd_bf16.png", "h100_bwd_bf16.png", "h100_memory_bf16.png"):
        assert _is_png(folder / name)
    markdown = (folder / "h100.md").read_text()
    assert "![Forward bf16](h100_fwd_bf16.png)" in markdown
    assert "## Backward, bf16 (TFLOPS)" in markdown
    assert Report.load(folder / "h100.json").to_dict() == Report.load(saved_report).to_dict()
    printed = capsys.readouterr()
    assert "## Forward, bf16 (TFLOPS)" in printed.out
    assert "![" not in printed.out  # the terminal gets the tables, not image links
    assert "wrote" in printed.err


def test_plot_only_without_matplotlib(
    saved_report: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    blocked: Any = None
    monkeypatch.setitem(sys.modules, "matplotlib", blocked)  # import raises ImportError
    assert cli.main(["--plot-only", str(saved_report)]) == 0
    err = capsys.readouterr().err
    assert "plots skipped: matplotlib is not available" in err
    assert not (saved_report.parent / "h100_fwd_bf16.png").exists()
    assert (saved_report.parent / "h100.md").exists()


def test_no_plots_flag_and_default_folder(saved_report: Path) -> None:
    assert cli.main(["--plot-only", str(saved_report), "--no-plots", "--prefix", "again"]) == 0
    assert not list(saved_report.parent.glob("*.png"))
    assert (saved_report.parent / "again.md").exists()  # beside the JSON by default
    assert (saved_report.parent / "again.json").exists()
