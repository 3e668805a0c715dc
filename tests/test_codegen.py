"""Generated sources that are checked in stay in step with their generators."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_wgmma_wrappers_are_current() -> None:
    script = ROOT / "cmake" / "gen_wgmma.py"
    if not script.is_file():
        pytest.skip("not running from a source checkout")
    result = subprocess.run(
        [sys.executable, str(script), "--check"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
