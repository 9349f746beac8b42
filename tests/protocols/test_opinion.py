"""Opinion protocols: threshold adoption and bounded confidence, by hand, invariants, gradients,
and calibration of their own parameters from their simulated data."""

from __future__ import annotations

import math

import pytest
import torch

from lpm_graph import PopulationGraph, simulate
from lpm_graph.datasets.generators import complete_graph, erdos_renyi
from lpm_graph.layers.samplers import RandomStreams
from lpm_graph.protocols.base import StepContext
from lpm_graph.protocols.opinion import (
    BoundedConfidence,
    ConfidenceAverage,
    NeighbourFraction,
    ThresholdAdoption,
)
from lpm_graph.train import Bounded, ParameterSet, SimulatorModel, Trainer

BACKENDS = ["csr", "native"]
F64 = torch.float64


def _four(weight_3_to_2: float = 1.0) -> PopulationGraph:
    """Agents 0..3, undirected contacts 0-1, 0-2, 1-2, 1-3, 2-3; the edge 3 -> 2 weighs
    ``weight_3_to_2``, every other edge 1."""
    pairs = torch.tensor([[0, 0, 1, 1, 2], [1, 2, 2, 3, 3]])
    edge_index = torch.cat([pairs, pairs.flip(0)], 1)  # edge 9 is 3 -> 2
    weight = torch.ones(10, dtype=F64)
    weight[9] = weight_3_to_2
    return PopulationGraph.from_edge_index(edge_index, 4, edge_weight=weight)


THETA = [0.9, 0.3, 0.5, 0.45]  # thresholds of agents 0..3 (agent 0 is the seed)


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


# ---------------------------------------------------------------------------- threshold


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["stochastic", "expected"])
@pytest.mark.parametrize(
    ("weight", "adopters"),
    [
        # In-neighbours: 1 <- {0, 2, 3}, 2 <- {0, 1, 3}, 3 <- {1, 2}; agent 0 adopts at t = 0.
        # Unit weights. Step 1: f_1 = 1/3 >= 0.3 adopts; f_2 = 1/3 < 0.5; f_3 = 0 < 0.45.
        # Step 2: f_2 = 2/3 >= 0.5 and f_3 = 1/2 >= 0.45 adopt: everyone by step 2.
        (1.0, [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]]),
        # Edge 3 -> 2 weighs 4. Step 1 as before (f_2 = 1/6). Step 2: f_2 = (1 + 1) / 6 = 1/3
        # < 0.5 waits, f_3 = 1/2 adopts. Step 3: f_2 = (1 + 1 + 4) / 6 = 1 adopts.
        (4.0, [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 0, 1], [1, 1, 1, 1]]),
    ],
)
@pytest.mark.parametrize("theta_3", [0.45, 0.5])  # 0.5: f_3 = 1/2 reaches it exactly, adopts
def test_exact_threshold_cascade_on_four_agents_by_hand(backend, mode, weight, adopters, theta_3):
    theta = torch.tensor([*THETA[:3], theta_3])
    protocol = ThresholdAdoption(theta, math.inf, backend=backend)
    traj = simulate(
        protocol, _four(weight), 3, initial_infected=torch.tensor([0]), mode=mode,
        record_states=True, dtype=F64,
    )  # fmt: skip
    got = [s["adopted"].detach().tolist() for s in traj.states]
    assert got == adopters
    assert traj.counts["adopted"].tolist() == [sum(a) for a in adopters]
    assert traj.flows["adoptions"].tolist() == [
        sum(b) - sum(a) for a, b in zip(adopters, adopters[1:])
    ]


