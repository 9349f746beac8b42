"""The county calibration experiment end to end, at a tiny size (the full run: CLI)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

import pytest
import torch

from lpm_graph.cli import build_parser, main
from lpm_graph.datasets.series import COUNTY_POPULATIONS
from lpm_graph.train import experiment, trainer
from lpm_graph.train.calibnn import CalibNN
from lpm_graph.train.experiment import (
    QUICK,
    CountyExperiment,
    ExperimentState,
    _population,
    run_county_experiment,
)

TINY = {
    "county": "25017",
    "agents": 500,
    "start": "2020-10-01",
    "forecast_date": "2020-11-15",
    "epochs": 2,
    "budget": 2,
    "uncertainty_seeds": 2,
}
NAMES = [
    "lpm-graph SEIRM + CalibNN",
    "lpm-graph SEIRM, free weekly parameters",
    "SEIRM ODE (well mixed)",
    "lpm-graph SEIRM, gradient-free (nelder-mead)",
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """As ``lpm-graph calibrate`` runs: thousands of small steps run far faster on one
    thread when the machine is busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def result(one_thread):
    return run_county_experiment(CountyExperiment(**TINY))


def test_every_model_is_scored_on_every_horizon(result):
    assert set(result.metrics) == {*NAMES, "persistence (last week)"}
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


def test_the_population_defaults_to_the_county_census():
    for county in ("25017", "25025"):
        _, scale = _population(CountyExperiment(county=county, agents=100))
        assert scale == COUNTY_POPULATIONS[county] / 100
    _, scale = _population(CountyExperiment(county="25025", population=1e6, agents=100))
    assert scale == 1e4
    assert CountyExperiment().county == "25017"  # informative by default (Franklin: ~1/day)
    quick = CountyExperiment.quick(seed=3)
    assert (quick.agents, quick.epochs, quick.seed) == (QUICK["agents"], QUICK["epochs"], 3)
    assert quick.agents < CountyExperiment().agents and quick.epochs < CountyExperiment().epochs


def test_every_model_starts_from_the_same_parameters():
    """CalibNN starts at the free parameters' values, not at the middle of the bounds (R 3.15,
    mortality 15 %: a wave through most of the county, and the fits never recovered)."""
    calib = CalibNN(torch.randn(30, 3), 5, {"reproduction_number": experiment.R_BOUNDS,
                    "mortality": experiment.MORTALITY_BOUNDS}, seed=1,
                    start={"reproduction_number": experiment.R_START,
                           "mortality": experiment.MORTALITY_START})  # fmt: skip
    with torch.no_grad():
        weekly = calib.weekly()
    torch.testing.assert_close(weekly["reproduction_number"], torch.full((5,), experiment.R_START))
    torch.testing.assert_close(weekly["mortality"], torch.full((5,), experiment.MORTALITY_START))


def test_windows_are_checked(tmp_path):
    with pytest.raises(ValueError, match="run past the data"):
        run_county_experiment(
            CountyExperiment(**{**TINY, "forecast_date": "2020-12-20"}), state=tmp_path / "s"
        )
    assert not (tmp_path / "s").exists()  # no state begun: the corrected run is not refused


def _same(a, b) -> None:
    """Two results agree exactly (all but the wall times)."""
    assert a.metrics == b.metrics
    assert a.parameters == b.parameters
    assert a.train_loss == b.train_loss and a.evaluations == b.evaluations
    for name in a.predictions:
        for x, y in ((a.predictions[name], b.predictions[name]), (a.runs[name], b.runs[name])):
            torch.testing.assert_close(x, y, rtol=0, atol=0, equal_nan=True, msg=name)


class _Interrupt:
    """A loss that raises KeyboardInterrupt (Ctrl-C) at its ``at``-th call."""

    def __init__(self, loss, at: int) -> None:
        self.loss, self.at, self.calls = loss, at, 0

    def __call__(self, *args):
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        return self.loss(*args)


@pytest.mark.parametrize(
    "where",
    [
        "second fit, epoch 1",  # two losses per epoch: calls 1-4 are the first fit
        "gradient-free fit",
    ],
)
def test_an_interrupted_run_resumes_to_the_uninterrupted_results(
    result, where, tmp_path, monkeypatch
):
    with monkeypatch.context() as patch:
        if where == "second fit, epoch 1":
            patch.setitem(trainer.LOSSES, "log_mse", _Interrupt(trainer.LOSSES["log_mse"], at=7))
        else:
            patch.setattr(experiment, "log_mse", _Interrupt(experiment.log_mse, 2))
        with pytest.raises(KeyboardInterrupt):
            run_county_experiment(CountyExperiment(**TINY), state=tmp_path)
    saved = sorted(p.name for p in tmp_path.iterdir())
    if where == "second fit, epoch 1":
        assert saved == ["config.json", "fit-1.pt", "fit-2.pt"]
        checkpoint = torch.load(tmp_path / "fit-2.pt", weights_only=True)
        assert len(checkpoint["history"]["loss"]) == 1  # epoch 0 of the second fit
    else:
        assert saved == ["config.json", "fit-1.pt", "fit-2.pt", "fit-3.pt"]
    resumed = run_county_experiment(CountyExperiment(**TINY), state=tmp_path)
    _same(resumed, result)
    assert {p.name for p in tmp_path.iterdir()} >= {"gradient-free.pt", "bands.pt"}
    again = run_county_experiment(CountyExperiment(**TINY), state=tmp_path)  # all recorded
    _same(again, result)


