"""Behaviour-epidemic coupling: contact factors by hand, the epidemic shrinking as compliance
rises, and gradients of the epidemic size with respect to the compliance parameters."""

from __future__ import annotations

import math

import pytest
import torch
from test_seirm import _four_agents, _hand_state
from torch import nn

from lpm_graph import PopulationGraph, simulate
from lpm_graph.datasets.generators import erdos_renyi
from lpm_graph.layers.samplers import RandomStreams
from lpm_graph.protocols import SEIRM, StagedSEIRM
from lpm_graph.protocols.base import StepContext
from lpm_graph.protocols.behaviour import BehaviourCoupling
from lpm_graph.protocols.opinion import BoundedConfidence, ThresholdAdoption

F64 = torch.float64
WEIGHTS = {"household": 1.5, "work": 0.5}


def _lambda(protocol, graph, state, agent=1):
    """Force of infection on ``agent`` during one expected-mode step from ``state``."""
    ctx = StepContext.begin(0, protocol.dt, state, RandomStreams(0), "expected")
    protocol.step(graph, state, ctx)
    flows = ctx.flows
    return -math.log1p(-float(flows["infections"][agent].detach()))


def _coupled_hand_state(protocol, graph):
    """test_seirm's hand state (agent 1 susceptible; 0 in E, 2 and 3 in I) plus the behaviour's
    initial state."""
    state = _hand_state()
    for iv in protocol.interventions:
        state.update(iv.initial_state(graph, state, RandomStreams(0), "expected", protocol.dt))
    return state


