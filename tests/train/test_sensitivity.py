"""Sensitivity: gradients of SEIRM outputs against finite differences.

Expected mode (float64): every gradient, constrained values and edge-type weights included,
and every Hessian-vector product equals a central finite difference to 1e-4 relative.

Contributions (value x gradient, elasticities): against central finite differences to 1e-6
relative on a 1,000-agent synthetic population with four edge types and eight age groups, and
against identities that hold exactly (deaths are linear in the mortality; R, the
susceptibilities and the edge-type weights scale the same hazard).

Stochastic mode: the gradient of E[total deaths] against a central finite difference with
common random numbers, averaged over seeds. Measured on G(2000, 8) split into two edge types,
35 days, R = 2.5 in 5 weekly values, B = (1.5, 0.5), mortality 0.02, 20 agents seeded (see
test_stochastic_gradients_match_finite_differences for the figures).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch_geometric.data import HeteroData

from lpm_graph import PopulationGraph, simulate
from lpm_graph.datasets import SyntheticPopulation, erdos_renyi
from lpm_graph.protocols import AGE_GROUPS, GRADABM_SUSCEPTIBILITY, SEIRM
from lpm_graph.train import Bounded, ParameterSet, SimulatorModel, Weekly
from lpm_graph.train.sensitivity import (
    Contributions,
    contributions,
    finite_difference,
    hessian_vector_product,
    sensitivity,
)

F64 = torch.float64
N, STEPS, WEEKS = 2000, 35, 5
R_NAME, M_NAME = "params.reproduction_number", "params.mortality"


def total_deaths(out):
    return out["deaths"].sum()


@pytest.fixture(scope="module")
def graph() -> PopulationGraph:
    """G(2000, 8) with age groups; its contacts split into two edge types by parity."""
    g = erdos_renyi(N, 8, seed=0)
    age = torch.randint(0, 8, (N,), generator=torch.Generator().manual_seed(0))
    g.set_node_attrs(age_group=age)
    ei = g.edge_index()
    household = (ei.min(0).values + ei.max(0).values) % 2 == 0  # both directions alike
    data = HeteroData()
    data["agent"].num_nodes = N
    data["agent"].age_group = age
    data["agent", "household", "agent"].edge_index = ei[:, household]
    data["agent", "work", "agent"].edge_index = ei[:, ~household]
    return PopulationGraph(data)


def _model(graph, *, rao_blackwell=False, **kwargs) -> SimulatorModel:
    params = ParameterSet(
        {
            "reproduction_number": Weekly(2.5, WEEKS, 0.5, 6.0, steps=STEPS),
            "mortality": Bounded(0.02, 0.0, 0.2),
        }
    )
    seeded = torch.zeros(N, dtype=F64)
    seeded[:20] = 1
    protocol = SEIRM(learnable=False, edge_type_weights={"household": 1.5, "work": 0.5})
    outputs: object = ("deaths", "infections")
    if rao_blackwell:  # deaths given the exits from I: same expectation, far less variance
        outputs = {
            "deaths": lambda tr: protocol.mortality * (tr.flows["recoveries"] + tr.flows["deaths"])
        }
    model = SimulatorModel(protocol, graph, STEPS, params, initial_infected=seeded,
                           outputs=outputs, **kwargs)  # fmt: skip
    return model.double()


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest relative difference, zeros compared in absolute terms at b's scale."""
    scale = b.abs().clamp_min(1e-6 * float(b.abs().max().clamp_min(1.0)))
    return float(((a - b).abs() / scale).max())


# ---------------------------------------------------------------------------- expected mode


