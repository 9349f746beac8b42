"""Bad input to ensembles, sweeps, trajectories and policies: a ValueError naming the
argument and the fix, before the first member runs; an ensemble beyond memory is refused
with the estimate. Table-driven: each case is the call, the error class and a phrase."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lpm_graph import simulate
from lpm_graph.datasets import erdos_renyi
from lpm_graph.ensemble import concat_trajectories, run_ensemble, sweep
from lpm_graph.policies import (
    ArchetypePolicy,
    HeuristicPolicy,
    Logistic,
    PolicyIntervention,
    step_context,
)
from lpm_graph.protocols import SEIRM, SIR

N = 20
nan = math.nan


@pytest.fixture(scope="module")
def graph():
    g = erdos_renyi(N, 3.0, seed=0)
    g.set_node_attrs(age_group=torch.arange(N) % 8)
    return g


def _ens(g, seeds=2, steps=3, **kwargs):
    return run_ensemble(SIR(0.3, 0.1), g, steps, seeds, **{"initial_infected": 2, **kwargs})


def _policy(p):
    return PolicyIntervention(HeuristicPolicy(lambda features: p))


CASES = [
    # (id, call(graph), error class, phrase)
    ("seeds 0", lambda g: _ens(g, 0), ValueError, "seeds=0 as a count must be at least 1"),
    ("seeds negative", lambda g: _ens(g, -3), ValueError, "seeds=-3 as a count must be at least 1"),
    (
        "seeds a float",
        lambda g: _ens(g, 2.5),
        ValueError,
        "seeds must be a count or a list of int seeds, got 2.5",
    ),
    (
        "seeds empty",
        lambda g: _ens(g, []),
        ValueError,
        "seeds must be a non-empty list of ints, got []",
    ),
    ("seeds a str", lambda g: _ens(g, "abc"), ValueError, "got 'abc'"),
    (
        "seeds of floats",
        lambda g: _ens(g, [1.0, 2.0]),
        ValueError,
        "seeds must be a non-empty list of ints",
    ),
    (
        "seeds a count beyond memory",
        lambda g: _ens(g, 10**13),
        ValueError,
        "seeds=10,000,000,000,000: an ensemble of that many members",
    ),
    (
        "batch_size 0",
        lambda g: _ens(g, batch_size=0),
        ValueError,
        "batch_size must be a positive int, got 0",
    ),
    (
        "batch_size a float",
        lambda g: _ens(g, batch_size=1.5),
        ValueError,
        "batch_size must be a positive int, got 1.5",
    ),
    (
        "backend unknown",
        lambda g: _ens(g, backend="dask"),
        ValueError,
        "backend must be one of ('local', 'ray'), got 'dask'",
    ),
    (
        "num_workers with the local backend",
        lambda g: _ens(g, num_workers=4),
        ValueError,
        "num_workers= and ray_options= apply to backend='ray'",
    ),
    (
        "ray_options with the local backend",
        lambda g: _ens(g, ray_options={"num_cpus": 1}),
        ValueError,
        "drop them or pass backend='ray'",
    ),
    (
        "steps negative",
        lambda g: _ens(g, steps=-1),
        ValueError,
        "steps must be a non-negative int, got -1",
    ),
    (
        "no initial_infected",
        lambda g: run_ensemble(SIR(0.3, 0.1), g, 3, 2),
        ValueError,
        "initial_infected is required",
    ),
    ("graph None", lambda g: _ens(None), TypeError, "graph must be a lpm_graph.PopulationGraph"),
    (
        "protocol None",
        lambda g: run_ensemble(None, g, 3, 2, initial_infected=2),
        ValueError,
        "protocol must be a lpm_graph Protocol",
    ),
    ("dtype a str", lambda g: _ens(g, dtype="float32"), TypeError, "dtype must be a torch.dtype"),
    (
        "sweep of nothing",
        lambda g: sweep([], g, 3, 2, initial_infected=2),
        ValueError,
        "protocols is empty",
    ),
    (
        "sweep of strs",
        lambda g: sweep(["sir"], g, 3, 2, initial_infected=2),
        ValueError,
        "protocol must be a lpm_graph Protocol",
    ),
    (
        "sweep of one protocol, not a list",
        lambda g: sweep(SIR(0.3, 0.1), g, 3, 2, initial_infected=2),
        ValueError,
        "write [protocol]",
    ),
    ("concat of nothing", lambda g: concat_trajectories([]), ValueError, "no trajectories to join"),
    (
        "concat of ints",
        lambda g: concat_trajectories([1, 2]),
        ValueError,
        "parts must be Trajectory objects",
    ),
    (
        "concat of a run without replicates",
        lambda g: concat_trajectories([simulate(SIR(0.3, 0.1), g, 2, initial_infected=1)]),
        ValueError,
        "every trajectory must have replicate columns",
    ),
    (
        "quantiles at 1.5",
        lambda g: _ens(g).quantiles("I", 1.5),
        ValueError,
        "q must be a level or a list of levels in [0, 1], got 1.5",
    ),
    (
        "quantiles of an unknown series",
        lambda g: _ens(g).quantiles("X"),
        ValueError,
        "no count or flow named 'X'",
    ),
    (
        "expectation over replicates",
        lambda g: simulate(
            SIR(0.3, 0.1), g, 2, initial_infected=1, estimator="stochastic_derivative"
        ).expectation(lambda tr: tr.counts["I"]),
        ValueError,
        "fn must return one value per replicate",
    ),
    (
        "HeuristicPolicy of a number",
        lambda g: HeuristicPolicy(5),
        ValueError,
        "fn must be callable (features -> probabilities), got 5",
    ),
    (
        "HeuristicPolicy 1 category",
        lambda g: HeuristicPolicy(lambda f: 0.5, categories=1),
        ValueError,
        "categories must be None (binary) or an int >= 2, got 1",
    ),
    (
        "Logistic NaN weight",
        lambda g: Logistic({"I": nan}),
        ValueError,
        "weights and bias must be finite",
    ),
    (
        "Logistic weights a list",
        lambda g: Logistic([1.0]),
        ValueError,
        "weights must name at least one input, mapping it to its weight",
    ),
    (
        "Logistic bias a str",
        lambda g: Logistic({"I": 1.0}, bias="0"),
        ValueError,
        "weights and bias must be numbers",
    ),
    (
        "PolicyIntervention of a function",
        lambda g: PolicyIntervention(lambda f: 0.5),
        ValueError,
        "policy must be a lpm_graph Policy, got function",
    ),
    (
        "PolicyIntervention effect 2",
        lambda g: PolicyIntervention(HeuristicPolicy(lambda f: 0.5), susceptibility_effect=2.0),
        ValueError,
        "susceptibility_effect must be in [0, 1] (a number), got 2.0",
    ),
    (
        "PolicyIntervention effect a str",
        lambda g: PolicyIntervention(HeuristicPolicy(lambda f: 0.5), contact_effect="1"),
        ValueError,
        "contact_effect must be in [0, 1] (a number), got '1'",
    ),
    (
        "ArchetypePolicy no keys",
        lambda g: ArchetypePolicy(lambda a: 0.5, []),
        ValueError,
        "keys must be distinct attribute names",
    ),
    (
        "ArchetypePolicy decision a number",
        lambda g: ArchetypePolicy(5, ["age_group"]),
        ValueError,
        "decision must be callable, got 5",
    ),
    (
        "step_context dt 0",
        lambda g: step_context(0, 0, dt=0),
        ValueError,
        "dt must be a finite positive number, got 0",
    ),
    (
        "step_context t negative",
        lambda g: step_context(0, -1),
        ValueError,
        "t must be a non-negative int, got -1",
    ),
    (
        "step_context streams a str",
        lambda g: step_context("x", 0),
        ValueError,
        "streams must be a RandomStreams or an int seed",
    ),
    (
        "a policy that returns NaN",
        lambda g: simulate(SEIRM(interventions=[_policy(nan)]), g, 2, initial_infected=2),
        ValueError,
        "agent 0 got nan, which is not a probability in [0, 1]",
    ),
    (
        "a policy that returns 1.5",
        lambda g: simulate(SEIRM(interventions=[_policy(1.5)]), g, 2, initial_infected=2),
        ValueError,
        "agent 0 got 1.5",
    ),
]


@pytest.mark.parametrize(
    ("call", "error", "phrase"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_ensemble_or_policy_input_is_a_clear_error(graph, call, error, phrase):
    with pytest.raises(error) as raised:
        call(graph)
    assert phrase in str(raised.value)


def test_numpy_seeds_are_accepted(graph):
    a = _ens(graph, np.arange(3))
    b = _ens(graph, [0, 1, 2])
    assert a.seeds == (0, 1, 2) and torch.equal(a.counts["I"], b.counts["I"])
