"""PolicyIntervention: a policy's actions inside SEIRM, one decision per archetype and step."""

from __future__ import annotations

import pytest
import torch

from lpm_graph import PopulationGraph, simulate
from lpm_graph.datasets import erdos_renyi
from lpm_graph.policies import ArchetypePolicy, HeuristicPolicy, Logistic, PolicyIntervention
from lpm_graph.protocols import SEIRM


def _population(n: int = 2000) -> PopulationGraph:
    graph = erdos_renyi(n, 8.0, seed=0)
    i = torch.arange(n)
    graph.set_node_attrs(age_group=i % 8, area=(i // 8) % 3)
    return graph


def test_one_decision_per_archetype_and_step_in_a_simulation():
    seen = []

    def decision(archetype):
        seen.append(sorted(archetype))
        return 0.5

    policy = ArchetypePolicy(decision, ("area",))
    model = SEIRM(2.5, 0.0, interventions=[PolicyIntervention(policy, name="mask")])
    traj = simulate(model, _population(), 6, initial_infected=20, seed=0)
    assert policy.calls == {t: 3 for t in range(6)}
    assert seen[0] == sorted(
        ["area", "count", "S", "E", "I", "R", "M", "mask", "t", "time", "new_infections", "agents"]
        + [f"total_{c}" for c in ("S", "E", "I", "R", "M", "mask")]
    )
    by_archetype = traj.counts["mask_by_archetype"]
    assert by_archetype.shape == (7, 3)
    assert torch.equal(by_archetype.sum(1), traj.counts["mask"])
    assert 0.4 < float(traj.counts["mask"][1:].mean()) / 2000 < 0.6


def test_actions_protect_and_gradients_reach_the_decision():
    graph = _population()

    def run(bias, effect):
        decision = Logistic({"total_I": 0.0}, bias=bias)
        policy = ArchetypePolicy(decision, ("age_group", "area"))
        iv = PolicyIntervention(policy, name="mask", susceptibility_effect=effect)
        traj = simulate(SEIRM(3.0, 0.0, interventions=[iv]), graph, 15, initial_infected=20)
        return traj, decision

    free, _ = run(-20.0, 1.0)  # nobody masks
    masked, _ = run(20.0, 1.0)  # everybody masks, fully protected
    assert float(free.flows["infections"].sum()) > 100
    assert float(masked.flows["infections"].sum()) == 0
    traj, decision = run(0.0, 0.5)
    traj.flows["infections"].sum().backward()
    assert decision.bias.grad is not None and float(decision.bias.grad) < 0  # more masks, fewer


def test_expected_mode_and_replicates():
    policy = HeuristicPolicy(lambda f: 0.25 + 0 * f["S"])
    iv = PolicyIntervention(policy, name="distancing", contact_effect=0.5)
    model = SEIRM(2.5, 0.0, interventions=[iv])
    expected = simulate(model, _population(), 4, initial_infected=20, mode="expected")
    assert expected.counts["distancing"][1:].tolist() == pytest.approx([500.0] * 4)
    stochastic = simulate(model, _population(), 4, initial_infected=20, replicates=3)
    assert stochastic.counts["distancing"].shape == (5, 3)
    assert "distancing_by_archetype" not in stochastic.counts


def test_bad_interventions():
    with pytest.raises(ValueError, match=r"needs a binary policy"):
        PolicyIntervention(HeuristicPolicy(lambda f: 0.5, categories=3))
    with pytest.raises(ValueError, match=r"susceptibility_effect must be in \[0, 1\]"):
        PolicyIntervention(HeuristicPolicy(lambda f: 0.5), susceptibility_effect=2.0)
    with pytest.raises(ValueError, match=r"must be a lpm_graph Policy"):
        PolicyIntervention(lambda f: 0.5)
