"""Interventions: closures and vaccination, by hand and by direction."""

from __future__ import annotations

import math

import pytest
import torch
from test_seirm import _four_agents, _hand_state
from torch_geometric.data import HeteroData

from lpm_graph import PopulationGraph, simulate
from lpm_graph.layers.samplers import RandomStreams
from lpm_graph.protocols import (
    SEIRM,
    EdgeTypeClosure,
    Isolation,
    Schedule,
    Testing,
    Vaccination,
)
from lpm_graph.protocols.base import StepContext


def _two_layer_population(n=3000, seed=1) -> PopulationGraph:
    """Agents with a household layer (mean degree 4) and a school layer (mean degree 8)."""
    gen = torch.Generator().manual_seed(seed)
    data = HeteroData()
    data["agent"].num_nodes = n
    data["agent"].age_group = torch.randint(0, 8, (n,), generator=gen)
    for name, degree in (("household", 4), ("school", 8)):
        m = n * degree // 2
        src, dst = (
            torch.randint(0, n, (m,), generator=gen),
            torch.randint(0, n, (m,), generator=gen),
        )
        keep = src != dst
        e = torch.stack([src[keep], dst[keep]])
        data["agent", name, "agent"].edge_index = torch.cat([e, e.flip(0)], 1)
    return PopulationGraph(data)


def _lambda(protocol, graph, state, agent):
    ctx = StepContext.begin(0, protocol.dt, state, RandomStreams(0), "expected")
    protocol.step(graph, state, ctx)
    flows = ctx.flows
    return -math.log1p(-float(flows["infections"][agent].detach()))


def test_schedule_levels_and_bad_windows():
    s = Schedule([(10, 20, 0.5), (15, 30, 1.0)])
    assert [s.at(d) for d in (0, 10, 14.9, 15, 29.9, 30)] == [0, 0.5, 0.5, 1.0, 1.0, 0]
    assert Schedule.always(0.3).at(1e9) == 0.3
    with pytest.raises(ValueError, match=r"end must be after start"):
        Schedule([(5, 5, 1.0)])
    with pytest.raises(ValueError, match=r"level must be in \[0, 1\]"):
        Schedule([(0, 5, 1.5)])


def test_closure_scales_the_edge_type_by_hand():
    # Expected mode: compliance c at level L multiplies every contact of the type by
    # (1 - L c)^2; the other edge type is untouched.
    weights = {"household": 1.5, "work": 0.5}
    base = SEIRM(2.0, 0.0, edge_type_weights=weights).double()
    only_work = SEIRM(2.0, 0.0, edge_type_weights={"household": 0.0, "work": 0.5}).double()
    closed = SEIRM(
        2.0,
        0.0,
        edge_type_weights=weights,
        interventions=[EdgeTypeClosure("work", Schedule.always(0.8), compliance=0.5)],
    ).double()
    graph, state = _four_agents(), _hand_state()
    work = _lambda(only_work, graph, state, 1)
    expected = _lambda(base, graph, state, 1) - work * (1 - (1 - 0.8 * 0.5) ** 2)
    assert _lambda(closed, graph, state, 1) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("mode", ["stochastic", "expected"])
def test_full_closure_of_every_contact_stops_transmission(mode):
    graph = _two_layer_population(1000)
    closures = [EdgeTypeClosure(t, Schedule([(5, 1e9, 1.0)])) for t in ("household", "school")]
    traj = simulate(
        SEIRM(3.0, 0.0, interventions=closures), graph, 40, initial_infected=30, seed=0, mode=mode
    )
    new = traj.flows["infections"].detach()
    assert float(new[5:].sum()) == 0
    assert float(new[:5].sum()) > 0


def test_closures_and_vaccination_reduce_infections_and_deaths():
    graph = _two_layer_population()
    runs = {
        "none": [],
        "school closure": [EdgeTypeClosure("school", Schedule([(0, 60, 1.0)]), compliance=0.8)],
        "vaccination": [Vaccination(150, start_day=0, doses=1)],
    }
    out = {}
    for name, interventions in runs.items():
        traj = simulate(
            SEIRM(3.0, 0.05, interventions=interventions),
            graph,
            60,
            initial_infected=20,
            seed=3,
            replicates=10,
        )
        out[name] = (traj.flows["infections"].sum(0).mean(), traj.counts["M"][-1].mean())
    for name in ("school closure", "vaccination"):
        assert out[name][0] < 0.95 * out["none"][0], (name, out)
        # deaths: ~140 without interventions (sd of the mean of 10 runs ~4): a 10 % cut is
        # far outside the noise
        assert out[name][1] < 0.9 * out["none"][1], (name, out)


@pytest.mark.parametrize("mode", ["stochastic", "expected"])
def test_vaccination_respects_capacity_and_priority(mode):
    graph = _two_layer_population(2000)
    vax = Vaccination(125.5, start_day=2, doses=1)
    traj = simulate(
        SEIRM(0.0, 0.0, interventions=[vax]), graph, 12, initial_infected=0.01,
        seed=0, mode=mode, record_states=True,
    )  # fmt: skip
    doses = traj.flows["doses"]
    assert float(doses[:2].sum().detach()) == 0  # nothing before the start day
    assert float(doses.sum()) == pytest.approx(125.5 * 10, abs=1.0)  # exact total over 10 days
    assert float(doses.max()) <= 126 + 1e-6
    age = graph.node_attrs()["age_group"]
    dosed = traj.states[-1]["V1"].sum(1)
    # oldest first: coverage falls along the priority order, with one group partly covered
    coverage = [float(dosed[age == g].sum() / (age == g).sum()) for g in range(7, -1, -1)]
    assert all(a >= b - 1e-6 for a, b in zip(coverage, coverage[1:])), coverage
    assert coverage[0] > 0.97 and coverage[-1] == pytest.approx(0.0, abs=1e-6), coverage
    assert sum(0.03 < c < 0.97 for c in coverage) <= 1, coverage


