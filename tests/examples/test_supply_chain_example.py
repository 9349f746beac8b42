"""The supply-chain example runs at a small size and writes its plot."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_supply_chain_example_writes_the_plot(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "supply_chain.png"
    args = ["--firms-per-sector", "3", "--steps", "25", "--shock-start", "2", "--shock-end", "20"]
    args += ["--target-inventory", "2"]  # small buffers: the shock reaches retail in 25 days
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples/supply_chain.py"), *args, "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert out.stat().st_size > 10_000
    assert f"wrote {out}" in done.stdout
    lost = re.search(r"final consumption lost: ([0-9.]+) of", done.stdout)
    assert lost is not None and float(lost.group(1)) > 0  # the shock reaches the consumers