def test_a_state_of_another_configuration_is_refused(tmp_path):
    state = ExperimentState(tmp_path / "state")
    state.open(CountyExperiment(**TINY), NAMES)
    (tmp_path / "state" / "notes.txt").write_text("mine")
    changed = CountyExperiment(**{**TINY, "epochs": 3, "county": "25025"})
    with pytest.raises(ValueError, match=r"another configuration \(county: '25017' -> '25025'; "
                       r"epochs: 2 -> 3\).*restart=True"):  # fmt: skip
        run_county_experiment(changed, state=state)
    assert state.differences(asdict(changed)) == {"county": ("25017", "25025"), "epochs": (2, 3)}
    assert state.differences(asdict(CountyExperiment(**TINY))) == {}
    state.open(changed, NAMES, restart=True)  # afresh: the old state goes, other files stay
    assert state.config == {"config": asdict(changed), "models": NAMES}
    assert (tmp_path / "state" / "notes.txt").read_text() == "mine"
    state.clear()
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == ["notes.txt"]
    # a state of the models before the log-scale loss (format 1) is not continued
    old = {"format": "lpm-graph/county-experiment-state/1", "config": {}, "models": []}
    (tmp_path / "state" / "config.json").write_text(json.dumps(old))
    with pytest.raises(ValueError, match="another version of the experiment.*--restart"):
        run_county_experiment(changed, state=state)


def test_progress_bars_go_to_stderr(tmp_path, capsys):
    run_county_experiment(
        CountyExperiment(**{**TINY, "epochs": 1, "budget": 1, "uncertainty_seeds": 1}),
        state=tmp_path,
        progress=True,
    )
    captured = capsys.readouterr()
    assert captured.out == ""
    bars = captured.err
    for name in NAMES[:3]:
        assert f"{name}: 100%" in bars and "1/1" in bars
    assert "loss=" in bars and "val=" in bars
    assert f"{NAMES[3]}: 100%" in bars and "best=" in bars
    assert "stochastic runs (bands): 100%" in bars and "3/3" in bars  # 3 simulators, 1 seed


CLI_TINY = [
    "--agents", "300", "--start", "2020-10-01", "--forecast-date", "2020-11-15",
    "--epochs", "2", "--budget", "2", "--seeds", "1",
]  # fmt: skip


def test_cli_quick_shows_progress_writes_the_results_and_resumes(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["calibrate", "--quick", *CLI_TINY]) == 0
    captured = capsys.readouterr()
    out, err = captured.out, captured.err
    assert "quick profile (--quick)" in out and "Middlesex" in out
    assert "| Model |" in out and "persistence" in out
    assert "lpm-graph SEIRM + CalibNN: 100%" in err and "2/2" in err and "val=" in err
    folder = tmp_path / "calibration-quick"
    saved = json.loads((folder / "results.json").read_text())
    assert saved["profile"] == "quick" and saved["config"]["agents"] == 300
    assert saved["config"]["uncertainty_seeds"] == 1
    assert set(saved["metrics"]) >= {"persistence (last week)", "SEIRM ODE (well mixed)"}
    assert (folder / "metrics.md").exists() and (folder / "calibrate-state" / "fit-3.pt").exists()

    # the same command again: everything is recorded, the same results come back
    assert main(["calibrate", "--quick", *CLI_TINY, "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "continuing the run recorded in" in captured.out and captured.err == ""
    assert json.loads((folder / "results.json").read_text())["metrics"] == saved["metrics"]

    # other settings: refused, and nothing is touched
    before = {p.name: p.stat().st_mtime_ns for p in folder.rglob("*")}
    assert main(["calibrate", "--quick", *CLI_TINY, "--seed", "1"]) == 2
    err = capsys.readouterr().err
    assert "other settings (seed 0 -> 1)" in err and "--restart" in err
    assert {p.name: p.stat().st_mtime_ns for p in folder.rglob("*")} == before


def test_cli_refuses_to_replace_finished_results_of_other_settings(tmp_path, capsys):
    """Results of a run without a state (an earlier version) are kept too."""
    record = {"command": "calibrate", "config": {**asdict(CountyExperiment()), "seed": 5},
              "metrics": {}, "complete": True}  # fmt: skip
    (tmp_path / "results.json").write_text(json.dumps(record))
    assert main(["calibrate", "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "results of a run" in err and "seed 5 -> 0" in err
    assert json.loads((tmp_path / "results.json").read_text()) == record


def test_the_help_states_the_defaults():
    (sub,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    text = " ".join(sub.choices["calibrate"].format_help().split())
    full = CountyExperiment()
    assert f"(default {full.agents}; --quick {QUICK['agents']};" in text
    assert f"(default {full.epochs}; --quick {QUICK['epochs']})" in text
    assert f"(default {full.uncertainty_seeds}; --quick {QUICK['uncertainty_seeds']})" in text
    assert f"--quick {QUICK['budget']})" in text and f"default {full.county}, Middlesex" in text
    assert f"{full.agents:,} agents, {full.epochs} epochs" in text
