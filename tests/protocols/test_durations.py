"""Stage durations and the infectiousness kernel, against scipy.stats."""

from __future__ import annotations

import pytest
import torch
from scipy import stats

from lpm_graph.protocols import Duration, infectiousness_kernel


def test_kernel_is_the_gamma_with_rate_not_scale():
    mean, sd = 5.5, 2.14
    shape, rate = (mean / sd) ** 2, mean / sd**2
    w = infectiousness_kernel(mean, sd, dt=1.0)
    ref = stats.gamma(a=shape, scale=1 / rate)  # scipy's scale is 1 / rate
    k = torch.arange(w.numel(), dtype=torch.float64)
    expected = torch.as_tensor(ref.cdf(k.numpy() + 1) - ref.cdf(k.numpy()))
    assert torch.allclose(w[:-1], expected[:-1], atol=1e-12)
    assert float(w.sum()) == pytest.approx(1.0, abs=1e-12)
    mean_day = float(((k + 0.5) * w).sum())  # midpoint of each day
    assert mean_day == pytest.approx(mean, abs=0.05)


def test_kernel_with_half_day_steps():
    w = infectiousness_kernel(dt=0.5)
    assert float(w.sum()) == pytest.approx(1.0, abs=1e-12)
    assert float(((torch.arange(w.numel()) + 0.5) * 0.5 * w).sum()) == pytest.approx(5.5, abs=0.03)


@pytest.mark.parametrize(
    "duration",
    [
        Duration.gamma(5.0, 2.0),
        Duration.gamma(3.0, 1.5),
        Duration.geometric(4.0),
        Duration.fixed(3),
    ],
)
def test_sampled_durations_have_the_configured_mean(duration):
    gen = torch.Generator().manual_seed(0)
    draws = duration.sample(100_000, dt=1.0, generator=gen)
    assert float(draws.mean()) == pytest.approx(duration.mean, rel=0.02)
    assert float(draws.min()) >= 1.0


def test_gamma_duration_pmf_matches_rounded_gamma():
    d = Duration.gamma(5.0, 2.0)
    ref = stats.gamma(a=(5.0 / 2.0) ** 2, scale=2.0**2 / 5.0)
    pmf = d.pmf(1.0)
    assert float(pmf[0]) == pytest.approx(ref.cdf(1.5), abs=1e-10)
    assert float(pmf[3]) == pytest.approx(ref.cdf(4.5) - ref.cdf(3.5), abs=1e-10)
    assert float(pmf.sum()) == pytest.approx(1.0, abs=1e-12)


def test_hazard_reproduces_the_pmf():
    for d in (Duration.gamma(5.0, 2.0), Duration.geometric(3.0), Duration.fixed(4)):
        pmf, h = d.pmf(1.0), d.hazard(1.0)
        alive, rebuilt = 1.0, []
        for hk in h.tolist():
            rebuilt.append(alive * hk)
            alive *= 1 - hk
        assert torch.allclose(torch.tensor(rebuilt, dtype=torch.float64), pmf, atol=1e-12)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: Duration.fixed(3).pmf(2.0), r"not a whole number.*choose dt"),
        (lambda: Duration.geometric(0.5).pmf(1.0), r"shorter than one step"),
        (lambda: Duration.gamma(5.0, -1.0), r"positive sd"),
        (lambda: Duration("weibull", 3.0), r"not a duration kind"),
        (lambda: Duration.fixed(float("nan")), r"finite positive"),
        (lambda: infectiousness_kernel(-1.0, 2.0), r"finite and positive"),
    ],
)
def test_bad_durations_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()
