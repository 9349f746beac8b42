"""SEIRM: force of infection by hand, stage schedules, conservation, direction, gradients."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import integrate, stats
from torch_geometric.data import HeteroData

from lpm_graph import PopulationGraph, simulate
from lpm_graph.datasets.generators import erdos_renyi
from lpm_graph.layers.samplers import RandomStreams
from lpm_graph.protocols import GRADABM_SUSCEPTIBILITY, SEIRM, Duration
from lpm_graph.protocols.base import StepContext

HH = ("agent", "household", "agent")
WORK = ("agent", "work", "agent")


def _four_agents(perm=None, edge_perm=False) -> PopulationGraph:
    """Agents 0..3 (ages 0, 2, 7, 3); household 0->1, 2->1; work 3->1, 0->2, 1->2."""
    perm = torch.arange(4) if perm is None else perm  # new id of old agent k is perm[k]
    data = HeteroData()
    data["agent"].num_nodes = 4
    age = torch.tensor([0, 2, 7, 3])
    new_age = torch.empty_like(age)
    new_age[perm] = age
    data["agent"].age_group = new_age
    for rel, edges in ((HH, [[0, 2], [1, 1]]), (WORK, [[3, 0, 1], [1, 2, 2]])):
        e = perm[torch.tensor(edges)]
        if edge_perm:
            e = e.flip(1)
        data[rel].edge_index = e
    return PopulationGraph(data)


def _hand_state(perm=None) -> dict[str, torch.Tensor]:
    """Agent 0 in E for 2 steps, agent 2 in I for 1 step, agent 3 in I for 0 steps, agent 1
    susceptible (fixed E = 3, I = 5 steps)."""
    perm = torch.arange(4) if perm is None else perm
    dt = torch.float64
    s, r, m = torch.zeros(4, dtype=dt), torch.zeros(4, dtype=dt), torch.zeros(4, dtype=dt)
    e, i = torch.zeros(4, 3, dtype=dt), torch.zeros(4, 5, dtype=dt)
    s[perm[1]] = 1
    e[perm[0], 2] = 1
    i[perm[2], 1] = 1
    i[perm[3], 0] = 1
    return {"S": s, "E": e, "I": i, "R": r, "M": m}


def _gamma_mass(k: int) -> float:
    """The kernel's share in the k-th day after the infection day, for an infection at a
    uniform time within its day: the mean over u of F(k + 2 - u) - F(k + 1 - u) (by quadrature)."""
    ref = stats.gamma(a=(5.5 / 2.14) ** 2, scale=2.14**2 / 5.5)
    mass, _ = integrate.quad(lambda u: ref.cdf(k + 2 - u) - ref.cdf(k + 1 - u), 0, 1, epsabs=1e-13)
    return mass


def _lambda_of(protocol, graph, state, agent):
    streams = RandomStreams(0)
    ctx = StepContext.begin(0, protocol.dt, state, streams, "expected")
    protocol.step(graph, state, ctx)
    flows = ctx.flows
    p = float(flows["infections"][agent].detach())
    return -math.log1p(-p)


def test_force_of_infection_matches_a_hand_computation():
    r0, b_hh, b_work, a_e, a_i = 2.0, 1.5, 0.5, 0.4, 1.0
    protocol = SEIRM(
        r0,
        0.0,
        edge_type_weights={"household": b_hh, "work": b_work},
        infectiousness={"E": a_e, "I": a_i},
    ).double()
    graph = _four_agents()
    # Ibar: agent 1 (age group 2) is the only agent of its group, with 2 household and 1 work
    # contacts; infection ages: agent 0 -> 2 steps (in E), agent 2 -> 3 + 1, agent 3 -> 3 + 0.
    # Agent 0 is in E's last step: it turns infectious (A_I) when its age reaches 3 days, at
    # the point within the step where it was infected in its own infection step.
    w = _gamma_mass
    ref = stats.gamma(a=(5.5 / 2.14) ** 2, scale=2.14**2 / 5.5)
    before, _ = integrate.quad(lambda u: ref.cdf(3) - ref.cdf(3 - u), 0, 1, epsabs=1e-13)
    last_e = a_e * before + a_i * (w(2) - before)
    household = (last_e + a_i * w(4)) / 2
    work = a_i * w(3) / 1
    expected = r0 * GRADABM_SUSCEPTIBILITY[2] * (b_hh * household + b_work * work)
    got = _lambda_of(protocol, graph, _hand_state(), 1)
    assert got == pytest.approx(expected, rel=1e-6)


def test_force_of_infection_does_not_depend_on_agent_or_edge_order():
    protocol = SEIRM(2.0, 0.0, edge_type_weights={"household": 1.5, "work": 0.5}).double()
    base = _lambda_of(protocol, _four_agents(), _hand_state(), 1)
    perm = torch.tensor([2, 0, 3, 1])
    graph = _four_agents(perm, edge_perm=True)
    assert _lambda_of(protocol, graph, _hand_state(perm), int(perm[1])) == pytest.approx(
        base, rel=1e-12
    )


def _population(n=3000, degree=10.0, seed=1) -> PopulationGraph:
    graph = erdos_renyi(n, degree, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    graph.set_node_attrs("agent", age_group=torch.randint(0, 8, (n,), generator=gen))
    return graph


@pytest.mark.parametrize("mode", ["stochastic", "expected"])
def test_stages_drain_on_schedule_without_infection(mode):
    graph = _population(500)
    traj = simulate(SEIRM(0.0, 0.2), graph, 12, initial_infected=50, seed=0, mode=mode)
    e, i = traj.counts["E"], traj.counts["I"]
    assert torch.all(e[:3] == 50) and torch.all(e[3:] == 0)  # E empties after exactly 3 days
    assert torch.all(i[:3] == 0) and torch.all(i[3:8] == 50) and torch.all(i[8:] == 0)
    assert float(traj.counts["R"][-1] + traj.counts["M"][-1]) == pytest.approx(50)


def test_gamma_stays_drain_with_the_configured_mean():
    graph = _population(20_000)
    protocol = SEIRM(0.0, 0.0, exposed=Duration.gamma(4.0, 1.5))
    traj = simulate(protocol, graph, 40, initial_infected=20_000, seed=0, mode="stochastic")
    onsets = traj.flows["onsets"]
    steps = torch.arange(1, onsets.numel() + 1, dtype=torch.float64)
    mean_stay = float((onsets.double() * steps).sum() / onsets.sum())
    assert mean_stay == pytest.approx(4.0, rel=0.02)


@pytest.mark.parametrize("exposed", [None, Duration.gamma(3.0, 1.2)])
@pytest.mark.parametrize("mode", ["stochastic", "expected"])
def test_conservation_and_no_negative_counts(mode, exposed):
    graph = _population()
    traj = simulate(
        SEIRM(4.0, 0.1, exposed=exposed),
        graph,
        60,
        initial_infected=30,
        seed=2,
        mode=mode,
        replicates=3,
        dtype=torch.float64,
    )
    total = sum(traj.counts[c] for c in "SEIRM")
    assert torch.allclose(total, torch.full_like(total, 3000.0), atol=1e-8)
    for c in "SEIRM":
        assert float(traj.counts[c].min()) >= -1e-9
    assert float(traj.counts["M"][-1].min()) > 0


def test_larger_reproduction_number_gives_more_infections_and_deaths():
    graph = _population()
    out = {}
    for r0 in (1.5, 3.0):
        traj = simulate(SEIRM(r0, 0.05), graph, 80, initial_infected=20, seed=4, replicates=20)
        out[r0] = (traj.flows["infections"].sum(0).mean(), traj.counts["M"][-1].mean())
    assert out[3.0][0] > out[1.5][0] and out[3.0][1] > out[1.5][1]


def test_deaths_pass_gradient_to_r_mortality_and_initial_infections():
    graph = _population(800)
    protocol = SEIRM(3.0, 0.1)
    p0 = torch.full((800,), 0.01, requires_grad=True)
    traj = simulate(protocol, graph, 40, initial_infected=p0, seed=1, replicates=4)
    traj.counts["M"][-1].sum().backward()
    assert float(protocol.reproduction_number.grad) > 0
    assert float(protocol.mortality.grad) > 0
    assert float(p0.grad.sum()) > 0


@pytest.mark.parametrize("exposed", [None, Duration.geometric(3.0)])
def test_expected_mode_gradcheck(exposed):
    graph = _population(60, degree=5.0)

    def deaths(r0, mortality, p0):
        protocol = SEIRM(r0, mortality, exposed=exposed, learnable=False).double()
        traj = simulate(protocol, graph, 15, initial_infected=p0, mode="expected")
        return traj.counts["M"][-1] + traj.counts["I"][-1]

    r0 = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    mortality = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)
    p0 = torch.full((60,), 0.05, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(deaths, (r0, mortality, p0))


def test_time_varying_reproduction_number():
    graph = _population()
    r_t = torch.tensor([3.0] * 10 + [0.0] * 50)
    traj = simulate(SEIRM(r_t, 0.0), graph, 60, initial_infected=30, seed=0)
    assert float(traj.flows["infections"][10:].sum()) == 0  # no force of infection after day 10
    assert float(traj.flows["infections"][:10].sum()) > 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"reproduction_number": float("nan")}, r"reproduction_number.*NaN"),
        ({"reproduction_number": -1.0}, r"reproduction_number.*non-negative"),
        ({"mortality": 1.5}, r"mortality"),
        ({"susceptibility": [1.0] * 3}, r"one value per age group \(8\)"),
        ({"infectiousness": {"E": 1.0, "X": 1.0}}, r"exactly the stages 'E' and 'I'"),
        ({"edge_type_weights": {"household": -1.0}}, r"edge_type_weights.*non-negative"),
    ],
)
def test_bad_parameters_raise(kwargs, match):
    args = {"reproduction_number": 2.0, "mortality": 0.01, **kwargs}
    with pytest.raises(ValueError, match=match):
        SEIRM(args.pop("reproduction_number"), args.pop("mortality"), **args)


def test_missing_or_bad_age_groups_raise():
    graph = erdos_renyi(50, 4.0, seed=1)
    with pytest.raises(ValueError, match=r"no 'agent' attribute 'age_group'.*set_node_attrs"):
        simulate(SEIRM(2.0, 0.01), graph, 3, initial_infected=2)
    graph.set_node_attrs("agent", age_group=torch.full((50,), 9))
    with pytest.raises(ValueError, match=r"age groups are 0..7"):
        simulate(SEIRM(2.0, 0.01), graph, 3, initial_infected=2)


def test_unknown_edge_type_raises():
    with pytest.raises(ValueError, match=r"school"):
        simulate(
            SEIRM(2.0, 0.01, edge_type_weights={"school": 1.0}),
            _population(100),
            3,
            initial_infected=2,
        )


@pytest.mark.parametrize("replicates", [None, 3])
def test_observables_by_age_add_up_and_reach_the_dataframe(replicates):
    pytest.importorskip("pandas")
    graph = _population(2000)
    traj = simulate(
        SEIRM(3.0, 0.05, by_age=True), graph, 30, initial_infected=20, seed=0,
        replicates=replicates,
    )  # fmt: skip
    age = graph.node_attrs()["age_group"]
    for c in "SEIRM":
        assert torch.equal(traj.counts[f"{c}_by_age"].sum(1), traj.counts[c])
    assert torch.equal(traj.flows["deaths_by_age"].sum(1), traj.flows["deaths"])
    assert torch.equal(
        traj.counts["S_by_age"][0], torch.bincount(age, minlength=8).float().reshape(
            8, *([1] if replicates else [])).expand_as(traj.counts["S_by_age"][0])
        - traj.counts["E_by_age"][0]
    )  # fmt: skip
    frame = traj.to_dataframe()
    assert {"M_by_age_7", "new_infections_by_age_0", "S"} <= set(frame.columns)


@pytest.mark.slow
def test_gradient_of_deaths_on_franklin_matches_finite_differences():
    # d E[total deaths] / d R over 60 days, 50 seeds, against a central finite difference with
    # common random numbers. Deaths are Bernoulli(mortality) on leaving I, so E[deaths] =
    # mortality * E[agents who left I]: the estimator differentiates that (same expectation,
    # far less variance). Measured: 615.6 +- 86.9 (SE) against 595.9 +- 10.1; straight-through
    # gives 1,985 and raw deaths with 16 alternatives 507 +- 203.
    from lpm_graph.datasets.bundled import franklin_contact_network

    graph = franklin_contact_network()
    r0, mortality, h, seeds = 2.5, 0.02, 0.1, 50

    def run(r, **kwargs):
        return simulate(
            SEIRM(r, mortality, learnable=False), graph, 60, initial_infected=100, seed=11,
            replicates=seeds, **kwargs,
        )  # fmt: skip

    r = torch.tensor(r0, requires_grad=True)
    traj = run(r, estimator="stochastic_derivative", alternatives=8)
    deaths = traj.expectation(lambda tr: mortality * (tr.counts["M"][-1] + tr.counts["R"][-1]))
    deaths.mean().backward()
    with torch.no_grad():
        up, down = (run(torch.tensor(r0 * (1 + s * h))).counts["M"][-1] for s in (1, -1))
    fd = float((up - down).mean()) / (2 * h * r0)
    assert fd > 0 and float(r.grad) > 0
    assert abs(float(r.grad) - fd) < 0.25 * fd, (float(r.grad), fd)


def test_per_agent_cache_is_not_fooled_by_a_reused_address():
    # A new tensor at a freed tensor's address (version 0 both) once got the freed one's
    # cached values[age]: finite differences of the susceptibility were then wrong at
    # random (the allocator decides). Two tensors over one numpy buffer reproduce it.
    np = pytest.importorskip("numpy")
    graph = erdos_renyi(16, 3, seed=0)
    graph.set_node_attrs(age_group=torch.arange(16) % 8)
    seirm = SEIRM()
    buffer = np.array(GRADABM_SUSCEPTIBILITY, dtype=np.float32)
    first = torch.from_numpy(buffer)
    assert torch.equal(seirm.per_agent(graph, "s", first), first[graph.node_attrs()["age_group"]])
    buffer[:] = 2.0  # same address, version 0: only the object differs
    second = torch.from_numpy(buffer)
    assert torch.equal(seirm.per_agent(graph, "s", second), torch.full((16,), 2.0))