def test_second_dose_after_the_interval():
    graph = _two_layer_population(500)
    vax = Vaccination(1000, doses=2, interval=5)
    traj = simulate(SEIRM(0.0, 0.0, interventions=[vax]), graph, 12, initial_infected=5, seed=0)
    v2 = traj.counts["V2"]
    assert float(v2[5]) == 0 and float(v2[6]) > 0  # first doses on day 0, second on day 5
    assert float(traj.counts["V1"][-1] + v2[-1]) == pytest.approx(500 - 5, abs=5)


def test_vaccine_efficacy_against_infection_by_hand():
    graph, state = _four_agents(), _hand_state()
    base = SEIRM(2.0, 0.0, edge_type_weights={"household": 1.5, "work": 0.5}).double()
    vax = Vaccination(0, efficacy_infection=(0.6, 0.9))
    protected = SEIRM(
        2.0, 0.0, edge_type_weights={"household": 1.5, "work": 0.5}, interventions=[vax]
    ).double()
    state = dict(state)
    state.update(
        V1=torch.zeros(4, 1, dtype=torch.float64),
        V2=torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=torch.float64),
        vaccination_order=torch.arange(4),
    )
    got = _lambda(protected, graph, state, 1)
    assert got == pytest.approx(0.1 * _lambda(base, graph, _hand_state(), 1), rel=1e-6)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: Vaccination(-1), r"capacity must be a finite non-negative"),
        (lambda: Vaccination(10, doses=3), r"doses must be 1 or 2"),
        (lambda: Vaccination(10, efficacy_death=(0.5,)), r"efficacy_death needs two values"),
        (lambda: Vaccination(10, priority=(0, 1)), r"priority must order all 8 age groups"),
        (lambda: EdgeTypeClosure("school", Schedule.always(), compliance=2), r"compliance"),
        (lambda: SEIRM(2.0, 0.01, interventions=["lockdown"]), r"Intervention modules"),
    ],
)
def test_bad_interventions_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize(("quarantine", "work_left"), [(False, 1.0), (True, 0.0)])
def test_isolation_and_household_quarantine_by_hand(quarantine, work_left):
    # Agent 2 (I for 1 day) isolates after a 1-day delay, agent 3 (I since today) does not
    # yet. Agent 1 shares a household with agent 2: quarantined, its work contact with agent
    # 3 is gone; otherwise it stays. Household contacts are never cut.
    weights = {"household": 1.5, "work": 0.5}
    base = SEIRM(2.0, 0.0, edge_type_weights=weights).double()
    only_work = SEIRM(2.0, 0.0, edge_type_weights={"household": 0.0, "work": 0.5}).double()
    iso = Isolation(Schedule.always(1.0), delay=1.0, quarantine=quarantine)
    isolated = SEIRM(2.0, 0.0, edge_type_weights=weights, interventions=[iso]).double()
    graph, state = _four_agents(), _hand_state()
    work = _lambda(only_work, graph, state, 1)
    expected = _lambda(base, graph, state, 1) - (1 - work_left) * work
    assert _lambda(isolated, graph, state, 1) == pytest.approx(expected, rel=1e-9)


def test_isolation_reduces_infections():
    graph = _two_layer_population()
    out = {}
    for name, ivs in {
        "none": [],
        "isolation": [Isolation(Schedule.always(), compliance=0.8)],
    }.items():
        traj = simulate(
            SEIRM(3.0, 0.05, interventions=ivs), graph, 60, initial_infected=20, seed=3,
            replicates=10,
        )  # fmt: skip
        out[name] = traj.flows["infections"].sum(0).mean()
    assert out["isolation"] < 0.95 * out["none"], out  # final size saturates at R = 3


@pytest.mark.parametrize("mode", ["stochastic", "expected"])
def test_testing_is_isolation_of_the_positives(mode):
    # A perfect test with no delay is isolation with no delay; a useless test changes nothing.
    graph = _two_layer_population(1500)

    def infections(iv):
        ivs = [] if iv is None else [iv]
        traj = simulate(
            SEIRM(3.0, 0.05, interventions=ivs), graph, 40, initial_infected=15, seed=5,
            mode=mode, replicates=3 if mode == "stochastic" else None,
        )  # fmt: skip
        return traj.flows["infections"].sum(0)

    always = Schedule.always()
    perfect = infections(Testing(always, sensitivity=1.0, delay=0.0, compliance=0.7))
    assert torch.allclose(perfect, infections(Isolation(always, delay=0.0, compliance=0.7)))
    assert torch.allclose(infections(Testing(always, sensitivity=0.0)), infections(None))
    assert float(perfect.sum()) < float(infections(None).sum())


def test_vaccination_follows_its_schedule_and_works_with_staged_progression():
    from lpm_graph.protocols import StagedSEIRM

    graph = _two_layer_population(1000)
    vax = Vaccination(50, schedule=Schedule([(2, 4, 1.0), (4, 6, 0.5)]))
    traj = simulate(
        StagedSEIRM(2.0, interventions=[vax]), graph, 8, initial_infected=10, seed=0,
        mode="expected",
    )  # fmt: skip
    doses = traj.flows["doses"].detach()
    assert doses.tolist() == pytest.approx([0, 0, 50, 50, 25, 25, 0, 0])