def test_expected_gradients_match_finite_differences(graph):
    model = _model(graph, mode="expected")
    grads = sensitivity(model, wrt=["edge_type_weights"])
    assert set(grads) == {"deaths", "infections"}
    names = {
        "params.reproduction_number.values.raw",
        "params.mortality.raw",
        R_NAME,
        M_NAME,
        "edge_type_weights",
    }
    assert set(grads["deaths"]) == names
    g = grads["deaths"]
    assert g[R_NAME].shape == (WEEKS,) and g["edge_type_weights"].shape == (2,)
    assert bool((g[R_NAME][:4] > 0).all()) and bool((g["edge_type_weights"] > 0).all())
    assert float(g[R_NAME][4]) == 0.0  # infected in the last week: not dead by day 35
    for name, index in [(R_NAME, None), (M_NAME, None), ("edge_type_weights", None),
                        ("params.reproduction_number.values.raw", 1),
                        ("params.mortality.raw", None)]:  # fmt: skip
        fd = finite_difference(model, total_deaths, name, eps=1e-5, index=index)
        got, want = g[name].reshape(-1), fd.gradient.reshape(-1)
        if index is not None:
            got, want = got[index], want[index]
        assert _relative(got, want) < 1e-4, (name, got, want)
    # mortality does not change infections; R does
    assert float(grads["infections"][M_NAME]) == 0.0
    assert bool((grads["infections"][R_NAME] > 0).all())
    # the chain rule: d / d raw = d / d value * (high - low) sigmoid'(raw)
    bounded = model.params["mortality"]
    s = torch.sigmoid(bounded.raw.detach())
    chain = g[M_NAME] * (bounded.high - bounded.low) * s * (1 - s)
    assert float(chain) == pytest.approx(float(g["params.mortality.raw"]), rel=1e-12)


def test_the_protocol_attribute_is_restored(graph):
    model = _model(graph, mode="expected")
    before = model.protocol.edge_type_weights
    grads = sensitivity(model, {"total": total_deaths}, wrt={"edge_type_weights": [2.0, 0.5]})
    assert model.protocol.edge_type_weights is before
    assert not before.requires_grad
    assert set(grads) == {"total"}
    # at B_household = 2 the run differs: so does the gradient
    other = sensitivity(model, {"total": total_deaths}, wrt=["edge_type_weights"])
    assert not torch.allclose(
        grads["total"]["edge_type_weights"], other["total"]["edge_type_weights"]
    )


def test_hessian_vector_product_matches_finite_differences_of_gradients(graph):
    model = _model(graph, mode="expected")
    named = {n: p for n, p in model.named_parameters() if p.requires_grad}
    gen = torch.Generator().manual_seed(1)
    vector = {n: torch.randn(p.shape, generator=gen, dtype=F64) for n, p in named.items()}
    hv = hessian_vector_product(model, total_deaths, vector)
    eps = 1e-5

    def gradient_at(sign):
        with torch.no_grad():
            for n, p in named.items():
                p.add_(sign * eps * vector[n])
        g = sensitivity(model, {"d": total_deaths})["d"]
        with torch.no_grad():
            for n, p in named.items():
                p.sub_(sign * eps * vector[n])
        return g

    up, down = gradient_at(1.0), gradient_at(-1.0)
    for n in named:
        fd = (up[n] - down[n]) / (2 * eps)
        assert _relative(hv[n], fd) < 1e-4, (n, hv[n], fd)
    assert float(hv["params.mortality.raw"]).__abs__() > 0
    # a flat vector gives the same
    flat = torch.cat([vector[n].reshape(-1) for n in named])
    again = hessian_vector_product(model, total_deaths, flat)
    assert all(torch.allclose(again[n], hv[n], rtol=1e-12) for n in named)


# ---------------------------------------------------------------------------- stochastic mode


def test_model_reads_stochastic_derivative_gradients_through_the_expectation(graph):
    # SimulatorModel's per-day expectations sum to the expectation of the total
    model = _model(graph, mode="stochastic", estimator="stochastic_derivative", replicates=8,
                   alternatives=2, seed=5, rao_blackwell=True)  # fmt: skip
    grads = sensitivity(model, {"d": total_deaths})["d"]
    r = model.params["reproduction_number"]().detach().requires_grad_()
    m = model.params["mortality"]().detach().requires_grad_()
    protocol = model.protocol
    protocol.reproduction_number, protocol.mortality = r, m
    traj = simulate(protocol, graph, STEPS, initial_infected=model.initial_infected, seed=5,
                    replicates=8, estimator="stochastic_derivative", alternatives=2)  # fmt: skip
    exits = traj.flows["recoveries"] + traj.flows["deaths"]
    traj.expectation(
        lambda tr: m * (tr.flows["recoveries"] + tr.flows["deaths"]).sum(0)
    ).mean().backward()
    index = model.params["reproduction_number"].index
    weekly = torch.zeros(WEEKS, dtype=F64).index_add_(0, index, r.grad)
    assert torch.allclose(grads[R_NAME], weekly, rtol=1e-10)
    assert float(grads[R_NAME].abs().sum()) > 0
    assert float(grads[R_NAME][-1]) == 0.0  # infected in the last week: not dead by day 35
    assert float(m.grad) == pytest.approx(float(exits.sum(0).mean()), rel=1e-12)
    assert float(grads[M_NAME]) == pytest.approx(float(m.grad), rel=1e-10)


