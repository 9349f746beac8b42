"""Stage durations and the infectiousness kernel, against scipy.stats."""

from __future__ import annotations

import pytest
import torch
from scipy import integrate, stats

from lpm_graph.protocols import Duration, infectiousness_kernel
from lpm_graph.protocols.durations import kernel_share_before


def test_kernel_from_the_step_start_is_the_gamma_with_rate_not_scale():
    mean, sd = 5.5, 2.14
    shape, rate = (mean / sd) ** 2, mean / sd**2
    w = infectiousness_kernel(mean, sd, dt=1.0, infection_time="step_start")
    ref = stats.gamma(a=shape, scale=1 / rate)  # scipy's scale is 1 / rate
    k = torch.arange(w.numel(), dtype=torch.float64)
    expected = torch.as_tensor(ref.cdf(k.numpy() + 1) - ref.cdf(k.numpy()))
    assert torch.allclose(w[:-1], expected[:-1], atol=1e-12)
    assert float(w.sum()) == pytest.approx(1.0, abs=1e-12)
    mean_day = float(((k + 0.5) * w).sum())  # midpoint of each day
    assert mean_day == pytest.approx(mean, abs=0.05)


@pytest.mark.parametrize("dt", [1.0, 0.5, 0.25])
def test_kernel_within_the_step_averages_over_the_infection_time(dt):
    """w[k] = the mean over u ~ U(0, 1) of F((k + 2 - u) dt) - F((k + 1 - u) dt), by quadrature
    against scipy's Gamma (scale = 1 / rate)."""
    mean, sd = 5.5, 2.14
    ref = stats.gamma(a=(mean / sd) ** 2, scale=sd**2 / mean)
    w = infectiousness_kernel(mean, sd, dt=dt)
    for k in (1, 3, int(5 / dt), int(9 / dt)):
        expected, _ = integrate.quad(
            lambda u, k=k: ref.cdf((k + 2 - u) * dt) - ref.cdf((k + 1 - u) * dt), 0, 1,
            epsabs=1e-14,
        )
        assert float(w[k]) == pytest.approx(expected, abs=1e-11)
    first, _ = integrate.quad(lambda u: ref.cdf((2 - u) * dt), 0, 1, epsabs=1e-14)
    assert float(w[0]) == pytest.approx(first, abs=1e-11)  # the infection step folded in
    assert float(w.sum()) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("timing", ["within_step", "step_start"])
def test_generation_time_with_infections_within_steps(timing):
    """A run infects during a step and counts from its end: the next infection falls in the
    (k + 1)-th step after, at a uniform point, with probability w[k]. The mean generation
    time is the kernel's mean at every dt with the default timing; counted from the step
    start it is dt / 2 longer."""
    for dt in (1.0, 0.5, 0.25):
        w = infectiousness_kernel(dt=dt, infection_time=timing)
        k = torch.arange(w.numel(), dtype=torch.float64)
        generation = float(((k + 1) * dt * w).sum())
        bias = 0.0 if timing == "within_step" else dt / 2
        assert generation == pytest.approx(5.5 + bias, abs=1e-3)


@pytest.mark.parametrize("dt", [1.0, 0.5, 0.25])
def test_share_before_a_fixed_age_completes_the_cdf(dt):
    ref = stats.gamma(a=(5.5 / 2.14) ** 2, scale=2.14**2 / 5.5)
    w = infectiousness_kernel(dt=dt)
    for age in (dt, 3.0, 8.0):
        steps = round(age / dt)
        total = float(w[: steps - 1].sum()) + kernel_share_before(age, dt=dt)
        assert total == pytest.approx(float(ref.cdf(age)), abs=1e-12)
    with pytest.raises(ValueError, match="whole number"):
        kernel_share_before(0.3, dt=0.25)
    with pytest.raises(ValueError, match="infection_time"):
        infectiousness_kernel(infection_time="end")


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
