"""The coupled behaviour-epidemic example runs at a small size and writes its plot."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_behaviour_epidemic_example_writes_the_plot(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "behaviour.png"
    args = ["--agents", "300", "--days", "30", "--points", "3", "--replicates", "2"]
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples/behaviour_epidemic.py"), *args, "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert out.stat().st_size > 10_000
    assert f"wrote {out}" in done.stdout
    # autograd and the finite difference agree, and compliance shrinks the epidemic
    gap = float(re.search(r"largest gap ([0-9.e+-]+)", done.stdout).group(1))
    assert gap < 1e-3, done.stdout
    sizes = re.search(r"from ([0-9.]+) \(no initial compliance\) to ([0-9.]+)", done.stdout)
    assert float(sizes.group(2)) < 0.5 * float(sizes.group(1)), done.stdout
