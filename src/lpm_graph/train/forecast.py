"""Rolling-origin forecasts of the Massachusetts counties' weekly COVID-19 deaths.

The experiment behind ``benchmarks/forecast.py``: at each forecast origin every model sees
the counties' daily series up to the day before the origin, and forecasts the weekly
reported deaths of the next ``horizons`` weeks. Models:

- ``"SEIRM ABM + CalibNN"``: the agent-based SEIRM
  (:class:`~lpm_graph.train.regional.RegionalSEIRM`, expected mode) on one graph of a
  synthetic population per county; its weekly reproduction numbers, mortality and initial
  infections come from one calibration network
  (:class:`~lpm_graph.train.regional.RegionalCalibNN`) reading each county's public-health
  signals, trained end to end through the simulator against the deaths and cases;
- ``"SEIRM ODE + CalibNN"``: the same with the well-mixed SEIRM ODE;
- ``"persistence"``: the last week's deaths, every week;
- ``"exponential smoothing"``: a damped-trend ETS model of each county's weekly log deaths
  (``statsmodels``);
- ``"ensemble"``: the per-quantile mean of the four.

Observation model of the simulators: reported deaths are the simulated deaths delayed by a
reporting delay (Gamma, mean ``death_delay`` days), reported cases a fraction (the
ascertainment, per county and week, from the network) of the simulated onsets delayed by
``case_delay`` days. The loss is the normalised squared error of the 7-day means of both
series per county (:func:`~lpm_graph.train.normalized_mse` per county, cases weighted by
``case_weight``), plus a penalty on week-to-week changes of the weekly parameters.

Forecast intervals: the simulators' and persistence's predictive quantiles are their point
forecast times the quantiles of the counties' observed ``h``-week log changes of weekly
deaths before the origin (the spread of the COVID-19 Forecast Hub's baseline, centred on
each model's forecast); exponential smoothing uses its own state-space intervals.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .._checks import check_int, check_number
from ..datasets import CountySeries, SyntheticPopulation
from ..datasets.series import COUNTY_NAMES, COUNTY_POPULATIONS
from ..protocols.durations import gamma_cdf
from ..simulator import Simulator
from .metrics import mae, nd, rmse
from .regional import RegionalCalibNN, RegionalODE, RegionalSEIRM, disjoint_union

__all__ = ["ForecastConfig", "ForecastResult", "plot_forecasts", "rolling_forecast"]

log = logging.getLogger(__name__)

SIGNALS = ("doctor_visits", "wili", "wcli")
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
MODELS = (
    "SEIRM ABM + CalibNN",
    "SEIRM ODE + CalibNN",
    "persistence",
    "exponential smoothing",
    "ensemble",
)
BOUNDS = {
    "reproduction_number": (0.2, 3.0),
    "ascertainment": (0.01, 0.6),
    "mortality": (0.001, 0.05),
    # the share infected (in E) when the window opens, on a log scale: from a few agents in
    # a county to the ~1-5 % infected at the spring 2020 peak
    "log_initial_infected": (math.log(1e-6), math.log(0.05)),
}
START = {
    "reproduction_number": 1.0,
    "ascertainment": 0.1,
    "mortality": 0.008,
    "log_initial_infected": math.log(1e-3),
}
"""Where the untrained network starts: a flat epidemic, 10 % of infections reported, an
infection fatality ratio of 0.8 % and 0.1 % infected when the window opens."""
DEFAULT_ORIGINS = tuple(
    (dt.date(2020, 5, 1) + dt.timedelta(days=28 * k)).isoformat() for k in range(8)
)


@dataclass
class ForecastConfig:
    """The settings of the rolling-origin experiment (defaults: all 14 counties, 8 origins
    four weeks apart from 2020-05-01 to 2020-11-13, forecasts 1-4 weeks ahead).

    Args:
        counties: FIPS codes of the counties forecast.
        origins: forecast origins (ISO dates); each model sees the data before the origin.
        start: first simulated day.
        horizons: weeks forecast.
        window_weeks: weeks before the origin that the simulators run and fit (the first
            three weeks are burn-in: the seeded infections reach the reported deaths after
            the reporting delay, so the deaths of those weeks are not fitted).
        agents: synthetic agents per county in the agent-based model (outputs scaled to the
            county's population).
        epochs: training epochs at the first origin; ``warm_epochs`` at the later ones, which
            start from the previous origin's fitted network (trained on earlier data only).
        lr: Adam learning rate.
        case_weight: weight of the cases in the loss (deaths weigh 1).
        smoothness: weight of the penalty on week-to-week changes of the weekly parameters.
        recency: weigh each day of the fit by ``exp(-(days before the origin) / recency)``
            (``None``: every day alike); a forecast is judged on the weeks after the origin.
        death_delay: mean days from leaving I to a reported death (Gamma, sd half the mean).
        case_delay: mean days from onset to a reported case.
        models: the models run (a subset of :data:`MODELS`; the ensemble needs at least two).
        seed: seed of the networks' initial weights and of the synthetic populations.
    """

    counties: tuple[str, ...] = tuple(sorted(COUNTY_NAMES))
    origins: tuple[str, ...] = DEFAULT_ORIGINS
    start: str = "2020-03-01"
    horizons: int = 4
    window_weeks: int = 12
    agents: int = 1000
    epochs: int = 200
    warm_epochs: int = 100
    lr: float = 0.03
    case_weight: float = 1.0
    smoothness: float = 1.0
    recency: float | None = 28.0
    death_delay: float = 12.0
    case_delay: float = 4.0
    models: tuple[str, ...] = MODELS
    seed: int = 0

    def __post_init__(self) -> None:
        self.counties = tuple(str(c) for c in self.counties)
        unknown = sorted(set(self.counties) - set(COUNTY_NAMES))
        if unknown or not self.counties:
            raise ValueError(
                f"counties {unknown or '()'} are not Massachusetts counties of the bundled "
                f"series; choose from {sorted(COUNTY_NAMES)}."
            )
        unknown = sorted(set(self.models) - set(MODELS))
        if unknown or not self.models:
            raise ValueError(f"models {unknown or '()'} are unknown; choose from {MODELS}.")
        if "ensemble" in self.models and len(set(self.models) - {"ensemble"}) < 2:
            raise ValueError(
                f"models={self.models}: the ensemble averages the other models, so name at "
                "least two of them besides it."
            )
        for name, low in (("horizons", 1), ("window_weeks", 4), ("agents", 1),
                          ("epochs", 0), ("warm_epochs", 0), ("seed", 0)):  # fmt: skip
            check_int(getattr(self, name), name, low)
        for name in ("lr", "death_delay", "case_delay"):
            check_number(getattr(self, name), name, 0, open_low=True)
        for name in ("case_weight", "smoothness"):
            check_number(getattr(self, name), name, 0)
        dates = []
        for name in ("start", *[f"origins[{k}]" for k in range(len(self.origins))]):
            value = self.start if name == "start" else self.origins[int(name[8:-1])]
            try:
                dates.append(dt.date.fromisoformat(value))
            except (TypeError, ValueError):
                raise ValueError(f"{name} must be an ISO date YYYY-MM-DD, got {value!r}.") from None
        if not self.origins:
            raise ValueError("origins is empty; give at least one forecast origin.")
        if any(b <= a for a, b in zip(dates[1:], dates[2:])):
            raise ValueError(f"origins must be increasing dates, got {list(self.origins)}.")
        if (dates[1] - dates[0]).days < 28:
            raise ValueError(
                f"the first origin {self.origins[0]} must be at least 4 weeks after start "
                f"{self.start}, so that there is data to fit."
            )


@dataclass
class ForecastResult:
    """Weekly forecasts ``[origins, horizons, counties, quantiles]`` per model, the observed
    weekly deaths ``[origins, horizons, counties]``, and the metrics."""

    config: ForecastConfig
    forecasts: dict[str, Tensor]
    truth: Tensor
    history: Tensor  # [days, counties] reported daily deaths from start
    dates: list[dt.date]
    wall_time: dict[str, float]
    fitted: dict[str, dict[str, Tensor]] = field(default_factory=dict)

    def metrics(self) -> dict[str, dict[int, dict[str, float]]]:
        """``{model: {horizon: {"mae", "rmse", "nd", "cov50", "cov90"}}}`` over every county
        and origin (ND pooled: total absolute error over total deaths; NaN if no deaths)."""
        out: dict[str, dict[int, dict[str, float]]] = {}
        y = self.truth
        for name, f in self.forecasts.items():
            point = f[..., QUANTILES.index(0.5)]
            per: dict[int, dict[str, float]] = {}
            for h in range(y.shape[1]):
                lo50, hi50 = f[:, h, :, 1], f[:, h, :, 3]
                lo90, hi90 = f[:, h, :, 0], f[:, h, :, 4]
                per[h + 1] = {
                    "mae": mae(point[:, h], y[:, h]),
                    "rmse": rmse(point[:, h], y[:, h]),
                    "nd": nd(point[:, h], y[:, h]),
                    "cov50": float(((y[:, h] >= lo50) & (y[:, h] <= hi50)).double().mean()),
                    "cov90": float(((y[:, h] >= lo90) & (y[:, h] <= hi90)).double().mean()),
                }
            out[name] = per
        return out

    def table(self) -> str:
        """The metrics as a Markdown table, one row per model and horizon."""
        rows = [
            "| model | weeks ahead | MAE | RMSE | ND | 50% coverage | 90% coverage |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, per in self.metrics().items():
            for h, m in per.items():
                rows.append(
                    f"| {name} | {h} | {m['mae']:.1f} | {m['rmse']:.1f} | {m['nd']:.3f} | "
                    f"{m['cov50']:.2f} | {m['cov90']:.2f} |"
                )
        return "\n".join(rows)


def rolling_forecast(
    config: ForecastConfig | None = None,
    *,
    progress: Callable[[str], None] | None = None,
    **overrides: Any,
) -> ForecastResult:
    """Run every model at every origin (see :class:`ForecastConfig`).

    ``progress``, when given, is called with a one-line message after each model's fit at
    each origin (the CLI and the benchmark print it; the library only logs).
    """
    cfg = replace(config or ForecastConfig(), **overrides)
    data = _data(cfg)
    say = progress or (lambda message: log.info("%s", message))
    origins = [(dt.date.fromisoformat(o) - data["start"]).days for o in cfg.origins]
    last = origins[-1] + 7 * cfg.horizons
    if last > data["deaths"].shape[0]:
        raise ValueError(
            f"{cfg.horizons} weeks after the last origin {cfg.origins[-1]} run past the data "
            f"({data['dates'][-1]})."
        )
    horizons, counties = cfg.horizons, len(cfg.counties)
    truth = torch.stack([_weekly(data["deaths"], o, horizons) for o in origins])  # [O, H, C]
    forecasts: dict[str, list[Tensor]] = {m: [] for m in cfg.models if m != "ensemble"}
    wall = {m: 0.0 for m in forecasts}
    fitted: dict[str, dict[str, Tensor]] = {}
    graph = None
    warm: dict[str, dict[str, Tensor]] = {}
    for k, origin in enumerate(origins):
        # the simulators run the last window_weeks before the origin (whole weeks from the
        # start for an early origin: the epidemic is seeded there)
        window = min(7 * cfg.window_weeks, 7 * (origin // 7))
        spread = _log_change_quantiles(data["deaths"][:origin], horizons)  # [H, Q]
        for name in forecasts:
            began = time.perf_counter()
            if name in ("SEIRM ABM + CalibNN", "SEIRM ODE + CalibNN"):
                if name.startswith("SEIRM ABM") and graph is None:
                    graph = disjoint_union(
                        [
                            SyntheticPopulation(cfg.agents, seed=cfg.seed + c)[0]
                            for c in range(counties)
                        ]  # fmt: skip
                    )
                model = _SimulatorForecaster(
                    cfg, data, origin, window, graph if name.startswith("SEIRM ABM") else None
                )
                if name in warm:  # the previous origin's weights: fitted to earlier data only
                    with torch.no_grad():
                        for key, value in model.calib.named_parameters():
                            value.copy_(warm[name][key])
                epochs = cfg.warm_epochs if name in warm else cfg.epochs
                loss = _fit(model, data, origin, window, cfg, epochs)
                warm[name] = {key: v.detach().clone() for key, v in model.calib.named_parameters()}
                with torch.no_grad():
                    daily = model(window + 7 * horizons)["deaths"]
                point = _weekly(daily, window, horizons)  # [H, C]
                quantiles = _around(point, spread)
                fitted[f"{name} @ {cfg.origins[k]}"] = {
                    key: v.detach() for key, v in model.calib.weekly().items()
                }
                detail = f"loss {loss:.4f}, {epochs} epochs"
            elif name == "persistence":
                point = data["deaths"][origin - 7 : origin].sum(0).expand(horizons, -1)
                quantiles = _around(point, spread)
                detail = "last week"
            else:
                quantiles = _ets(data["deaths"][:origin], horizons)
                detail = "damped-trend ETS on log weekly deaths"
            forecasts[name].append(quantiles)
            seconds = time.perf_counter() - began
            wall[name] += seconds
            say(f"origin {cfg.origins[k]}: {name}: {detail} ({seconds:.1f} s)")
    out = {name: torch.stack(v) for name, v in forecasts.items()}  # [O, H, C, Q]
    if "ensemble" in cfg.models:
        out["ensemble"] = torch.stack(list(out.values())).mean(0)
    return ForecastResult(
        config=cfg,
        forecasts=out,
        truth=truth,
        history=data["deaths"],
        dates=data["dates"],
        wall_time=wall,
        fitted=fitted,
    )


# ---------------------------------------------------------------------------- the simulators


class _SimulatorForecaster(nn.Module):
    """Network -> simulator (ABM on ``graph``, or the ODE without one) -> reported series."""

    def __init__(
        self,
        cfg: ForecastConfig,
        data: dict[str, Any],
        origin: int,
        window: int,
        graph: Any,
    ) -> None:
        super().__init__()
        self.cfg, self.graph = cfg, graph
        features = data["features"][:, origin - window : origin]
        self.calib = RegionalCalibNN(
            features,
            BOUNDS,
            time_varying=("reproduction_number", "ascertainment"),
            steps=window + 7 * cfg.horizons,
            start=START,
            seed=cfg.seed,
        )
        self.register_buffer("populations", data["populations"])
        self.register_buffer("death_kernel", _gamma_kernel(cfg.death_delay, cfg.death_delay / 2))
        self.register_buffer("case_kernel", _gamma_kernel(cfg.case_delay, cfg.case_delay / 2))
        if graph is not None:
            regions = graph.node_attrs()["region"]
            # each contact setting carries a share of R, so that R is the whole reproduction
            # number as in the ODE (with weight 1 per relation, 4 settings would count it 4x)
            shares = {rel[1]: 1 / len(graph.relations) for rel in graph.relations}
            self.protocol = RegionalSEIRM(regions, learnable=False, edge_type_weights=shares)
            counts = torch.bincount(regions, minlength=len(cfg.counties))
            self.register_buffer("scale", data["populations"] / counts)
            self.register_buffer("regions", regions, persistent=False)

    def forward(self, steps: int, weekly: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        p = self.calib(weekly)
        p["initial_infected"] = torch.exp(p.pop("log_initial_infected"))
        r = p["reproduction_number"][:steps]
        if self.graph is None:
            flows = RegionalODE(self.populations, steps)(r, p["mortality"], p["initial_infected"])
        else:
            self.protocol.regional_reproduction_number = r
            self.protocol.regional_mortality = p["mortality"]
            initial = p["initial_infected"][self.regions]
            traj = Simulator(self.protocol, steps=steps, mode="expected")(
                self.graph, initial_infected=initial
            )
            flows = {k: traj.flows[k] * self.scale for k in ("onsets", "deaths")}
        deaths = _delay(flows["deaths"], self.death_kernel)
        cases = p["ascertainment"][:steps] * _delay(flows["onsets"], self.case_kernel)
        return {"deaths": deaths, "cases": cases}


def _fit(
    model: _SimulatorForecaster,
    data: dict[str, Any],
    origin: int,
    window: int,
    cfg: ForecastConfig,
    epochs: int,
) -> float:
    target = {
        k: torch.log1p(_mean7(data[k][:origin])[origin - window :]) for k in ("deaths", "cases")
    }
    # burn-in: the seeded infections reach the reported cases after about a week and the
    # reported deaths after about three; earlier days reflect infections before the window
    fitted = {"deaths": slice(21, None), "cases": slice(7, None)}
    weight = {"deaths": 1.0, "cases": cfg.case_weight}
    days = torch.arange(window, dtype=torch.get_default_dtype())
    if cfg.recency is None:
        recent = torch.ones_like(days)
    else:
        recent = torch.exp((days - window + 1) / cfg.recency)
    recent = recent.unsqueeze(1)
    optimiser = torch.optim.Adam(model.calib.parameters(), lr=cfg.lr)
    loss = torch.tensor(float("nan"))
    for _ in range(epochs):
        weekly = model.calib.weekly()  # the network runs once: for the run and the penalty
        out = model(window, weekly)
        loss = sum(
            weight[k]
            * (
                (recent * (torch.log1p(_mean7(out[k])) - target[k]).square())[fitted[k]].sum(0)
                / recent[fitted[k]].sum()
            ).sum()
            for k in target
        )
        for name in ("reproduction_number", "ascertainment"):
            w = weekly[name]
            loss = (
                loss + cfg.smoothness * ((w[1:] - w[:-1]) / w[1:].detach()).square().mean(0).sum()
            )
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return float(loss.detach())


# ---------------------------------------------------------------------------- baselines


def _ets(deaths: Tensor, horizons: int) -> Tensor:
    """``[H, C, Q]`` quantiles of a damped-trend ETS(A, Ad, N) model of each county's weekly
    ``log(1 + deaths)`` (weeks ending the day before the origin)."""
    try:
        import pandas as pd
        from statsmodels.tsa.exponential_smoothing.ets import ETSModel
    except ImportError:  # pragma: no cover - the test extra installs it
        raise ImportError(
            "the exponential-smoothing baseline needs statsmodels: pip install "
            "'lpm-graph[calibrate]'."
        ) from None
    weekly = _weeks_before(deaths)  # [W, C]
    out = torch.zeros(horizons, deaths.shape[1], len(QUANTILES), dtype=torch.float64)
    for c in range(deaths.shape[1]):
        y = pd.Series(torch.log1p(weekly[:, c].double()).numpy())
        # a damped trend once there are 12 weeks since the first death to estimate it (a
        # trend fitted to the first weeks of a wave extrapolates its growth), else the level
        # only; a county without a death yet (or a failed fit) gets a flat zero forecast
        seen = weekly[:, c] > 0
        weeks_seen = len(y) - int(seen.nonzero()[0]) if bool(seen.any()) else 0
        for trend in (("add", True), (None, False)) if weeks_seen >= 12 else ((None, False),):
            quantiles = _ets_quantiles(ETSModel, y, horizons, trend)
            if quantiles is not None:
                out[:, c] = quantiles
                break
    return out.to(deaths.dtype)


def _ets_quantiles(
    ets: Any, y: Any, horizons: int, trend: tuple[str | None, bool]
) -> Tensor | None:
    """``[H, Q]`` quantiles of one ETS fit of ``y`` (log weekly deaths), or ``None`` when the
    series is constant or the fit gives non-finite values."""
    if float(y.max()) == float(y.min()):
        return None
    out = torch.zeros(horizons, len(QUANTILES), dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fit = ets(y, error="add", trend=trend[0], damped_trend=trend[1]).fit(disp=False)
            pred = fit.get_prediction(start=len(y), end=len(y) + horizons - 1)
            for q, level in enumerate(QUANTILES):
                if level == 0.5:
                    values = pred.predicted_mean.to_numpy()
                else:
                    frame = pred.summary_frame(alpha=2 * min(level, 1 - level))
                    values = frame["pi_lower" if level < 0.5 else "pi_upper"].to_numpy()
                out[:, q] = torch.expm1(torch.as_tensor(values, dtype=torch.float64))
        except (ValueError, np.linalg.LinAlgError):
            return None
    if not bool(torch.isfinite(out).all()):
        return None
    return out.clamp_min(0.0)


def _log_change_quantiles(deaths: Tensor, horizons: int) -> Tensor:
    """``[H, Q]`` quantiles of ``log((1 + y[w + h]) / (1 + y[w]))`` over every county and week
    ``w`` of the weekly deaths before the origin (weeks with deaths reported)."""
    weekly = _weeks_before(deaths).double()
    weeks = weekly.shape[0]
    levels = torch.tensor(QUANTILES, dtype=torch.float64)
    out = torch.zeros(horizons, len(QUANTILES), dtype=torch.float64)
    started = int((weekly.sum(1) > 0).nonzero()[0]) if bool((weekly.sum(1) > 0).any()) else 0
    for h in range(1, horizons + 1):
        a, b = weekly[started : weeks - h], weekly[started + h :]
        changes = (torch.log1p(b) - torch.log1p(a)).reshape(-1)
        if changes.numel() < 5:
            changes = torch.tensor([-0.5, 0.0, 0.5], dtype=torch.float64) * math.sqrt(h)
        out[h - 1] = torch.quantile(changes - torch.quantile(changes, 0.5), levels)
    return out


def _around(point: Tensor, spread: Tensor) -> Tensor:
    """``[H, C, Q]``: ``(1 + point) * exp(spread) - 1`` with ``spread[H, Q]`` (median 0)."""
    p = point.double().unsqueeze(-1)
    return ((1 + p) * torch.exp(spread.unsqueeze(1)) - 1).clamp_min(0.0).to(point.dtype)


# ---------------------------------------------------------------------------- data and series


def _data(cfg: ForecastConfig) -> dict[str, Any]:
    series = CountySeries(False, counties=list(cfg.counties))
    smoothed = CountySeries(False, counties=list(cfg.counties), smoothing=7)
    start = dt.date.fromisoformat(cfg.start)
    deaths, cases, features = [], [], []
    dates = None
    for fips in cfg.counties:
        raw, smooth = series.by_fips(fips), smoothed.by_fips(fips)
        if start not in raw.dates:
            raise ValueError(
                f"start {cfg.start} is not a day of county {fips}'s series "
                f"({raw.dates[0]} .. {raw.dates[-1]})."
            )
        first = raw.dates.index(start)
        dates = raw.dates[first:] if dates is None else dates
        n = len(dates)
        deaths.append(torch.nan_to_num(raw["deaths"][first : first + n], 0.0))
        cases.append(torch.nan_to_num(raw["cases"][first : first + n], 0.0))
        columns = [smooth.column_index(s) for s in SIGNALS]
        features.append(smooth.values[first : first + n][:, columns])
    dtype = torch.get_default_dtype()
    return {
        "start": start,
        "dates": dates,
        "deaths": torch.stack(deaths, 1).to(dtype),  # [days, C]
        "cases": torch.stack(cases, 1).to(dtype),
        "features": torch.stack(features).to(dtype),  # [C, days, F]
        "populations": torch.tensor([float(COUNTY_POPULATIONS[f]) for f in cfg.counties]),
    }


def _weekly(daily: Tensor, origin: int, horizons: int) -> Tensor:
    """``[H, C]`` totals of the weeks from ``origin`` on."""
    return daily[origin : origin + 7 * horizons].reshape(horizons, 7, -1).sum(1)


def _weeks_before(daily: Tensor) -> Tensor:
    """``[W, C]`` totals of the whole weeks that end on the last day of ``daily``."""
    weeks = daily.shape[0] // 7
    return daily[daily.shape[0] - 7 * weeks :].reshape(weeks, 7, -1).sum(1)


def _mean7(x: Tensor) -> Tensor:
    """Trailing 7-day means of ``[T, C]`` (the first days average what there is)."""
    c = torch.cumsum(torch.cat([x.new_zeros(1, x.shape[1]), x]), 0)
    t = torch.arange(1, x.shape[0] + 1, device=x.device)
    lo = (t - 7).clamp_min(0)
    return (c[t] - c[lo]) / (t - lo).unsqueeze(1).to(x.dtype)


def _gamma_kernel(mean: float, sd: float, days: int = 60) -> Tensor:
    """Daily probabilities of a Gamma(mean, sd) delay, discretised on ``0 .. days - 1``."""
    cdf = gamma_cdf(torch.arange(days + 1, dtype=torch.float64), mean, sd)
    w = cdf[1:] - cdf[:-1]
    return (w / w.sum()).to(torch.get_default_dtype())


def _delay(x: Tensor, kernel: Tensor) -> Tensor:
    """``[T, C]`` series convolved with a delay ``kernel`` (``kernel[d]``: share reported
    ``d`` days later)."""
    n = kernel.numel()
    padded = torch.nn.functional.pad(x.T.unsqueeze(1), (n - 1, 0))
    return torch.nn.functional.conv1d(padded, kernel.flip(0).view(1, 1, -1).to(x)).squeeze(1).T


def plot_forecasts(
    result: ForecastResult, path: str, counties: Sequence[str] | None = None
) -> None:
    """Observed weekly deaths and each model's median forecasts (1-4 weeks) with 90 %
    intervals of the ensemble, one panel per county; written all-or-nothing to ``path``."""
    from ..plot import _pyplot

    plt = _pyplot("plot_forecasts")
    from matplotlib.dates import DateFormatter

    month = DateFormatter("%b")
    cfg = result.config
    chosen = list(counties or cfg.counties)
    cols = 2
    rows = math.ceil(len(chosen) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(11, 2.6 * rows), squeeze=False)
    weeks = result.history.shape[0] // 7
    weekly = result.history[: 7 * weeks].reshape(weeks, 7, -1).sum(1)
    week_dates = [result.dates[0] + dt.timedelta(days=7 * w + 6) for w in range(weeks)]
    colours = {"SEIRM ABM + CalibNN": "C3", "SEIRM ODE + CalibNN": "C0", "persistence": "C1",
               "exponential smoothing": "C2", "ensemble": "k"}  # fmt: skip
    for ax, fips in zip(axes.flat, chosen):
        c = cfg.counties.index(fips)
        ax.plot(week_dates, weekly[:, c], color="0.6", lw=1.5, label="reported")
        for k, origin in enumerate(cfg.origins):
            o = dt.date.fromisoformat(origin)
            days = [o + dt.timedelta(days=7 * h + 6) for h in range(cfg.horizons)]
            for name, f in result.forecasts.items():
                ax.plot(days, f[k, :, c, 2], color=colours.get(name, "C4"), lw=1,
                        label=name if k == 0 else None)  # fmt: skip
            ens = result.forecasts.get("ensemble")
            if ens is not None:
                ax.fill_between(days, ens[k, :, c, 0], ens[k, :, c, 4], color="k", alpha=0.08)
        medians = torch.stack([f[:, :, c, 2] for f in result.forecasts.values()])
        top = max(float(weekly[:, c].max()), float(medians.max()), 1.0)
        ax.set_ylim(0, 1.3 * top)  # the spring's 90 % bands would flatten the rest
        ax.xaxis.set_major_formatter(month)
        ax.set_title(f"{COUNTY_NAMES[fips]} ({fips})", fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(chosen) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6, loc="upper right")
    fig.supylabel("weekly deaths")
    fig.tight_layout()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial{target.suffix}")
    fig.savefig(partial, dpi=120, bbox_inches="tight")
    plt.close(fig)
    os.replace(partial, target)
