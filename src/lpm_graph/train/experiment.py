"""Calibrate on a Massachusetts county's 2020 deaths and forecast 1-4 weeks ahead.

The experiment behind ``lpm-graph calibrate`` and ``examples/calibrate_county.py``: the same
data, windows and loss for every model, and the metrics of each on the held-out weeks.
"""

from __future__ import annotations

import copy
import datetime as dt
import logging
import math
import time
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn

from .._checks import check_int, check_number
from ..datasets import CountySeries, MassachusettsCounty, SyntheticPopulation
from ..datasets.series import COUNTY_NAMES
from ..graph import PopulationGraph
from ..protocols import SEIRM
from .baselines import GRADIENT_FREE_METHODS, SEIRMODE, calibrate_gradient_free
from .calibnn import CalibNN
from .metrics import forecast_metrics, metrics_table
from .model import ParameterSet, SimulatorModel
from .parameters import Bounded, Weekly
from .trainer import Trainer

__all__ = ["CountyExperiment", "ExperimentResult", "run_county_experiment"]

log = logging.getLogger(__name__)

SIGNALS = ("doctor_visits", "wili", "wcli")
R_BOUNDS = (0.3, 6.0)
MORTALITY_BOUNDS = (0.001, 0.3)
SEED_BOUNDS = (1e-6, 0.02)


@dataclass
class CountyExperiment:
    """The settings of one county experiment (defaults: Franklin County, FIPS 25011).

    Windows: the model simulates from ``start``; it is fitted on the days before
    ``forecast_date - validation_weeks`` weeks, stopped early on the ``validation_weeks``
    weeks up to ``forecast_date``, and scored on the ``horizons`` weeks from
    ``forecast_date`` on (weekly totals of the reported daily deaths). The target of the fit
    is the trailing 7-day mean of daily deaths. Weekly reproduction numbers are fitted for
    the training weeks and held at the last one afterwards (a forecast is a continuation).

    Args:
        county: FIPS code. 25011 uses its real population and network (MassachusettsCounty);
            others need ``population`` and get a SyntheticPopulation of ``agents`` agents
            (outputs scaled by population / agents).
        population: the county's population, for counties other than 25011.
        agents: synthetic agents for other counties.
        start: first simulated day, ISO date (``YYYY-MM-DD``); must be a day of the data.
        forecast_date: first forecast day, ISO date (``YYYY-MM-DD``); must be a day of the
            data, with ``horizons`` weeks of data after it.
        validation_weeks: weeks before the forecast date held out for early stopping.
        horizons: weeks forecast.
        epochs: training epochs of each gradient-trained model (one model run each).
        budget: model runs of the gradient-free baseline (default: ``epochs``).
        method: gradient-free method (``"nelder-mead"``, ``"differential-evolution"``, ...).
        lr: learning rate (Adam).
        patience: early-stopping patience in epochs (the validation window is two noisy
            weeks, so a short patience stops long before the fit has converged).
        uncertainty_seeds: stochastic runs of the fitted simulators for the forecast bands.
            The scored forecast of every model is the run it was fitted as (expected-value
            mode for the simulators): stochastic runs of a small county scatter widely, and
            their median is not what the calibration fitted.
        seed: seed of the networks' initial weights and of the stochastic runs.
    """

    county: str = "25011"
    population: float | None = None
    agents: int = 100_000
    start: str = "2020-03-01"
    forecast_date: str = "2020-12-04"
    validation_weeks: int = 2
    horizons: int = 4
    epochs: int = 150
    budget: int | None = None
    method: str = "nelder-mead"
    lr: float = 0.05
    patience: int | None = 40
    uncertainty_seeds: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        """Every setting checked here, before minutes of training find a bad one."""
        self.county = str(self.county)
        if self.county not in COUNTY_NAMES:
            raise ValueError(
                f"county {self.county!r} is not a Massachusetts county of the bundled series; "
                f"choose one of {sorted(COUNTY_NAMES)}."
            )
        if self.population is not None:
            check_number(self.population, "population", 0, open_low=True, unit=" (inhabitants)")
        for name, low in (("agents", 1), ("validation_weeks", 0), ("horizons", 1),
                          ("epochs", 0), ("uncertainty_seeds", 0), ("seed", 0)):  # fmt: skip
            check_int(getattr(self, name), name, low)
        if self.budget is not None:
            check_int(self.budget, "budget", 1)
        if self.patience is not None:
            check_int(self.patience, "patience", 1)
        check_number(self.lr, "lr", 0, open_low=True)
        if self.method not in GRADIENT_FREE_METHODS:
            raise ValueError(
                f"method={self.method!r} is not known; choose one of {GRADIENT_FREE_METHODS}."
            )
        for name in ("start", "forecast_date"):
            try:
                dt.date.fromisoformat(getattr(self, name))
            except (TypeError, ValueError):
                raise ValueError(
                    f"{name} must be an ISO date YYYY-MM-DD, got {getattr(self, name)!r}."
                ) from None


