"""The county calibration experiment end to end, at a tiny size (the full run: CLI)."""

from __future__ import annotations

import json

import pytest
import torch

from lpm_graph.cli import main
from lpm_graph.train.experiment import CountyExperiment, run_county_experiment

TINY = {
    "county": "25017",
    "population": 1_600_000,
    "agents": 2_000,
    "start": "2020-10-01",
    "forecast_date": "2020-11-15",
    "epochs": 2,
    "uncertainty_seeds": 2,
}


@pytest.fixture(scope="module")
def result():
    return run_county_experiment(CountyExperiment(**TINY))


def test_every_model_is_scored_on_every_horizon(result):
    assert set(result.metrics) == {
        "lpm-graph SEIRM + CalibNN",
        "lpm-graph SEIRM, free weekly parameters",
        "SEIRM ODE (well mixed)",
        "lpm-graph SEIRM, gradient-free (nelder-mead)",
        "persistence (last week)",
    }
    for scores in result.metrics.values():
        assert set(scores) == {1, 2, 3, 4}
        assert all(set(s) == {"mae", "rmse", "nd"} for s in scores.values())
    steps = len(result.dates)
    assert steps == (45 + 28)  # 2020-10-01 .. forecast + 4 weeks
    assert result.forecast_start == 45 and result.train_end == 45 - 14
    for name, point in result.predictions.items():
        assert point.shape == (steps,), name
        assert bool(torch.isfinite(point[result.forecast_start :]).all()), name
        assert result.runs[name].shape[-1] == steps, name
    assert result.runs["lpm-graph SEIRM + CalibNN"].shape[0] == 2  # two seeds
    assert result.evaluations["lpm-graph SEIRM, gradient-free (nelder-mead)"] <= 2
    assert "| Model |" in result.table()


def test_the_other_counties_need_their_population():
    with pytest.raises(ValueError, match="population="):
        run_county_experiment(CountyExperiment(county="25017"))


def test_windows_are_checked():
    with pytest.raises(ValueError, match="run past the data"):
        run_county_experiment(CountyExperiment(**{**TINY, "forecast_date": "2020-12-20"}))


def test_cli_writes_the_results(tmp_path, capsys):
    args = [
        "calibrate", "--county", "25017", "--population", "1600000", "--agents", "2000",
        "--start", "2020-10-01", "--forecast-date", "2020-11-15", "--epochs", "1",
        "--seeds", "1", "--output", str(tmp_path),
    ]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "| Model |" in out and "persistence" in out
    saved = json.loads((tmp_path / "results.json").read_text())
    assert set(saved["metrics"]) >= {"persistence (last week)", "SEIRM ODE (well mixed)"}
    assert (tmp_path / "metrics.md").exists()
