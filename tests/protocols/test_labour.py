"""LabourMarket: flows by hand, labour-force conservation, direction, gradients, calibration."""

from __future__ import annotations

import math

import pytest
import torch

from lpm_graph import PopulationGraph, simulate
from lpm_graph.protocols.labour import LabourMarket, add_labour_attributes, labour_population
from lpm_graph.train import Bounded, ParameterSet, Positive, SimulatorModel, Trainer

LN2 = math.log(2.0)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small graphs and many small steps: two OpenMP threads on a loaded two-core machine cost
    milliseconds per sparse product in barriers. Results do not depend on the thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def population() -> PopulationGraph:
    return labour_population(1500, num_areas=3, num_occupations=2, seed=1)


def _sim(*args, **kwargs):
    """``simulate`` without gradients (for tests that read values only)."""
    with torch.no_grad():
        return simulate(*args, **kwargs)


def _four_agents() -> PopulationGraph:
    """A path 0 - 1 - 2 - 3 (undirected contacts); areas 0, 0, 1, 1; occupations 0, 1, 1, 0;
    agent 3 is outside the labour force."""
    edges = torch.tensor([[0, 1], [1, 2], [2, 3]]).T
    graph = PopulationGraph.from_edge_index(edges, 4, undirected=True)
    graph.set_node_attrs(
        "agent",
        area=torch.tensor([0, 0, 1, 1]),
        occupation=torch.tensor([0, 1, 1, 0]),
        labour_force=torch.tensor([True, True, True, False]),
    )
    return graph


def _four_agent_protocol(**kwargs) -> LabourMarket:
    """delta = (0.1, 0.2) per occupation, eta = (0.5, 0.3) per area, one global driver
    x = (0, 1) with beta = ln 2 and gamma = -ln 2, phi = 1, psi = 0.5, c = 0.5; agent 1
    starts unemployed."""
    args = {
        "drivers": torch.tensor([[0.0], [1.0]]),
        "job_loss_sensitivity": [LN2],
        "hiring_sensitivity": [-LN2],
        "peer_job_loss": 1.0,
        "peer_hiring": 0.5,
        "claim_probability": 0.5,
        "initial_unemployment": torch.tensor([0.0, 1.0, 0.0, 0.0]),
        **kwargs,
    }
    return LabourMarket(torch.tensor([0.1, 0.2]), torch.tensor([0.5, 0.3]), **args).double()


# ---------------------------------------------------------------------------- by hand


