"""The labour-market example runs at a small size and writes its plot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_labour_market_example_writes_the_plot(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "labour.png"
    args = ["--agents", "1500", "--weeks", "16", "--replicates", "2", "--output", str(out)]
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples/labour_market.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert out.stat().st_size > 10_000
    assert f"wrote {out}" in done.stdout