def test_smooth_adoption_probabilities_by_hand():
    # Expected mode, sharpness 10. Step 1: agent 0 adopted; p_i = sigmoid(10 (f_i - theta_i))
    # with f = (-, 1/3, 1/3, 0): p_1 = sigmoid(0.333) = 0.58257, p_2 = sigmoid(-1.667) =
    # 0.15887, p_3 = sigmoid(-4.5) = 0.01099. Step 2: f_1 = (1 + p_2 + p_3) / 3,
    # f_2 = (1 + p_1 + p_3) / 3, f_3 = (p_1 + p_2) / 2;
    # a_i += (1 - a_i) sigmoid(10 (f_i - theta_i)).
    protocol = ThresholdAdoption(torch.tensor(THETA), 10.0)
    traj = simulate(
        protocol, _four(), 2, initial_infected=torch.tensor([0]), mode="expected",
        record_states=True, dtype=F64,
    )  # fmt: skip
    p1, p2, p3 = 0.5825702064623147, 0.15886910488091513, 0.01098694263059318
    step1 = [1.0, p1, p2, p3]
    assert traj.states[1]["adopted"].tolist() == pytest.approx(step1, rel=1e-6)
    f = [None, (1 + p2 + p3) / 3, (1 + p1 + p3) / 3, (p1 + p2) / 2]
    step2 = [1.0] + [
        step1[i] + (1 - step1[i]) * _sigmoid(10 * (f[i] - THETA[i])) for i in (1, 2, 3)
    ]
    assert traj.states[2]["adopted"].tolist() == pytest.approx(step2, rel=1e-6)
    # dt = 0.5 keeps the probability per day: 1 - (1 - p)^0.5 per step (p_1 -> 0.35391)
    half = ThresholdAdoption(torch.tensor(THETA), 10.0, dt=0.5)
    traj = simulate(half, _four(), 1, initial_infected=torch.tensor([0]), mode="expected",
                    record_states=True, dtype=F64)  # fmt: skip
    assert float(traj.states[1]["adopted"][1].detach()) == pytest.approx(
        0.3539119305097135, rel=1e-6
    )


def test_abandonment_by_hand():
    # Exact rule, abandonment 0.5 per day, expected mode. Step 1, from the state at its start:
    # agent 1 adopts (f_1 = 1/3 >= 0.3); agent 0, the only adopter, stays with e^-0.5 (those
    # adopting in this step cannot abandon in it).
    protocol = ThresholdAdoption(torch.tensor(THETA), math.inf, abandonment=0.5)
    traj = simulate(protocol, _four(), 1, initial_infected=torch.tensor([0]), mode="expected",
                    record_states=True, dtype=F64)  # fmt: skip
    want = [math.exp(-0.5), 1.0, 0.0, 0.0]
    assert traj.states[1]["adopted"].detach().tolist() == pytest.approx(want, rel=1e-7)
    assert float(traj.flows["abandonments"][0].detach()) == pytest.approx(1 - math.exp(-0.5))


@pytest.mark.parametrize("stages", [False, True])
@pytest.mark.parametrize(("rho", "new"), [(1.0, [0, 1, 1, 1]), (0.8, [0, 1, 1, 0])])
def test_infectious_neighbours_push_adoption_by_hand(stages, rho, new):
    # Agent 1 is infectious, agent 0 adopted. z_i = f_i + rho g_i - theta_i:
    # agent 1: f = 1/3 >= 0.3 adopts; agent 2: f = 1/3, g = 1/3: 1/3 + rho/3 - 0.5 >= 0 for
    # rho >= 0.5; agent 3: f = 0, g = 1/2: rho/2 - 0.45 >= 0 iff rho >= 0.9.
    protocol = ThresholdAdoption(torch.tensor(THETA), math.inf, risk_weight=rho)
    adopted = torch.tensor([1.0, 0, 0, 0], dtype=F64)
    infectious = torch.tensor([0.0, 1, 0, 0], dtype=F64)
    if stages:  # SEIRM's I: [N, K] by steps spent in I
        infectious = torch.zeros(4, 5, dtype=F64)
        infectious[1, 2] = 1.0
    state = {"adopted": adopted, "not_adopted": 1 - adopted, "I": infectious}
    ctx = StepContext.begin(0, protocol.dt, state, RandomStreams(0), "stochastic")
    protocol.step(_four(), state, ctx)
    flows = ctx.flows
    assert flows["adoptions"].tolist() == new


def _random_graph(n: int = 300, degree: float = 6.0, seed: int = 0) -> PopulationGraph:
    """G(n, m) with symmetric random weights in [0.5, 1.5) (one weight per contact)."""
    g = erdos_renyi(n, degree, seed=seed)
    e = g.edge_index()
    pairs = e[:, e[0] < e[1]]
    w = 0.5 + torch.rand(pairs.shape[1], generator=torch.Generator().manual_seed(seed), dtype=F64)
    return PopulationGraph.from_edge_index(pairs, n, edge_weight=w, undirected=True)