@dataclass
class ExperimentResult:
    """Metrics per model and horizon, the fitted daily series, and the bookkeeping."""

    metrics: dict[str, dict[int, dict[str, float]]]
    predictions: dict[str, Tensor]  # model -> [T] the scored forecast (the fitted run)
    runs: dict[str, Tensor]  # model -> [S, T] stochastic runs for bands (S = 1: none)
    target: Tensor  # [T] 7-day mean of daily deaths
    reported: Tensor  # [T] reported daily deaths
    dates: list[dt.date]
    train_end: int
    forecast_start: int
    wall_time: dict[str, float]
    evaluations: dict[str, int]
    train_loss: dict[str, float]
    parameters: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def table(self) -> str:
        return metrics_table(self.metrics)


def run_county_experiment(
    config: CountyExperiment | None = None, **overrides: Any
) -> ExperimentResult:
    """Run every model of the experiment and score its forecasts (see :class:`CountyExperiment`)."""
    cfg = replace(config or CountyExperiment(), **overrides)
    data = _county_data(cfg)
    graph, scale = _population(cfg)
    steps, train, val, forecast = data["steps"], data["train"], data["val"], data["forecast"]
    weeks = math.ceil(train.stop / 7)
    target = {"deaths": data["target"]}
    features = data["features"][: train.stop]
    results: dict[str, tuple[nn.Module, float, int, float]] = {}

    def simulator(params: nn.Module) -> SimulatorModel:
        return SimulatorModel(
            SEIRM(learnable=False),
            graph,
            steps,
            params,
            initial_infected=Bounded(1e-4, *SEED_BOUNDS),
            scale=scale,
        )

    def free_parameters() -> ParameterSet:
        return ParameterSet(
            {
                "reproduction_number": Weekly(1.5, weeks, *R_BOUNDS, steps=steps),
                "mortality": Bounded(0.02, *MORTALITY_BOUNDS),
            }
        )

    models: dict[str, nn.Module] = {
        "lpm-graph SEIRM + CalibNN": simulator(
            CalibNN(
                features,
                weeks,
                {"reproduction_number": R_BOUNDS, "mortality": MORTALITY_BOUNDS},
                steps=steps,
                seed=cfg.seed,
            )
        ),
        "lpm-graph SEIRM, free weekly parameters": simulator(free_parameters()),
        "SEIRM ODE (well mixed)": SEIRMODE(
            graph.num_nodes() * scale,
            steps,
            free_parameters(),
            initial_infected=Bounded(1e-4, *SEED_BOUNDS),
        ),
    }
    for name, model in models.items():
        start = time.perf_counter()
        history = Trainer(model, lr=cfg.lr, patience=cfg.patience).fit(
            target, train, val, epochs=cfg.epochs
        )
        results[name] = (model, time.perf_counter() - start, history.evaluations, min(history.loss))
        log.info("%s: %d epochs in %.1f s", name, history.epochs, results[name][1])

    free = simulator(free_parameters())
    budget = cfg.budget or cfg.epochs
    outcome = calibrate_gradient_free(free, target, train, method=cfg.method, budget=budget)
    results[f"lpm-graph SEIRM, gradient-free ({cfg.method})"] = (
        free,
        outcome.wall_time,
        outcome.evaluations,
        outcome.loss,
    )

    predictions: dict[str, Tensor] = {}
    runs: dict[str, Tensor] = {}
    metrics: dict[str, dict[int, dict[str, float]]] = {}
    horizons = tuple(range(1, cfg.horizons + 1))
    for name, (model, _, _, _) in results.items():
        with torch.no_grad():
            predictions[name] = model()["deaths"]
        runs[name] = _runs(model, cfg, predictions[name])
        metrics[name] = forecast_metrics(predictions[name], data["reported"], forecast, horizons)
    persistence = _persistence(data["reported"], forecast, steps)
    predictions["persistence (last week)"] = persistence
    runs["persistence (last week)"] = persistence.unsqueeze(0)
    metrics["persistence (last week)"] = forecast_metrics(
        persistence, data["reported"], forecast, horizons
    )
    return ExperimentResult(
        metrics=metrics,
        predictions=predictions,
        runs=runs,
        target=data["target"],
        reported=data["reported"],
        dates=data["dates"],
        train_end=train.stop,
        forecast_start=forecast,
        wall_time={k: v[1] for k, v in results.items()},
        evaluations={k: v[2] for k, v in results.items()},
        train_loss={k: v[3] for k, v in results.items()},
        parameters={k: _values(v[0]) for k, v in results.items()},
    )


