"""Plot a fit and its forecast against the observed series (matplotlib, an optional extra)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["plot_forecast"]


def _pyplot() -> Any:
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError(
            "plot_forecast needs matplotlib; install it with `pip install lpm-graph[plot]`."
        ) from err
    return plt


def plot_forecast(
    predictions: Mapping[str, Tensor],
    target: Tensor,
    *,
    bands: Mapping[str, Tensor] | None = None,
    dates: Sequence[Any] | None = None,
    train_end: int | None = None,
    title: str | None = None,
    ylabel: str | None = None,
    ax: Axes | None = None,
) -> Axes:
    """Draw each model's fit and forecast, the observed series and the end of training.

    A ``[S, T]`` prediction (``S`` runs, e.g. seeds of a stochastic model) is drawn as its
    median with a shaded 5–95% band (quantiles over the runs, per day); a ``[T]`` prediction
    as a line. ``bands`` adds a 5–95% band of runs ``[S, T]`` around the line of the same
    name (e.g. stochastic runs around the fitted expected-value run). The observed
    ``target`` is drawn as points (NaN days are not drawn) and a dashed vertical line marks
    the end of training, between day ``train_end - 1`` and day ``train_end``.

    Args:
        predictions: ``{model name: [T'] or [S, T']}`` daily series from the first observed
            day (they may run past the observed days).
        bands: ``{model name: [S, T']}`` runs drawn as a band around that model's line
            (models with a single run get none).
        target: the observed daily series ``[T]``.
        dates: the calendar date of each day (anything ``matplotlib.dates.date2num`` takes:
            ``datetime``, ``numpy.datetime64``, a pandas ``DatetimeIndex``), at least as many
            as the longest series; ``None`` numbers the days from 0.
        train_end: the first day not used for training (``None``: no line).
        title: the axes title.
        ylabel: the y-axis label (e.g. ``"daily deaths"``).
        ax: the axes to draw on (``None``: a new figure).

    Returns:
        The axes (save with ``ax.figure.savefig(path)``).
    """
    plt = _pyplot()
    y = torch.as_tensor(target).detach().to(torch.float64).cpu().numpy()
    if y.ndim != 1:
        raise ValueError(f"target must be a [T] series, got shape {list(y.shape)}.")
    series = {}
    for name, value in predictions.items():
        v = torch.as_tensor(value).detach().to(torch.float64).cpu().numpy()
        if v.ndim not in (1, 2):
            raise ValueError(f"prediction {name!r} must be [T] or [S, T], got {list(v.shape)}.")
        series[name] = v
    length = max([len(y), *(v.shape[-1] for v in series.values())])
    if dates is None:
        x = np.arange(length, dtype=np.float64)
    else:
        import matplotlib.dates as mdates

        x = np.asarray(mdates.date2num(dates), dtype=np.float64)
        if x.shape[0] < length:
            raise ValueError(f"dates has {x.shape[0]} entries for series of {length} days.")
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 4))
    for name, v in series.items():
        t = x[: v.shape[-1]]
        runs = v
        if v.ndim == 1:
            (line,) = ax.plot(t, v, label=name)
        else:
            median = np.nanquantile(v, 0.5, axis=0)
            (line,) = ax.plot(t, median, label=f"{name} (median of {v.shape[0]})")
        if bands is not None and name in bands:
            runs = torch.as_tensor(bands[name]).detach().to(torch.float64).cpu().numpy()
            if runs.ndim != 2 or runs.shape[-1] > len(x):
                raise ValueError(f"bands[{name!r}] must be [S, T], got {list(runs.shape)}.")
        if runs.ndim == 2 and runs.shape[0] > 1:
            low, high = np.nanquantile(runs, [0.05, 0.95], axis=0)
            tb = x[: runs.shape[-1]]
            ax.fill_between(tb, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.plot(x[: len(y)], y, "o", color="black", markersize=3, label="observed")
    if train_end is not None:
        # halfway between the last training day and the first forecast day
        ax.axvline(np.interp(train_end - 0.5, np.arange(len(x)), x), color="gray", ls="--")
    if dates is not None:
        ax.xaxis_date()
    ax.set_xlabel("date" if dates is not None else "day")
    if ylabel is not None:
        ax.set_ylabel(ylabel)
    if title is not None:
        ax.set_title(title)
    ax.legend(loc="best", fontsize="small")
    return ax
