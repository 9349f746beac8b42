"""HeuristicPolicy and Logistic: per-agent probabilities from the agent's own features."""

from __future__ import annotations

import math

import pytest
import torch

from lpm_graph import PopulationGraph
from lpm_graph.layers.samplers import RandomStreams
from lpm_graph.policies import HeuristicPolicy, Logistic, sample_actions, step_context
from lpm_graph.protocols.base import StepContext


def _graph(n: int) -> PopulationGraph:
    return PopulationGraph.from_edge_index(torch.zeros(2, 0, dtype=torch.long), n)


def test_probabilities_are_the_function_of_features_and_observables():
    age = torch.tensor([10.0, 40.0, 70.0])
    policy = HeuristicPolicy(lambda f: f["age"] / 100 + f["cases"] / 1000 + f["t"] / 100)
    ctx = StepContext(t=2, dt=1.0, start={}, streams=RandomStreams(0), mode="expected")
    p = policy(_graph(3), {"age": age}, ctx, {"cases": 50})
    assert p.tolist() == pytest.approx([0.17, 0.47, 0.77])


def test_action_frequencies_match_the_probabilities():
    n = 40_000
    x = torch.rand(n, generator=torch.Generator().manual_seed(0))
    policy = HeuristicPolicy(lambda f: f["x"])  # p_i = x_i
    actions = policy(_graph(n), {"x": x}, step_context(3, 0))
    # agents binned by p: each bin's frequency matches its mean probability
    bins = (x * 10).long()
    for b in range(10):
        members = bins == b
        p = x[members].double()
        sigma = math.sqrt(float((p * (1 - p)).sum())) / int(members.sum())
        assert abs(float(actions[members].mean() - p.mean())) < 4 * sigma


def test_learnable_logistic_gets_straight_through_gradients():
    # d sum(b) / d bias = sum_i p_i (1 - p_i); d / d w = sum_i p_i (1 - p_i) x_i
    n = 500
    x = torch.randn(n, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    logistic = Logistic({"x": 0.7, "cases": 0.01}, bias=-1.0).double()
    policy = HeuristicPolicy(logistic)
    assert set(dict(policy.named_parameters())) == {"fn.weight", "fn.bias"}
    actions = policy(_graph(n), {"x": x}, step_context(0, 0), {"cases": 20.0})
    actions.sum().backward()
    p = torch.sigmoid(-1.0 + 0.7 * x + 0.2)
    slope = p * (1 - p)
    assert float(logistic.bias.grad) == pytest.approx(float(slope.sum()))
    assert logistic.weight.grad.tolist() == pytest.approx(
        [float((slope * x).sum()), float(slope.sum() * 20.0)]
    )


def test_replicate_features_broadcast_with_per_agent_ones():
    n, r = 6, 4
    seen = {}

    def fn(f):
        seen.update({k: tuple(v.shape) for k, v in f.items()})
        return f["age"] / 100 + 0 * f["infected"] + f["cases"] / 1000

    policy = HeuristicPolicy(fn)
    features = {"age": torch.arange(n).float() * 10, "infected": torch.zeros(n, r)}
    out = policy(_graph(n), features, step_context(0, 0), {"cases": torch.arange(r).float()})
    assert out.shape == (n, r)
    assert seen == {"age": (n, 1), "infected": (n, r), "cases": (1, r), "t": (), "time": ()}
    flat = HeuristicPolicy(lambda f: torch.full((n,), 0.5))  # [N]: ambiguous with replicates
    with pytest.raises(ValueError, match=r"has shape \[6\], which does not fit \[6, 4\]"):
        flat(_graph(n), features, step_context(0, 0))


def test_categorical_heuristic_one_hot_draws():
    n = 30_000
    p = torch.tensor([0.2, 0.3, 0.5])
    policy = HeuristicPolicy(lambda f: p, categories=3)
    actions = policy(_graph(n), {}, step_context(0, 0))
    assert actions.shape == (n, 3) and torch.equal(actions.sum(1), torch.ones(n))
    sigma = (p * (1 - p) / n).sqrt()
    assert bool(((actions.mean(0) - p).abs() < 4 * sigma).all())


def test_sample_actions_is_exact_at_the_edges_and_reproducible():
    ctx = step_context(5, 1)
    p = torch.tensor([0.0, 1.0, 0.0, 1.0])
    assert sample_actions(p, ctx, "x").tolist() == [0.0, 1.0, 0.0, 1.0]
    q = torch.full((1000,), 0.5)
    assert torch.equal(sample_actions(q, ctx, "x"), sample_actions(q, ctx, "x"))
    assert not torch.equal(sample_actions(q, ctx, "x"), sample_actions(q, ctx, "y"))


def test_bad_heuristic_outputs_name_the_agent():
    graph = _graph(4)
    bad = HeuristicPolicy(lambda f: torch.tensor([0.1, 0.2, 1.2, 0.3]))
    with pytest.raises(ValueError, match=r"agent 2 got 1\.2"):
        bad(graph, {}, step_context(0, 0))
    with pytest.raises(ValueError, match=r"does not fit \[4\]"):
        HeuristicPolicy(lambda f: torch.rand(5))(graph, {}, step_context(0, 0))
    with pytest.raises(ValueError, match=r"Logistic needs inputs \['age'\]"):
        HeuristicPolicy(Logistic({"age": 1.0}))(graph, {}, step_context(0, 0))
    with pytest.raises(ValueError, match=r"may not be named \['t'\]"):
        HeuristicPolicy(lambda f: 0.5)(graph, {"t": torch.ones(4)}, step_context(0, 0))
    with pytest.raises(ValueError, match=r"fn must be callable"):
        HeuristicPolicy(0.5)
    with pytest.raises(ValueError, match=r"weights must name at least one input"):
        Logistic({})
