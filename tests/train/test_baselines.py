"""Baselines: the SEIRM ODE against scipy and the final-size relation; gradient-free
calibration recovers known parameters within its budget."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp
from scipy.optimize import brentq

from lpm_graph.train import Bounded, ParameterSet, Weekly
from lpm_graph.train.baselines import SEIRMODE, calibrate_gradient_free, seirm_ode
from lpm_graph.train.losses import normalized_mse

F64 = torch.float64
WEEKLY_R = [3.0, 2.4, 1.6, 1.1, 0.8, 0.9, 1.3, 1.0]


def _reference(r_daily, mortality, i0, sigma=1 / 3, gamma=1 / 5):
    """solve_ivp day by day (R is constant within a day): the compartments at t = 0..T
    and the cumulative onsets."""
    y = np.array([1 - i0, i0, 0.0, 0.0, 0.0, 0.0])
    path = [y]
    for r in r_daily:

        def rhs(_t, y, beta=r * gamma):
            infection, onset, exit_ = beta * y[0] * y[2], sigma * y[1], gamma * y[2]
            return [
                -infection,
                infection - onset,
                onset - exit_,
                (1 - mortality) * exit_,
                mortality * exit_,
                onset,
            ]

        y = solve_ivp(rhs, (0.0, 1.0), y, method="DOP853", rtol=1e-8, atol=1e-14).y[:, -1]
        path.append(y)
    return np.array(path)


def test_ode_matches_solve_ivp():
    r = torch.tensor(np.repeat(WEEKLY_R, 7), dtype=F64)
    out = seirm_ode(r, torch.tensor(0.02, dtype=F64), torch.tensor(1e-3, dtype=F64), 56)
    ref = _reference(r.numpy(), 0.02, 1e-3)
    flows = {
        "infections": -np.diff(ref[:, 0]),
        "recoveries": np.diff(ref[:, 3]),
        "deaths": np.diff(ref[:, 4]),
        "onsets": np.diff(ref[:, 5]),
    }
    for name, expected in flows.items():
        got = out[name].numpy()
        assert np.max(np.abs(got - expected) / np.abs(expected)) < 1e-4, name
    for k, c in enumerate("SEIRM"):
        assert np.max(np.abs(out[c].numpy() - ref[:, k])) < 1e-8, c
    # fewer substeps are measurably worse: the check above has teeth
    coarse = seirm_ode(
        r, torch.tensor(0.02, dtype=F64), torch.tensor(1e-3, dtype=F64), 56, substeps=1
    )
    assert np.max(np.abs(coarse["deaths"].numpy() - flows["deaths"]) / flows["deaths"]) > 1e-3


def test_ode_conserves_the_population_and_stays_non_negative():
    r = torch.tensor(np.repeat(WEEKLY_R, 7), dtype=F64)
    out = seirm_ode(r, torch.tensor(0.05, dtype=F64), torch.tensor(0.01, dtype=F64), 56)
    total = sum(out[c] for c in "SEIRM")
    assert torch.allclose(total, torch.ones_like(total), atol=1e-13, rtol=0)
    assert all(bool((out[c] >= 0).all()) for c in "SEIRM")
    assert all(bool((out[f] >= 0).all()) for f in SEIRMODE.FLOWS)


def test_ode_reaches_the_final_size_relation():
    # z = 1 - exp(-R0 z) for a tiny seed; R0 = 2
    z = brentq(lambda z: z - 1 + math.exp(-2.0 * z), 1e-3, 1.0)
    out = seirm_ode(torch.tensor(2.0, dtype=F64), torch.tensor(0.0, dtype=F64),
                    torch.tensor(1e-7, dtype=F64), 600)  # fmt: skip
    assert float(1 - out["S"][-1]) == pytest.approx(z, rel=1e-4)


def test_ode_gradcheck():
    weekly = torch.tensor([2.5, 1.2], dtype=F64, requires_grad=True)
    mortality = torch.tensor(0.03, dtype=F64, requires_grad=True)
    i0 = torch.tensor(0.01, dtype=F64, requires_grad=True)

    def fn(weekly, mortality, i0):
        out = seirm_ode(weekly.repeat_interleave(7), mortality, i0, 14, substeps=2)
        return out["deaths"], out["infections"], out["onsets"]

    assert torch.autograd.gradcheck(fn, (weekly, mortality, i0))


def _model(r=WEEKLY_R, m=0.02, **kwargs):
    params = ParameterSet(
        {
            "reproduction_number": Weekly(torch.tensor(r), 8, 0.3, 5.0),
            "mortality": Bounded(m, 0.0, 0.1),
        }
    )
    kwargs = {"initial_infected": 1e-4, "outputs": ("deaths", "infections"), **kwargs}
    return SEIRMODE(1e6, 56, params, **kwargs)


def test_model_interface():
    model = _model().double()
    out = model()
    assert set(out) == {"deaths", "infections"}
    assert all(v.shape == (56,) and v.dtype == F64 for v in out.values())
    assert torch.equal(model(seed=3)["deaths"], out["deaths"])  # seed is accepted, ignored
    out["deaths"].sum().backward()
    raw = model.params["reproduction_number"].values.raw
    assert raw.grad is not None and bool((raw.grad[:-1] > 0).all())
    assert model.params["mortality"].raw.grad > 0
    values = model.values()
    assert values["mortality"].item() == pytest.approx(0.02)
    # more transmission, more deaths
    higher = _model([r * 1.1 for r in WEEKLY_R]).double()
    assert float(higher()["deaths"].sum().detach()) > float(out["deaths"].sum().detach())


def test_initial_infected_module_is_learnable():
    seed = Bounded(1e-3, 0.0, 0.1)
    model = SEIRMODE(1e5, 20, None, initial_infected=seed)
    model()["deaths"].sum().backward()
    assert seed.raw.grad > 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"outputs": ("cases",)}, r"not flows; choose from"),
        ({"initial_infected": 1.5}, r"fraction and must be in \(0, 1\)"),
        ({"substeps": 0}, r"substeps must be a positive int"),
        ({"exposed_days": 0.0}, r"exposed_days must be a finite positive"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SEIRMODE(1e5, 10, **kwargs)


def test_bad_parameters_raise():
    wrong = SEIRMODE(1e5, 10, ParameterSet({"beta": Bounded(0.2, 0.0, 1.0)}))
    with pytest.raises(ValueError, match=r"no parameter \['beta'\].*reproduction_number"):
        wrong()
    by_age = SEIRMODE(1e5, 10, mortality=torch.full((8,), 0.01))
    with pytest.raises(ValueError, match=r"no age groups"):
        by_age()


# ---------------------------------------------------------------------- gradient-free


def _target(model):
    with torch.no_grad():
        return {k: v.clone() for k, v in model().items()}


@pytest.fixture
def problem():
    """Observed deaths and infections of a known weekly R and mortality; a model started at
    R = 1.5 every week and mortality 0.05. One RK4 substep keeps evaluations cheap (target and
    model share the integrator, so the optimum is exact)."""
    truth = _model(substeps=1).double()
    start = _model([1.5] * 8, 0.05, substeps=1).double()
    return truth, start, _target(truth)


def test_nelder_mead_recovers_known_parameters(problem):
    truth, model, target = problem
    result = calibrate_gradient_free(model, target, slice(0, 56), budget=1500)
    assert result.evaluations <= 1500
    weekly = model.params["reproduction_number"].weekly().detach()
    assert torch.allclose(weekly, torch.tensor(WEEKLY_R, dtype=F64), rtol=1e-3)
    assert model.params["mortality"]().item() == pytest.approx(0.02, rel=1e-3)
    assert result.loss < 1e-8 < result.history[0]
    assert result.loss == pytest.approx(min(result.history))
    assert result.parameters["params.mortality.raw"] == model.params["mortality"].raw
    assert result.wall_time > 0


@pytest.mark.parametrize("method", ["nelder-mead", "differential-evolution", "cma", "tpe"])
@pytest.mark.parametrize("budget", [7, 150])
def test_budget_is_respected_and_the_loss_decreases(problem, method, budget):
    _, model, target = problem
    with torch.no_grad():
        start = float(normalized_mse(model(), target, slice(0, 42)))
    result = calibrate_gradient_free(model, target, slice(0, 42), method=method, budget=budget)
    assert result.evaluations == len(result.history) <= budget
    assert result.evaluations >= min(budget, 10)
    assert result.loss == min(result.history)
    if budget == 150:  # DE's population of 9 x 9 barely starts its 2nd generation
        assert result.loss < (1.0 if method == "differential-evolution" else 0.5) * start
    with torch.no_grad():  # the best point is the one left in the model
        assert float(normalized_mse(model(), target, slice(0, 42))) == pytest.approx(result.loss)


def test_tpe_starts_from_the_current_values(problem):
    _, model, target = problem
    with torch.no_grad():
        start = float(normalized_mse(model(), target, slice(0, 42)))
    result = calibrate_gradient_free(model, target, slice(0, 42), method="tpe", budget=3)
    assert result.history[0] == pytest.approx(start)


@pytest.mark.parametrize("method", ["differential-evolution", "cma", "tpe"])
def test_stochastic_methods_are_seeded(problem, method):
    _, model, target = problem
    state = {k: v.clone() for k, v in model.state_dict().items()}
    runs = []
    for seed in (3, 3, 4):
        model.load_state_dict(state)
        runs.append(
            calibrate_gradient_free(
                model, target, slice(0, 42), method=method, budget=40, seed=seed
            )
        )
    assert runs[0].history == runs[1].history
    assert runs[0].history != runs[2].history  # the seed is used


@pytest.mark.parametrize(("method", "package"), [("cma", "cmaes"), ("tpe", "optuna")])
def test_missing_optional_package_names_the_extra(problem, monkeypatch, method, package):
    _, model, target = problem
    monkeypatch.setitem(sys.modules, package, None)
    match = rf"method='{method}' needs the {package} package: pip install 'lpm-graph\[calibrate\]'"
    with pytest.raises(ImportError, match=match):
        calibrate_gradient_free(model, target, slice(0, 42), method=method, budget=10)


def test_tpe_leaves_optuna_logging_as_it_was(problem):
    optuna = pytest.importorskip("optuna")
    _, model, target = problem
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.DEBUG)
    try:
        calibrate_gradient_free(model, target, slice(0, 42), method="tpe", budget=3)
        assert optuna.logging.get_verbosity() == optuna.logging.DEBUG
    finally:
        optuna.logging.set_verbosity(before)


@pytest.mark.parametrize("method", ["nelder-mead", "cma", "tpe"])
def test_time_limit_cuts_the_seeded_run(problem, method):
    _, model, target = problem
    state = {k: v.clone() for k, v in model.state_dict().items()}
    full = calibrate_gradient_free(model, target, slice(0, 42), method=method, budget=60)
    model.load_state_dict(state)
    cut = calibrate_gradient_free(
        model, target, slice(0, 42), method=method, budget=60, time_limit=1e-9
    )
    assert cut.evaluations == 1  # the first evaluation always runs
    assert cut.history == full.history[:1]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "bfgs"}, r"method='bfgs' is not known"),
        ({"budget": 0}, r"budget must be a positive int"),
        ({"bounds": (1.0, -1.0)}, r"low < high"),
        ({"method": "cma", "step": 0.0}, r"step must be a finite positive number .* got 0.0"),
        ({"method": "tpe", "bounds": (2.0, 2.0)}, r"low < high"),
        ({"method": "tpe", "time_limit": -1.0}, r"time_limit must be a finite positive"),
    ],
)
def test_bad_calibration_arguments_raise(problem, kwargs, match):
    _, model, target = problem
    args = {"budget": 10, **kwargs}
    with pytest.raises(ValueError, match=match):
        calibrate_gradient_free(model, target, slice(0, 42), **args)
