"""Forecast metrics: MAE, RMSE and normalised deviation, overall and per weekly horizon.

Every metric ignores the days where the *target* is NaN (unreported days); a NaN in the
prediction on a day that is observed propagates (a model that fails to predict is not scored
as if it had been right).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import Tensor

__all__ = ["forecast_metrics", "mae", "metrics_table", "nd", "rmse"]

METRICS: tuple[str, ...] = ("mae", "rmse", "nd")
"""The keys of every per-horizon metrics dict, in table order."""


def _pair(
    prediction: Tensor | Sequence[float], target: Tensor | Sequence[float]
) -> tuple[Tensor, Tensor]:
    """Both as float64 tensors of the same shape, restricted to the observed target days."""
    try:
        p = torch.as_tensor(prediction).detach().to(torch.float64).cpu()
        y = torch.as_tensor(target).detach().to(torch.float64).cpu()
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(
            f"prediction and target must be series of numbers (tensors, arrays or lists), got "
            f"{type(prediction).__name__} and {type(target).__name__}."
        ) from None
    if p.shape != y.shape:
        raise ValueError(
            f"prediction and target must have the same shape, got {list(p.shape)} and "
            f"{list(y.shape)}."
        )
    observed = ~torch.isnan(y)
    if not bool(observed.any()):
        raise ValueError(
            f"no observed target value to score: all {y.numel()} target values are NaN "
            "(or the window is empty)."
        )
    return p[observed], y[observed]


def mae(prediction: Tensor | Sequence[float], target: Tensor | Sequence[float]) -> float:
    """Mean absolute error ``mean |y_hat - y|`` over the days where ``target`` is not NaN."""
    p, y = _pair(prediction, target)
    return float((p - y).abs().mean())


def rmse(prediction: Tensor | Sequence[float], target: Tensor | Sequence[float]) -> float:
    """Root mean squared error ``sqrt(mean (y_hat - y)^2)`` over the observed target days."""
    p, y = _pair(prediction, target)
    return float((p - y).square().mean().sqrt())


def nd(prediction: Tensor | Sequence[float], target: Tensor | Sequence[float]) -> float:
    """Normalised deviation ``sum |y_hat - y| / sum |y|`` over the observed target days.

    ``nan`` when every observed target value is 0 (the ratio is undefined there).
    """
    p, y = _pair(prediction, target)
    total = float(y.abs().sum())
    return float((p - y).abs().sum()) / total if total > 0 else math.nan


def _scores(prediction: Tensor, target: Tensor) -> dict[str, float]:
    return {
        "mae": mae(prediction, target),
        "rmse": rmse(prediction, target),
        "nd": nd(prediction, target),
    }


def forecast_metrics(
    prediction: Tensor,
    target: Tensor,
    start: int,
    horizons: Iterable[int] = (1, 2, 3, 4),
    days_per_week: int = 7,
    *,
    per_day: bool = False,
) -> dict[int, dict[str, float]]:
    """Scores of the forecast made at day ``start`` (the end of training), per weekly horizon.

    Horizon ``h`` is the ``h``-th week after ``start``: days
    ``[start + days_per_week * (h - 1), start + days_per_week * h)``. For each horizon:

    - ``per_day=False`` (default, the usual weekly forecasting target): the *weekly totals*
      are compared, ``W_hat = sum of the predicted days`` against ``W = sum of the observed
      days``; ``mae = |W_hat - W|``, ``rmse = sqrt((W_hat - W)^2)`` and
      ``nd = |W_hat - W| / |W|``. With one ``[T]`` series there is one total per horizon, so
      MAE = RMSE; they differ when several series are scored together (``[..., T]``, e.g.
      regions): then they are the mean, root mean square and normalised sum over the series'
      weekly totals. A week with any NaN target day has no total and is left out.
    - ``per_day=True``: the week's daily values are compared, ``mae = mean_d |y_hat_d - y_d|``,
      ``rmse = sqrt(mean_d (y_hat_d - y_d)^2)``, ``nd = sum_d |...| / sum_d |y_d|``, NaN target
      days left out.

    Args:
        prediction: the model's daily series ``[..., T']`` from the first observed day
            (``T' >= start + days_per_week * max(horizons)``).
        target: the observed daily series ``[..., T]``, NaN on unreported days.
        start: the first forecast day (days ``< start`` were used for training).
        horizons: week numbers to score (1 = the first week after ``start``).
        days_per_week: days in one horizon step.
        per_day: score daily values instead of weekly totals.

    Returns:
        ``{h: {"mae": ..., "rmse": ..., "nd": ...}}`` in the order of ``horizons``.
    """
    prediction = torch.as_tensor(prediction).detach().to(torch.float64).cpu()
    target = torch.as_tensor(target).detach().to(torch.float64).cpu()
    if prediction.dim() == 0 or prediction.shape[:-1] != target.shape[:-1]:
        raise ValueError(
            f"prediction {list(prediction.shape)} and target {list(target.shape)} must be "
            "[..., T] series with the same leading shape."
        )
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise ValueError(f"start must be a non-negative int (a day index), got {start!r}.")
    if isinstance(days_per_week, bool) or not isinstance(days_per_week, int) or days_per_week < 1:
        raise ValueError(f"days_per_week must be a positive int, got {days_per_week!r}.")
    out: dict[int, dict[str, float]] = {}
    for h in horizons:
        if isinstance(h, bool) or not isinstance(h, int) or h < 1:
            raise ValueError(f"horizons must be positive ints (weeks), got {h!r}.")
        lo, hi = start + days_per_week * (h - 1), start + days_per_week * h
        for name, series in (("target", target), ("prediction", prediction)):
            if series.shape[-1] < hi:
                raise ValueError(
                    f"horizon {h} covers days [{lo}, {hi}) but the {name} has only "
                    f"{series.shape[-1]} days."
                )
        p, y = prediction[..., lo:hi], target[..., lo:hi]
        if not per_day:  # one weekly total per series; NaN if a target day is missing
            p, y = p.sum(-1), y.sum(-1)
        try:
            out[h] = _scores(p, y)
        except ValueError as err:
            raise ValueError(f"horizon {h} (days [{lo}, {hi})): {err}") from None
    return out


def _fmt(value: float | None) -> str:
    if value is None:
        return "–"
    if math.isnan(value) or abs(value) < 1e4:
        return f"{value:.4g}"
    return f"{value:.0f}"


def metrics_table(rows: Mapping[str, Mapping[int, Mapping[str, float]]]) -> str:
    """A Markdown table of :func:`forecast_metrics` results: one row per model and horizon.

    Args:
        rows: ``{model name: forecast_metrics(...)}``.

    Returns:
        ``| Model | Horizon (weeks) | MAE | RMSE | ND |`` followed by one row per model and
        horizon (horizons in increasing order; a metric a model lacks is shown as ``–``).
    """
    lines = ["| Model | Horizon (weeks) | MAE | RMSE | ND |", "|---|---:|---:|---:|---:|"]
    for model, by_horizon in rows.items():
        for h in sorted(by_horizon):
            scores = by_horizon[h]
            cells = " | ".join(_fmt(scores.get(m)) for m in METRICS)
            lines.append(f"| {model} | {h} | {cells} |")
    return "\n".join(lines)
