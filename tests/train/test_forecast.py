"""The rolling-origin forecasting experiment: no look-ahead, the metrics, the baselines."""

from __future__ import annotations

import datetime as dt

import pytest
import torch

from lpm_graph.train import forecast as F
from lpm_graph.train.forecast import QUANTILES, ForecastConfig, ForecastResult, rolling_forecast

TINY = {
    "counties": ("25017", "25025"),
    "origins": ("2020-06-26", "2020-07-24"),
    "window_weeks": 5,
    "agents": 60,
    "epochs": 3,
    "warm_epochs": 2,
}


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    return rolling_forecast(ForecastConfig(**TINY))


def test_every_model_forecasts_every_county_origin_and_horizon(tiny):
    assert set(tiny.forecasts) == set(F.MODELS)
    for name, f in tiny.forecasts.items():
        assert f.shape == (2, 4, 2, len(QUANTILES)), name
        assert bool(torch.isfinite(f).all()) and bool((f >= 0).all()), name
        assert bool((f.diff(dim=-1) >= -1e-6).all()), f"{name}: quantiles out of order"
    assert tiny.truth.shape == (2, 4, 2)


def test_persistence_is_the_last_reported_week(tiny):
    start = dt.date.fromisoformat(tiny.config.start)
    for k, origin in enumerate(tiny.config.origins):
        o = (dt.date.fromisoformat(origin) - start).days
        last = tiny.history[o - 7 : o].sum(0)
        torch.testing.assert_close(tiny.forecasts["persistence"][k, :, :, 2], last.expand(4, -1))
        truth = torch.stack([tiny.history[o + 7 * h : o + 7 * h + 7].sum(0) for h in range(4)])
        torch.testing.assert_close(tiny.truth[k], truth)


def test_the_ensemble_is_the_mean_of_the_members(tiny):
    members = [f for name, f in tiny.forecasts.items() if name != "ensemble"]
    torch.testing.assert_close(tiny.forecasts["ensemble"], torch.stack(members).mean(0))


def test_no_model_sees_data_after_its_origin(monkeypatch, tiny):
    """Change every series from the first origin on: the first origin's forecasts of every
    model are unchanged."""
    real = F._data
    origin = (dt.date.fromisoformat(TINY["origins"][0]) - dt.date(2020, 3, 1)).days

    def altered(cfg):
        data = real(cfg)
        for key in ("deaths", "cases"):
            data[key] = data[key].clone()
            data[key][origin:] *= 3.0
        data["features"] = data["features"].clone()
        data["features"][:, origin:] += 1.0
        return data

    monkeypatch.setattr(F, "_data", altered)
    other = rolling_forecast(ForecastConfig(**TINY))
    for name in F.MODELS:
        torch.testing.assert_close(other.forecasts[name][0], tiny.forecasts[name][0])
    assert not torch.equal(other.truth[0], tiny.truth[0])


def test_metrics_by_hand():
    truth = torch.tensor([[[10.0, 0.0]], [[30.0, 4.0]]]).reshape(2, 1, 2)  # [O, H, C]
    point = torch.tensor([[[12.0, 1.0]], [[20.0, 4.0]]]).reshape(2, 1, 2)
    lo, hi = point - 3, point + 3  # 50 %: covers 10, 0 (|err| <= 3), 4; not 30
    f = torch.stack([point - 10, lo, point, hi, point + 10], dim=-1)
    result = ForecastResult(
        config=ForecastConfig(**TINY), forecasts={"m": f}, truth=truth,
        history=torch.zeros(7, 2), dates=[], wall_time={},
    )  # fmt: skip
    m = result.metrics()["m"][1]
    assert m["mae"] == pytest.approx((2 + 1 + 10 + 0) / 4)
    assert m["rmse"] == pytest.approx(((4 + 1 + 100 + 0) / 4) ** 0.5)
    assert m["nd"] == pytest.approx(13 / 44)
    assert m["cov50"] == pytest.approx(0.75) and m["cov90"] == pytest.approx(1.0)
    assert "| m | 1 |" in result.table()


def test_series_helpers():
    x = torch.arange(20.0).reshape(10, 2)
    mean = F._mean7(x)
    torch.testing.assert_close(mean[8], x[2:9].mean(0))
    torch.testing.assert_close(mean[0], x[0])
    kernel = F._gamma_kernel(10.0, 5.0)
    assert kernel.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert (kernel * (torch.arange(60) + 0.5)).sum().item() == pytest.approx(10.0, abs=0.1)
    pulse = torch.zeros(70, 1)
    pulse[3] = 1.0
    delayed = F._delay(pulse, kernel)
    torch.testing.assert_close(delayed[3:63, 0], kernel)
    assert float(delayed[:3].abs().sum()) == 0.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"counties": ("99999",)}, "not Massachusetts counties"),
        ({"origins": ()}, "origins is empty"),
        ({"origins": ("2020-07-01", "2020-06-01")}, "increasing"),
        ({"origins": ("2020-03-10",)}, "at least 4 weeks after start"),
        ({"origins": ("2020-13-01",)}, "ISO date"),
        ({"models": ("oracle",)}, "unknown"),
        ({"models": ("persistence", "ensemble")}, "at least two"),
        ({"epochs": -1}, "epochs"),
        ({"window_weeks": 2}, "window_weeks"),
        ({"lr": 0.0}, "lr"),
    ],
)
def test_bad_configuration_is_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ForecastConfig(**kwargs)


def test_an_origin_too_late_for_its_horizons_is_refused():
    with pytest.raises(ValueError, match="run past the data"):
        rolling_forecast(ForecastConfig(**{**TINY, "origins": ("2020-12-20",)}))


def test_the_plot_is_written(tiny, tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "forecast.png"
    F.plot_forecasts(tiny, str(path))
    assert path.stat().st_size > 10_000
    assert not list(tmp_path.glob(".*partial*"))
