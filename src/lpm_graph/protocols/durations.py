"""Stage durations and the infectiousness kernel, discretised to simulation steps."""

from __future__ import annotations

import math
import numbers
from typing import Literal

import torch
from torch import Tensor

from .._checks import check_int

__all__ = ["Duration", "gamma_cdf", "infectiousness_kernel", "kernel_share_before"]

Kind = Literal["fixed", "geometric", "gamma"]
KINDS: tuple[str, ...] = ("fixed", "geometric", "gamma")
TAIL = 1e-7
"""Probability mass beyond the last step kept; it is folded into that last step."""
MAX_STEPS = 1_000_000
"""Steps a duration or the kernel may span (a guard against a mean in the wrong unit)."""


def gamma_cdf(x: Tensor, mean: float, sd: float) -> Tensor:
    """CDF of the Gamma distribution with this mean and sd at ``x`` (float64).

    Shape ``k = mean^2 / sd^2`` and *rate* ``b = mean / sd^2`` (so the mean is ``k / b``):
    ``F(x) = P(k, b x)``, the regularised lower incomplete gamma function.
    """
    shape, rate = (mean / sd) ** 2, mean / sd**2
    x = torch.as_tensor(x, dtype=torch.float64).clamp_min(0)
    return torch.special.gammainc(torch.full_like(x, shape), rate * x)


class Duration:
    """How long an agent stays in a stage, in time units (days for the epidemic protocols).

    Build one with :meth:`fixed`, :meth:`geometric` or :meth:`gamma`. On a grid of step ``dt``
    a duration is a number of steps ``D >= 1`` with probabilities :meth:`pmf`:

    * ``fixed(d)``: exactly ``d / dt`` steps (``d`` must be a multiple of ``dt``);
    * ``geometric(mean)``: leave with probability ``dt / mean`` each step (memoryless), so the
      mean is exactly ``mean``;
    * ``gamma(mean, sd)``: a Gamma-distributed time (shape ``mean^2 / sd^2``, rate
      ``mean / sd^2``) rounded to the nearest step, at least one step.

    Steps beyond the point where less than ``1e-7`` of the probability remains are folded into
    the last kept step.
    """

    def __init__(self, kind: Kind, mean: float, sd: float | None = None) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind={kind!r} is not a duration kind; choose one of {KINDS}.")
        if not (isinstance(mean, (int, float)) and math.isfinite(mean) and mean > 0):
            raise ValueError(f"a duration's mean must be a finite positive number, got {mean!r}.")
        if kind == "gamma" and not (isinstance(sd, (int, float)) and math.isfinite(sd) and sd > 0):
            raise ValueError(f"a Gamma duration needs a finite positive sd, got sd={sd!r}.")
        self.kind: Kind = kind
        self.mean = float(mean)
        self.sd = None if sd is None else float(sd)

    @classmethod
    def fixed(cls, days: float) -> Duration:
        return cls("fixed", days)

    @classmethod
    def geometric(cls, mean: float) -> Duration:
        return cls("geometric", mean)

    @classmethod
    def gamma(cls, mean: float, sd: float) -> Duration:
        return cls("gamma", mean, sd)

    def pmf(self, dt: float) -> Tensor:
        """``P(D = k)`` for ``k = 1 .. K`` steps, as a float64 tensor ``[K]`` summing to 1."""
        _check_dt(dt)
        if self.kind == "fixed":
            steps = self.mean / dt
            if abs(steps - round(steps)) > 1e-9 * max(1.0, steps) or round(steps) < 1:
                raise ValueError(
                    f"a fixed duration of {self.mean:g} is not a whole number (>= 1) of steps of "
                    f"dt = {dt:g}; choose dt dividing it, or a geometric or Gamma duration."
                )
            _check_steps(round(steps), repr(self), dt)
            out = torch.zeros(round(steps), dtype=torch.float64)
            out[-1] = 1.0
            return out
        if self.kind == "geometric":
            h = dt / self.mean
            if h > 1:
                raise ValueError(
                    f"a geometric duration of mean {self.mean:g} is shorter than one step "
                    f"(dt = {dt:g}); use a smaller dt."
                )
            if h == 1:
                return torch.ones(1, dtype=torch.float64)
            k_max = max(1, math.ceil(math.log(TAIL) / math.log1p(-h)))
            _check_steps(k_max, repr(self), dt)
            k = torch.arange(1, k_max + 1, dtype=torch.float64)
            out = h * (1 - h) ** (k - 1)
        else:
            assert self.sd is not None
            k_max = _steps_to_tail(self.mean, self.sd, dt, 0.5, repr(self))
            edges = (torch.arange(1, k_max + 1, dtype=torch.float64) + 0.5) * dt
            cdf = gamma_cdf(edges, self.mean, self.sd)
            out = torch.diff(cdf, prepend=torch.zeros(1, dtype=torch.float64))
        out[-1] += 1 - out.sum()
        return out

    def hazard(self, dt: float) -> Tensor:
        """``h[k] = P(D = k + 1 | D > k)``: the probability of leaving after the ``(k+1)``-th step
        in the stage, given the stay lasted that long (float64 ``[K]``, ``h[K - 1] = 1``)."""
        pmf = self.pmf(dt)
        at_risk = torch.flip(torch.cumsum(torch.flip(pmf, [0]), 0), [0])  # P(D >= k + 1)
        h = torch.where(at_risk > 0, pmf / at_risk.clamp_min(1e-300), torch.ones_like(pmf))
        h[-1] = 1.0
        return h.clamp(0, 1)

    def sample(self, n: int, dt: float, generator: torch.Generator | None = None) -> Tensor:
        """``n`` durations in time units (``steps * dt``), by inverse CDF of :meth:`pmf`."""
        n = check_int(n, "n")
        cdf = torch.cumsum(self.pmf(dt), 0)
        u = torch.rand(n, dtype=torch.float64, generator=generator)
        steps = torch.searchsorted(cdf, u, right=True).clamp_max(cdf.numel() - 1) + 1
        return steps.to(torch.float64) * dt

    def __repr__(self) -> str:
        if self.kind == "gamma":
            return f"Duration.gamma(mean={self.mean:g}, sd={self.sd:g})"
        return f"Duration.{self.kind}({self.mean:g})"