def test_two_steps_by_hand_in_expected_mode():
    protocol, graph = _four_agent_protocol(), _four_agents()
    traj = _sim(protocol, graph, 2, mode="expected", dtype=torch.float64, record_states=True)
    # Step 0, x = 0 (driver factors 1). Labour-force contacts: agent 0 {1}, 1 {0, 2},
    # 2 {1} (3 is outside the labour force). Unemployed shares u = (1, 0, 1), employed
    # shares e = 1 - u = (0, 1, 0).
    #   job loss, agent 0 (occ 0): h = 0.1 (1 + 1 * 1) = 0.2, p = 1 - e^-0.2 = 0.1812692
    #             agent 2 (occ 1): h = 0.2 (1 + 1 * 1) = 0.4, p = 1 - e^-0.4 = 0.3296800
    #   hiring,   agent 1 (area 0): h = 0.5 (1 + 0.5 * 1) = 0.75, p = 1 - e^-0.75 = 0.5276334
    #   job losses 0.5109492, hires 0.5276334, claims 0.5 * 0.5109492 = 0.2554746
    after = traj.states[1]
    expected_e = [1 - 0.1812692, 0.5276334, 1 - 0.3296800, 0.0]
    assert after["employed"].tolist() == pytest.approx(expected_e, abs=1e-7)
    assert after["unemployed"].tolist() == pytest.approx(
        [0.1812692, 1 - 0.5276334, 0.3296800, 0.0], abs=1e-7
    )
    assert float(traj.flows["job_losses"][0]) == pytest.approx(0.5109492, abs=1e-7)
    assert float(traj.flows["hires"][0]) == pytest.approx(0.5276334, abs=1e-7)
    assert float(traj.flows["claims"][0]) == pytest.approx(0.2554746, abs=1e-7)
    # claims by area: agent 0 in area 0, agent 2 in area 1
    assert traj.flows["claims_by_area"][0].tolist() == pytest.approx(
        [0.5 * 0.1812692, 0.5 * 0.3296800], abs=1e-7
    )
    # Step 1, x = 1: job-loss factor e^(ln 2) = 2, hiring factor e^(-ln 2) = 0.5.
    # u = (0.4723666, (0.1812692 + 0.3296800) / 2 = 0.2554746, 0.4723666), e = 1 - u.
    #   job loss: agent 0: h = 0.1 * 2 * 1.4723666 = 0.2944733, p = 0.2550762, x E 0.8187308
    #             agent 1: h = 0.2 * 2 * 1.2554746 = 0.5021898, p = 0.3947961, x E 0.5276334
    #             agent 2: h = 0.2 * 2 * 1.4723666 = 0.5889466, p = 0.4450885, x E 0.6703200
    #             job losses = 0.2088387 + 0.2083076 + 0.2983517 = 0.7154981
    #   hiring:   agent 0: h = 0.5 * 0.5 * (1 + 0.5 * 0.5276334) = 0.3159542, p = 0.2709071,
    #             x U 0.1812692 = 0.0491071
    #             agent 1: h = 0.25 * (1 + 0.5 * 0.7445254) = 0.3430657, p = 0.2904084,
    #             x U 0.4723666 = 0.1371792
    #             agent 2: h = 0.3 * 0.5 * (1 + 0.5 * 0.5276334) = 0.1895725, p = 0.1726873,
    #             x U 0.3296800 = 0.0569315
    #             hires = 0.2432179
    assert float(traj.flows["job_losses"][1]) == pytest.approx(0.7154981, abs=1e-6)
    assert float(traj.flows["hires"][1]) == pytest.approx(0.2432179, abs=1e-6)
    assert float(traj.flows["claims"][1]) == pytest.approx(0.5 * 0.7154981, abs=1e-6)
    # employed: 2 - 0.5109492 + 0.5276334 = 2.0166842, then - 0.7154981 + 0.2432179
    assert traj.counts["employed"].tolist() == pytest.approx([2.0, 2.0166842, 1.5444041], abs=1e-6)
    assert traj.counts["not_in_labour_force"].tolist() == [1.0, 1.0, 1.0]


def test_first_step_mean_of_stochastic_runs_is_the_expected_flow():
    # From a fixed state, one step's flows are sums of independent draws, so their mean over
    # replicates estimates the expected-mode flows exactly (binomial standard errors).
    protocol, graph = _four_agent_protocol(), _four_agents()
    expected = _sim(protocol, graph, 1, mode="expected", dtype=torch.float64)
    runs = _sim(protocol, graph, 1, replicates=20_000, seed=3, dtype=torch.float64)
    for name in ("job_losses", "hires", "claims"):
        draws = runs.flows[name][0]
        se = float(draws.std()) / math.sqrt(draws.numel())
        assert abs(float(draws.mean()) - float(expected.flows[name][0])) < 4 * se, name


def test_certain_and_impossible_moves():
    graph = _four_agents()
    never = _four_agent_protocol(
        job_loss_sensitivity=[0.0], peer_job_loss=0.0, claim_probability=1.0
    )
    with torch.no_grad():
        never.job_loss_rate.zero_()
        never.hiring_rate.fill_(1e3)
    traj = _sim(never, graph, 2, replicates=5, seed=0)
    assert float(traj.flows["job_losses"].abs().sum()) == 0
    assert traj.flows["hires"][0].tolist() == [1.0] * 5  # agent 1 is hired at once
    assert traj.counts["employed"][-1].tolist() == [3.0] * 5
    always = _four_agent_protocol(claim_probability=1.0)
    with torch.no_grad():
        always.job_loss_rate.fill_(1e3)
    traj = _sim(always, graph, 1, replicates=5, seed=0)
    assert traj.flows["job_losses"][0].tolist() == [2.0] * 5  # agents 0 and 2
    assert torch.equal(traj.flows["claims"], traj.flows["job_losses"])  # take-up 1


