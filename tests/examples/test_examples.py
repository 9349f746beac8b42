"""The example scripts run (at small sizes) and write what they promise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_franklin_seirm_example_writes_the_plot(tmp_path):
    pytest.importorskip("matplotlib")  # the observed series are bundled: no data to skip on
    out = tmp_path / "plot.png"
    args = ["--days", "6", "--replicates", "2", "--output", str(out)]
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples/franklin_seirm.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert out.stat().st_size > 10_000
    assert "wrote" in done.stdout
