"""Forecast metrics against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from lpm_graph.train import forecast_metrics, mae, metrics_table, nd, rmse

NAN = float("nan")


def test_daily_metrics_by_hand():
    y_hat = torch.tensor([1.0, 2.0, 3.0, 4.0])
    y = torch.tensor([2.0, 2.0, 1.0, 8.0])  # errors -1, 0, 2, -4
    assert mae(y_hat, y) == pytest.approx(7 / 4)
    assert rmse(y_hat, y) == pytest.approx(math.sqrt(21 / 4))
    assert nd(y_hat, y) == pytest.approx(7 / 13)


def test_nan_target_days_are_ignored():
    y_hat = torch.tensor([1.0, 100.0, 3.0])
    y = torch.tensor([2.0, NAN, 1.0])  # errors -1, (ignored), 2
    assert mae(y_hat, y) == pytest.approx(1.5)
    assert rmse(y_hat, y) == pytest.approx(math.sqrt(2.5))
    assert nd(y_hat, y) == pytest.approx(3 / 3)
    # a NaN prediction on an observed day is not ignored
    assert math.isnan(mae(torch.tensor([NAN, 1.0]), torch.tensor([1.0, 1.0])))


def test_nothing_left_and_shape_errors():
    with pytest.raises(ValueError, match="all 2 target values are NaN"):
        mae(torch.ones(2), torch.tensor([NAN, NAN]))
    with pytest.raises(ValueError, match="same shape"):
        rmse(torch.ones(3), torch.ones(2))
    assert math.isnan(nd(torch.ones(2), torch.zeros(2)))  # undefined, not a crash


def test_forecast_metrics_weekly_totals_by_hand():
    # 3 training days, then two weeks of 2 days each (days_per_week=2 keeps it by hand)
    y = torch.tensor([9.0, 9.0, 9.0, 1.0, 3.0, 10.0, 10.0])
    y_hat = torch.tensor([0.0, 0.0, 0.0, 2.0, 4.0, 6.0, 10.0])
    out = forecast_metrics(y_hat, y, start=3, horizons=(1, 2), days_per_week=2)
    # week 1: totals 6 vs 4 -> error 2; week 2: 16 vs 20 -> error 4
    assert out == {
        1: {"mae": pytest.approx(2.0), "rmse": pytest.approx(2.0), "nd": pytest.approx(0.5)},
        2: {"mae": pytest.approx(4.0), "rmse": pytest.approx(4.0), "nd": pytest.approx(0.2)},
    }
    daily = forecast_metrics(y_hat, y, start=3, horizons=(1, 2), days_per_week=2, per_day=True)
    # week 1: errors 1, 1; week 2: errors -4, 0
    assert daily[1] == {"mae": 1.0, "rmse": 1.0, "nd": pytest.approx(2 / 4)}
    assert daily[2] == {
        "mae": pytest.approx(2.0),
        "rmse": pytest.approx(math.sqrt(8.0)),
        "nd": pytest.approx(4 / 20),
    }


def test_forecast_metrics_default_weeks_and_several_series():
    days = 7 + 14
    y = torch.zeros(2, days)
    y_hat = torch.zeros(2, days)
    y[:, 7:14] = 1.0  # week 1 totals: 7 and 7
    y_hat[0, 7:14] = 2.0  # totals 14 (error 7)
    y_hat[1, 7:14] = 0.5  # totals 3.5 (error -3.5)
    out = forecast_metrics(y_hat, y, start=7, horizons=(1,))
    assert out[1]["mae"] == pytest.approx(5.25)
    assert out[1]["rmse"] == pytest.approx(math.sqrt((49 + 12.25) / 2))
    assert out[1]["nd"] == pytest.approx(10.5 / 14)


def test_forecast_metrics_missing_week_and_range():
    y = torch.tensor([1.0, 1.0, NAN, 1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match=r"horizon 1 \(days \[0, 3\)\)"):
        forecast_metrics(torch.ones(6), y, start=0, horizons=(1,), days_per_week=3)
    # per day the missing day is skipped
    assert forecast_metrics(torch.ones(6), y, 0, (1,), 3, per_day=True)[1]["mae"] == 0.0
    with pytest.raises(ValueError, match="horizon 3 covers days \\[4, 6\\).*target has only 5"):
        forecast_metrics(torch.ones(8), torch.ones(5), start=0, horizons=(1, 3), days_per_week=2)
    with pytest.raises(ValueError, match="prediction has only 3"):
        forecast_metrics(torch.ones(3), torch.ones(5), start=2, horizons=(1,), days_per_week=2)
    with pytest.raises(ValueError, match="horizons must be positive"):
        forecast_metrics(torch.ones(8), torch.ones(8), start=0, horizons=(0,))


def test_metrics_table():
    rows = {
        "SEIRM": {2: {"mae": 12345.6, "rmse": 2.0, "nd": 0.125}, 1: {"mae": 1.5, "rmse": 2.25}},
        "naive": {1: {"mae": NAN, "rmse": 3.0, "nd": 1.0}},
    }
    assert metrics_table(rows).splitlines() == [
        "| Model | Horizon (weeks) | MAE | RMSE | ND |",
        "|---|---:|---:|---:|---:|",
        "| SEIRM | 1 | 1.5 | 2.25 | – |",
        "| SEIRM | 2 | 12346 | 2 | 0.125 |",
        "| naive | 1 | nan | 3 | 1 |",
    ]