def test_rates_are_per_unit_time():
    # Without hiring, the survival of a job over one step of dt = 1 is exp(-delta), and over
    # two steps of dt = 0.5 exp(-delta / 2)^2: the same.
    graph = _four_agents()
    kwargs = {"labour_force": None, "initial_unemployment": 0.0}
    one = _sim(LabourMarket(0.3, 0.0, **kwargs), graph, 1, mode="expected")
    two = _sim(LabourMarket(0.3, 0.0, dt=0.5, **kwargs), graph, 2, mode="expected")
    assert float(two.counts["employed"][-1]) == pytest.approx(4 * math.exp(-0.3), rel=1e-6)
    assert float(one.counts["employed"][-1]) == pytest.approx(4 * math.exp(-0.3), rel=1e-6)


# ---------------------------------------------------------------------------- invariants


def _shock(steps: int, areas: int) -> torch.Tensor:
    """Per-area drivers [T, A, 2]: a lockdown (stringency 1) in weeks 5-12 everywhere and a
    wave of cases whose peak moves from area to area."""
    t = torch.arange(steps, dtype=torch.float32)[:, None]
    stringency = ((t >= 5) & (t < 12)).float().expand(steps, areas)
    cases = torch.exp(-0.5 * ((t - 8 - 3 * torch.arange(areas)) / 3) ** 2)
    return torch.stack([cases, stringency], -1)


@pytest.mark.parametrize("mode", ["stochastic", "expected"])
def test_employed_plus_unemployed_is_the_labour_force(population, mode):
    steps, areas = 30, 3
    protocol = LabourMarket(
        torch.tensor([0.01, 0.02]),
        torch.tensor([0.1, 0.2, 0.15]),
        drivers=_shock(steps, areas),
        job_loss_sensitivity=[1.0, 1.5],
        hiring_sensitivity=[0.0, -1.0],
        peer_job_loss=0.8,
        peer_hiring=0.5,
    )
    traj = _sim(
        protocol,
        population,
        steps,
        mode=mode,
        replicates=3,
        seed=5,
        dtype=torch.float64,
        record_states=True,
    )
    lf = population["agent"].labour_force
    size = float(lf.sum())
    total = traj.counts["employed"] + traj.counts["unemployed"]
    assert torch.allclose(total, torch.full_like(total, size), rtol=0, atol=1e-9)
    nilf = traj.counts["not_in_labour_force"]
    assert torch.all(nilf == 1500 - size)
    for state in traj.states:  # agent by agent, every step
        both = state["employed"] + state["unemployed"]
        assert torch.allclose(both, lf.double()[:, None].expand_as(both), atol=1e-12)
        assert float(state["employed"].min()) >= 0 and float(state["unemployed"].min()) >= 0
    assert float(traj.flows["job_losses"].sum()) > 0 and float(traj.flows["hires"].sum()) > 0
    assert bool((traj.flows["claims"] <= traj.flows["job_losses"] + 1e-12).all())
    assert torch.allclose(traj.flows["claims_by_area"].sum(1), traj.flows["claims"])
    by_area = traj.counts["employed_by_area"] + traj.counts["unemployed_by_area"]
    assert torch.allclose(by_area.sum(1), total)
    if mode == "stochastic":
        assert set(torch.cat([s["employed"].unique() for s in traj.states]).tolist()) == {0, 1}


def test_seeded_runs_repeat_and_differ_across_seeds(population):
    protocol = LabourMarket(0.02, 0.1, peer_job_loss=0.5)
    a = _sim(protocol, population, 10, seed=1)
    b = _sim(protocol, population, 10, seed=1)
    c = _sim(protocol, population, 10, seed=2)
    assert torch.equal(a.flows["claims"], b.flows["claims"])
    assert not torch.equal(a.flows["job_losses"], c.flows["job_losses"])