def _gradients(model, seeds, wrt=("edge_type_weights",)):
    """Per-seed gradients of total deaths, flattened: R weekly [5], mortality, B [2]."""
    rows = []
    for seed in seeds:
        g = sensitivity(model, {"d": total_deaths}, seed=seed, wrt=list(wrt))["d"]
        rows.append(torch.cat([g[R_NAME], g[M_NAME].reshape(1), g["edge_type_weights"]]))
    return torch.stack(rows)


def test_stochastic_estimators_against_finite_differences_quick(graph):
    # Deaths are Bernoulli(mortality) draws on leaving I that nothing else depends on, so
    # d E[deaths] / d m = E[exits], which straight-through (d deaths / d m = exits) and the
    # stochastic derivative (pathwise through mortality x exits: see the test above) both
    # give. Through transmission straight-through is biased (x1.7 on the edge-type weights).
    # The full check is the slow test below.
    raw = _model(graph, mode="stochastic", replicates=50)
    rb = _model(graph, mode="stochastic", replicates=50, rao_blackwell=True)
    fd_m = finite_difference(raw, total_deaths, M_NAME, eps=0.005, seeds=[0, 1])
    fd_b = finite_difference(rb, total_deaths, "edge_type_weights", eps=0.1, seeds=[0, 1], index=1)
    m_ref, b_ref = float(fd_m.gradient), float(fd_b.gradient[1])
    assert float(fd_m.standard_error) < 0.05 * m_ref
    assert float(fd_b.standard_error[1]) < 0.05 * b_ref
    st = _gradients(_model(graph, mode="stochastic", replicates=30), [100])[0]
    assert abs(float(st[5]) - m_ref) < 0.1 * m_ref, (float(st[5]), m_ref)
    assert float(st[7]) > 1.3 * b_ref, (float(st[7]), b_ref)