def _county_data(cfg: CountyExperiment) -> dict[str, Any]:
    smoothed = CountySeries(False, counties=[cfg.county], smoothing=7).by_fips(cfg.county)
    raw = CountySeries(False, counties=[cfg.county]).by_fips(cfg.county)
    dates = smoothed.dates
    start = dt.date.fromisoformat(cfg.start)
    forecast_date = dt.date.fromisoformat(cfg.forecast_date)
    if start not in dates or forecast_date not in dates:
        raise ValueError(
            f"start {cfg.start} and forecast_date {cfg.forecast_date} must be days of the "
            f"county series ({dates[0]} .. {dates[-1]})."
        )
    first = dates.index(start)
    forecast = (forecast_date - start).days
    steps = forecast + 7 * cfg.horizons
    if first + steps > len(dates):
        raise ValueError(
            f"{cfg.horizons} weeks after {cfg.forecast_date} run past the data ({dates[-1]})."
        )
    train_end = forecast - 7 * cfg.validation_weeks
    if train_end < 14:
        raise ValueError("the training window is shorter than two weeks; move start earlier.")
    span = slice(first, first + steps)
    columns = [smoothed.column_index(s) for s in SIGNALS]
    return {
        "dates": dates[span],
        "steps": steps,
        "train": slice(0, train_end),
        "val": slice(train_end, forecast) if cfg.validation_weeks else None,
        "forecast": forecast,
        "target": torch.nan_to_num(smoothed["deaths"][span].to(torch.get_default_dtype()), 0.0),
        "reported": raw["deaths"][span].to(torch.get_default_dtype()),
        "features": smoothed.values[span][:, columns].to(torch.get_default_dtype()),
    }


def _population(cfg: CountyExperiment) -> tuple[PopulationGraph, float]:
    if cfg.county == "25011":
        return MassachusettsCounty(False)[0], 1.0
    if cfg.population is None:
        raise ValueError(
            f"county {cfg.county} has no bundled population; pass population= (its number of "
            "inhabitants) to simulate a SyntheticPopulation scaled to it."
        )
    graph = SyntheticPopulation(cfg.agents, seed=cfg.seed)[0]
    return graph, float(cfg.population) / cfg.agents


def _runs(model: nn.Module, cfg: CountyExperiment, fitted: Tensor) -> Tensor:
    """``[S, T]`` daily deaths of stochastic runs of a fitted simulator (else its ``fitted``
    run, which is already computed)."""
    with torch.no_grad():
        if isinstance(model, SimulatorModel) and cfg.uncertainty_seeds > 0:
            runs = copy.copy(model)
            runs.simulator = copy.copy(model.simulator)
            runs.simulator.mode = "stochastic"
            series = [runs(seed=cfg.seed + s)["deaths"] for s in range(cfg.uncertainty_seeds)]
            return torch.stack(series)
        return fitted.unsqueeze(0)


def _persistence(reported: Tensor, forecast: int, steps: int) -> Tensor:
    """Every future day gets the mean daily deaths of the last reported week (NaN before the
    forecast: persistence fits nothing, and the plot draws it on the forecast days only)."""
    last_week = torch.nan_to_num(reported[forecast - 7 : forecast], 0.0).mean()
    out = torch.full_like(reported, float("nan"))
    out[forecast:steps] = last_week
    return out


def _values(model: nn.Module) -> dict[str, list[float]]:
    params = getattr(model, "params", None)
    if params is None:
        return {}
    with torch.no_grad():
        values = params.weekly() if isinstance(params, CalibNN) else params()
        out = {}
        for name, value in values.items():
            if isinstance(params, ParameterSet) and isinstance(params[name], Weekly):
                value = params[name].weekly()
            out[name] = [round(float(v), 4) for v in value.reshape(-1)]
        return out