def _gamma_integral(x: Tensor, mean: float, sd: float) -> Tensor:
    """``G(x) = int_0^x F(y) dy = x F(x) - mean F_+(x)`` for the Gamma CDF ``F`` of this mean
    and sd, ``F_+`` the CDF of shape one higher and the same rate (float64)."""
    shape, rate = (mean / sd) ** 2, mean / sd**2
    upper = torch.special.gammainc(torch.full_like(x, shape + 1), rate * x)
    return x * gamma_cdf(x, mean, sd) - mean * upper


def kernel_share_before(
    age: float | Tensor, mean: float = 5.5, sd: float = 2.14, dt: float = 1.0
) -> Tensor:
    """The part of the ``within_step`` kernel's entry ``w[age / dt - 1]`` that falls before the
    infection age ``age``: an agent infected at a uniform time within its step reaches ``age``
    (a whole number of steps) at the same point within that step, which is where a stay that
    ends in that step ends (a fixed stay exactly; a random one on average).

    ``F(age) - (G(age) - G(age - dt)) / dt``, plus the infection step's own share for
    ``age = dt`` (see :func:`infectiousness_kernel`): summed with the entries before it, the
    infectiousness up to a whole number of steps is exactly ``F(age)`` whatever ``dt``.
    ``age`` may be a tensor of ages; float64 result of its shape.
    """
    ages = torch.as_tensor(age, dtype=torch.float64)
    steps = ages / dt
    if not bool(
        (torch.isfinite(steps) & (steps >= 1) & ((steps - steps.round()).abs() <= 1e-9 * steps))
        .all()
    ):
        raise ValueError(f"age {age!r} must be a whole number (>= 1) of steps of dt = {dt!r}.")
    g_end, g_start = _gamma_integral(ages, mean, sd), _gamma_integral(ages - dt, mean, sd)
    before = gamma_cdf(ages, mean, sd) - (g_end - g_start) / dt
    # the share within the infection step itself, folded into w[0]
    return torch.where(steps.round() == 1, before + g_end / dt, before)