def test_adoption_invariants_with_replicates():
    graph = _random_graph()
    n = graph.num_nodes()
    traj = simulate(
        ThresholdAdoption(0.3, 15.0, abandonment=0.1), graph, 25, initial_infected=0.1,
        seed=3, replicates=20, record_states=True,
    )  # fmt: skip
    for s in traj.states:
        a = s["adopted"].detach()
        assert set(a.unique().tolist()) <= {0.0, 1.0}
        assert torch.equal(a + s["not_adopted"].detach(), torch.ones_like(a))
    total = traj.counts["adopted"] + traj.counts["not_adopted"]
    assert torch.equal(total.detach(), torch.full_like(total, n))
    assert (
        float(traj.flows["abandonments"].detach().sum()) > 0
    )  # the invariant was tested with churn
    # Without abandonment adoption is permanent: counts never fall, in every replicate.
    permanent = simulate(ThresholdAdoption(0.3, 15.0), graph, 25, initial_infected=0.1, seed=3,
                         replicates=20)  # fmt: skip
    steps = permanent.counts["adopted"].detach().diff(dim=0)
    assert bool((steps >= 0).all()) and float(steps.sum()) > 0


def test_lower_thresholds_give_more_adopters():
    graph = _random_graph()
    finals = [
        float(
            simulate(ThresholdAdoption(t, 20.0), graph, 20, initial_infected=0.1, mode="expected")
            .counts["adopted"][-1]
            .detach()
        )  # fmt: skip
        for t in (0.4, 0.45, 0.5, 0.6)
    ]
    assert all(a > b for a, b in zip(finals, finals[1:])), finals
    assert finals[0] > 0.9 * 300 and finals[-1] < 0.5 * 300, finals


def test_adoption_gradients_match_autograd_gradcheck():
    graph = _random_graph(25, 4.0)
    initial = torch.full((25,), 0.2, dtype=F64)

    def adopters(theta, beta, rho):
        protocol = ThresholdAdoption(theta, beta, risk_weight=rho)
        state = {"adopted": initial, "not_adopted": 1 - initial, "I": 0.3 * initial}
        traj = simulate(protocol, graph, 4, state=state, mode="expected")
        return traj.counts["adopted"][1:]

    args = tuple(torch.tensor(v, dtype=F64, requires_grad=True) for v in (0.3, 8.0, 0.7))
    assert torch.autograd.gradcheck(adopters, args)


def test_threshold_is_recovered_by_gradient_calibration():
    # Daily adoptions of an expected-mode run with threshold 0.3 and sharpness 10; fit both
    # from (0.5, 5) with the library's Trainer.
    graph = _random_graph(300, 8.0, seed=2)
    steps = 20

    def model(theta, beta):
        protocol = ThresholdAdoption(theta, beta, learnable=False)
        params = ParameterSet({
            "threshold": Bounded(theta, 0.05, 0.95), "sharpness": Bounded(beta, 1.0, 40.0)
        })  # fmt: skip
        return SimulatorModel(protocol, graph, steps, params, initial_infected=0.1,
                              outputs=("adoptions",))  # fmt: skip

    with torch.no_grad():
        target = model(0.3, 10.0)()
    fitted = model(0.5, 5.0)
    Trainer(fitted, lr=0.1, log_every=None).fit(target, slice(0, steps), epochs=150)
    values = fitted.values()
    assert float(values["threshold"]) == pytest.approx(0.3, rel=0.15)
    assert float(values["sharpness"]) == pytest.approx(10.0, rel=0.15)


# ---------------------------------------------------------------------------- bounded confidence


