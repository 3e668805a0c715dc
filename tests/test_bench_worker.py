"""The subprocess protocol of ioattn.bench.fa3_jax_worker, with stand-in worker scripts (and
the real worker with JAX hidden), so nothing here needs JAX or a GPU."""

from __future__ import annotations

import sys
import textwrap
from typing import Any

import pytest

from ioattn.bench import fa3_jax_worker as worker

REQUEST: dict[str, Any] = {
    "reps": 3,
    "jobs": [
        {"id": 0, "kind": "time", "pass": "fwd", "dtype": "bf16", "batch": 1, "seqlen": 128,
         "heads": 1, "head_dim": 128, "causal": False},
        {"id": 1, "kind": "time", "pass": "bwd", "dtype": "bf16", "batch": 1, "seqlen": 128,
         "heads": 1, "head_dim": 128, "causal": True},
        {"id": 2, "kind": "overhead", "pass": "fwd", "dtype": "bf16", "batch": 1, "seqlen": 128,
         "heads": 1, "head_dim": 128, "causal": False},
    ],
}  # fmt: skip


def _script(body: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(body)]


def _run(body: str) -> list[dict[str, Any]]:
    return list(worker.run_in_subprocess(REQUEST, command=_script(body)))


def test_replies_in_order_and_noise_ignored() -> None:
    replies = _run(
        """
        import json, os, sys
        request = json.load(sys.stdin)
        print("some library chatter")
        print(json.dumps({"info": {"env": os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"],
                                   "reps": request["reps"]}}))
        print(json.dumps([1, 2]))
        print(json.dumps({"id": 1, "ms": 2.5}))
        print(json.dumps({"id": 0, "error": "out of memory"}))
        print(json.dumps({"id": 0, "ms": 9.9}))  # a second reply to a job is dropped
        print(json.dumps({"id": 7, "ms": 9.9}))  # so is one to a job never asked for
        print(json.dumps({"id": 2, "us": 41.0}))
        """
    )
    assert replies == [
        {"info": {"env": "false", "reps": 3}},
        {"id": 1, "ms": 2.5},
        {"id": 0, "error": "out of memory"},
        {"id": 2, "us": 41.0},
    ]


def test_a_crash_leaves_errors_with_its_stderr() -> None:
    replies = _run(
        """
        import json, sys
        json.load(sys.stdin)
        print(json.dumps({"id": 0, "ms": 1.0}), flush=True)
        sys.stderr.write("Segmentation fault in libxla\\n")
        sys.exit(3)
        """
    )
    assert replies[0] == {"id": 0, "ms": 1.0}
    assert [r["id"] for r in replies[1:]] == [1, 2]
    for r in replies[1:]:
        assert "worker exited (3)" in r["error"] and "Segmentation fault in libxla" in r["error"]


@pytest.mark.parametrize(("skip", "key"), [(True, "skipped"), (False, "error")])
def test_fatal_applies_to_every_job(skip: bool, key: str) -> None:
    replies = _run(
        f"""
        import json, sys
        json.load(sys.stdin)
        print(json.dumps({{"fatal": "ImportError: no GPU plugin", "skip": {skip}}}))
        """
    )
    assert replies == [{"id": i, key: "ImportError: no GPU plugin"} for i in range(3)]


def test_worker_that_never_reads_its_request() -> None:
    replies = _run("import sys; sys.exit(0)")
    assert [r["id"] for r in replies] == [0, 1, 2]
    assert all("without a result" in r["error"] for r in replies)


def test_real_worker_without_jax_skips_with_the_import_error() -> None:
    hide_jax = f"""
        import runpy, sys
        sys.modules["jax"] = None  # as if JAX were not installed, even where it is
        runpy.run_path({worker.__file__!r}, run_name="__main__")
        """
    replies = _run(hide_jax)
    assert [r["id"] for r in replies] == [0, 1, 2]
    assert all(r["skipped"].startswith(("ImportError", "ModuleNotFoundError")) for r in replies)
    assert all("jax" in r["skipped"] for r in replies)


def test_worker_module_imports_only_the_standard_library() -> None:
    # The parent runs the file as a script, so torch never loads beside JAX's CUDA libraries.
    code = textwrap.dedent(
        f"""
        import runpy, sys
        runpy.run_path({worker.__file__!r})
        bad = sorted(m for m in ("torch", "ioattn", "jax", "numpy") if m in sys.modules)
        print(",".join(bad))
        """
    )
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