# ---------------------------------------------------------------------------- direction


def _expected(population, steps=20, **kwargs) -> dict[str, torch.Tensor]:
    args = {"job_loss_rate": 0.01, "hiring_rate": 0.1, **kwargs}
    traj = _sim(LabourMarket(**args), population, steps, mode="expected")
    return {**traj.flows, **traj.counts}


def test_drivers_peers_and_take_up_move_claims_the_right_way(population):
    x = _shock(20, 3)[:, 0, 1:]  # the lockdown alone, for everyone: [T, 1]
    base = _expected(population, drivers=x, job_loss_sensitivity=[0.0])
    shocked = _expected(population, drivers=x, job_loss_sensitivity=[1.0])
    assert torch.allclose(shocked["claims"][:5], base["claims"][:5])  # no shock before week 5
    assert bool((shocked["claims"][5:12] > base["claims"][5:12]).all())
    slow = _expected(population, drivers=x, hiring_sensitivity=[-2.0])
    assert float(slow["unemployed"][-1]) > float(base["unemployed"][-1])
    peers = _expected(population, peer_job_loss=2.0)
    assert float(peers["job_losses"].sum()) > float(_expected(population)["job_losses"].sum())
    referrals = _expected(population, peer_hiring=2.0)
    assert float(referrals["hires"].sum()) > float(_expected(population)["hires"].sum())
    more = _expected(population, claim_probability=0.8)
    assert torch.allclose(more["claims"], 2 * _expected(population)["claims"])


def test_per_area_drivers_shock_only_their_area(population):
    x = torch.zeros(12, 3, 1)
    x[4:8, 1] = 1.0  # a lockdown in area 1 only
    base = _expected(population, 12, drivers=x, job_loss_sensitivity=[0.0])
    shocked = _expected(population, 12, drivers=x, job_loss_sensitivity=[2.0])
    diff = shocked["claims_by_area"] - base["claims_by_area"]
    assert float(diff[:, [0, 2]].abs().max()) < 1e-3 * float(base["claims_by_area"].max())
    assert bool((diff[4:8, 1] > 0).all())