@pytest.mark.parametrize("backend", BACKENDS)
def test_hegselmann_krause_on_four_agents_by_hand(backend):
    # Complete graph, opinions (0.1, 0.2, 0.5, 0.9), confidence 0.35, exact kernel.
    # Step 1: 0 sees {0.1, 0.2} -> 0.15; 1 sees {0.1, 0.2, 0.5} -> 0.8/3; 2 sees {0.2, 0.5}
    # -> 0.35; 3 sees only itself -> 0.9. Step 2: 0, 1, 2 now all within 0.2 of each other:
    # each -> (0.15 + 0.8/3 + 0.35) / 3 = 23/90. Step 3: a fixed point.
    x0 = torch.tensor([0.1, 0.2, 0.5, 0.9], dtype=F64)
    protocol = BoundedConfidence(0.35, sharpness=math.inf, backend=backend)
    traj = simulate(protocol, complete_graph(4), 3, initial_infected=x0, record_states=True)
    expected = [
        [0.1, 0.2, 0.5, 0.9],
        [0.15, 0.8 / 3, 0.35, 0.9],
        [23 / 90, 23 / 90, 23 / 90, 0.9],
        [23 / 90, 23 / 90, 23 / 90, 0.9],
    ]
    for state, want in zip(traj.states, expected):
        assert state["opinion"].tolist() == pytest.approx(want, abs=1e-12)
    mean = sum(expected[-1]) / 4
    var = sum((v - mean) ** 2 for v in expected[-1]) / 4
    assert float(traj.counts["opinion_variance"][-1].detach()) == pytest.approx(var, rel=1e-12)


def test_pairwise_compromise_and_smooth_kernel_by_hand():
    x0 = torch.tensor([0.1, 0.2, 0.5, 0.9], dtype=F64)
    # Pairwise, mu = 0.25, exact kernel: x_i += 0.25 sum_{|d| <= 0.35} d:
    # 0: 0.1 + 0.25 (0.1) = 0.125; 1: 0.2 + 0.25 (-0.1 + 0.3) = 0.25; 2: 0.5 + 0.25 (-0.3)
    # = 0.425; 3: 0.9. The total, 1.7, is unchanged.
    pairwise = BoundedConfidence(0.35, 0.25, math.inf, rule="pairwise")
    traj = simulate(pairwise, complete_graph(4), 1, initial_infected=x0, record_states=True)
    assert traj.states[1]["opinion"].detach().tolist() == pytest.approx([0.125, 0.25, 0.425, 0.9])
    # Smooth HK (beta = 20, eps = 0.35), agent 0: differences d = (0.1, 0.4, 0.8),
    # k = sigmoid(20 (0.35 - |d|)) = (0.99331, 0.26894, 0.00001);
    # x_0' = 0.1 + sum k d / (1 + sum k).
    smooth = BoundedConfidence(0.35, 1.0, 20.0)  # float32 parameters: eps = 0.35 to 1e-8
    traj = simulate(smooth, complete_graph(4), 1, initial_infected=x0, record_states=True)
    k = [_sigmoid(20 * (0.35 - d)) for d in (0.1, 0.4, 0.8)]
    want = 0.1 + sum(ki * d for ki, d in zip(k, (0.1, 0.4, 0.8))) / (1 + sum(k))
    assert float(traj.states[1]["opinion"][0].detach()) == pytest.approx(want, rel=1e-7)
    # The layer alone, on the [2, E] edge index, gives the same round.
    layer = ConfidenceAverage()
    out = layer(complete_graph(4).edge_index(), x0, 0.35, 1.0, 20.0)
    assert float(out[0].detach()) == pytest.approx(want, rel=1e-12)


