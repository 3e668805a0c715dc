"""``python -m ioattn bench``: option parsing, exit codes, and a whole run on the CPU with the
real runner, report and plots but fake methods and a fake device."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from bench_fakes import FakeDevice, fake_method
from ioattn import _cli, bench
from ioattn.bench import cli, environment, methods, timing


def _settings(*argv: str) -> Any:
    return cli.settings_from(cli.build_parser().parse_args(list(argv)))


def test_defaults_are_the_protocol() -> None:
    s = _settings()
    assert s.head_dims == [64, 128, 256]
    assert s.seqlens == [512, 1024, 2048, 4096, 8192, 16384]
    assert s.causals == [False, True]
    assert s.dtypes == ["bf16"]
    assert s.passes == ["fwd", "bwd", "fwdbwd"]
    assert (s.reps, s.runs, s.warmup) == (30, 3, 10)
    assert (s.batch, s.heads) == (None, None)
    assert s.memory and s.overhead and s.overhead_dims == (1, 128, 2, 64)


def test_quick() -> None:
    s = _settings("--quick")
    assert (s.head_dims, s.seqlens, s.passes) == ([128], [1024, 8192], ["fwd"])
    assert (s.reps, s.runs) == (10, 1)
    # what is given explicitly wins over --quick
    s = _settings("--quick", "--seqlens", "2k", "--runs", "2", "--passes", "bwd")
    assert (s.head_dims, s.seqlens, s.runs, s.passes) == ([128], [2048], 2, ["bwd"])


@pytest.mark.parametrize(
    ("argv", "attr", "value"),
    [
        (["--head-dims", "64,256"], "head_dims", [64, 256]),
        (["--seqlens", "1k,16k"], "seqlens", [1024, 16384]),
        (["--causal", "yes"], "causals", [True]),
        (["--causal", "no"], "causals", [False]),
        (["--dtype", "bf16,fp16,fp8"], "dtypes", ["bf16", "fp16", "fp8"]),
        (["--passes", "fwd,fwdbwd"], "passes", ["fwd", "fwdbwd"]),
        (["--batch", "4", "--heads", "8"], "batch", 4),
        (["--runs", "5"], "runs", 5),
        (["--reps", "100"], "reps", 100),
        (["--no-memory"], "memory", False),
        (["--no-overhead"], "overhead", False),
        (["--overhead-shape", "2,256,4,128"], "overhead_dims", (2, 256, 4, 128)),
    ],
)
def test_options(argv: list[str], attr: str, value: Any) -> None:
    assert getattr(_settings(*argv), attr) == value


@pytest.mark.parametrize(
    "argv",
    [
        ["--dtype", "fp32"],
        ["--passes", "forward"],
        ["--causal", "sometimes"],
        ["--seqlens", "1q"],
        ["--runs", "0"],
        ["--batch", "0"],
        ["--overhead-shape", "1,2,3"],
    ],
)
def test_bad_options_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


def test_without_a_gpu_it_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli.main(["--quick"]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err


def test_ioattn_bench_forwards_its_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []
    monkeypatch.setattr(bench, "main", lambda argv: seen.append(argv) or 0)
    assert _cli.main(["bench", "--quick", "--methods", "x"]) == 0
    assert seen == [["--quick", "--methods", "x"]]


def test_list_methods(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--list"]) == 0
    out = capsys.readouterr().out
    for name in ("sdpa-flash", "sdpa-cudnn", "sdpa-efficient", "flex", "fa3", "fa3-jax", "fa2"):
        assert f"\n{name} " in "\n" + out
    assert "ioattn-" in out


def test_help_through_python_m() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ioattn", "bench", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    for option in ("--head-dims", "--seqlens", "--methods", "--plot-only", "--runs", "--out"):
        assert option in proc.stdout


# ---------------------------------------------------------------------------------------------
# a whole run with fakes


@pytest.fixture
def fake_gpu(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The CLI's run with fake methods and device; returns the methods it will use."""
    err = NotImplementedError("backward not yet")
    fakes = [
        fake_method("ioattn-sm80", 330.0, ours=True, raises={"bwd": err, "fwdbwd": err}),
        fake_method("sdpa-flash", 310.0),
        fake_method("fa3", 700.0, passes=("fwd",), dtypes=("bf16", "fp8")),
        fake_method("fa2", missing="ModuleNotFoundError: No module named 'flash_attn'"),
    ]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(timing, "CudaDevice", lambda **kw: FakeDevice(matmul=760.0))
    monkeypatch.setattr(methods, "all_methods", lambda: list(fakes))
    monkeypatch.setattr(methods, "naive_method", lambda: fake_method("naive", 50.0))
    env = {"gpu": {"name": "NVIDIA H100 80GB HBM3", "sm_count": 132}, "cuda": "13.0"}
    monkeypatch.setattr(environment, "collect", lambda argv: {**env, "command": argv})
    return fakes