@pytest.mark.slow
def test_stochastic_gradients_match_finite_differences(graph):
    # d E[total deaths] / d (R weekly, mortality, B) in stochastic mode. Estimator: the
    # stochastic derivative (100 replicates x 4 alternatives per seed, seeds 1000..1039) on
    # the expected deaths given the exits (mortality x exits: same expectation as deaths).
    # Reference: central finite differences with common random numbers, 200 replicates per
    # seed (seeds 0..7), of the same output for R and B (eps 0.25 and 0.1) and of the
    # drawn deaths for the mortality (eps 0.005).
    # Measured by this test (SE over seeds in brackets; relative difference SD / FD - 1):
    #   R weeks 1-4  SD 1.433 (.109) 2.039 (.083) 2.708 (.068) 1.986 (.038)
    #                FD 1.354 (.026) 2.083 (.014) 2.716 (.010) 1.994 (.006)
    #                   +5.9% -2.1% -0.3% -0.4%; as a vector 2.2%
    #   R week 5     0 and 0 (infected after day 28: not dead by day 35)
    #   mortality    SD 1686.2 (0.6)  FD 1691.6 (7.3)  -0.3%
    #   B            SD 9.117 (.224) 13.477 (.384)  FD 8.948 (.054) 13.950 (.054)  +1.9% -3.4%
    # FD of the drawn deaths instead (24 seeds x 200): R 1.405 (.087) 2.096 (.091) 2.619 (.072)
    # 1.966 (.032), m 1686.3 (6.9), B 8.974 (.216) 13.961 (.311): the same within noise, at
    # 5-30x the variance. Straight-through (10 seeds x 100): R 4.77 4.11 3.27 1.99,
    # m 1687.8, B 15.4 24.6 (x3.4 x2.0 x1.2 x1.0, unbiased, x1.7 x1.8). Wall time: 8 min on
    # 2 loaded cores (about 2.5 s per SD seed and 1.2 s per 200-replicate run when idle).
    sd_model = _model(graph, mode="stochastic", replicates=100, rao_blackwell=True,
                      estimator="stochastic_derivative", alternatives=4)  # fmt: skip
    sd = _gradients(sd_model, range(1000, 1040))
    grad, se = sd.mean(0), sd.std(0) / math.sqrt(sd.shape[0])
    rb = _model(graph, mode="stochastic", replicates=200, rao_blackwell=True)
    raw = _model(graph, mode="stochastic", replicates=200)
    seeds = range(8)
    fd_r = finite_difference(rb, total_deaths, R_NAME, eps=0.25, seeds=seeds)
    fd_b = finite_difference(rb, total_deaths, "edge_type_weights", eps=0.1, seeds=seeds)
    fd_m = finite_difference(raw, total_deaths, M_NAME, eps=0.005, seeds=seeds)
    fd = torch.cat([fd_r.gradient, fd_m.gradient.reshape(1), fd_b.gradient])
    fd_se = torch.cat([fd_r.standard_error, fd_m.standard_error.reshape(1), fd_b.standard_error])
    relative = (grad - fd) / fd
    print(f"\nSD {grad.tolist()}\n SE {se.tolist()}\nFD {fd.tolist()}\n SE {fd_se.tolist()}"
          f"\nrelative {relative.tolist()}")  # fmt: skip
    assert float(grad[4]) == 0.0 and float(fd[4]) == 0.0
    r_error = float(torch.linalg.norm(grad[:4] - fd[:4]) / torch.linalg.norm(fd[:4]))
    assert r_error < 0.1, r_error
    assert bool((relative[5:].abs() < 0.1).all()), relative
    assert bool((se[:4] < 0.1 * fd[:4]).all())  # the checks have teeth


def test_finite_difference_is_seeded_and_index_restricts(graph):
    model = _model(graph, mode="stochastic", replicates=10)
    a = finite_difference(model, total_deaths, "edge_type_weights", eps=0.1, seeds=[1, 2], index=1)
    b = finite_difference(model, total_deaths, "edge_type_weights", eps=0.1, seeds=[1, 2], index=1)
    assert torch.equal(a.samples[:, 1], b.samples[:, 1])
    assert math.isnan(float(a.gradient[0])) and not math.isnan(float(a.gradient[1]))
    assert a.samples.shape == (2, 2)
    assert float(a.standard_error[1]) == pytest.approx(float(a.samples[:, 1].std()) / math.sqrt(2))
    assert torch.equal(model.protocol.edge_type_weights, torch.tensor([1.5, 0.5], dtype=F64))


# ---------------------------------------------------------------------------- errors


def test_bad_requests_raise(graph):
    model = _model(graph, mode="expected")
    with pytest.raises(ValueError, match=r"set by the model's parameter modules"):
        sensitivity(model, wrt=["mortality"])
    with pytest.raises(ValueError, match=r"no tensor attribute 'speed'"):
        sensitivity(model, wrt=["speed"])
    with pytest.raises(ValueError, match=r"must be a scalar tensor"):
        sensitivity(model, {"series": lambda out: out["deaths"]})
    with pytest.raises(ValueError, match=r"'nothing' is not a parameter"):
        finite_difference(model, total_deaths, "nothing", eps=0.1)
    with pytest.raises(ValueError, match=r"eps must be a finite positive"):
        finite_difference(model, total_deaths, M_NAME, eps=0.0)
    with pytest.raises(ValueError, match=r"index=3 is outside"):
        finite_difference(model, total_deaths, "edge_type_weights", eps=0.1, index=3)
    with pytest.raises(ValueError, match=r"vector has 2 values"):
        hessian_vector_product(model, total_deaths, torch.zeros(2))
    learnable = SimulatorModel(SEIRM(), graph, 3, ParameterSet({}), initial_infected=5)
    with pytest.raises(ValueError, match=r"learnable nn.Parameter.*drop it from wrt"):
        sensitivity(learnable, wrt=["edge_type_weights"])


