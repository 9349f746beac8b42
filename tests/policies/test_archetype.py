"""ArchetypePolicy: one decision per archetype and step, per-agent draws at its probability."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from lpm_graph import PopulationGraph
from lpm_graph.layers.samplers import RandomStreams
from lpm_graph.policies import ArchetypePolicy, Logistic, step_context
from lpm_graph.protocols.base import StepContext

KEYS = ("age_group", "area")
# one probability per archetype (age_group, area), far apart compared with their sigmas
P = {(0, 0): 0.02, (0, 1): 0.2, (1, 0): 0.45, (1, 1): 0.6, (2, 0): 0.85, (2, 1): 0.99}


def _population(n: int, seed: int = 0) -> PopulationGraph:
    """``n`` agents (no edges); the 6 archetypes (age_group 0..2 x area 0..1) all present,
    agents of an archetype scattered over the ids."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    i = torch.arange(n)[order]
    graph = PopulationGraph.from_edge_index(torch.zeros(2, 0, dtype=torch.long), n)
    graph.set_node_attrs(age_group=i % 3, area=(i // 3) % 2)
    return graph


def _by_key(archetype) -> float:
    key = archetype.key
    return P[key["age_group"], key["area"]]


def _by_key_batched(archetypes) -> torch.Tensor:
    return torch.tensor([P[tuple(k)] for k in archetypes.keys.tolist()])


def _features(n: int, seed: int = 1) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {"infected": (torch.rand(n, generator=gen) < 0.1).float()}


@pytest.mark.parametrize("n", [10, 100_000])
def test_one_decision_per_archetype_per_step(n):
    graph, asked = _population(n), Counter()

    def decision(archetype):
        asked[archetype.t, archetype.label] += 1
        return _by_key(archetype)

    policy = ArchetypePolicy(decision, KEYS)
    for t in range(4):
        actions = policy(graph, _features(n, t), step_context(0, t), {"daily_cases": 3.0 * t})
        assert actions.shape == (n,)
    assert policy.calls == {t: 6 for t in range(4)}
    assert policy.total_calls == 24
    assert len(asked) == 24 and set(asked.values()) == {1}  # each archetype once per step


@pytest.mark.parametrize("n", [10, 100_000])
def test_a_batched_decision_is_called_once_per_step_and_counted_per_archetype(n):
    graph, invoked = _population(n), []

    def decision(archetypes):
        invoked.append(archetypes.t)
        return _by_key_batched(archetypes)

    policy = ArchetypePolicy(decision, KEYS, batched=True)
    for t in range(3):
        policy(graph, _features(n), step_context(0, t))
    assert invoked == [0, 1, 2]
    assert policy.calls == {0: 6, 1: 6, 2: 6}


def _max_sigmas(actions: torch.Tensor, graph: PopulationGraph) -> float:
    """The largest ``|freq - p| / sigma`` over archetypes, ``sigma = sqrt(p (1 - p) / n_a)``."""
    attrs = graph.node_attrs()
    cell = attrs["age_group"] * 2 + attrs["area"]  # (age, area) -> 0..5, as P is ordered
    n_a = torch.bincount(cell, minlength=6).double()
    freq = torch.bincount(cell, weights=actions.double(), minlength=6) / n_a
    p = torch.tensor(list(P.values()), dtype=torch.float64)
    return float(((freq - p).abs() / (p * (1 - p) / n_a).sqrt()).max())


@pytest.mark.parametrize("batched", [False, True])
def test_action_frequencies_match_archetype_probabilities(batched):
    # 100,000 agents, ~16,700 per archetype: binomial sigmas 0.001 to 0.004
    n = 100_000
    graph = _population(n)
    policy = ArchetypePolicy(_by_key_batched if batched else _by_key, KEYS, batched=batched)
    for t in range(3):
        actions = policy(graph, _features(n), step_context(7, t))
        assert set(actions.unique().tolist()) <= {0.0, 1.0}
        assert _max_sigmas(actions, graph) < 4.0


def test_each_agent_gets_its_own_archetypes_probability():
    # 10 agents by hand; expected mode returns the probabilities themselves
    graph = _population(10)
    ctx = StepContext(t=0, dt=1.0, start={}, streams=RandomStreams(0), mode="expected")
    p = ArchetypePolicy(_by_key, KEYS)(graph, _features(10), ctx)
    attrs = graph.node_attrs()
    expected = [P[int(a), int(b)] for a, b in zip(attrs["age_group"], attrs["area"])]
    assert p.tolist() == pytest.approx(expected)


def test_summaries_by_hand():
    graph = PopulationGraph.from_edge_index(torch.zeros(2, 0, dtype=torch.long), 5)
    graph.set_node_attrs(group=torch.tensor([2, 0, 2, 2, 0]))
    x = torch.tensor([1.0, 2.0, 3.0, 5.0, 4.0])
    seen = []
    policy = ArchetypePolicy(lambda a: seen.append(a) or 0.5, "group")
    ctx = StepContext(t=3, dt=0.5, start={}, streams=RandomStreams(0))
    policy(graph, {"x": x}, ctx, {"daily_cases": 7})
    assert [a.key for a in seen] == [{"group": 0}, {"group": 2}]
    assert [a.count for a in seen] == [2, 3]
    assert [float(a["x"]) for a in seen] == pytest.approx([3.0, 3.0])  # (2+4)/2, (1+3+5)/3
    assert seen[1].numbers() == {
        "group": 2, "count": 3, "x": 3.0, "t": 3, "time": 1.5, "daily_cases": 7.0
    }  # fmt: skip
    assert seen[0].label == "group=0"


def test_replicates_give_per_replicate_summaries_and_independent_draws():
    n, r = 20_000, 3
    graph = _population(n)
    infected = torch.zeros(n, r)
    infected[: n // 2, 0] = 1.0  # replicate 0: half infected; the others none
    policy = ArchetypePolicy(_by_key, KEYS)
    archetypes = policy.summarize(graph, {"infected": infected}, step_context(0, 0))
    assert archetypes["infected"].shape == (6, r)
    assert archetypes.row(0)["infected"][1:].tolist() == [0.0, 0.0]
    actions = policy(graph, {"infected": infected}, step_context(0, 0))
    assert actions.shape == (n, r)
    assert not torch.equal(actions[:, 0], actions[:, 1])
    for k in range(r):
        assert _max_sigmas(actions[:, k], graph) < 4.0


def test_batched_decisions_with_replicates_broadcast_by_rank():
    # with replicates every non-scalar input is 2-D: keys and counts [A, 1], observables [1, R]
    n, r = 30_000, 3
    graph = _population(n)
    cases = torch.tensor([0.0, 10.0, 20.0])
    seen = {}

    def decision(archetypes):
        seen.update({k: tuple(v.shape) for k, v in archetypes.items()})
        return torch.sigmoid(-1.0 + 0.1 * archetypes["cases"])  # [1, R]: the same for all

    policy = ArchetypePolicy(decision, KEYS, batched=True)
    features = {"infected": torch.zeros(n, r), "age": torch.ones(n)}
    actions = policy(graph, features, step_context(0, 0), {"cases": cases})
    assert seen == {
        "age_group": (6, 1), "area": (6, 1), "count": (6, 1), "infected": (6, r), "age": (6, 1),
        "t": (), "time": (), "cases": (1, r),
    }  # fmt: skip
    p = torch.sigmoid(-1.0 + 0.1 * cases)
    assert bool(((actions.mean(0) - p).abs() < 4 * (p * (1 - p) / n).sqrt()).all())
    flat = ArchetypePolicy(lambda arch: torch.full((6,), 0.5), KEYS, batched=True)
    with pytest.raises(ValueError, match=r"has shape \[6\], which does not fit \[6, 3\]"):
        flat(graph, features, step_context(0, 0))


def test_categorical_action_frequencies():
    n, probs = 60_000, {0: [0.1, 0.3, 0.6], 1: [0.5, 0.5, 0.0], 2: [0.0, 0.05, 0.95]}
    graph = _population(n)
    policy = ArchetypePolicy(
        lambda a: torch.tensor(probs[a.key["age_group"]]), ("age_group",), categories=3
    )
    actions = policy(graph, {}, step_context(0, 0))
    assert actions.shape == (n, 3) and torch.equal(actions.sum(1), torch.ones(n))
    age = graph.node_attrs()["age_group"]
    for group, p in probs.items():
        members = age == group
        freq = actions[members].mean(0)
        for c in range(3):
            if p[c] in (0.0, 1.0):
                assert float(freq[c]) == p[c]
            else:
                sigma = math.sqrt(p[c] * (1 - p[c]) / int(members.sum()))
                assert abs(float(freq[c]) - p[c]) < 4 * sigma


def test_straight_through_gradient_reaches_the_decision_parameters_and_features():
    # sum_i b_i has the straight-through gradient sum_a n_a dp_a; for p_a = sigmoid(b + w xbar_a)
    # d/db = sum_a n_a p_a (1 - p_a), d/dw = sum_a n_a p_a (1 - p_a) xbar_a and
    # d/dx_i = w p_a (1 - p_a) (the mean spreads n_a / n_a over its agents).
    n = 1000
    graph = _population(n)
    x = torch.rand(n, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    x.requires_grad_(True)
    decision = Logistic({"x": 1.5}, bias=-0.5).double()
    policy = ArchetypePolicy(decision, KEYS)
    actions = policy(graph, {"x": x}, step_context(0, 0))
    actions.sum().backward()
    archetypes = policy.summarize(graph, {"x": x.detach()}, step_context(0, 0))
    xbar, counts = archetypes["x"], archetypes["count"]
    p = torch.sigmoid(-0.5 + 1.5 * xbar)
    slope = p * (1 - p)
    assert float(decision.bias.grad) == pytest.approx(float((counts * slope).sum()))
    assert float(decision.weight.grad[0]) == pytest.approx(float((counts * slope * xbar).sum()))
    expected = 1.5 * slope[archetypes.agent_index]
    assert torch.allclose(x.grad, expected)
    # the forward values are exact 0/1 draws all the same
    assert set(actions.detach().unique().tolist()) <= {0.0, 1.0}


def test_draws_are_reproducible_per_seed_step_and_name():
    graph, feats = _population(5000), _features(5000)

    def draw(seed, t, name="archetype_policy"):
        return ArchetypePolicy(_by_key, KEYS, name=name)(graph, feats, step_context(seed, t))

    assert torch.equal(draw(1, 2), draw(1, 2))
    assert not torch.equal(draw(1, 2), draw(2, 2))
    assert not torch.equal(draw(1, 2), draw(1, 3))
    assert not torch.equal(draw(1, 2), draw(1, 2, name="other"))
    streams = RandomStreams(1)
    assert torch.equal(ArchetypePolicy(_by_key, KEYS)(graph, feats, streams, t=2), draw(1, 2))


def test_grouping_matches_unique_rows():
    gen = torch.Generator().manual_seed(4)
    graph = PopulationGraph.from_edge_index(torch.zeros(2, 0, dtype=torch.long), 500)
    cols = {"a": torch.randint(-3, 4, (500,), generator=gen), "b": torch.randint(0, 2, (500,))}
    cols["c"] = torch.randint(0, 2, (500,), generator=gen).bool()
    graph.set_node_attrs(**cols)
    keys, index, counts = ArchetypePolicy(_by_key, ("a", "b", "c")).groups(graph)
    rows = torch.stack([cols["a"], cols["b"], cols["c"].long()], 1)
    expected = torch.unique(rows, dim=0, return_inverse=True, return_counts=True)
    assert torch.equal(keys, expected[0]) and torch.equal(index, expected[1])
    assert torch.equal(counts, expected[2])


def test_grouping_is_cached_until_a_key_attribute_changes():
    graph = _population(100)
    policy = ArchetypePolicy(_by_key, KEYS)
    first = policy.groups(graph)
    assert policy.groups(graph) is first
    graph.node_attrs()["area"].zero_()  # in place: every agent now in area 0
    keys, _, counts = policy.groups(graph)
    assert keys[:, 1].tolist() == [0, 0, 0] and int(counts.sum()) == 100


@pytest.mark.parametrize(
    ("decision", "match"),
    [
        (lambda a: 1.5, r"archetype age_group=0, area=0 at step 0 got 1\.5.*\[0, 1\]"),
        (lambda a: float("nan") if a.key["area"] else 0.5, r"age_group=0, area=1 .* got nan"),
        (lambda a: -0.1, r"not a probability in \[0, 1\]"),
        (lambda a: None, r"returned None for age_group=0, area=0"),
        (lambda a: "often", r"returned 'often'"),
        (lambda a: torch.ones(2) * 0.5, r"returned shape \[2\] for archetype age_group=0, area=0"),
    ],
)
def test_bad_decisions_name_the_archetype(decision, match):
    with pytest.raises(ValueError, match=match):
        ArchetypePolicy(decision, KEYS)(_population(10), {}, step_context(0, 0))


def test_bad_categorical_decisions():
    policy = ArchetypePolicy(lambda a: torch.tensor([0.5, 0.4, 0.0]), KEYS, categories=3)
    with pytest.raises(ValueError, match=r"probability vector over 3 categories"):
        policy(_population(10), {}, step_context(0, 0))


def test_bad_inputs():
    graph = _population(10)
    ctx = step_context(0, 0)
    with pytest.raises(ValueError, match=r"key 'income' is neither an observed feature"):
        ArchetypePolicy(_by_key, ("income",))(graph, {}, ctx)
    with pytest.raises(ValueError, match=r"key 'age' must be an integer tensor"):
        ArchetypePolicy(_by_key, ("age",))(graph, {"age": torch.rand(10)}, ctx)
    with pytest.raises(ValueError, match=r"feature 'x' must be a per-agent tensor"):
        ArchetypePolicy(_by_key, KEYS)(graph, {"x": torch.rand(9)}, ctx)
    with pytest.raises(ValueError, match=r"features must be \[N\] or \[N, R\]"):
        ArchetypePolicy(_by_key, KEYS)(graph, {"E": torch.rand(10, 3, 2)}, ctx)
    with pytest.raises(ValueError, match=r"observable 'cases' must be a scalar or one value"):
        ArchetypePolicy(_by_key, KEYS)(graph, {}, ctx, {"cases": torch.ones(4)})
    with pytest.raises(ValueError, match=r"observable 'x' clashes"):
        ArchetypePolicy(_by_key, KEYS)(graph, {"x": torch.rand(10)}, ctx, {"x": 1.0})
    with pytest.raises(ValueError, match=r"features may not be named \['count'\]"):
        ArchetypePolicy(_by_key, KEYS)(graph, {"count": torch.rand(10)}, ctx)
    with pytest.raises(ValueError, match=r"give the step t"):
        ArchetypePolicy(_by_key, KEYS)(graph, {}, RandomStreams(0))
    with pytest.raises(ValueError, match=r"keys must be distinct"):
        ArchetypePolicy(_by_key, ())
    with pytest.raises(ValueError, match=r"decision must be callable"):
        ArchetypePolicy(0.5, KEYS)
    with pytest.raises(ValueError, match=r"categories must be None"):
        ArchetypePolicy(_by_key, KEYS, categories=1)