def test_whole_run_writes_json_markdown_and_plots(
    fake_gpu: list[Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--seqlens", "1k,4k", "--head-dims", "128", "--dtype", "bf16,fp8"]
    argv += ["--out", str(tmp_path), "--json", str(tmp_path / "extra.json")]
    assert cli.main(argv) == 0
    data = json.loads((tmp_path / "h100.json").read_text())
    assert data == json.loads((tmp_path / "extra.json").read_text())
    assert data["environment"]["command"] == argv
    assert data["matmul_tflops"] == 760.0
    cells = data["cells"]
    assert len(cells) == 2 * 2 * 2 * 3 * 4  # seqlens x masks x dtypes x passes x methods
    by = {(c["method"], c["pass"], c["dtype"], c["seqlen"], c["causal"]): c for c in cells}
    ours = by[("ioattn-sm80", "fwd", "bf16", 1024, False)]
    assert ours["status"] == "ok" and ours["best_peer"] == "fa3"
    assert ours["vs_best_peer"] == pytest.approx(330 / 700)
    assert by[("ioattn-sm80", "bwd", "bf16", 1024, False)]["skipped"] == "backward not implemented"
    assert "no ioattn backend" in by[("fa3", "fwd", "fp8", 1024, False)]["skipped"]
    assert by[("fa2", "fwd", "bf16", 4096, True)]["skipped"].startswith("ModuleNotFoundError")
    assert {r["method"] for r in data["memory"]} == {
        "naive",
        "ioattn-sm80",
        "sdpa-flash",
        "fa3",
        "fa2",
    }
    assert {r["method"] for r in data["overhead"]} == {"ioattn-sm80", "sdpa-flash", "fa3", "fa2"}
    markdown = (tmp_path / "h100.md").read_text()
    assert "## Forward, bf16 (TFLOPS)" in markdown and "## Host overhead" in markdown
    out = capsys.readouterr().out
    assert "## Forward, bf16 (TFLOPS)" in out
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "h100_fwd_bf16.png").exists()
        assert (tmp_path / "h100_memory_bf16.png").exists()
        assert "![Forward bf16](h100_fwd_bf16.png)" in markdown


def test_failed_ioattn_cell_exits_1(
    fake_gpu: list[Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_gpu[0] = fake_method("ioattn-sm80", ours=True, wrong=True)
    argv = ["--quick", "--no-plots", "--no-memory", "--no-overhead", "--no-progress"]
    assert cli.main(argv) == 1
    captured = capsys.readouterr()
    assert "FAILED" in captured.err and "FAIL" in captured.out


def test_methods_filter(fake_gpu: list[Any], tmp_path: Path) -> None:
    argv = ["--quick", "--methods", "ioattn,sdpa", "--json", str(tmp_path / "r.json")]
    assert cli.main([*argv, "--no-plots", "--no-progress"]) == 0
    data = json.loads((tmp_path / "r.json").read_text())
    assert {c["method"] for c in data["cells"]} == {"ioattn-sm80", "sdpa-flash"}


def test_unknown_method_exits_2(fake_gpu: list[Any], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--quick", "--methods", "nope"]) == 2
    assert "matches nothing" in capsys.readouterr().err


def test_environment_collect_is_best_effort() -> None:
    env = environment.collect(["--quick"])
    assert env["command"] == "python -m ioattn bench --quick"
    # The distribution's version where torch is installed as one (a source build of torch can
    # report "2.11.0" there and "2.11.0+cu130" as torch.__version__), else torch.__version__.
    try:
        expected = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        expected = torch.__version__
    assert env["versions"]["torch"] == expected
    assert "date" in env and "ioattn" in env and "clocks" in env
    assert isinstance(env["clocks"], list)  # empty without nvidia-smi
    for lib in env["ioattn"]["libraries"]:
        if lib["loaded"] and lib["path"]:
            assert lib["bytes"] == Path(lib["path"]).stat().st_size
            assert len(lib["sha256"]) == 64
    json.dumps(env)


def test_file_digest_names_the_bytes_that_ran(tmp_path: Path) -> None:
    lib = tmp_path / "libioattn_sm90.so"
    lib.write_bytes(b"abc" * 500_000)  # more than one read chunk
    assert environment.file_digest(lib) == {
        "sha256": hashlib.sha256(b"abc" * 500_000).hexdigest(),
        "bytes": 1_500_000,
    }
    assert environment.file_digest(tmp_path / "missing.so") == {}


def test_nvidia_smi_csv() -> None:
    text = "clocks.current.sm [MHz], clocks.max.sm [MHz], clocks.current.memory [MHz]\n"
    text += "1980 MHz, 1980 MHz, 2619 MHz\n"
    assert environment.parse_csv(text) == [
        {
            "clocks.current.sm [MHz]": "1980 MHz",
            "clocks.max.sm [MHz]": "1980 MHz",
            "clocks.current.memory [MHz]": "2619 MHz",
        }
    ]
    assert environment.parse_csv(None) == []


def test_interrupted_run_writes_a_partial_report(
    fake_gpu: list[Any],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    class Stopping(FakeDevice):
        def time(self, fn: Any, inputs: Any, pass_: str) -> float:
            if len(self.timed) == 3:
                raise KeyboardInterrupt  # what SIGTERM (a time limit) turns into
            return super().time(fn, inputs, pass_)

    monkeypatch.setattr(timing, "CudaDevice", lambda **kw: Stopping())
    argv = ["--quick", "--out", str(tmp_path), "--no-plots", "--no-progress"]
    assert cli.main(argv) == 130
    data = json.loads((tmp_path / "h100.json").read_text())
    assert data["complete"] is False
    statuses = [c["status"] for c in data["cells"]]
    assert statuses.count("ok") == 3 and "pending" in statuses
    assert "Partial: the run stopped after" in (tmp_path / "h100.md").read_text()
    assert "interrupted" in capsys.readouterr().err


def test_checkpoints_are_throttled(tmp_path: Path) -> None:
    from ioattn.bench.report import Report

    report = Report(environment={"gpu": {"name": "NVIDIA H200"}})
    saver = cli.Checkpoints(str(tmp_path), None, str(tmp_path / "x.json"), every=3600.0)
    saver(report)
    assert not (tmp_path / "h200.json").exists()  # too soon
    saver.every = 0.0
    saver(report)
    assert json.loads((tmp_path / "h200.json").read_text())["schema"] == "ioattn-bench/2"
    assert (tmp_path / "x.json").exists()
