"""The PyG example trains a GNN and a protocol layer end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_gnn_and_protocol_train_end_to_end(tmp_path):
    pytest.importorskip("matplotlib")
    out, figures = tmp_path / "pyg.png", tmp_path / "pyg.json"
    args = ["--agents", "600", "--steps", "30", "--epochs", "30", "--output", str(out)]
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples/pyg_intervention.py"), *args, "--json", str(figures)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(figures.read_text())
    losses = result["losses"]
    assert losses[-1] <= losses[0] / 2, losses  # the loss falls by at least half
    assert result["gradients"]["gnn"] > 0 and result["gradients"]["tau"] > 0
    assert out.stat().st_size > 10_000 and "wrote" in done.stdout