# ---------------------------------------------------------------------------- contributions

IFR = (0.0001, 0.0003, 0.001, 0.002, 0.006, 0.02, 0.06, 0.15)
LAYERS = {"household": 0.4, "school": 0.2, "work": 0.2, "community": 0.2}
ATTRIBUTES = ["susceptibility", "mortality", "edge_type_weights"]
LABELS = {"susceptibility": AGE_GROUPS, "mortality": AGE_GROUPS, "edge_type_weights": LAYERS}


@pytest.fixture(scope="module")
def population() -> PopulationGraph:
    """1,000 agents, 8 age groups, household / school / work / community contacts."""
    return SyntheticPopulation(1_000, seed=0)[0]


@pytest.fixture
def one_thread():
    """Small runs: on a shared machine two OpenMP threads waiting for each other cost far
    more than the work (a 40-day run of 1,000 agents: 2.5 s instead of 0.05 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _layered(population, *, mode="expected", by_age=False, steps=40, **kwargs) -> SimulatorModel:
    """SEIRM with age-specific mortality and four weighted layers; R from a Bounded."""
    protocol = SEIRM(mortality=torch.tensor(IFR), edge_type_weights=LAYERS, learnable=False,
                     by_age=by_age)  # fmt: skip
    params = ParameterSet({"reproduction_number": Bounded(2.5, 0.5, 5.0)})
    seeded = torch.zeros(population.num_nodes("agent"), dtype=F64)  # float64: the state too
    seeded[:10] = 1  # (a count would start the run in the default dtype)
    model = SimulatorModel(protocol, population, steps, params, initial_infected=seeded,
                           mode=mode, **kwargs)  # fmt: skip
    return model.double()


def test_contributions_match_central_finite_differences(population, one_thread):
    # The one-shot elasticities against two re-runs per element: every element of the
    # susceptibility [8], mortality [8], edge-type weights [4] and R.
    model = _layered(population)
    c = contributions(model, "deaths", wrt=ATTRIBUTES, labels=LABELS)
    assert list(c.value) == ["params.reproduction_number", *ATTRIBUTES]
    assert c.output > 1.0  # an epidemic with deaths to attribute
    with torch.no_grad():
        assert c.output == pytest.approx(float(model()["deaths"].sum()), rel=1e-12)
    worst = 0.0
    for name, value in c.value.items():
        fd = finite_difference(model, total_deaths, name, eps=1e-6)
        elasticity = fd.gradient * value / c.output
        assert bool((c.elasticity[name].abs() > 0).all()), name  # no vacuous agreement
        worst = max(worst, _relative(c.elasticity[name], elasticity))
    assert worst < 1e-6, worst
    assert c.names()[:3] == ["params.reproduction_number", "susceptibility[0-19]",
                             "susceptibility[20-29]"]  # fmt: skip
    assert c.names()[-1] == "edge_type_weights[community]" and len(c.names()) == 21


def test_contributions_obey_the_exact_identities(population, one_thread):
    model = _layered(population, by_age=True)
    c = contributions(model, wrt=ATTRIBUTES)  # the model's only series: deaths
    e = c.elasticity
    # Deaths are linear in the mortality and it feeds back on nothing: the contribution of
    # mortality[a] is the deaths in age group a, and the elasticities sum to 1.
    with torch.no_grad():
        traj = simulate(model.protocol, population, 40, initial_infected=model.initial_infected,
                        mode="expected")  # fmt: skip
    by_age = traj.flows["deaths_by_age"].sum(0)
    assert torch.allclose(c.contribution["mortality"], by_age, rtol=1e-10)
    assert float(e["mortality"].sum()) == pytest.approx(1.0, rel=1e-10)
    # R, S_a and B_n multiply one hazard: scaling all S_a (or all B_n) by 1 + h is scaling R.
    r = float(e["params.reproduction_number"])
    assert r > 0.1
    assert float(e["susceptibility"].sum()) == pytest.approx(r, rel=1e-10)
    assert float(e["edge_type_weights"].sum()) == pytest.approx(r, rel=1e-10)
    # the contribution is value x gradient
    assert torch.equal(c.contribution["susceptibility"],
                       c.value["susceptibility"] * c.gradient["susceptibility"])  # fmt: skip
    assert c.labels["edge_type_weights"] == ["0", "1", "2", "3"]  # no labels given: indices


def test_contributions_gradients_pass_gradcheck(one_thread):
    # d deaths / d (susceptibility, B_n) of a tiny two-layer run, in float64.
    g = erdos_renyi(40, 4, seed=1)
    ei = g.edge_index()
    age = torch.arange(40) % 8
    household = (ei.min(0).values + ei.max(0).values) % 2 == 0
    data = HeteroData()
    data["agent"].num_nodes = 40
    data["agent"].age_group = age
    data["agent", "household", "agent"].edge_index = ei[:, household]
    data["agent", "work", "agent"].edge_index = ei[:, ~household]
    graph = PopulationGraph(data)
    protocol = SEIRM(2.5, 0.1, edge_type_weights={"household": 1.5, "work": 0.5},
                     learnable=False).double()  # fmt: skip
    initial = torch.zeros(40, dtype=F64)
    initial[:3] = 1

    def deaths(susceptibility, weights):
        protocol.susceptibility, protocol.edge_type_weights = susceptibility, weights
        run = simulate(protocol, graph, 12, initial_infected=initial, mode="expected")
        return run.flows["deaths"].sum()

    s = torch.tensor(GRADABM_SUSCEPTIBILITY, dtype=F64)
    b = torch.tensor([1.5, 0.5], dtype=F64)
    assert torch.autograd.gradcheck(deaths, (s.requires_grad_(), b.requires_grad_()))


def test_contributions_in_stochastic_mode_are_the_estimator_of_one_run(population, one_thread):
    model = _layered(population, mode="stochastic", replicates=4, steps=20)
    c = contributions(model, "deaths", wrt=["edge_type_weights"], seed=3)
    g = sensitivity(model, {"d": total_deaths}, wrt=["edge_type_weights"], seed=3)["d"]
    assert torch.equal(c.gradient["edge_type_weights"], g["edge_type_weights"])
    with torch.no_grad():
        assert c.output == float(model(seed=3)["deaths"].sum())


def test_contributions_table():
    c = Contributions(
        output=10.0,
        value={"r": torch.tensor(2.0), "b": torch.tensor([1.0, 3.0])},
        gradient={"r": torch.tensor(5.0), "b": torch.tensor([1.0, 2.0])},
        labels={"r": ["0"], "b": ["home", "work"]},
    )
    assert c.names() == ["r", "b[home]", "b[work]"]
    assert torch.equal(c.elasticity["b"], torch.tensor([0.1, 0.6]))
    lines = c.table().splitlines()
    assert lines[0].startswith("| input (output = 10) |")
    assert lines[2] == "| r | 2 | 5 | 10 | 1.0000 |"
    assert lines[4] == "| b[work] | 3 | 2 | 6 | 0.6000 |"
    assert lines[5] == "| b (sum) | | | 7 | 0.7000 |"
    zero = Contributions(0.0, c.value, c.gradient, c.labels)
    with pytest.raises(ValueError, match=r"output is 0.*read `contribution`"):
        _ = zero.elasticity
    assert "nan" in zero.table()


def test_contributions_bad_requests_raise(population, one_thread):
    model = _layered(population, steps=3, outputs=("deaths", "infections"))
    with pytest.raises(ValueError, match=r"several series \['deaths', 'infections'\]"):
        contributions(model, wrt=["susceptibility"])
    with pytest.raises(ValueError, match=r"'cases' is not a series of the model"):
        contributions(model, "cases")
    with pytest.raises(ValueError, match=r"output must be a series name"):
        contributions(model, 3)
    with pytest.raises(ValueError, match=r"labels names \['age'\], which are not inputs"):
        contributions(model, "deaths", labels={"age": AGE_GROUPS})
    with pytest.raises(ValueError, match=r"labels\['susceptibility'\] has 2 labels for the 8"):
        contributions(model, "deaths", wrt=["susceptibility"], labels={"susceptibility": "ab"})
    bare = SimulatorModel(SEIRM(learnable=False), population, 3, ParameterSet({}))
    with pytest.raises(ValueError, match=r"nothing to attribute"):
        contributions(bare, "deaths")