def _population(n: int = 400, seed: int = 0) -> PopulationGraph:
    graph = erdos_renyi(n, 8.0, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    graph.set_node_attrs(age_group=torch.randint(0, 8, (n,), generator=gen))
    return graph


def _size(traj):
    s = traj.counts["S"]
    return s[0] - s[-1]


# ---------------------------------------------------------------------------- by hand


@pytest.mark.parametrize(
    ("sides", "edge_types", "scale_household", "scale_work"),
    [
        # Everyone complies (c = 1), efficacy 0.5: each contact scales by (1 - 0.5)(1 - 0.5).
        ("both", None, 0.25, 0.25),
        ("source", None, 0.5, 0.5),
        ("destination", None, 0.5, 0.5),
        # Only work contacts are reduced; household contacts keep their full weight.
        ("both", ("work",), 1.0, 0.25),
    ],
)
def test_full_compliance_scales_the_force_of_infection_by_hand(
    sides, edge_types, scale_household, scale_work
):
    graph = _four_agents()
    only_work = SEIRM(2.0, 0.0, edge_type_weights={"household": 0.0, "work": 0.5}).double()
    base = SEIRM(2.0, 0.0, edge_type_weights=WEIGHTS).double()
    work = _lambda(only_work, graph, _hand_state())
    household = _lambda(base, graph, _hand_state()) - work
    coupling = BehaviourCoupling(
        ThresholdAdoption(0.5, math.inf), 0.5, initial=torch.ones(4, dtype=torch.bool),
        sides=sides, edge_types=edge_types,
    )  # fmt: skip
    coupled = SEIRM(2.0, 0.0, edge_type_weights=WEIGHTS, interventions=[coupling]).double()
    got = _lambda(coupled, graph, _coupled_hand_state(coupled, graph))
    assert got == pytest.approx(scale_household * household + scale_work * work, rel=1e-9)


def test_contact_factors_per_agent_by_hand():
    # Compliance (1, 0.5, 0, 0.25) with efficacy 0.8: factor 1 - 0.8 c = (0.2, 0.6, 1, 0.8) on
    # both ends; two replicates of the same compliance keep their columns.
    c = torch.tensor([1.0, 0.5, 0.0, 0.25], dtype=F64)
    coupling = BehaviourCoupling(BoundedConfidence(0.2), 0.8)
    state = {"opinion": torch.stack([c, c], 1)}
    ctx = StepContext(t=0, dt=1.0, start=state, streams=RandomStreams(0), mode="expected")
    rel = ("agent", "household", "agent")
    src, dst = coupling.contact_factors(_four_agents(), rel, state, ctx)
    want = torch.tensor([[0.2, 0.2], [0.6, 0.6], [1.0, 1.0], [0.8, 0.8]], dtype=F64)
    assert torch.allclose(src.detach(), want, rtol=1e-6)  # efficacy is float32: 0.8 to 1e-8
    assert torch.allclose(dst.detach(), want, rtol=1e-6)
    one_end = BehaviourCoupling(BoundedConfidence(0.2), 0.8, sides="source")
    src, dst = one_end.contact_factors(_four_agents(), rel, state, ctx)
    assert torch.allclose(src.detach(), want, rtol=1e-6) and float(dst) == 1.0


def test_the_behaviour_runs_first_inside_the_epidemic_step():
    coupling = BehaviourCoupling(ThresholdAdoption(0.3), 0.7, initial=0.1)
    protocol = SEIRM(2.5, 0.01, interventions=[coupling])
    plan = protocol.plan()
    assert plan.index("1. adoption") < plan.index("2. infection") < plan.index("3. progression")
    names = dict(protocol.named_parameters())
    for name in ("efficacy", "behaviour.threshold", "behaviour.sharpness",
                 "behaviour.risk_weight"):  # fmt: skip
        name = f"interventions.0.{name}"
        assert isinstance(names[name], nn.Parameter), name
    share = nn.Parameter(torch.tensor(0.2))
    learn_initial = BehaviourCoupling(ThresholdAdoption(0.3), initial=share)
    assert any(p is share for p in learn_initial.parameters())


# ---------------------------------------------------------------------------- direction


def _coupled(threshold=0.5, efficacy=0.6, initial=0.0, risk_weight=1.0, sharpness=20.0):
    behaviour = ThresholdAdoption(threshold, sharpness, risk_weight=risk_weight)
    share = initial if torch.is_tensor(initial) else torch.tensor(float(initial), dtype=F64)
    coupling = BehaviourCoupling(behaviour, efficacy, initial=share)
    return SEIRM(3.0, 0.0, interventions=[coupling])


def test_epidemic_size_falls_as_compliance_rises():
    graph = _population()
    n = graph.num_nodes()
    run = dict(initial_infected=10, seed=0, dtype=F64)  # noqa: C408
    # expected mode: the initial compliant share, then the efficacy of compliance
    by_share = [
        float(_size(simulate(_coupled(initial=c), graph, 50, mode="expected", **run)).detach())
        for c in (0.0, 0.1, 0.2, 0.3)
    ]
    assert all(a > b for a, b in zip(by_share, by_share[1:])), by_share
    assert by_share[0] > 0.5 * n and by_share[-1] < 0.1 * by_share[0], by_share
    by_efficacy = [
        float(_size(simulate(_coupled(efficacy=e), graph, 50, mode="expected", **run)).detach())
        for e in (0.0, 0.3, 0.6, 0.9)
    ]
    assert all(a > b for a, b in zip(by_efficacy, by_efficacy[1:])), by_efficacy
    # stochastic replicates: the mean size falls too, by far more than its standard error
    sizes = []
    for c in (0.0, 0.3):
        traj = simulate(_coupled(initial=c), graph, 50, replicates=10, **run)
        sizes.append(_size(traj).detach())
    gap = float(sizes[0].mean() - sizes[1].mean())
    se = math.sqrt(float(sizes[0].var() + sizes[1].var()) / 10)
    assert gap > 5 * se and gap > 0.2 * n, sizes


def test_gradients_of_epidemic_size_match_finite_differences():
    # Expected mode, float64: d size / d (initial share, efficacy, threshold, risk weight,
    # sharpness) by autograd against central differences.
    graph = _population(300, seed=1)
    point = {"initial": 0.15, "efficacy": 0.6, "threshold": 0.5, "risk_weight": 1.0,
             "sharpness": 20.0}  # fmt: skip

    def size(**values):
        protocol = _coupled(**values)
        traj = simulate(protocol, graph, 40, initial_infected=10, mode="expected", dtype=F64)
        return _size(traj)

    def leaf(value):  # a float64 tensor with grad is used as given (else stored as float32)
        return torch.tensor(value, dtype=F64, requires_grad=True)

    leaves = {k: leaf(v) for k, v in point.items()}
    y = size(**leaves)
    grads = torch.autograd.grad(y, list(leaves.values()))
    for (name, value), grad in zip(point.items(), grads):
        eps = 1e-5 * max(1.0, abs(value))
        with torch.no_grad():
            up = size(**{**leaves, name: leaf(value + eps)})
            down = size(**{**leaves, name: leaf(value - eps)})
        fd = float(up - down) / (2 * eps)
        assert float(grad) == pytest.approx(fd, rel=1e-4, abs=1e-6), name
        assert abs(fd) > 1e-2, name  # every compliance parameter moves the epidemic
    g = dict(zip(point, (float(x) for x in grads)))
    assert g["initial"] < 0 and g["efficacy"] < 0 and g["risk_weight"] < 0 and g["threshold"] > 0


def test_infectious_neighbours_drive_adoption_inside_the_step():
    # Exact rule, nobody compliant at the start, no social seed: agents adopt only once a
    # quarter of their contacts are infectious (rho = 1, theta = 0.25).
    graph = _population(300)

    def adoptions(rho, infected):
        coupling = BehaviourCoupling(ThresholdAdoption(0.25, math.inf, risk_weight=rho), 0.5)
        traj = simulate(SEIRM(3.0, 0.0, interventions=[coupling]), graph, 40,
                        initial_infected=infected, seed=2)  # fmt: skip
        return float(traj.flows["adoptions"].detach().sum())

    assert adoptions(1.0, 20) > 0
    assert adoptions(1.0, 0) == 0  # no epidemic, no risk
    assert adoptions(0.0, 20) == 0  # no risk weight, no adoption


def test_bounded_confidence_coupling():
    # Opinions are the compliance; an epidemic pushes them up through the risk rate, and a
    # higher efficacy gives a smaller epidemic.
    graph = _population(300, seed=3)

    def run(efficacy, risk_rate, infected=10):
        behaviour = BoundedConfidence(0.2, 0.5, risk_rate=risk_rate)
        coupling = BehaviourCoupling(behaviour, efficacy)
        return simulate(SEIRM(3.0, 0.0, interventions=[coupling]), graph, 40,
                        initial_infected=infected, mode="expected", seed=1)  # fmt: skip

    sizes = [float(_size(run(e, 0.0)).detach()) for e in (0.0, 0.5, 0.9)]
    assert sizes[0] > sizes[1] > sizes[2], sizes
    pushed = run(0.5, 2.0).counts["opinion"].detach()
    quiet = run(0.5, 2.0, infected=0).counts["opinion"].detach()
    assert float(pushed[-1]) > float(quiet[-1]) + 10
    assert float(quiet[-1]) == pytest.approx(float(quiet[0]), rel=0.05)  # HK alone: ~ mean
    assert float(run(0.5, 2.0).counts["opinion_variance"][-1].detach()) >= 0


def test_stochastic_derivative_estimator_runs_on_the_coupled_model():
    # A non-learnable initial: the estimator's alternative paths start from the same state.
    graph = _population(200)
    coupling = BehaviourCoupling(ThresholdAdoption(0.4, 20.0, risk_weight=1.0), 0.6, initial=20)
    protocol = SEIRM(3.0, 0.0, interventions=[coupling])
    traj = simulate(protocol, graph, 30, initial_infected=10, seed=0, replicates=4,
                    estimator="stochastic_derivative")  # fmt: skip
    plain = simulate(protocol, graph, 30, initial_infected=10, seed=0, replicates=4)
    assert torch.equal(traj.counts["adopted"].detach(), plain.counts["adopted"].detach())
    size = traj.expectation(lambda tr: tr.counts["S"][0] - tr.counts["S"][-1]).mean()
    (grad,) = torch.autograd.grad(size, coupling.efficacy)
    assert math.isfinite(float(grad))


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: BehaviourCoupling(SEIRM(), 0.5), r"behaviour must be a lpm_graph Behaviour"),
        (lambda: BehaviourCoupling(ThresholdAdoption(), 1.5), r"efficacy must be a probability"),
        (lambda: BehaviourCoupling(ThresholdAdoption(), math.nan), r"efficacy contains NaN"),
        (
            lambda: BehaviourCoupling(ThresholdAdoption(), torch.ones(3) / 2),
            r"efficacy must be a scalar",
        ),
        (
            lambda: BehaviourCoupling(ThresholdAdoption(), sides="mask"),
            r"sides='mask' is not known",
        ),
        (
            lambda: BehaviourCoupling(ThresholdAdoption(), edge_types="work"),
            r"edge_types must be a sequence",
        ),
    ],
)
def test_bad_coupling_arguments_raise(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_bad_coupled_runs_raise():
    graph = _population(50)
    half_day = BehaviourCoupling(ThresholdAdoption(0.3, dt=0.5))
    with pytest.raises(ValueError, match=r"behaviour's dt \(0.5\) differs from the epidemic's"):
        simulate(SEIRM(interventions=[half_day]), graph, 2, initial_infected=2)
    per_agent = BehaviourCoupling(ThresholdAdoption(torch.full((7,), 0.3)))
    with pytest.raises(ValueError, match=r"threshold has shape \[7\]"):
        simulate(SEIRM(interventions=[per_agent]), graph, 2, initial_infected=2)
    bad_initial = BehaviourCoupling(ThresholdAdoption(0.3), initial=-3)
    with pytest.raises(ValueError, match=r"initial adopters"):
        simulate(SEIRM(interventions=[bad_initial]), graph, 2, initial_infected=2)
    no_i = BehaviourCoupling(ThresholdAdoption(0.3, risk_weight=1.0))
    with pytest.raises(ValueError, match=r"risk_weight reads the epidemic's infectious"):
        simulate(StagedSEIRM(interventions=[no_i]), graph, 2, initial_infected=2)