def test_occupation_and_age_scale_the_job_loss_hazard(population):
    occupation = population["agent"].occupation
    lf = population["agent"].labour_force
    traj = _sim(
        LabourMarket(torch.tensor([0.0, 0.05]), 0.0, initial_unemployment=0.0),
        population,
        1,
        mode="expected",
        record_states=True,
    )
    lost = traj.states[1]["unemployed"]
    assert float(lost[occupation == 0].abs().max()) == 0
    assert torch.allclose(lost[(occupation == 1) & lf], torch.tensor(1 - math.exp(-0.05)))
    age = population["agent"].age_group
    rho = [0.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    traj = _sim(
        LabourMarket(0.05, 0.0, relative_job_loss=rho, initial_unemployment=0.0),
        population,
        1,
        mode="expected",
        record_states=True,
    )
    lost = traj.states[1]["unemployed"]
    assert torch.allclose(lost[(age == 1) & lf], torch.tensor(1 - math.exp(-0.1)))
    assert torch.allclose(lost[(age == 2) & lf], torch.tensor(1 - math.exp(-0.05)))


# ---------------------------------------------------------------------------- gradients


def test_expected_mode_gradcheck():
    graph = labour_population(120, num_areas=2, num_occupations=2, seed=3)
    x = torch.linspace(0, 1, 6, dtype=torch.float64)[:, None]

    def observed(delta, eta, beta, gamma, phi, psi, c):
        protocol = LabourMarket(
            delta,
            eta,
            drivers=x,
            job_loss_sensitivity=beta,
            hiring_sensitivity=gamma,
            peer_job_loss=phi,
            peer_hiring=psi,
            claim_probability=c,
            learnable=False,
        ).double()
        traj = simulate(protocol, graph, 6, mode="expected", dtype=torch.float64)
        return traj.flows["claims"].sum() + traj.counts["unemployed"][-1]

    values = ([0.02, 0.05], [0.1, 0.3], [1.0], [-0.5], 0.7, 0.5, [0.4, 0.6])
    args = tuple(torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in values)
    assert torch.autograd.gradcheck(observed, args)


def test_stochastic_derivative_gradient_matches_the_exact_one():
    # Without peer terms the agents are independent chains, so expected mode gives the exact
    # mean and its gradient; the unbiased stochastic-derivative estimate (2,000 replicates)
    # must agree. Standard errors measured over 10 seeds: 2.7 % (delta), 2.6 % (beta), 12 %
    # (eta).
    graph = PopulationGraph.from_edge_index(torch.zeros(2, 0, dtype=torch.long), 100)
    x = torch.linspace(0, 1, 8, dtype=torch.float64)[:, None]

    def gradients(**run):
        protocol = LabourMarket(
            0.05,
            0.3,
            drivers=x,
            job_loss_sensitivity=[1.0],
            claim_probability=0.5,
            labour_force=None,
            initial_unemployment=0.1,
        ).double()
        traj = simulate(protocol, graph, 8, dtype=torch.float64, **run)
        total = traj.expectation(lambda tr: tr.flows["claims"].sum(0))
        total.mean().backward()
        return [
            float(p.grad.sum())
            for p in (protocol.job_loss_rate, protocol.job_loss_sensitivity, protocol.hiring_rate)
        ]

    exact = gradients(mode="expected")
    estimate = gradients(estimator="stochastic_derivative", replicates=2000, seed=0)
    for name, a, b, tol in zip(("delta", "beta", "eta"), exact, estimate, (0.11, 0.11, 0.5)):
        assert b == pytest.approx(a, rel=tol), name
    assert exact[0] > 0 and exact[1] > 0 and exact[2] > 0  # more hires, more to lose


def test_straight_through_gradients_reach_every_parameter(population):
    protocol = LabourMarket(
        torch.tensor([0.02, 0.03]),
        0.1,
        drivers=_shock(10, 3)[:, 0, :],
        job_loss_sensitivity=[0.5, 0.5],
        peer_job_loss=0.5,
        peer_hiring=0.5,
    )
    traj = simulate(protocol, population, 10, replicates=2, seed=0)
    traj.flows["claims"].sum().backward()
    for name, p in protocol.named_parameters():
        if name in ("sick_job_loss", "isolation_job_loss"):  # ports unlinked: not in the step
            assert p.grad is None, name
        elif name != "hiring_sensitivity":  # zero by default: still a gradient, of any sign
            assert p.grad is not None and float(p.grad.abs().sum()) > 0, name


# ---------------------------------------------------------------------------- calibration

TRUE = {"job_loss_rate": 0.004, "job_loss_sensitivity": 2.0, "hiring_rate": 0.1}


def _calibrate(graph: PopulationGraph, target_run: dict, epochs: int) -> dict[str, float]:
    """Fit delta, beta and eta with Adam (lr 0.1) from a wrong start (x2, x0.5, x0.5) to the
    weekly claims and unemployed counts of a run with TRUE values, in expected mode."""
    steps = 40
    t = torch.arange(steps, dtype=torch.float32)
    lockdown = torch.where((t >= 6) & (t < 14), 1.0, torch.where(t >= 14, 0.3, 0.0))[:, None]
    fixed = {
        "drivers": lockdown,
        "peer_job_loss": 0.5,
        "peer_hiring": 0.5,
        "claim_probability": 0.4,
        "peer_edge_types": ("work", "household"),
    }
    truth = LabourMarket(
        TRUE["job_loss_rate"],
        TRUE["hiring_rate"],
        job_loss_sensitivity=[TRUE["job_loss_sensitivity"]],
        **fixed,
    )
    with torch.no_grad():
        traj = simulate(truth, graph, steps, **target_run)
    observed = {"claims": traj.flows["claims"], "unemployed": traj.counts["unemployed"][1:]}
    if "replicates" in target_run:
        observed = {k: v.mean(-1) for k, v in observed.items()}
    params = ParameterSet(
        {
            "job_loss_rate": Positive(2 * TRUE["job_loss_rate"]),
            "job_loss_sensitivity": Bounded(torch.tensor([1.0]), -5.0, 5.0),
            "hiring_rate": Positive(0.5 * TRUE["hiring_rate"]),
        }
    )
    model = SimulatorModel(
        LabourMarket(learnable=False, **fixed),
        graph,
        steps,
        params,
        initial_infected=None,
        outputs={
            "claims": lambda tr: tr.flows["claims"],
            "unemployed": lambda tr: tr.counts["unemployed"][1:],
        },
    )
    Trainer(model, lr=0.1, log_every=None).fit(observed, slice(0, steps), epochs=epochs)
    return {k: float(v.reshape(-1)[0]) for k, v in model.values().items()}


def test_calibration_recovers_parameters_from_expected_claims():
    # Measured: every parameter within 1.2 % after 80 epochs.
    graph = labour_population(1000, num_areas=2, num_occupations=3, seed=0)
    fitted = _calibrate(graph, {"mode": "expected"}, epochs=80)
    for name, value in fitted.items():
        assert value == pytest.approx(TRUE[name], rel=0.05), name


def test_calibration_recovers_parameters_from_stochastic_claims():
    # Data: the mean of 8 stochastic runs on 4,000 agents (about 1,900 in the labour force,
    # so about 15,000 worker-runs), fitted by the mean-field expected mode. Measured over
    # target seeds 1-4: errors at most 4.3 % (delta), 2.0 % (beta), 2.1 % (eta).
    graph = labour_population(4000, num_areas=2, num_occupations=3, seed=0)
    fitted = _calibrate(graph, {"replicates": 8, "seed": 2}, epochs=80)
    for name, value in fitted.items():
        assert value == pytest.approx(TRUE[name], rel=0.15), name


# ---------------------------------------------------------------------------- inputs


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"job_loss_rate": -0.1}, r"job_loss_rate.*non-negative"),
        ({"hiring_rate": float("nan")}, r"hiring_rate.*NaN"),
        ({"peer_job_loss": -1.0}, r"peer_job_loss.*non-negative"),
        ({"claim_probability": 1.5}, r"claim_probability.*\[0, 1\]"),
        ({"drivers": torch.zeros(5)}, r"drivers must have shape \[T, D\].*drivers\[:, None\]"),
        ({"drivers": torch.zeros(5, 2, 3, 1)}, r"drivers must have shape"),
        ({"drivers": torch.full((5, 1), float("nan"))}, r"drivers contains NaN"),
        ({"drivers": torch.zeros(5, 2), "job_loss_sensitivity": [1.0]}, r"one value per driver"),
        ({"job_loss_sensitivity": [1.0]}, r"pass drivers"),
        ({"drivers": torch.zeros(5, 1), "hiring_sensitivity": [float("inf")]}, r"NaN or inf"),
        ({"hiring_rate": torch.ones(3), "drivers": torch.zeros(5, 2, 1)}, r"number of areas"),
        ({"hiring_rate": torch.ones(2), "num_areas": 3}, r"number of areas"),
        ({"relative_job_loss": [1.0, 2.0]}, r"one value per age group \(8\)"),
        ({"initial_unemployment": 1.5}, r"initial_unemployment"),
        ({"peer_edge_types": "work"}, r"sequence of edge-type names"),
        ({"backend": "gpu"}, r"backend='gpu' is not an aggregation backend"),
    ],
)
def test_bad_parameters_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LabourMarket(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"peer_edge_types": ("school",)}, r"peer_edge_types \['school'\].*'contact'"),
        ({"labour_force": "employable"}, r"no 'agent' attribute 'employable'"),
        ({"job_loss_rate": torch.ones(1)}, r"'occupation' has values in \[0, 1\].*1 occupations"),
        ({"hiring_rate": torch.ones(1)}, r"'area' has values in \[0, 1\].* 1 areas"),
        ({"occupation_attr": "area_name"}, r"no 'agent' attribute 'area_name'"),
        ({"relative_job_loss": [1.0] * 8}, r"no 'agent' attribute 'age_group'"),
        ({"initial_unemployment": "jobless"}, r"attribute 'jobless'"),
        ({"initial_unemployment": torch.zeros(3)}, r"one probability per agent \[4\]"),
        ({"drivers": torch.zeros(1, 1)}, r"drivers cover 1 steps but step 1 needs row 1"),
        ({"drivers": torch.zeros(3, 2, 1), "num_areas": 2, "hiring_rate": 0.1}, None),
    ],
)
def test_bad_graph_inputs_raise(kwargs, match):
    graph = _four_agents()
    if match is None:  # control: a valid combination runs
        _sim(LabourMarket(initial_unemployment=0.1, **kwargs), graph, 3)
        return
    args = {"job_loss_rate": torch.ones(2) * 0.1, "initial_unemployment": 0.1, **kwargs}
    with pytest.raises(ValueError, match=match):
        _sim(LabourMarket(**args), graph, 3)


