"""Bad input to training: parameter modules, the simulator model, the Trainer and its
targets, metrics, sensitivities and the county experiment's settings. Every case is a
ValueError naming the argument and the fix, raised before the first model evaluation (a bad
target used to surface only as a NaN loss after an epoch). Table-driven."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from lpm_graph.datasets import erdos_renyi
from lpm_graph.protocols import SEIRM
from lpm_graph.train import (
    Bounded,
    ParameterSet,
    Positive,
    SimulatorModel,
    Trainer,
    Weekly,
    calibrate_gradient_free,
    finite_difference,
    forecast_metrics,
    mae,
    normalized_mse,
    rmse,
    sensitivity,
)
from lpm_graph.train.experiment import CountyExperiment

N, T = 20, 10
nan, inf = math.nan, math.inf


@pytest.fixture(scope="module")
def graph():
    g = erdos_renyi(N, 3.0, seed=0)
    g.set_node_attrs(age_group=torch.arange(N) % 8)
    return g


def _model(g, **kwargs):
    params = ParameterSet({"reproduction_number": Bounded(2.0, 0.5, 6.0)})
    options = {"initial_infected": 0.1, "outputs": ("infections",), "mode": "expected"}
    return SimulatorModel(SEIRM(learnable=False), g, T, params, **{**options, **kwargs})


def _fit(g, target, train=slice(0, 5), **kwargs):
    if not isinstance(target, dict):
        target = {"infections": target}
    return Trainer(_model(g)).fit(target, train, **{"epochs": 1, **kwargs})


def _series(*values):
    return torch.tensor([*values] + [1.0] * (T - len(values)))


CASES = [
    # (id, call(graph), error class, phrase)
    (
        "Bounded low above high",
        lambda g: Bounded(1.0, 2.0, 1.0),
        ValueError,
        "Bounded needs low < high, got low=2.0, high=1.0",
    ),
    (
        "Bounded value outside",
        lambda g: Bounded(5.0, 0.0, 1.0),
        ValueError,
        "must lie strictly inside (0.0, 1.0)",
    ),
    (
        "Bounded NaN value",
        lambda g: Bounded(nan, 0.0, 1.0),
        ValueError,
        "Bounded initial value nan",
    ),
    ("Bounded NaN bound", lambda g: Bounded(0.5, nan, 1.0), ValueError, "low=nan"),
    (
        "Bounded a str",
        lambda g: Bounded("0.5", 0.0, 1.0),
        ValueError,
        "Bounded needs numbers or tensors, got value='0.5'",
    ),
    ("Positive negative", lambda g: Positive(-1.0), ValueError, "must be finite and > 0, got -1.0"),
    (
        "Weekly 0 weeks",
        lambda g: Weekly(1.0, 0, 0.0, 2.0),
        ValueError,
        "weeks must be a positive int, got 0",
    ),
    (
        "ParameterSet of a float",
        lambda g: ParameterSet({"r": 2.0}),
        ValueError,
        "ParameterSet['r'] must be a parameter module, e.g. Bounded(2.0, low, high)",
    ),
    (
        "SimulatorModel graph None",
        lambda g: SimulatorModel(SEIRM(learnable=False), None, T, ParameterSet({})),
        ValueError,
        "graph must be a lpm_graph.PopulationGraph, got NoneType",
    ),
    (
        "SimulatorModel steps negative",
        lambda g: SimulatorModel(SEIRM(learnable=False), g, -1, ParameterSet({})),
        ValueError,
        "steps must be a non-negative int, got -1",
    ),
    (
        "SimulatorModel parameters a dict",
        lambda g: SimulatorModel(SEIRM(learnable=False), g, T, {"a": 1}),
        ValueError,
        "parameters must be a module",
    ),
    (
        "SimulatorModel outputs a str",
        lambda g: _model(g, outputs="infections"),
        ValueError,
        "write outputs=['infections']",
    ),
    (
        "SimulatorModel outputs empty",
        lambda g: _model(g, outputs=()),
        ValueError,
        "outputs must be a non-empty list",
    ),
    (
        "SimulatorModel an unknown output",
        lambda g: _model(g, outputs=("hospital",))(),
        ValueError,
        "output 'hospital' is not a flow of SEIRM",
    ),
    (
        "SimulatorModel scale NaN",
        lambda g: _model(g, scale=nan),
        ValueError,
        "scale must be a finite number in (0, inf], got nan",
    ),
    (
        "SimulatorModel scale negative",
        lambda g: _model(g, scale=-1.0),
        ValueError,
        "scale must be a finite number in (0, inf], got -1.0",
    ),
    ("SimulatorModel scale a str", lambda g: _model(g, scale="2"), ValueError, "got '2'"),
    (
        "SimulatorModel mode unknown",
        lambda g: _model(g, mode="exact"),
        ValueError,
        "mode='exact' is not a simulation mode",
    ),
    (
        "SimulatorModel a parameter the protocol lacks",
        lambda g: SimulatorModel(
            SEIRM(learnable=False), g, T, ParameterSet({"beta": Bounded(2.0, 0.5, 6.0)})
        )(),
        ValueError,
        "SEIRM has no parameter 'beta'",
    ),
    (
        "Trainer of a function",
        lambda g: Trainer(lambda: 1),
        ValueError,
        "model must be an nn.Module, got function",
    ),
    (
        "Trainer lr 0",
        lambda g: Trainer(_model(g), lr=0),
        ValueError,
        "lr must be a finite number > 0, got 0",
    ),
    (
        "Trainer lr NaN",
        lambda g: Trainer(_model(g), lr=nan),
        ValueError,
        "lr must be a finite number > 0, got nan",
    ),
    (
        "Trainer clip negative",
        lambda g: Trainer(_model(g), clip=-1),
        ValueError,
        "clip must be a number > 0",
    ),
    (
        "Trainer an unknown loss",
        lambda g: Trainer(_model(g), loss="l1"),
        ValueError,
        "unknown loss 'l1'",
    ),
    (
        "Trainer patience 0",
        lambda g: Trainer(_model(g), patience=0),
        ValueError,
        "patience must be a positive int or None, got 0",
    ),
    (
        "Trainer seeds a str",
        lambda g: Trainer(_model(g), seeds="1"),
        ValueError,
        "seeds must be an int, a sequence of ints or None",
    ),
    (
        "Trainer optimizer a number",
        lambda g: Trainer(_model(g), optimizer=5),
        ValueError,
        "optimizer must be None, an Optimizer or a callable, got 5",
    ),
    (
        "Trainer nothing to train",
        lambda g: Trainer(nn.Linear(1, 1).requires_grad_(False)),
        ValueError,
        "Linear has no parameter that requires grad",
    ),
    (
        "fit target a tensor",
        lambda g: Trainer(_model(g)).fit(torch.rand(T), slice(0, 5)),
        ValueError,
        "target must be a non-empty {output: [T] series} mapping",
    ),
    ("fit target empty", lambda g: _fit(g, {}), ValueError, "target must be a non-empty"),
    (
        "fit target not an output",
        lambda g: _fit(g, {"deaths": torch.rand(T)}),
        ValueError,
        "target 'deaths' is not an output of the model",
    ),
    (
        "fit target 2-D",
        lambda g: _fit(g, torch.rand(T, 2)),
        ValueError,
        "target series must all be [T] of one length",
    ),
    (
        "fit target of strs",
        lambda g: _fit(g, ["a"] * T),
        ValueError,
        "target['infections'] must be a series of numbers",
    ),
    (
        "fit target with inf",
        lambda g: _fit(g, _series(inf)),
        ValueError,
        "target['infections'] is infinite at day 0; mark unobserved days with NaN",
    ),
    (
        "fit target all NaN",
        lambda g: _fit(g, torch.full((T,), nan)),
        ValueError,
        "has no observed (non-NaN) day",
    ),
    (
        "fit target complex",
        lambda g: _fit(g, torch.ones(T, dtype=torch.complex64)),
        ValueError,
        "target['infections'] must hold real numbers, got torch.complex64",
    ),
    (
        "fit target of bools",
        lambda g: _fit(g, torch.ones(T, dtype=torch.bool)),
        ValueError,
        "must hold real numbers, got torch.bool",
    ),
    (
        "fit target on the meta device",
        lambda g: _fit(g, torch.rand(T, device="meta")),
        ValueError,
        "on meta",
    ),
    (
        "fit target longer than the model",
        lambda g: _fit(g, torch.rand(30), slice(0, 25)),
        ValueError,
        "the fit needs a [T] series of at least 25 days",
    ),
    (
        "fit train a tuple",
        lambda g: _fit(g, torch.rand(T), (0, 5)),
        ValueError,
        "train must be a slice of days, e.g. slice(0, 28), got (0, 5)",
    ),
    (
        "fit train empty",
        lambda g: _fit(g, torch.rand(T), slice(5, 5)),
        ValueError,
        "is an empty window of days",
    ),
    (
        "fit train past the target",
        lambda g: _fit(g, torch.rand(T), slice(0, 50)),
        ValueError,
        "runs past the target's 10 days",
    ),
    (
        "fit train negative",
        lambda g: _fit(g, torch.rand(T), slice(-5, None)),
        ValueError,
        "train bounds must be non-negative ints",
    ),
    (
        "fit train with a step",
        lambda g: _fit(g, torch.rand(T), slice(0, T, 2)),
        ValueError,
        "train must be a contiguous window (step 1)",
    ),
    (
        "fit val an int",
        lambda g: _fit(g, torch.rand(T), val=7),
        ValueError,
        "val must be a slice of days",
    ),
    (
        "fit epochs negative",
        lambda g: _fit(g, torch.rand(T), epochs=-1),
        ValueError,
        "epochs must be a non-negative int, got -1",
    ),
    (
        "fit resume without a checkpoint",
        lambda g: _fit(g, torch.rand(T), resume=True),
        ValueError,
        "fit(resume=True) needs Trainer(checkpoint=path)",
    ),
    (
        "mae of different lengths",
        lambda g: mae(torch.ones(3), torch.ones(4)),
        ValueError,
        "prediction and target must have the same shape, got [3] and [4]",
    ),
    ("rmse of nothing", lambda g: rmse([], []), ValueError, "no observed target value to score"),
    (
        "mae of strs",
        lambda g: mae(["a"], ["b"]),
        ValueError,
        "prediction and target must be series of numbers",
    ),
    (
        "forecast_metrics start negative",
        lambda g: forecast_metrics(torch.ones(20), torch.ones(20), -1),
        ValueError,
        "start must be a non-negative int",
    ),
    (
        "forecast_metrics horizon 0",
        lambda g: forecast_metrics(torch.ones(20), torch.ones(20), 0, horizons=(0,)),
        ValueError,
        "horizons must be positive ints (weeks), got 0",
    ),
    (
        "normalized_mse keys that differ",
        lambda g: normalized_mse({"a": torch.ones(3)}, {"b": torch.ones(3)}),
        ValueError,
        "target series ['b'] are not among the model's outputs ['a']",
    ),
    (
        "finite_difference eps 0",
        lambda g: finite_difference(
            _model(g), lambda o: o["infections"].sum(), "reproduction_number", eps=0
        ),
        ValueError,
        "eps must be a finite positive number, got 0",
    ),
    (
        "finite_difference an unknown parameter",
        lambda g: finite_difference(_model(g), lambda o: o["infections"].sum(), "beta", eps=0.1),
        ValueError,
        "'beta' is not a parameter",
    ),
    (
        "sensitivity to an unknown attribute",
        lambda g: sensitivity(_model(g), wrt=["beta"]),
        ValueError,
        "SEIRM has no tensor attribute 'beta'",
    ),
    (
        "calibrate_gradient_free budget 0",
        lambda g: calibrate_gradient_free(
            _model(g), {"infections": torch.rand(T)}, slice(0, 5), budget=0
        ),
        ValueError,
        "budget must be a positive int (model evaluations), got 0",
    ),
    (
        "calibrate_gradient_free an unknown method",
        lambda g: calibrate_gradient_free(
            _model(g), {"infections": torch.rand(T)}, slice(0, 5), budget=5, method="magic"
        ),
        ValueError,
        "method='magic' is not known",
    ),
    (
        "calibrate_gradient_free bounds reversed",
        lambda g: calibrate_gradient_free(
            _model(g), {"infections": torch.rand(T)}, slice(0, 5), budget=5, bounds=(6, -6)
        ),
        ValueError,
        "bounds must be (low, high) with low < high",
    ),
    (
        "CountyExperiment an unknown county",
        lambda g: CountyExperiment(county="99999"),
        ValueError,
        "county '99999' is not a Massachusetts county",
    ),
    (
        "CountyExperiment budget 0",
        lambda g: CountyExperiment(budget=0),
        ValueError,
        "budget must be a positive int, got 0",
    ),
    (
        "CountyExperiment an unknown method",
        lambda g: CountyExperiment(method="magic"),
        ValueError,
        "method='magic' is not known",
    ),
    (
        "CountyExperiment epochs negative",
        lambda g: CountyExperiment(epochs=-1),
        ValueError,
        "epochs must be a non-negative int, got -1",
    ),
    (
        "CountyExperiment lr 0",
        lambda g: CountyExperiment(lr=0.0),
        ValueError,
        "lr must be a finite number in (0, inf], got 0.0",
    ),
    (
        "CountyExperiment population negative",
        lambda g: CountyExperiment(county="25001", population=-5.0),
        ValueError,
        "population must be a finite number in (0, inf] (inhabitants), got -5.0",
    ),
    (
        "CountyExperiment start not a date",
        lambda g: CountyExperiment(start="soon"),
        ValueError,
        "start must be an ISO date YYYY-MM-DD, got 'soon'",
    ),
]


@pytest.mark.parametrize(
    ("call", "error", "phrase"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_training_input_is_a_clear_error(graph, call, error, phrase):
    with pytest.raises(error) as raised:
        call(graph)
    assert phrase in str(raised.value)


def test_targets_given_as_lists_arrays_or_ints_train(graph):
    for target in ([1.0] * T, np.ones(T), torch.ones(T, dtype=torch.long)):
        history = _fit(graph, target)
        assert len(history.loss) == 1 and math.isfinite(history.loss[0])
