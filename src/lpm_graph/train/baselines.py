r"""Baselines: the compartmental SEIRM ODE as a model, and gradient-free calibration.

Both have the interface of every model of :mod:`lpm_graph.train`: an ``nn.Module`` whose
call returns ``{observable: [T] daily series}``, driven by parameter modules
(:class:`~lpm_graph.train.Weekly`, :class:`~lpm_graph.train.Bounded`, ...) that store
their values unconstrained.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .losses import Days, normalized_mse

__all__ = ["GRADIENT_FREE_METHODS", "GradientFreeResult", "SEIRMODE", "calibrate_gradient_free"]


class SEIRMODE(nn.Module):
    r"""The well-mixed SEIRM ODE, integrated with fixed-step RK4, as a forecasting model.

    With ``S, E, I, R, M`` the fractions of a population of size ``population``:

    .. math::
        \dot S = -\beta(t) S I, \quad
        \dot E = \beta(t) S I - \sigma E, \quad
        \dot I = \sigma E - \gamma I, \quad
        \dot R = (1 - m)\, \gamma I, \quad
        \dot M = m\, \gamma I,

    with :math:`\beta(t) = R(t)\, \gamma`, :math:`\sigma = 1 / d_E` and
    :math:`\gamma = 1 / d_I`. The daily flows are the integrals over each day, e.g. deaths on
    day ``t`` are :math:`N (M(t + 1) - M(t))` and infections :math:`N (S(t) - S(t + 1))`.

    Mapping to :class:`~lpm_graph.protocols.SEIRM`: the defaults ``d_E = 3`` and ``d_I = 5``
    days are SEIRM's default stays (fixed there, exponential here, same means); ``R(t)`` is
    the number of infections one infectious agent causes in a fully susceptible population
    in both (``beta / gamma`` here; ``R`` times the mean susceptibility times the kernel's
    mass in SEIRM, whose normalisation by mean contacts makes the contact count drop out);
    ``m`` is the probability of death on leaving I in both, and the initial infections
    start in E in both. What differs is the timing (an exponential generation interval of
    mean ``d_E + d_I`` = 8 days against SEIRM's Gamma kernel of mean 5.5 days), the absence
    of age groups (one mortality) and of network structure (well mixed): at equal ``R`` the
    ODE grows more slowly and reaches the mean-field final size.

    ``R(t)`` is held constant within each day (the value of step ``t``, as in SEIRM), so the
    right-hand side is smooth within a day and RK4's error falls as ``substeps ** -4``:
    against ``scipy.integrate.solve_ivp`` (rtol 1e-10) over 8 weeks of weekly ``R`` from 3
    to 0.9, the largest relative error of a daily flow is 5e-3 with 1 substep, 1.3e-5 with
    4 (the default) and 7e-7 with 8.
    ``S + E + I + R + M = 1`` holds to rounding (RK4 keeps linear invariants).

    Args:
        population: population size ``N`` (every output is a count: ``N`` times a fraction).
        steps: days ``T`` simulated.
        parameters: a module returning a subset of ``{"reproduction_number": [T] or scalar,
            "mortality": scalar}`` (e.g. a :class:`~lpm_graph.train.ParameterSet` of a
            ``Weekly`` and a ``Bounded``); values it does not return are the fixed ones below.
        initial_infected: the fraction initially infected (in E), a float in ``(0, 1)``, a
            scalar tensor, or a module returning one (learnable).
        outputs: daily flows returned, among :attr:`FLOWS`.
        reproduction_number: fixed ``R`` when ``parameters`` does not give it.
        mortality: fixed ``m`` when ``parameters`` does not give it.
        exposed_days: mean stay ``d_E`` in E (days).
        infectious_days: mean stay ``d_I`` in I (days).
        substeps: RK4 steps per day.

    Shapes:
        ``model()`` -> ``{name: [T]}`` for ``name`` in ``outputs``.
    """

    FLOWS: tuple[str, ...] = ("infections", "onsets", "recoveries", "deaths")
    PARAMETERS: tuple[str, ...] = ("reproduction_number", "mortality")

    def __init__(
        self,
        population: float,
        steps: int,
        parameters: nn.Module | None = None,
        *,
        initial_infected: float | Tensor | nn.Module = 0.01,
        outputs: Sequence[str] = ("deaths",),
        reproduction_number: float | Tensor = 2.5,
        mortality: float | Tensor = 0.01,
        exposed_days: float = 3.0,
        infectious_days: float = 5.0,
        substeps: int = 4,
    ) -> None:
        super().__init__()
        if not (isinstance(population, (int, float)) and population > 0):
            raise ValueError(f"population must be a positive number, got {population!r}.")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive int, got {steps!r}.")
        if isinstance(substeps, bool) or not isinstance(substeps, int) or substeps < 1:
            raise ValueError(f"substeps must be a positive int, got {substeps!r}.")
        for name, days in (("exposed_days", exposed_days), ("infectious_days", infectious_days)):
            if not (isinstance(days, (int, float)) and math.isfinite(days) and days > 0):
                raise ValueError(f"{name} must be a finite positive number, got {days!r}.")
        unknown = sorted(set(outputs) - set(self.FLOWS))
        if unknown or not outputs:
            raise ValueError(f"outputs {unknown or '()'} are not flows; choose from {self.FLOWS}.")
        if parameters is not None and not callable(parameters):
            raise ValueError("parameters must be a module returning {name: tensor}.")
        if isinstance(initial_infected, float) and not 0 < initial_infected < 1:
            raise ValueError(
                f"initial_infected={initial_infected!r} is a fraction and must be in (0, 1)."
            )
        self.params = parameters
        self.initial_infected = initial_infected
        self.population = float(population)
        self._steps = steps
        self.outputs = tuple(outputs)
        self.substeps = substeps
        self.sigma = 1.0 / exposed_days
        self.gamma = 1.0 / infectious_days
        dtype = torch.get_default_dtype()
        self.register_buffer(
            "reproduction_number", torch.as_tensor(reproduction_number, dtype=dtype)
        )
        self.register_buffer("mortality", torch.as_tensor(mortality, dtype=dtype))

    @property
    def steps(self) -> int:
        return self._steps

    def forward(self, seed: int | None = None) -> dict[str, Tensor]:
        """The daily flows named by ``outputs``; ``seed`` is accepted for the common model
        interface and ignored (the ODE is deterministic)."""
        values = self._values()
        r, m = values["reproduction_number"], values["mortality"]
        if r.dim() > 1 or m.dim() > 0:
            raise ValueError(
                "SEIRMODE takes a scalar or [T] reproduction_number and a scalar mortality "
                f"(it has no age groups), got shapes {list(r.shape)} and {list(m.shape)}."
            )
        dtype = torch.promote_types(r.dtype, m.dtype)
        i0 = self.initial_infected
        if isinstance(i0, nn.Module):
            i0 = i0()
        i0 = torch.as_tensor(i0, dtype=dtype, device=r.device)
        dtype = torch.promote_types(dtype, i0.dtype)
        series = seirm_ode(
            r.to(dtype),
            m.to(dtype),
            i0.to(dtype),
            self.steps,
            sigma=self.sigma,
            gamma=self.gamma,
            substeps=self.substeps,
        )
        return {name: series[name] * self.population for name in self.outputs}

    def _values(self) -> dict[str, Tensor]:
        values = {"reproduction_number": self.reproduction_number, "mortality": self.mortality}
        if self.params is not None:
            given = self.params()
            unknown = sorted(set(given) - set(self.PARAMETERS))
            if unknown:
                raise ValueError(
                    f"SEIRMODE has no parameter {unknown}; the parameter modules must be "
                    f"named among {self.PARAMETERS}."
                )
            values.update(given)
        return values

    def values(self) -> Mapping[str, Tensor]:
        """The current parameter values (detached), for reports."""
        with torch.no_grad():
            return {k: v.detach().clone() for k, v in self._values().items()}

    def extra_repr(self) -> str:
        return (
            f"population={self.population:g}, steps={self.steps}, substeps={self.substeps}, "
            f"sigma={self.sigma:g}, gamma={self.gamma:g}"
        )


def seirm_ode(
    reproduction_number: Tensor,
    mortality: Tensor,
    initial_infected: Tensor,
    steps: int,
    *,
    sigma: float = 1 / 3,
    gamma: float = 1 / 5,
    substeps: int = 4,
) -> dict[str, Tensor]:
    """The SEIRM ODE of :class:`SEIRMODE` as a function: daily flows and compartments.

    Returns ``{"infections", "onsets", "recoveries", "deaths": [T]}`` (fractions of the
    population per day) and ``{"S", "E", "I", "R", "M": [T + 1]}`` (fractions at the start
    of each day and after the last), differentiable in the three tensor arguments.

    The integrator carries ``S``, ``E``, ``I``, the cumulative exits from I (``R + M``:
    ``R = (1 - m) X``, ``M = m X`` for a constant ``m``) and the cumulative onsets. When no
    gradient is needed (``torch.no_grad()`` or no argument requiring one, as in gradient-free
    calibration) the same arithmetic runs on Python floats in double precision, about 50x
    faster than on 0-d tensors; results differ only by the rounding of the tensors' dtype.
    """
    r, m, i0 = reproduction_number, mortality, initial_infected
    dtype = torch.promote_types(torch.promote_types(r.dtype, m.dtype), i0.dtype)
    tracked = torch.is_grad_enabled() and any(x.requires_grad for x in (r, m, i0))
    r_daily = r.reshape(-1) if r.dim() else r.reshape(1)
    if tracked:
        zero = torch.zeros((), dtype=dtype, device=r.device)
        betas = [r_daily[min(t, r_daily.shape[0] - 1)] * gamma for t in range(steps)]
        path = _rk4(betas, i0.to(dtype), zero, sigma, gamma, substeps)
        table = torch.stack([torch.stack(row) for row in path])  # [T + 1, 5]
    else:
        values = r_daily.tolist()
        betas = [values[min(t, len(values) - 1)] * gamma for t in range(steps)]
        path = _rk4(betas, float(i0), 0.0, sigma, gamma, substeps)
        table = torch.tensor(path, dtype=torch.float64, device=r.device).to(dtype)
    s, e, i, exits, onsets = table.unbind(1)
    m = m.to(dtype)
    out = {"S": s, "E": e, "I": i, "R": (1 - m) * exits, "M": m * exits}
    left = exits[1:] - exits[:-1]
    out.update(
        infections=s[:-1] - s[1:],
        onsets=onsets[1:] - onsets[:-1],
        recoveries=(1 - m) * left,
        deaths=m * left,
    )
    return out


def _rk4(
    betas: Sequence[Any], i0: Any, zero: Any, sigma: float, gamma: float, substeps: int
) -> list[tuple[Any, ...]]:
    """Classical RK4 on ``(S, E, I, exits, onsets)``, one list entry per day, with the
    transmission rate ``betas[t]`` held over day ``t``. Plain arithmetic only, so that the
    values may be Python floats or 0-d tensors (autograd)."""
    h = 1.0 / substeps
    y = (1 - i0, i0 + zero, zero, zero, zero)
    path = [y]
    for beta in betas:

        def rate(s: Any, e: Any, i: Any, beta: Any = beta) -> tuple[Any, ...]:
            infection, onset, exit_ = beta * s * i, sigma * e, gamma * i
            return (-infection, infection - onset, onset - exit_, exit_, onset)

        for _ in range(substeps):
            s, e, i = y[:3]
            k1 = rate(s, e, i)
            k2 = rate(s + h / 2 * k1[0], e + h / 2 * k1[1], i + h / 2 * k1[2])
            k3 = rate(s + h / 2 * k2[0], e + h / 2 * k2[1], i + h / 2 * k2[2])
            k4 = rate(s + h * k3[0], e + h * k3[1], i + h * k3[2])
            y = tuple(
                v + h / 6 * (a + 2 * b + 2 * c + d) for v, a, b, c, d in zip(y, k1, k2, k3, k4)
            )
        path.append(y)
    return path


# ---------------------------------------------------------------------- gradient-free calibration

GRADIENT_FREE_METHODS: tuple[str, ...] = ("nelder-mead", "differential-evolution", "cma", "tpe")
"""Methods of :func:`calibrate_gradient_free` (``"cma"`` and ``"tpe"`` need the
``calibrate`` extra: ``pip install 'lpm-graph[calibrate]'``)."""

_EXTRA = "pip install 'lpm-graph[calibrate]'"

Loss = Callable[[Mapping[str, Tensor], Mapping[str, Tensor], Days], Tensor]


@dataclass
class GradientFreeResult:
    """The outcome of :func:`calibrate_gradient_free`.

    Attributes:
        parameters: the best raw (unconstrained) parameter values, by
            ``model.named_parameters()`` name; already written back into the model.
        loss: the loss at those values.
        evaluations: model evaluations made (at most the budget).
        wall_time: seconds spent.
        history: the loss of every evaluation, in order (its running minimum is the
            optimiser's progress).
    """

    parameters: dict[str, Tensor]
    loss: float
    evaluations: int
    wall_time: float
    history: list[float] = field(repr=False)


class _BudgetSpent(Exception):
    """Raised by the objective instead of evaluating past the budget."""


def calibrate_gradient_free(
    model: nn.Module,
    target: Mapping[str, Tensor],
    train: Days,
    *,
    method: str = "nelder-mead",
    budget: int,
    loss: Loss | None = None,
    seed: int = 0,
    bounds: tuple[float, float] = (-6.0, 6.0),
    step: float = 0.5,
    time_limit: float | None = None,
) -> GradientFreeResult:
    r"""Calibrate ``model`` to ``target`` without gradients, within ``budget`` model runs
    (and ``time_limit`` seconds, if given).

    The search space is the flattened raw (unconstrained) values of every parameter with
    ``requires_grad``, in ``model.named_parameters()`` order, so the constraints of
    :class:`~lpm_graph.train.Bounded` and friends hold everywhere. Each evaluation runs
    ``model()`` under ``torch.no_grad()`` and computes ``loss(model(), target, train)``
    (default :func:`~lpm_graph.train.losses.normalized_mse`, the Trainer's). The objective
    counts its calls and stops the optimiser at ``budget``, so ``evaluations <= budget``
    whatever the method (and at the first call after ``time_limit`` seconds, the optimiser's
    own work included); the best point seen is written back into the model.

    Methods (:data:`GRADIENT_FREE_METHODS`):

    ``"nelder-mead"``
        ``scipy.optimize.minimize(method="Nelder-Mead")`` from the model's current values,
        with an initial simplex of side ``step`` (adaptive coefficients in more than 5
        dimensions).
    ``"differential-evolution"``
        ``scipy.optimize.differential_evolution`` over the box ``bounds`` on every raw value
        (the current values are one member of the first population; no final polish, which
        would spend evaluations outside the count). The population is ``popsize * D`` with
        ``popsize`` between 1 and 15, chosen for at least 10 generations within the budget.
    ``"cma"``
        CMA-ES (:class:`cmaes.CMA`, ask/tell) with mean the current values (clipped to
        ``bounds``), step ``sigma = step`` and the library's default population
        (``4 + 3 ln D``), within the box ``bounds``; it stops early when its own
        convergence test (``should_stop``) holds.
    ``"tpe"``
        Optuna's Tree-structured Parzen Estimator (:class:`optuna.samplers.TPESampler`,
        default settings) over the box ``bounds`` on every raw value, the current values
        being the first trial. One trial is one evaluation. Optuna's log is silenced
        during the call (its verbosity is restored after).

    ``"cma"`` and ``"tpe"`` need the ``calibrate`` extra (``cmaes``, ``optuna``), imported
    only when asked for. Every method is deterministic given ``seed`` (Nelder-Mead does not
    use it).

    Args:
        model: any model of :mod:`lpm_graph.train` (``model()`` -> ``{name: [T]}``).
        target: observed series ``{name: [T]}`` (NaN where missing).
        train: the days fitted (a slice, mask or indices).
        method: see above.
        budget: maximum number of model evaluations.
        loss: ``loss(prediction, target, train) -> scalar``.
        seed: seed of the stochastic optimisers.
        bounds: box on the raw values (differential evolution, CMA-ES and TPE).
        step: initial step in raw units (Nelder-Mead simplex, CMA-ES sigma).
        time_limit: seconds after which no further evaluation starts (``None``: no limit;
            the first evaluation always runs). The points evaluated are those of the run
            without it, only fewer: a run cut by time is a prefix of the seeded run.
    """
    if method not in GRADIENT_FREE_METHODS:
        raise ValueError(f"method={method!r} is not known; choose one of {GRADIENT_FREE_METHODS}.")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"budget must be a positive int (model evaluations), got {budget!r}.")
    low, high = (float(b) for b in bounds)
    if not low < high:
        raise ValueError(f"bounds must be (low, high) with low < high, got {bounds!r}.")
    if not (isinstance(step, (int, float)) and math.isfinite(step) and step > 0):
        raise ValueError(
            f"step must be a finite positive number (raw units), got {step!r}; e.g. step=0.5."
        )
    if time_limit is not None and not (
        isinstance(time_limit, (int, float)) and math.isfinite(time_limit) and time_limit > 0
    ):
        raise ValueError(
            f"time_limit must be a finite positive number of seconds or None, got {time_limit!r}."
        )
    optimiser = _import_optimiser(method)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("the model has no parameter with requires_grad to calibrate.")
    loss_fn = loss or normalized_mse
    sizes = [p.numel() for _, p in named]
    x0 = np.concatenate([p.detach().cpu().double().reshape(-1).numpy() for _, p in named])
    dim = x0.size

    def write(x: np.ndarray) -> None:
        with torch.no_grad():
            for (_, p), chunk in zip(
                named, np.split(np.asarray(x, dtype=np.float64), np.cumsum(sizes)[:-1])
            ):
                p.copy_(torch.from_numpy(chunk).reshape(p.shape).to(p.dtype))

    history: list[float] = []
    best: dict[str, object] = {"loss": math.inf, "x": x0.copy()}

    def objective(x: np.ndarray) -> float:
        if len(history) >= budget or (  # at least one evaluation, whatever the time
            history and time_limit is not None and time.perf_counter() - start > time_limit
        ):
            raise _BudgetSpent
        write(x)
        with torch.no_grad():
            value = float(loss_fn(model(), target, train))
        if not math.isfinite(value):
            value = math.inf
        history.append(value)
        if value < best["loss"]:  # type: ignore[operator]
            best.update(loss=value, x=np.array(x, dtype=np.float64))
        return value

    start = time.perf_counter()
    try:
        if method == "nelder-mead":
            from scipy.optimize import minimize

            simplex = np.vstack([x0, x0 + step * np.eye(dim)])
            minimize(
                objective,
                x0,
                method="Nelder-Mead",
                options={
                    "maxfev": budget,
                    "maxiter": 10 * budget,
                    "initial_simplex": simplex,
                    "adaptive": dim > 5,
                    "xatol": 1e-8,
                    "fatol": 1e-12,
                },
            )
        elif method == "differential-evolution":
            from scipy.optimize import differential_evolution

            popsize = int(min(15, max(1, budget // (10 * dim))))
            members = max(popsize * dim, 5)
            kwargs: dict[str, object] = {
                "maxiter": max(budget // members - 1, 0),
                "popsize": popsize,
                "polish": False,
                "x0": np.clip(x0, low, high),
            }
            if "rng" in inspect.signature(differential_evolution).parameters:
                kwargs["rng"] = np.random.default_rng(seed)
            else:  # scipy < 1.15
                kwargs["seed"] = seed
            differential_evolution(objective, [(low, high)] * dim, **kwargs)
        elif method == "cma":
            box = np.tile([low, high], (dim, 1))  # [D, 2]
            es = optimiser(mean=np.clip(x0, low, high), sigma=float(step), bounds=box, seed=seed)
            while not es.should_stop():
                points = [es.ask() for _ in range(es.population_size)]
                es.tell([(x, objective(x)) for x in points])
        else:
            _tpe(optimiser, objective, np.clip(x0, low, high), low, high, budget, seed)
    except _BudgetSpent:
        pass
    wall = time.perf_counter() - start
    x_best = best["x"]
    assert isinstance(x_best, np.ndarray)
    write(x_best)
    parameters = {n: p.detach().clone() for n, p in named}
    return GradientFreeResult(parameters, float(best["loss"]), len(history), wall, history)  # type: ignore[arg-type]


def _import_optimiser(method: str) -> Any:
    """The optional optimiser behind ``method`` (``cmaes.CMA``, the ``optuna`` module), or
    ``None`` for the scipy methods; a missing package is an ImportError naming the extra."""
    if method not in ("cma", "tpe"):
        return None
    package = {"cma": "cmaes", "tpe": "optuna"}[method]
    try:
        if method == "cma":
            from cmaes import CMA

            return CMA
        import optuna

        return optuna
    except ImportError as err:
        raise ImportError(
            f"method={method!r} needs the {package} package: {_EXTRA}; or use "
            "method='nelder-mead' or 'differential-evolution' (scipy only)."
        ) from err


def _tpe(
    optuna: Any,
    objective: Callable[[np.ndarray], float],
    x0: np.ndarray,
    low: float,
    high: float,
    budget: int,
    seed: int,
) -> None:
    """Optuna's TPE over the box ``[low, high] ** D`` for ``budget`` trials, ``x0`` first."""
    names = [f"x{k}" for k in range(x0.size)]
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a line per trial otherwise
    try:
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
        study.enqueue_trial(dict(zip(names, x0.tolist())))

        def trial_objective(trial: Any) -> float:
            return objective(np.array([trial.suggest_float(n, low, high) for n in names]))

        study.optimize(trial_objective, n_trials=budget)
    finally:
        optuna.logging.set_verbosity(verbosity)
