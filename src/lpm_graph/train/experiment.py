"""Calibrate on a Massachusetts county's 2020 deaths and forecast 1-4 weeks ahead.

The experiment behind ``lpm-graph calibrate`` and ``examples/calibrate_county.py``: the same
data, windows and loss for every model, and the metrics of each on the held-out weeks. A run
given an :class:`ExperimentState` folder records its progress there as it goes (each fit's
Trainer checkpoint, then each finished phase) and continues from it when run again.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import logging
import math
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .._checks import check_int, check_number
from ..datasets import CountySeries, MassachusettsCounty, SyntheticPopulation
from ..datasets.series import COUNTY_NAMES, COUNTY_POPULATIONS
from ..graph import PopulationGraph
from ..graph.storage import atomic_save, atomic_write, load_checked, remove_stale_temporaries
from ..protocols import SEIRM
from .baselines import GRADIENT_FREE_METHODS, SEIRMODE, calibrate_gradient_free
from .calibnn import CalibNN
from .losses import log_mse
from .metrics import forecast_metrics, metrics_table
from .model import ParameterSet, SimulatorModel
from .parameters import Bounded, Weekly
from .trainer import Trainer

__all__ = ["CountyExperiment", "ExperimentResult", "ExperimentState", "run_county_experiment"]

log = logging.getLogger(__name__)

SIGNALS = ("doctor_visits", "wili", "wcli")
R_BOUNDS = (0.3, 6.0)
MORTALITY_BOUNDS = (0.001, 0.3)
SEED_BOUNDS = (1e-6, 0.02)
R_START, MORTALITY_START, SEED_START = 1.0, 0.02, 1e-4
DEATH_LAG = 8  # days from infection to death in SEIRM (and on average in the ODE)

# The full default run and the quick profile, sized on two CPU cores (see the CLI's help).
AGENTS, EPOCHS, SEEDS = 10_000, 80, 5
QUICK: dict[str, Any] = {"agents": 1_000, "epochs": 10, "budget": 10, "uncertainty_seeds": 2}
"""The settings of :meth:`CountyExperiment.quick`."""


@dataclass
class CountyExperiment:
    """The settings of one county experiment (defaults: Middlesex County, FIPS 25017).

    Windows: the model simulates from ``start``; it is fitted on the days before
    ``forecast_date - validation_weeks`` weeks, stopped early on the ``validation_weeks``
    weeks up to ``forecast_date``, and scored on the ``horizons`` weeks from
    ``forecast_date`` on (weekly totals of the reported daily deaths). The target of the fit
    is the trailing 7-day mean of daily deaths, and every model (the gradient-free one too)
    minimises :func:`~lpm_graph.train.losses.log_mse` to it: in linear scale "predict zero"
    costs less than a first wave that overshoots, and the agent-based fits settled there.
    Weekly reproduction numbers are fitted for the weeks whose infections die within the
    training window (:data:`DEATH_LAG` days before its end) and held at the last one
    afterwards (a forecast is a continuation). ``R`` is the reproduction number over all
    contact settings, as in the ODE (each of the graph's relations weighs ``1 / relations``
    in SEIRM). Every model starts from ``R = 1`` (no growth), mortality 2 % and a
    ``1e-4`` share initially infected (:data:`R_START`, ...): CalibNN too, whose outputs
    would otherwise start at the middle of their bounds.

    The defaults are the full run of ``lpm-graph calibrate`` (5-10 minutes on two busy CPU
    cores, one thread); :meth:`quick` is its small profile (about a minute).

    Args:
        county: FIPS code. 25011 (Franklin) uses its real population and network
            (MassachusettsCounty, 70,916 agents); the others a SyntheticPopulation of
            ``agents`` agents (outputs scaled by population / agents). The default, Middlesex
            (1.6 million people, 10-50 deaths a day in 2020), has an informative signal;
            Franklin reports about one death a day.
        population: the county's population, for counties other than 25011 (``None``: its
            2019 population, :data:`~lpm_graph.datasets.series.COUNTY_POPULATIONS`).
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

    county: str = "25017"
    population: float | None = None
    agents: int = AGENTS
    start: str = "2020-03-01"
    forecast_date: str = "2020-12-04"
    validation_weeks: int = 2
    horizons: int = 4
    epochs: int = EPOCHS
    budget: int | None = None
    method: str = "nelder-mead"
    lr: float = 0.05
    patience: int | None = 40
    uncertainty_seeds: int = SEEDS
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

    @classmethod
    def quick(cls, **settings: Any) -> CountyExperiment:
        """The small profile (:data:`QUICK`: fewer agents, epochs, runs and seeds), with
        ``settings`` on top: a look at the whole experiment in about a minute."""
        return cls(**{**QUICK, **settings})


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


