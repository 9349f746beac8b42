"""Staged progression: the published prognoses come out, stage times add up, tables checked."""

from __future__ import annotations

import pytest
import torch

from lpm_graph import simulate
from lpm_graph.datasets.generators import erdos_renyi
from lpm_graph.protocols import (
    COVASIM_PROGNOSES,
    Duration,
    Progression,
    StagedSEIRM,
    Transition,
)


def _population(n: int, seed: int = 1):
    graph = erdos_renyi(n, 8.0, seed=seed)
    age = torch.arange(n) % 8  # equal groups
    graph.set_node_attrs("agent", age_group=age)
    return graph


def test_everyone_infected_gives_the_published_prognoses_by_age():
    # Expected mode, no transmission, everyone infected at t = 0: the share of each age group
    # that dies is Covasim's infection fatality ratio, and the shares that reach severe
    # (hospital) and ICU are its severe and critical probabilities.
    n = 800
    graph = _population(n)
    traj = simulate(
        StagedSEIRM(0.0, by_age=True),
        graph,
        150,
        initial_infected=torch.ones(n, dtype=torch.float64),
        mode="expected",
    )
    per_group = n / 8
    deaths = traj.counts["M_by_age"][-1] / per_group
    assert torch.allclose(deaths, torch.tensor(COVASIM_PROGNOSES["death"], dtype=torch.float64))
    severe = traj.flows["entered_severe"].sum() / n
    critical = traj.flows["entered_icu"].sum() / n
    assert float(severe) == pytest.approx(sum(COVASIM_PROGNOSES["severe"]) / 8, rel=1e-6)
    assert float(critical) == pytest.approx(sum(COVASIM_PROGNOSES["critical"]) / 8, rel=1e-6)
    assert float(traj.counts["R"][-1] + traj.counts["M"][-1]) == pytest.approx(n)


def test_stochastic_deaths_match_the_fatality_ratio():
    n = 20_000
    graph = _population(n)
    traj = simulate(StagedSEIRM(0.0), graph, 120, initial_infected=n - 1, seed=2)
    ifr = sum(COVASIM_PROGNOSES["death"]) / 8
    expected = (n - 1) * ifr
    assert abs(float(traj.counts["M"][-1]) - expected) < 4 * (expected * (1 - ifr)) ** 0.5


def test_time_to_death_is_the_sum_of_the_stage_times():
    # Fixed stage times make the path E 2 -> presymptomatic 1 -> mild 3 -> severe 1 -> icu 4
    # -> M last exactly 11 days.
    fixed = Duration.fixed
    table = Progression(
        {
            "E": [Transition("presymptomatic", 1.0, fixed(2))],
            "presymptomatic": [Transition("mild", 1.0, fixed(1))],
            "mild": [Transition("severe", 0.5, fixed(3)), Transition("R", 0.5, fixed(5))],
            "severe": [Transition("icu", 1.0, fixed(1))],
            "icu": [Transition("M", 0.2, fixed(4)), Transition("R", 0.8, fixed(6))],
        }
    )
    traj = simulate(
        StagedSEIRM(0.0, progression=table), _population(400), 20, initial_infected=400,
        mode="expected",
    )  # fmt: skip
    deaths = traj.flows["deaths"]
    assert float(deaths[10]) == pytest.approx(400 * 0.5 * 0.2)  # the step ending on day 11
    assert float(deaths.sum()) == pytest.approx(400 * 0.1)
    recoveries = traj.flows["recoveries"]
    assert float(recoveries[7]) == pytest.approx(400 * 0.5)  # mild -> R: 2 + 1 + 5 days
    assert float(recoveries[12]) == pytest.approx(400 * 0.5 * 0.8)  # icu -> R: 2 + 1 + 3 + 1 + 6
    assert float(recoveries.sum()) == pytest.approx(400 * 0.9)


@pytest.mark.parametrize("mode", ["stochastic", "expected"])
def test_conservation_with_transmission(mode):
    graph = _population(3000)
    traj = simulate(
        StagedSEIRM(4.0), graph, 80, initial_infected=30, seed=1, mode=mode, replicates=2,
        dtype=torch.float64,
    )  # fmt: skip
    total = sum(traj.counts.values())
    assert torch.allclose(total, torch.full_like(total, 3000.0))
    assert float(min(v.min() for v in traj.counts.values())) >= -1e-9
    assert float(traj.counts["S"][-1].max()) < 2000


def test_deaths_pass_gradient_to_r():
    graph = _population(200)
    r = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)

    def deaths(r):
        protocol = StagedSEIRM(r, learnable=False).double()
        traj = simulate(protocol, graph, 20, initial_infected=torch.full(
            (200,), 0.05, dtype=torch.float64), mode="expected")  # fmt: skip
        return traj.counts["icu"][-1] + traj.counts["M"][-1]

    assert torch.autograd.gradcheck(deaths, (r,))
    deaths(r).backward()
    assert float(r.grad) > 0


@pytest.mark.parametrize(
    ("stages", "match"),
    [
        ({"E": [Transition("R", 0.7, Duration.fixed(1))]}, r"summing to .* must sum to 1"),
        ({"E": [Transition("X", 1.0, Duration.fixed(1))]}, r"neither a stage"),
        ({"S": [Transition("R", 1.0, Duration.fixed(1))]}, r"reserved"),
        ({"E": []}, r"no transitions"),
        ({"E": [Transition("R", 1.5, Duration.fixed(1))]}, r"probabilities in \[0, 1\]"),
    ],
)
def test_bad_tables_raise(stages, match):
    with pytest.raises(ValueError, match=match):
        Progression(stages)


def test_progression_replaces_seirm_stage_arguments():
    with pytest.raises(ValueError, match=r"mortality= is set by the progression table"):
        StagedSEIRM(2.0, mortality=0.1)
