"""plot_forecast: a PNG with the median, the 5-95% band, the observations and the train end."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from lpm_graph.train import plot_forecast

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")


def test_writes_a_png_with_band_and_train_end(tmp_path):
    import matplotlib.pyplot as plt
    from matplotlib.collections import PolyCollection

    runs = torch.arange(1.0, 21.0).unsqueeze(1) * torch.ones(20, 14)  # seed s: the constant s
    target = torch.linspace(0, 20, 10)
    target[4] = float("nan")
    ax = plot_forecast(
        {"SEIRM": runs, "naive": torch.full((14,), 3.0)},
        target,
        train_end=7,
        title="deaths",
    )
    path = tmp_path / "forecast.png"
    ax.figure.savefig(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    lines = {line.get_label(): line for line in ax.get_lines()}
    np.testing.assert_allclose(lines["SEIRM (median of 20)"].get_ydata(), np.full(14, 10.5))
    np.testing.assert_allclose(lines["naive"].get_ydata(), np.full(14, 3.0))
    assert len(lines["observed"].get_xdata()) == 10
    (band,) = [c for c in ax.collections if isinstance(c, PolyCollection)]
    y = band.get_paths()[0].vertices[:, 1]
    assert y.min() == pytest.approx(np.quantile(np.arange(1, 21), 0.05))
    assert y.max() == pytest.approx(np.quantile(np.arange(1, 21), 0.95))
    vline = [line for line in ax.get_lines() if line.get_xdata()[0] == line.get_xdata()[-1]]
    assert vline and vline[0].get_xdata()[0] == pytest.approx(6.5)
    assert ax.get_title() == "deaths"
    plt.close(ax.figure)


def test_dates_on_given_axes(tmp_path):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    dates = np.arange("2020-03-01", "2020-03-15", dtype="datetime64[D]")
    out = plot_forecast({"m": torch.ones(3, 14)}, torch.ones(10), dates=dates, ax=ax)
    assert out is ax
    fig.savefig(tmp_path / "dates.png")
    with pytest.raises(ValueError, match="dates has 14 entries for series of 20 days"):
        plot_forecast({"m": torch.ones(20)}, torch.ones(10), dates=dates, ax=ax)
    plt.close(fig)


def test_missing_matplotlib_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r"pip install lpm-graph\[plot\]"):
        plot_forecast({"m": torch.ones(5)}, torch.ones(5))