def test_perceived_risk_pushes_opinions_by_hand():
    # Confidence 0 (exact): distinct opinions do not move. Agent 1 infectious: g = (1/2, 0, 1/3,
    # 1/2) (in-neighbours of 0: {1, 2}; 2: {0, 1, 3}; 3: {1, 2}); kappa = 2, dt = 0.5:
    # x_i' = x_i + (1 - x_i) (1 - exp(-kappa g_i dt)).
    protocol = BoundedConfidence(0.0, 1.0, math.inf, risk_rate=2.0, dt=0.5)
    x = torch.tensor([0.1, 0.2, 0.5, 0.9], dtype=F64)
    state = {"opinion": x, "I": torch.tensor([0.0, 1, 0, 0], dtype=F64)}
    ctx = StepContext.begin(0, protocol.dt, state, RandomStreams(0), "expected")
    new = protocol.step(_four(), state, ctx)
    g = [0.5, 0.0, 1 / 3, 0.5]
    want = [xi + (1 - xi) * (1 - math.exp(-2.0 * gi * 0.5)) for xi, gi in zip(x.tolist(), g)]
    assert new["opinion"].tolist() == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize(
    ("rule", "sharpness"),
    [("hk", math.inf), ("hk", 30.0), ("pairwise", math.inf), ("pairwise", 30.0)],
)
def test_opinions_stay_in_the_unit_interval_and_their_range_shrinks(rule, sharpness):
    graph = _random_graph(200, 6.0, seed=1)
    degree = torch.zeros(200, dtype=F64).index_add(0, graph.edge_index()[1], graph.edge_weight())
    mu = 1.0 if rule == "hk" else float(1 / degree.max())
    x0 = torch.rand(200, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    x0[:5] = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.5], dtype=F64)[:, None]  # the bounds exactly
    protocol = BoundedConfidence(0.3, mu, sharpness, rule=rule).double()
    traj = simulate(protocol, graph, 30, initial_infected=x0, replicates=3, record_states=True)
    lo, hi = x0.min(0).values, x0.max(0).values
    for s in traj.states[1:]:
        x = s["opinion"].detach()
        assert bool(((x >= 0) & (x <= 1)).all())
        assert bool((x.min(0).values >= lo - 1e-12).all()) and bool(
            (x.max(0).values <= hi + 1e-12).all()
        )
        lo, hi = x.min(0).values, x.max(0).values
    variance = traj.counts["opinion_variance"].detach()
    assert bool((variance[-1] < 0.8 * variance[0]).all())  # they did move
    if rule == "pairwise":  # symmetric weights: the total opinion is conserved
        totals = traj.counts["opinion"].detach()
        assert torch.allclose(totals, totals[:1].expand_as(totals), rtol=0, atol=1e-10)


def test_full_confidence_on_a_complete_graph_is_consensus_at_the_mean():
    x0 = torch.rand(6, generator=torch.Generator().manual_seed(1), dtype=F64)
    traj = simulate(BoundedConfidence(1.0, 1.0, math.inf), complete_graph(6), 1,
                    initial_infected=x0, record_states=True)  # fmt: skip
    assert traj.states[1]["opinion"].tolist() == pytest.approx([float(x0.mean())] * 6, abs=1e-12)


def test_bounded_confidence_gradcheck():
    graph = _random_graph(20, 4.0, seed=4)
    x0 = torch.rand(20, generator=torch.Generator().manual_seed(2), dtype=F64)

    def run(eps, mu, beta):
        traj = simulate(BoundedConfidence(eps, mu, beta), graph, 3, initial_infected=x0)
        return torch.cat([traj.counts["opinion_variance"][1:], traj.final_state["opinion"][:5]])

    args = tuple(torch.tensor(v, dtype=F64, requires_grad=True) for v in (0.3, 0.7, 15.0))
    assert torch.autograd.gradcheck(run, args)


def test_confidence_is_recovered_by_gradient_calibration():
    # The variance of opinions and their total movement over 20 rounds (smooth HK, sharpness
    # 50) for confidence 0.2 and convergence 0.6; fit both from (0.35, 0.9) with the library's
    # Trainer. (The variance alone hardly separates the two: a wider bound with slower moves
    # fits it almost as well.)
    graph = _random_graph(150, 8.0, seed=5)
    steps = 20

    def model(eps, mu):
        protocol = BoundedConfidence(eps, mu, 50.0, learnable=False)
        params = ParameterSet({
            "confidence": Bounded(eps, 0.02, 0.6), "convergence": Bounded(mu, 0.05, 1.0)
        })  # fmt: skip
        spread = {
            "variance": lambda tr: tr.counts["opinion_variance"][1:],
            "opinion_shift": lambda tr: tr.flows["opinion_shift"],
        }
        return SimulatorModel(protocol, graph, steps, params, initial_infected=None,
                              outputs=spread, seed=7)  # fmt: skip

    with torch.no_grad():
        target = model(0.2, 0.6)()
    fitted = model(0.35, 0.9)
    Trainer(fitted, lr=0.1, log_every=None).fit(target, slice(0, steps), epochs=100)
    values = fitted.values()
    assert float(values["confidence"]) == pytest.approx(0.2, rel=0.15)
    assert float(values["convergence"]) == pytest.approx(0.6, rel=0.15)


# ---------------------------------------------------------------------------- layers and errors