def test_labour_force_must_be_boolean():
    graph = _four_agents()
    graph.set_node_attrs("agent", labour_force=torch.tensor([0.0, 0.5, 1.0, 1.0]))
    with pytest.raises(ValueError, match=r"'labour_force' must be a bool"):
        _sim(LabourMarket(initial_unemployment=0.1), graph, 1)


def test_initial_infected_names_the_initially_unemployed():
    graph = _four_agents()
    traj = _sim(
        LabourMarket(0.0, 0.0),
        graph,
        1,
        initial_infected=torch.tensor([0, 3]),
        seed=0,
        record_states=True,
    )
    # agent 3 is outside the labour force: dropped
    assert traj.states[0]["unemployed"].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert traj.states[0]["employed"].tolist() == [0.0, 1.0, 1.0, 0.0]


def test_plan_lists_the_phases_in_order():
    plan = str(LabourMarket())
    assert plan.index("1. job_loss") < plan.index("2. hiring") < plan.index("3. claims")


# ---------------------------------------------------------------------------- populations


def test_labour_population_attributes(population):
    agents = population["agent"]
    lf, unemployed = agents.labour_force, agents.unemployed
    assert lf.dtype == torch.bool and bool((unemployed <= lf).all())
    rate = float(unemployed.sum()) / float(lf.sum())
    assert rate == pytest.approx(0.04, abs=0.005)
    assert bool((agents.age[lf] >= 20).all()) and bool((agents.age[lf] <= 64).all())
    workers = agents.workplace >= 0
    assert torch.equal(lf & ~unemployed, workers)
    for place in agents.workplace[workers].unique()[:20]:  # co-workers share an occupation
        assert agents.occupation[agents.workplace == place].unique().numel() == 1
    for home in range(20):  # a household lives in one area
        assert agents.area[agents.household == home].unique().numel() == 1
    assert set(agents.area.unique().tolist()) == {0, 1, 2}
    # runs from the graph's own initial unemployment
    traj = _sim(LabourMarket(), population, 0)
    assert float(traj.counts["unemployed"][0]) == float(unemployed.sum())


def test_add_labour_attributes_leaves_its_input_alone():
    graph = PopulationGraph.from_edge_index(torch.tensor([[0, 1], [1, 2]]), 50)
    out = add_labour_attributes(graph, num_areas=2, unemployment=0.1, seed=0)
    assert "area" not in graph.node_attrs("agent")
    agents = out["agent"]
    assert bool(agents.labour_force.all())  # no ages: everyone is of working age
    assert int(agents.unemployed.sum()) == 5
    with pytest.raises(ValueError, match="unemployment must be a share"):
        add_labour_attributes(graph, unemployment=1.0)