def infectiousness_kernel(
    mean: float = 5.5,
    sd: float = 2.14,
    dt: float = 1.0,
    *,
    infection_time: Literal["within_step", "step_start"] = "within_step",
) -> Tensor:
    """The discretised Gamma infectiousness kernel ``w[k]``: the share of an infected agent's
    infectiousness that falls in the ``k``-th step after the step it was infected in.

    ``F`` is the Gamma CDF of this mean and sd (shape ``mean^2 / sd^2``, rate ``mean / sd^2``)
    and ``G(x) = int_0^x F(y) dy = x F(x) - mean F_+(x)``, with ``F_+`` the Gamma CDF of shape
    one higher and the same rate.

    * ``infection_time="within_step"`` (default): the agent was infected at a uniform time
      within its infection step, which is what a discrete-time run means: a step's hazard
      infects during the step. Averaging ``F((k + 2 - u) dt) - F((k + 1 - u) dt)`` over
      ``u ~ U(0, 1)`` gives ``w[k] = (G((k + 2) dt) - 2 G((k + 1) dt) + G(k dt)) / dt``; the
      small share within the infection step itself, ``G(dt) / dt``, is added to ``w[0]``. The
      mean time from one infection to the next is then ``mean`` whatever ``dt``.
    * ``infection_time="step_start"``: infected at the start of the step before ``w[0]``:
      ``w[k] = F((k + 1) dt) - F(k dt)`` (GradABM's discretisation). A run infects during a
      step and counts from its end, so this lengthens the generation time by ``dt / 2`` on
      average (6.0 days instead of 5.5 at ``dt = 1``).

    ``sum_k w[k] = 1``: an agent's infectiousness over its whole infection adds up to one
    whatever ``dt``. Float64 ``[K]``; the tail beyond ``1 - 1e-7`` is folded into the last
    entry. Defaults: mean 5.5 days, sd 2.14 days (the generation-time distribution of Ferretti
    et al. 2020, used by OpenABM-Covid19 and GradABM).
    """
    finite = all(isinstance(v, numbers.Real) and math.isfinite(v) for v in (mean, sd))
    if not (finite and mean > 0 and sd > 0):
        raise ValueError(
            f"kernel mean and sd must be finite and positive, got mean={mean!r}, sd={sd!r}."
        )
    if infection_time not in ("within_step", "step_start"):
        raise ValueError(
            f"infection_time={infection_time!r} is not a kernel timing; choose 'within_step' "
            f"or 'step_start'."
        )
    _check_dt(dt)
    k_max = _steps_to_tail(mean, sd, dt, 0.0, f"the infectiousness kernel (mean {mean:g})")
    if infection_time == "step_start":
        cdf = gamma_cdf(torch.arange(k_max + 1, dtype=torch.float64) * dt, mean, sd)
        w = torch.diff(cdf)
    else:
        g = _gamma_integral(torch.arange(k_max + 2, dtype=torch.float64) * dt, mean, sd)
        w = (g[2:] - 2 * g[1:-1] + g[:-2]) / dt
        w[0] += g[1] / dt
    w[-1] += 1 - w.sum()
    return w


def _check_dt(dt: object) -> None:
    if (
        isinstance(dt, bool)
        or not isinstance(dt, (int, float))
        or not (math.isfinite(dt) and dt > 0)
    ):
        raise ValueError(f"dt must be a finite positive step length, got {dt!r}.")


def _check_steps(steps: int, what: str, dt: float) -> None:
    if steps > MAX_STEPS:
        raise ValueError(
            f"{what} spans {steps:,} steps of dt = {dt:g}, more than {MAX_STEPS:,}; is the mean "
            "in the time unit of dt (days)? Choose a larger dt or a shorter duration."
        )


def _steps_to_tail(mean: float, sd: float, dt: float, offset: float, what: str) -> int:
    """The smallest ``k >= 1`` with ``1 - F((k + offset) dt) <= TAIL`` (``F`` the Gamma CDF),
    found on doubling grids of steps, at most :data:`MAX_STEPS`."""
    size = 64
    while True:
        steps = torch.arange(1, size + 1, dtype=torch.float64)
        done = ((1 - gamma_cdf((steps + offset) * dt, mean, sd)) <= TAIL).nonzero()
        if done.numel():
            return int(done[0]) + 1
        if size >= MAX_STEPS:
            _check_steps(MAX_STEPS + 1, what, dt)
        size = min(2 * size, MAX_STEPS)