def test_neighbour_fraction_layer_by_hand():
    # Fraction of adopting in-neighbours (weights: edge 3 -> 2 weighs 4), two replicates.
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [1.0, 1.0]], dtype=F64)
    g = _four(4.0)
    out = NeighbourFraction()(g.edge_index(), x, g.edge_weight())
    want = [[0.0, 0.5], [2 / 3, 1 / 3], [5 / 6, 5 / 6], [0.0, 0.5]]
    assert out.flatten().tolist() == pytest.approx(sum(want, []))
    lonely = PopulationGraph.from_edge_index(torch.tensor([[0], [1]]), 3)  # agents 0, 2: no one
    assert NeighbourFraction()(lonely.csr(), torch.ones(3)).tolist() == [0.0, 1.0, 0.0]


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: ThresholdAdoption(1.5), r"threshold must be a probability in \[0, 1\]"),
        (lambda: ThresholdAdoption(-0.1), r"threshold must be a probability"),
        (lambda: ThresholdAdoption(torch.tensor([0.2, math.nan])), r"threshold contains NaN"),
        (lambda: ThresholdAdoption(0.3, 0.0), r"sharpness must be a finite number > 0"),
        (lambda: ThresholdAdoption(0.3, math.nan), r"sharpness must be a finite number > 0"),
        (lambda: ThresholdAdoption(0.3, -math.inf), r"sharpness must be > 0"),
        (lambda: ThresholdAdoption(0.3, risk_weight=-1.0), r"risk_weight must be a non-negative"),
        (lambda: ThresholdAdoption(0.3, abandonment=math.nan), r"abandonment contains NaN"),
        (lambda: BoundedConfidence(1.2), r"confidence must be a probability in \[0, 1\]"),
        (lambda: BoundedConfidence(0.2, 0.0), r"convergence must be in \(0, 1\]"),
        (lambda: BoundedConfidence(0.2, 1.5), r"convergence must be in \(0, 1\]"),
        (lambda: BoundedConfidence(0.2, rule="voter"), r"rule='voter' is not a bounded"),
        (lambda: BoundedConfidence(0.2, risk_rate=-0.5), r"risk_rate must be a non-negative"),
        (lambda: ConfidenceAverage("mean"), r"rule='mean' is not a bounded"),
    ],
)
def test_bad_parameters_raise(build, match):
    with pytest.raises(ValueError, match=match):
        build()


@pytest.mark.parametrize(
    ("protocol", "initial", "match"),
    [
        (ThresholdAdoption(torch.full((5,), 0.3)), 1, r"threshold has shape \[5\]; give a scalar"),
        (ThresholdAdoption(0.3), 1.5, r"initial adopters: initial_infected=1.5"),
        (ThresholdAdoption(0.3), torch.tensor([0.1, math.nan, 0, 0]), r"initial adopters: .*NaN"),
        (ThresholdAdoption(0.3), torch.tensor(2), r"must be a probability"),
        (BoundedConfidence(0.2), torch.tensor([0.1, 1.2, 0.0, 0.3]), r"initial opinions must be a"),
        (
            BoundedConfidence(0.2),
            torch.tensor([0.1, math.nan, 0.0, 0.3]),
            r"initial opinions contain",
        ),
        (
            BoundedConfidence(0.2),
            torch.zeros(3),
            r"initial opinions have shape \[3\]; expected \[4\]",
        ),
        (BoundedConfidence(0.2), "uniform", r"initial opinions must be None, a number or a tensor"),
        # pairwise: mu * (largest in-degree 3) = 1.5 > 1 could leave [0, 1]
        (BoundedConfidence(0.2, 0.5, rule="pairwise"), None, r"convergence <= 1 / max in-degree"),
    ],
)
def test_bad_inputs_raise_at_run_time(protocol, initial, match):
    with pytest.raises(ValueError, match=match):
        simulate(protocol, _four(), 2, initial_infected=initial)


def test_initial_adopters_of_a_large_population_draw_in_chunks():
    """More agents than one chunk of a CPU draw (2**17): the adopters' namespaced streams pass
    the chunk index on (the former _Prefixed streams raised a TypeError)."""
    n = 2**17 + 5
    graph = PopulationGraph.from_edge_index(torch.zeros(2, 0, dtype=torch.long), num_nodes=n)
    state = ThresholdAdoption(0.3).start(
        graph, 10, RandomStreams(0), (n,), torch.float32, "stochastic"
    )
    assert float(state["adopted"].sum()) == 10
