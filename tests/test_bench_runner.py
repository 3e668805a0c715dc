"""ioattn.bench.runner with fake methods and a fake device: which cells exist, skip reasons,
failures that do not stop the run, ratios, the subprocess worker's replies, progress."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from bench_fakes import FakeDevice, fake_method, fake_run, small_settings
from ioattn.bench import runner
from ioattn.bench.report import (
    BACKWARD_NOT_IMPLEMENTED,
    ERROR,
    FAILED,
    OK,
    OOM,
    SKIPPED,
    Cell,
    Report,
)
from ioattn.bench.shapes import PASSES


def _cells(report: Report, method: str, **where: Any) -> list[Cell]:
    found = [c for c in report.cells if c.method == method]
    for key, value in where.items():
        found = [c for c in found if getattr(c, key) == value]
    return found


def _statuses(report: Report, method: str, **where: Any) -> set[str]:
    return {c.status for c in _cells(report, method, **where)}


def test_every_cell_exists_in_protocol_order() -> None:
    methods = [fake_method("ioattn-sm80", ours=True), fake_method("peer")]
    report = fake_run(methods)
    # 2 seqlens x 2 masks x 1 dtype x 3 passes x 2 methods
    assert len(report.cells) == 24
    first = report.cells[0]
    assert (first.method, first.pass_, first.causal, first.seqlen) == (
        "ioattn-sm80",
        "fwd",
        False,
        1024,
    )
    assert all(c.status == OK and c.tflops == pytest.approx(100.0) for c in report.cells)


@pytest.mark.parametrize("pass_", PASSES)
def test_tflops_and_ratios(pass_: str) -> None:
    methods = [
        fake_method("ioattn-sm80", 300.0, ours=True),
        fake_method("slow", 100.0),
        fake_method("fast", 400.0),
    ]
    report = fake_run(methods, FakeDevice(matmul=800.0), passes=[pass_])
    for c in _cells(report, "ioattn-sm80"):
        assert c.tflops == pytest.approx(300.0)
        assert c.best_peer == "fast"
        assert c.vs_best_peer == pytest.approx(0.75)
        assert c.of_matmul == pytest.approx(300.0 / 800.0)
    for c in _cells(report, "slow"):
        assert c.of_matmul == pytest.approx(0.125)
        assert c.vs_best_peer is None


def test_missing_peer_is_skipped_with_its_import_error() -> None:
    text = "ModuleNotFoundError: No module named 'fa3_fwd_interface'"
    methods = [fake_method("ioattn-sm80", ours=True), fake_method("fa3", missing=text)]
    report = fake_run(methods)
    cells = _cells(report, "fa3")
    assert cells and all(c.status == SKIPPED and c.skipped == text for c in cells)
    assert _statuses(report, "ioattn-sm80") == {OK}


@pytest.mark.parametrize(
    ("kwargs", "pass_", "dtype", "head_dim", "reason"),
    [
        ({"passes": ("fwd",)}, "bwd", "bf16", 128, "has no bwd pass"),
        ({"dtypes": ("bf16",)}, "fwd", "fp16", 128, "has no fp16"),
        ({"head_dims": (128,)}, "fwd", "bf16", 64, "has no head dim 64"),
    ],
)
def test_unsupported_cells_are_skipped(
    kwargs: dict[str, Any], pass_: str, dtype: str, head_dim: int, reason: str
) -> None:
    methods = [fake_method("ioattn-sm80", ours=True), fake_method("peer", **kwargs)]
    report = fake_run(methods, head_dims=[64, 128], dtypes=["bf16", "fp16"])
    cells = _cells(report, "peer", pass_=pass_, dtype=dtype, head_dim=head_dim)
    assert cells and all(c.status == SKIPPED and reason in (c.skipped or "") for c in cells)
    assert all(c.status == OK for c in _cells(report, "ioattn-sm80", dtype=dtype))


def test_fp8_is_compared_only_where_ioattn_has_it() -> None:
    fa3 = fake_method("fa3", passes=("fwd",), dtypes=("bf16", "fp8"))
    without = fake_run(
        [fake_method("ioattn-sm90", ours=True), fa3], dtypes=["bf16", "fp8"], passes=["fwd"]
    )
    fp8 = _cells(without, "fa3", dtype="fp8")
    assert fp8 and all(c.status == SKIPPED and "no ioattn backend" in c.skipped for c in fp8)
    assert _statuses(without, "fa3", dtype="bf16") == {OK}
    assert all(
        "has no fp8" in (c.skipped or "") for c in _cells(without, "ioattn-sm90", dtype="fp8")
    )
    # The mechanism: once an ioattn backend lists fp8, the peer's fp8 cells run.
    ours = fake_method("ioattn-sm90", ours=True, dtypes=("bf16", "fp8"))
    with_fp8 = fake_run([ours, fa3], dtypes=["bf16", "fp8"], passes=["fwd"])
    assert _statuses(with_fp8, "fa3", dtype="fp8") == {OK}
    assert _statuses(with_fp8, "ioattn-sm90", dtype="fp8") == {OK}


def test_backward_not_implemented_is_detected_at_run_time() -> None:
    err = NotImplementedError("ioattn: backward is not implemented yet")
    ours = fake_method("ioattn-sm80", ours=True, raises={"bwd": err, "fwdbwd": err})
    report = fake_run([ours, fake_method("peer")])
    assert _statuses(report, "ioattn-sm80", pass_="fwd") == {OK}
    for pass_ in ("bwd", "fwdbwd"):
        cells = _cells(report, "ioattn-sm80", pass_=pass_)
        assert all(c.status == SKIPPED and c.skipped == BACKWARD_NOT_IMPLEMENTED for c in cells)
        assert _statuses(report, "peer", pass_=pass_) == {OK}
    assert report.failed() == []
    memory = [r for r in report.memory if r.method == "ioattn-sm80"]
    assert {r.pass_: r.status for r in memory} == {"fwd": OK, "fwdbwd": SKIPPED}
    overhead = {r.pass_: r for r in report.overhead if r.method == "ioattn-sm80"}
    assert overhead["fwd"].us == 10.0
    assert overhead["fwdbwd"].skipped == BACKWARD_NOT_IMPLEMENTED


def test_failing_peer_is_recorded_and_the_run_goes_on() -> None:
    device = FakeDevice()
    boom = fake_method("boom", raises={"fwd": RuntimeError("kernel exploded\nsecond line")})
    oom = fake_method("hungry", raises={"bwd": MemoryError()})
    report = fake_run([fake_method("ioattn-sm80", ours=True), boom, oom, fake_method("ok")], device)
    fwd = _cells(report, "boom", pass_="fwd")
    assert all(c.status == ERROR and c.error.startswith("RuntimeError: kernel") for c in fwd)
    assert _statuses(report, "boom", pass_="bwd") == {OK}
    assert all(c.error == OOM for c in _cells(report, "hungry", pass_="bwd"))
    assert _statuses(report, "ok") == {OK}
    assert device.released > 0  # memory freed after each failure
    assert report.failed() == []  # peers never fail the run


def test_wrong_ioattn_result_is_failed_and_not_timed() -> None:
    device = FakeDevice()
    ours = fake_method("ioattn-sm80", ours=True, wrong=True)
    report = fake_run([ours, fake_method("peer")], device)
    cells = _cells(report, "ioattn-sm80")
    assert cells and all(c.status == FAILED and "wrong result" in c.error for c in cells)
    assert all(c.ms is None and c.max_error == 1.5 for c in cells)
    assert len(report.failed()) == len(cells)
    assert len(device.timed) == len(_cells(report, "peer"))  # only the peer was timed


def test_ioattn_exception_fails_its_cell() -> None:
    ours = fake_method("ioattn-sm80", ours=True, raises={"fwd": RuntimeError("launch failed")})
    report = fake_run([ours], passes=["fwd"])
    assert {c.status for c in report.cells} == {FAILED}
    assert len(report.failed()) == len(report.cells)


def test_unsupported_ioattn_shape_is_a_skip_not_a_failure() -> None:
    err = NotImplementedError("no kernel for head_dim 256")
    ours = fake_method("ioattn-sm90", ours=True, raises={"check": err})
    report = fake_run([ours], passes=["fwd"])
    assert all(c.status == SKIPPED and "not supported" in c.skipped for c in report.cells)
    assert report.failed() == []


def test_check_result_is_kept_on_passing_cells() -> None:
    report = fake_run([fake_method("ioattn-sm80", ours=True)], passes=["fwd"])
    assert all(c.max_error == 0.001 and c.tolerance == 0.01 for c in report.cells)


def test_memory_rows_have_the_minimum_and_the_naive_baseline() -> None:
    naive = fake_method("naive")
    settings = small_settings(passes=["fwd"])
    report = runner.run(
        settings, [fake_method("ioattn-sm80", ours=True)], FakeDevice(), memory_baselines=[naive]
    )
    methods = {r.method for r in report.memory}
    assert methods == {"naive", "ioattn-sm80"}
    assert {r.pass_ for r in report.memory} == {"fwd", "fwdbwd"}
    assert {r.causal for r in report.memory} == {False}
    assert all(r.min_bytes and r.peak_bytes == 64 * 2**20 for r in report.memory)


def test_sections_can_be_switched_off() -> None:
    report = fake_run([fake_method("peer")], memory=False, overhead=False)
    assert report.memory == [] and report.overhead == []


def test_fp8_only_run_has_no_memory_or_overhead_section() -> None:
    report = fake_run([fake_method("peer")], dtypes=["fp8"], passes=["fwd"])
    assert report.memory == [] and report.overhead == []


def test_progress_is_called_once_per_row() -> None:
    calls: list[tuple[int, int, str]] = []
    methods = [fake_method("ioattn-sm80", ours=True), fake_method("gone", missing="not here")]
    report = runner.run(
        small_settings(), methods, FakeDevice(), progress=lambda d, t, s: calls.append((d, t, s))
    )
    total = len(report.rows())
    assert [d for d, _, _ in calls] == list(range(1, total + 1))
    assert {t for _, t, _ in calls} == {total}


def test_matmul_failure_is_a_note() -> None:
    class NoMatmul(FakeDevice):
        def matmul_tflops(self) -> float:
            raise RuntimeError("cublas said no")

    report = fake_run([fake_method("peer")], NoMatmul(), passes=["fwd"])
    assert report.matmul_tflops is None
    assert any("cublas said no" in n for n in report.notes)
    assert all(c.of_matmul is None for c in report.cells)


# ---------------------------------------------------------------------------------------------
# methods in a subprocess


def _replying(request: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield {"info": {"versions": {"jax": "0.0"}}}
    for job in request["jobs"]:
        if job["kind"] == "overhead":
            yield {"id": job["id"], "us": 30.0}
        elif job["pass"] == "bwd" and job["seqlen"] == 4096:
            yield {"id": job["id"], "error": "out of memory"}
        else:
            yield {"id": job["id"], "ms": 2.0}


def test_worker_method_gets_all_its_jobs_in_one_request() -> None:
    device = FakeDevice(worker=_replying)
    jax = fake_method("fa3-jax", head_dims=(128,), worker="some.module")
    report = fake_run([fake_method("ioattn-sm80", ours=True), jax], device, head_dims=[64, 128])
    assert len(device.requests) == 1
    jobs = device.requests[0]["jobs"]
    assert {j["head_dim"] for j in jobs} == {128}  # head dim 64 is skipped before asking
    assert {j["kind"] for j in jobs} == {"time"}  # overhead shape has head dim 64
    assert device.requests[0]["reps"] == 30
    cells = _cells(report, "fa3-jax", head_dim=128)
    assert {c.status for c in cells} == {OK, ERROR}
    assert all(c.error == "out of memory" for c in cells if c.status == ERROR)
    assert all(c.ms == 2.0 for c in cells if c.status == OK)
    assert report.environment["workers"]["fa3-jax"]["versions"] == {"jax": "0.0"}
    assert all(r.method != "fa3-jax" for r in report.memory)  # torch cannot see its memory


def test_worker_overhead_jobs() -> None:
    device = FakeDevice(worker=_replying)
    jax = fake_method("fa3-jax", head_dims=(128,), worker="some.module")
    report = fake_run([jax], device, passes=["fwd"], overhead_dims=(1, 128, 2, 128))
    rows = [r for r in report.overhead if r.method == "fa3-jax"]
    assert {r.us for r in rows} == {30.0}


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(lambda request: iter(()), id="silent"),
        pytest.param(lambda request: iter([{"id": 0, "ms": 1.0}]), id="partial"),
    ],
)
def test_worker_that_answers_nothing_leaves_errors(reply: Any) -> None:
    device = FakeDevice(worker=reply)
    jax = fake_method("fa3-jax", worker="some.module")
    report = fake_run([jax], device, passes=["fwd"])
    assert all(c.resolved for c in report.cells)
    assert any(c.error == "worker gave no result" for c in report.cells)


def test_worker_crash_is_recorded() -> None:
    def crash(request: dict[str, Any]) -> Iterator[dict[str, Any]]:
        yield {"id": 0, "ms": 1.0}
        raise OSError("broken pipe")

    report = fake_run(
        [fake_method("fa3-jax", worker="m")], FakeDevice(worker=crash), passes=["fwd"]
    )
    assert report.cells[0].status == OK
    assert all("broken pipe" in (c.error or "") for c in report.cells[1:])


def test_checkpoints_see_the_run_grow() -> None:
    seen: list[tuple[bool, int]] = []

    def checkpoint(report: Report) -> None:
        seen.append((report.complete, sum(c.status == OK for c in report.cells)))

    methods = [fake_method("ioattn-sm80", ours=True), fake_method("peer")]
    r = runner.Runner(small_settings(), methods, FakeDevice(), checkpoint=checkpoint)
    report = r.run()
    assert seen and all(not complete for complete, _ in seen)
    counts = [n for _, n in seen]
    assert counts == sorted(counts) and counts[0] < counts[-1] == len(report.cells)
    assert report.complete
