"""ioattn.bench.report: JSON written and read back, the first JSON format, Markdown tables."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bench_fakes import FakeDevice, fake_method, fake_run
from ioattn.bench import report as rp
from ioattn.bench.report import Cell, MemoryRow, OverheadRow, Report


def _report() -> Report:
    err = NotImplementedError("no backward")
    methods = [
        fake_method("ioattn-sm80", 300.0, ours=True, raises={"bwd": err, "fwdbwd": err}),
        fake_method("sdpa-flash", 250.0),
        fake_method("sdpa-cudnn", 500.0, raises={"fwdbwd": MemoryError()}),
        fake_method("fa3", missing="ModuleNotFoundError: No module named 'fa3_fwd_interface'"),
    ]
    report = fake_run(methods, FakeDevice(matmul=760.0))
    report.environment = {
        "gpu": {"name": "NVIDIA H100 80GB HBM3", "sm_count": 132},
        "cuda": "13.0",
        "versions": {"torch": "2.11.0"},
        "clocks": [{"clocks.sm [MHz]": "1980 MHz"}],
    }
    return report


def test_json_round_trip(tmp_path: Path) -> None:
    report = _report()
    path = tmp_path / "r.json"
    report.save(path)
    again = Report.load(path)
    assert again.to_dict() == report.to_dict()
    assert [type(r) for r in again.rows()] == [type(r) for r in report.rows()]
    assert again.gpu_name == "NVIDIA H100 80GB HBM3"


def test_json_keys_for_readers(tmp_path: Path) -> None:
    data = _report().to_dict()
    assert data["schema"] == rp.SCHEMA
    assert data["device"] == "NVIDIA H100 80GB HBM3"
    assert data["torch"] == "2.11.0"
    assert data["matmul_tflops"] == 760.0
    cell = data["cells"][0]
    # ci/tune_sm80.py reads these keys (plus pass and dtype to pick its cells)
    for key in ("method", "causal", "seqlen", "tflops", "error", "pass", "dtype", "head_dim"):
        assert key in cell
    assert "pass_" not in cell
    json.dumps(data)  # plain JSON


def test_first_format_still_loads() -> None:
    old = {
        "device": "NVIDIA H100 80GB HBM3",
        "torch": "2.11.0",
        "cuda": "13.0",
        "matmul_tflops": 790.0,
        "cells": [
            {"method": "ioattn-sm80", "head_dim": 64, "causal": False, "seqlen": 512, "batch": 32,
             "heads": 32, "ms": 0.3, "tflops": 280.0, "error": None},
            {"method": "sdpa-flash", "head_dim": 64, "causal": False, "seqlen": 512, "batch": 32,
             "heads": 32, "ms": 0.32, "tflops": 266.0, "error": None},
            {"method": "ioattn-sm80", "head_dim": 64, "causal": True, "seqlen": 512, "batch": 32,
             "heads": 32, "ms": None, "tflops": None, "error": "wrong result"},
        ],
    }  # fmt: skip
    report = Report.from_dict(old)
    report.finalize()
    assert report.gpu_name == "NVIDIA H100 80GB HBM3"
    first, _, broken = report.cells
    assert (first.pass_, first.dtype, first.ours, first.status) == ("fwd", "bf16", True, rp.OK)
    assert first.vs_best_peer == pytest.approx(280 / 266)
    assert broken.status == rp.FAILED
    assert "| 64 | no | 512 | 280 | 266 | 1.05 |" in re.sub(" +", " ", rp.to_markdown(report))


@pytest.mark.parametrize("cls", [Cell, MemoryRow, OverheadRow])
def test_row_round_trip_ignores_unknown_keys(cls: type[rp.Row]) -> None:
    row = cls(method="m", pass_="bwd", dtype="fp16", batch=1, seqlen=2, heads=3, head_dim=64,
              causal=True)  # fmt: skip
    row.skip("because")
    data = row.to_dict()
    assert data["pass"] == "bwd"
    data["from_the_future"] = 1
    assert cls.from_dict(data) == row


def test_status_helpers() -> None:
    ours = Cell("ioattn-sm80", "fwd", "bf16", 1, 1024, 16, 128, False, ours=True)
    peer = Cell("sdpa-flash", "fwd", "bf16", 1, 1024, 16, 128, False)
    ours.fail("bad")
    peer.fail("bad")
    assert (ours.status, peer.status) == (rp.FAILED, rp.ERROR)
    peer.done(2.0, 4e9)
    assert peer.tflops == pytest.approx(2.0) and peer.status == rp.OK


def test_markdown_throughput_tables() -> None:
    text = rp.to_markdown(_report())
    assert text.startswith("# ioattn benchmark: NVIDIA H100 80GB HBM3")
    assert "132 SMs" in text and "760 TFLOPS" in text
    for title in ("## Forward, bf16", "## Backward, bf16", "## Forward + backward, bf16"):
        assert title in text
    fwd = text.split("## Forward, bf16")[1].split("##")[0]
    table = [line for line in fwd.splitlines() if line.startswith("|")]
    head = table[0]
    assert [h.strip() for h in head.strip("|").split("|")] == [
        "hdim",
        "causal",
        "seqlen",
        "ioattn-sm80",
        "sdpa-flash",
        "sdpa-cudnn",
        "fa3",
        "sm80 / best peer",
        "sm80 / matmul",
        "best peer",
    ]
    first = [v.strip() for v in table[2].strip("|").split("|")]
    assert first == ["128", "no", "1k", "300", "250", "500", "–", "0.60", "0.39", "sdpa-cudnn"]
    bwd = text.split("## Backward, bf16")[1].split("##")[0]
    assert "| 128 | no | 1k | – | 250 | 500 |" in re.sub(" +", " ", bwd)  # ioattn: skipped
    both = text.split("## Forward + backward, bf16")[1].split("##")[0]
    assert "OOM" in both  # cuDNN ran out of memory there


def test_markdown_memory_overhead_and_notes() -> None:
    text = rp.to_markdown(_report(), images={"fwd/bf16": "h100_fwd_bf16.png"})
    assert "![Forward bf16](h100_fwd_bf16.png)" in text
    assert "## Memory: forward, bf16 (peak MiB)" in text
    assert "## Memory: forward + backward, bf16 (peak MiB)" in text
    assert "64 (" in text  # 64 MiB peak and its ratio to the minimum
    assert "## Host overhead (b1 s128 h2 d64, bf16)" in text
    overhead = text.split("## Host overhead")[1].split("##")[0]
    assert "10.0" in overhead and "20.0" in overhead
    notes = text.split("## Notes")[1]
    assert "- fa3: skipped (" in notes and "No module named 'fa3_fwd_interface'" in notes
    assert "- ioattn-sm80: skipped (" in notes and rp.BACKWARD_NOT_IMPLEMENTED in notes
    assert "- sdpa-cudnn: error: out of memory [fwdbwd bf16 b16 s1024 h16 d128" in notes


def test_markdown_lists_ioattn_failures() -> None:
    report = fake_run([fake_method("ioattn-sm80", ours=True, wrong=True), fake_method("p")])
    text = rp.to_markdown(report)
    assert "FAIL" in text
    assert "- ioattn-sm80: FAILED: wrong result" in text
    assert "(6 more)" in text  # 12 cells, 6 listed


def test_table_columns_are_aligned() -> None:
    lines = rp._table(["a", "bbb"], [["1", "2"], ["333", "4"]])
    assert len({len(line) for line in lines}) == 1
    assert lines[1] == "|----:|----:|"


def test_empty_report_renders() -> None:
    text = rp.to_markdown(Report())
    assert "unknown GPU" in text and "n/a" in text


def test_partial_report_round_trip(tmp_path: Path) -> None:
    report = _report()
    for c in report.cells[5:]:
        c.status, c.ms, c.tflops = rp.PENDING, None, None
    report.complete = False
    report.save(tmp_path / "partial.json")
    again = Report.load(tmp_path / "partial.json")
    assert not again.complete
    assert [c.status for c in again.cells] == [c.status for c in report.cells]
    assert "Partial: the run stopped after" in rp.to_markdown(again)