class ExperimentState:
    """The progress of a county experiment, kept in ``folder`` so that a run can continue.

    ``config.json`` names the configuration (and models) the state belongs to; ``fit-<k>.pt``
    is the :class:`~lpm_graph.train.Trainer` checkpoint of the k-th trained model (written
    every epoch); ``gradient-free.pt`` the finished gradient-free fit; ``bands.pt`` the
    stochastic runs of each model done so far. Every file is written all-or-nothing, so a run
    killed at any moment leaves a state that the next run with the same configuration
    continues, to the same results as an uninterrupted run. Files of the folder that are not
    the state's are never touched.

    Args:
        folder: the folder (created on the first write).
    """

    FORMAT = "lpm-graph/county-experiment-state/2"
    """Bump it when a change to the experiment's models makes an older state wrong to
    continue (the names of the models are checked already)."""
    FILES = ("config.json", "gradient-free.pt", "bands.pt")

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise ValueError(f"state folder {str(self.folder)!r} is a file; give a folder.")

    @property
    def config(self) -> dict[str, Any] | None:
        """The configuration the state belongs to (``{"config": ..., "models": ...}``), or
        ``None`` when the folder holds no state."""
        path = self.folder / "config.json"
        if not path.exists():
            return None
        try:
            saved = json.loads(path.read_text())
        except ValueError:
            saved = None
        found = saved.get("format") if isinstance(saved, dict) else None
        if found != self.FORMAT:
            what = (
                f"the state of another version of the experiment ({found})"
                if isinstance(found, str) and found.startswith("lpm-graph/county-experiment")
                else "not the configuration of a county-experiment state"
            )
            raise ValueError(
                f"{path} is {what}; start afresh (restart=True; `lpm-graph calibrate "
                "--restart`), which deletes the state, or move the folder away."
            )
        return {"config": saved["config"], "models": saved["models"]}

    def differences(self, config: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
        """``{setting: (saved, given)}`` for every setting where ``config`` (a
        :class:`CountyExperiment` as a dict, or ``{"config": ..., "models": ...}``) differs
        from the state's (empty without a state, or when they agree)."""
        saved = self.config
        if saved is None:
            return {}
        given = dict(config) if "config" in config else {"config": dict(config)}
        old, new = _plain(saved["config"]), _plain(given["config"])
        out = {
            k: (old.get(k), new.get(k)) for k in sorted({*old, *new}) if old.get(k) != new.get(k)
        }
        if "models" in given and given["models"] != saved["models"]:
            out["models"] = (saved["models"], given["models"])
        return out

    def open(self, cfg: CountyExperiment, models: list[str], *, restart: bool = False) -> None:
        """Continue the state of ``cfg`` (or begin one); refuse the state of another
        configuration unless ``restart``, which clears it first."""
        if restart:
            self.clear()
        given = {"config": asdict(cfg), "models": models}
        changed = self.differences(given)
        if changed:
            listed = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
            raise ValueError(
                f"the state in {str(self.folder)!r} belongs to a run with another "
                f"configuration ({listed}); run with the same configuration to continue it, "
                "or start afresh (restart=True; `lpm-graph calibrate --restart`), which "
                "deletes that state."
            )
        if self.config is None:
            atomic_write(
                self.folder / "config.json",
                (json.dumps({"format": self.FORMAT, **given}, indent=2) + "\n").encode(),
            )

    def clear(self) -> None:
        """Delete the state's files (and the folder, if that leaves it empty)."""
        if not self.folder.is_dir():
            return
        for entry in self.folder.iterdir():
            if entry.name in self.FILES or (
                entry.name.startswith("fit-") and entry.suffix == ".pt"
            ):
                entry.unlink()
        for name in (*self.FILES, "fit-"):
            remove_stale_temporaries(self.folder, f".{name}", ".incomplete")
        if not any(self.folder.iterdir()):
            self.folder.rmdir()

    def path(self, name: str) -> Path:
        """The path of the state file ``name``."""
        return self.folder / name

    def load(self, name: str) -> dict[str, Any] | None:
        """The record ``name`` (``None`` if not written yet)."""
        path = self.folder / name
        if not path.exists():
            return None
        return load_checked(
            path,
            self.FORMAT,
            what="a record of a county-experiment state",
            fix="delete the state (restart=True) to start afresh",
        )

    def save(self, name: str, record: dict[str, Any]) -> None:
        """Write the record ``name`` all-or-nothing."""
        atomic_save({**record, "format": self.FORMAT}, self.folder / name)


def run_county_experiment(
    config: CountyExperiment | None = None,
    *,
    state: ExperimentState | str | Path | None = None,
    restart: bool = False,
    progress: bool = False,
    **overrides: Any,
) -> ExperimentResult:
    """Run every model of the experiment and score its forecasts (see :class:`CountyExperiment`).

    Args:
        config: the settings (default ``CountyExperiment()``); ``overrides`` replace some.
        state: a folder (or :class:`ExperimentState`) to record the run's progress in and to
            continue from: a run interrupted at any point and run again with the same
            configuration ends with the results of an uninterrupted run. A state of another
            configuration is refused (:class:`ValueError`) before any work.
        restart: delete the state first and start afresh.
        progress: show progress bars on stderr: one per trained model (epochs, training and
            validation loss), one for the gradient-free fit (runs of its budget, best loss)
            and one for the stochastic runs of the bands.
    """
    cfg = replace(config or CountyExperiment(), **overrides)
    if state is not None and not isinstance(state, ExperimentState):
        state = ExperimentState(state)
    free_name = f"lpm-graph SEIRM, gradient-free ({cfg.method})"
    trained = ["lpm-graph SEIRM + CalibNN", "lpm-graph SEIRM, free weekly parameters",
               "SEIRM ODE (well mixed)"]  # fmt: skip
    data = _county_data(cfg)  # (checks the windows before a state is begun)
    if state is not None:
        state.open(cfg, [*trained, free_name], restart=restart)
    graph, scale = _population(cfg)
    steps, train, val, forecast = data["steps"], data["train"], data["val"], data["forecast"]
    # one R per week whose infections die within the training window (SEIRM: 3 days in E, 5
    # in I); later weeks, unseen in the fitted deaths, hold the last fitted value
    weeks = math.ceil((train.stop - DEATH_LAG) / 7)
    target = {"deaths": data["target"]}
    features = data["features"][: train.stop]
    results: dict[str, tuple[nn.Module, float, int, float]] = {}

    # R is the reproduction number over all contact settings (the ODE's): SEIRM's counts each
    # relation's contacts once (kernel mass 1 per relation), so with weight 1 on each of the
    # four relations R = 1 grows like R = 4 (R_BOUNDS' low end could not make deaths fall)
    shares = {rel[1]: 1 / len(graph.relations) for rel in graph.relations}

    def simulator(params: nn.Module) -> SimulatorModel:
        return SimulatorModel(
            SEIRM(learnable=False, edge_type_weights=shares),
            graph,
            steps,
            params,
            initial_infected=Bounded(SEED_START, *SEED_BOUNDS),
            scale=scale,
        )

    def free_parameters() -> ParameterSet:
        return ParameterSet(
            {
                "reproduction_number": Weekly(R_START, weeks, *R_BOUNDS, steps=steps),
                "mortality": Bounded(MORTALITY_START, *MORTALITY_BOUNDS),
            }
        )

    calib = CalibNN(
        features,
        weeks,
        {"reproduction_number": R_BOUNDS, "mortality": MORTALITY_BOUNDS},
        steps=steps,
        start={"reproduction_number": R_START, "mortality": MORTALITY_START},
        seed=cfg.seed,
    )
    models: dict[str, nn.Module] = {
        "lpm-graph SEIRM + CalibNN": simulator(calib),
        "lpm-graph SEIRM, free weekly parameters": simulator(free_parameters()),
        "SEIRM ODE (well mixed)": SEIRMODE(
            graph.num_nodes() * scale,
            steps,
            free_parameters(),
            initial_infected=Bounded(SEED_START, *SEED_BOUNDS),
        ),
    }
    assert list(models) == trained, "keep the names of the state's models in step"
    for k, (name, model) in enumerate(models.items(), 1):
        checkpoint = None if state is None else state.path(f"fit-{k}.pt")
        trainer = Trainer(model, loss="log_mse", lr=cfg.lr, patience=cfg.patience,
                          checkpoint=checkpoint, name=name)  # fmt: skip
        history = trainer.fit(target, train, val, epochs=cfg.epochs, resume=state is not None,
                              progress=progress)  # fmt: skip
        best = min(history.loss, default=math.nan)
        results[name] = (model, history.wall_time, history.evaluations, best)
        log.info("%s: %d epochs in %.1f s", name, history.epochs, history.wall_time)

    free = simulator(free_parameters())
    record = None if state is None else state.load("gradient-free.pt")
    if record is None:
        budget = cfg.budget or cfg.epochs
        best = [math.inf]
        with _bar(progress, budget, free_name) as bar:

            def loss(
                pred: Mapping[str, Tensor], observed: Mapping[str, Tensor], days: slice
            ) -> Tensor:  # the trained models' loss, counted on the bar
                value = log_mse(pred, observed, days)
                if bar is not None:
                    best[0] = min(best[0], float(value))
                    bar.set_postfix(best=f"{best[0]:.4g}", refresh=False)
                    bar.update(1)
                return value

            outcome = calibrate_gradient_free(
                free, target, train, method=cfg.method, budget=budget, loss=loss
            )
        record = {"model": free.state_dict(), "wall_time": outcome.wall_time,
                  "evaluations": outcome.evaluations, "loss": outcome.loss}  # fmt: skip
        if state is not None:
            state.save("gradient-free.pt", record)
    else:
        free.load_state_dict(record["model"])
        with _bar(progress, record["evaluations"], free_name, record["evaluations"]) as bar:
            if bar is not None:  # finished by an earlier run: its line, complete
                bar.set_postfix(best=f"{record['loss']:.4g}")
    results[free_name] = (free, record["wall_time"], record["evaluations"], record["loss"])

    predictions: dict[str, Tensor] = {}
    metrics: dict[str, dict[int, dict[str, float]]] = {}
    horizons = tuple(range(1, cfg.horizons + 1))
    for name, (model, _, _, _) in results.items():
        with torch.no_grad():
            predictions[name] = model()["deaths"]
        metrics[name] = forecast_metrics(predictions[name], data["reported"], forecast, horizons)
    runs = _bands(results, predictions, cfg, state, progress)
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
    population = COUNTY_POPULATIONS[cfg.county] if cfg.population is None else cfg.population
    graph = SyntheticPopulation(cfg.agents, seed=cfg.seed)[0]
    return graph, float(population) / cfg.agents


def _bands(
    results: Mapping[str, tuple[nn.Module, float, int, float]],
    predictions: Mapping[str, Tensor],
    cfg: CountyExperiment,
    state: ExperimentState | None,
    progress: bool,
) -> dict[str, Tensor]:
    """``{model: [S, T]}`` daily deaths of stochastic runs of each fitted simulator (else
    ``[1, T]``, its fitted run), kept in the state after each model."""
    record = state.load("bands.pt") if state is not None else None
    runs: dict[str, Tensor] = {} if record is None else record["runs"]
    seeds = cfg.uncertainty_seeds
    sampled = [n for n, r in results.items() if isinstance(r[0], SimulatorModel) and seeds > 0]
    done = len([n for n in sampled if n in runs])
    with _bar(progress and bool(sampled), len(sampled) * seeds, "stochastic runs (bands)",
              done * seeds) as bar:  # fmt: skip
        for name, (model, _, _, _) in results.items():
            if name in runs:
                continue
            if name not in sampled:
                runs[name] = predictions[name].unsqueeze(0)
                continue
            with torch.no_grad():
                sampler = copy.copy(model)
                sampler.simulator = copy.copy(model.simulator)
                sampler.simulator.mode = "stochastic"
                series = []
                for s in range(seeds):
                    series.append(sampler(seed=cfg.seed + s)["deaths"])
                    if bar is not None:
                        bar.update(1)
                runs[name] = torch.stack(series)
            if state is not None:
                state.save("bands.pt", {"runs": runs})
    return {name: runs[name] for name in results}


@contextmanager
def _bar(show: bool, total: int, desc: str, initial: int = 0) -> Iterator[Any]:
    """A tqdm bar of ``total`` model runs on stderr, ``initial`` of them done by an earlier
    run (``None`` when ``show`` is false)."""
    if not show:
        yield None
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit="run", initial=initial, file=sys.stderr)
    try:
        yield bar
    finally:
        bar.close()


def _plain(config: Mapping[str, Any]) -> dict[str, Any]:
    """A configuration as JSON would give it back (for comparisons with a saved one)."""
    return json.loads(json.dumps(dict(config), default=str))


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
