"""Several regions in one run: the union graph, RegionalSEIRM, RegionalODE, RegionalCalibNN."""

from __future__ import annotations

import pytest
import torch

from lpm_graph import Simulator
from lpm_graph.datasets import SyntheticPopulation
from lpm_graph.protocols import SEIRM
from lpm_graph.train.baselines import seirm_ode
from lpm_graph.train.regional import RegionalCalibNN, RegionalODE, RegionalSEIRM, disjoint_union


@pytest.fixture(scope="module")
def graph():
    return SyntheticPopulation(300, seed=1)[0]


def _run(protocol, graph, steps=30, initial=None):
    n = graph.num_nodes()
    initial = torch.full((n,), 0.01, dtype=torch.float64) if initial is None else initial
    return Simulator(protocol, steps=steps, mode="expected")(graph, initial_infected=initial)


def test_disjoint_union_keeps_every_graph_and_labels_regions(graph):
    other = SyntheticPopulation(200, seed=2)[0]
    union = disjoint_union([graph, other])
    assert union.num_nodes() == 500
    assert union.relations == graph.relations
    region = union.node_attrs()["region"]
    assert region[:300].eq(0).all() and region[300:].eq(1).all()
    for rel in graph.relations:
        assert union.num_edges(rel) == graph.num_edges(rel) + other.num_edges(rel)
        src, dst = union.edge_index(rel)
        assert torch.equal(region[src], region[dst])  # no edge crosses regions
    ages = union.node_attrs()["age_group"]
    assert torch.equal(ages[300:], other.node_attrs()["age_group"])


def test_disjoint_union_refuses_bad_input(graph):
    with pytest.raises(ValueError, match="empty"):
        disjoint_union([])
    with pytest.raises(ValueError, match="not a PopulationGraph"):
        disjoint_union([graph, "x"])
    union = disjoint_union([graph])
    with pytest.raises(ValueError, match="already has a node attribute 'region'"):
        disjoint_union([union])


def test_one_region_equals_seirm(graph):
    torch.set_default_dtype(torch.float64)
    try:
        plain = _run(SEIRM(reproduction_number=2.0, mortality=0.05, learnable=False), graph)
        union = disjoint_union([graph])
        regional = RegionalSEIRM(
            union.node_attrs()["region"], reproduction_number=2.0, mortality=0.05,
            learnable=False,
        )  # fmt: skip
        out = _run(regional, union)
    finally:
        torch.set_default_dtype(torch.float32)
    for name in ("infections", "onsets", "deaths"):
        assert out.flows[name].shape == (30, 1)
        torch.testing.assert_close(out.flows[name][:, 0], plain.flows[name], rtol=1e-12, atol=1e-12)


def test_each_region_runs_with_its_own_parameters(graph):
    """Two copies of one graph with different R and mortality: each region's flows equal a
    run of the single graph with that region's values."""
    torch.set_default_dtype(torch.float64)
    try:
        union = disjoint_union([graph, graph])
        r = torch.tensor([[1.5, 3.0]]).expand(30, 2)
        regional = RegionalSEIRM(
            union.node_attrs()["region"], reproduction_number=r,
            mortality=torch.tensor([0.02, 0.1]), learnable=False,
        )  # fmt: skip
        out = _run(regional, union)
        for k, (rk, mk) in enumerate(((1.5, 0.02), (3.0, 0.1))):
            alone = _run(SEIRM(reproduction_number=rk, mortality=mk, learnable=False), graph)
            for name in ("infections", "deaths"):
                torch.testing.assert_close(
                    out.flows[name][:, k], alone.flows[name], rtol=1e-10, atol=1e-12
                )
    finally:
        torch.set_default_dtype(torch.float32)


def test_regional_seirm_gradcheck():
    g = SyntheticPopulation(40, seed=3)[0]
    union = disjoint_union([g, SyntheticPopulation(30, seed=4)[0]])
    regions = union.node_attrs()["region"]
    initial = torch.full((70,), 0.05, dtype=torch.float64)

    def deaths(r, m):
        p = RegionalSEIRM(regions, learnable=False)
        p.regional_reproduction_number, p.regional_mortality = r, m
        return _run(p, union, steps=12, initial=initial).flows["deaths"].sum(0)

    r = torch.tensor([[2.0, 1.2]] * 12, dtype=torch.float64, requires_grad=True)
    m = torch.tensor([0.05, 0.2], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(deaths, (r, m), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_regional_seirm_refuses_bad_parameters(graph):
    union = disjoint_union([graph, graph])
    p = RegionalSEIRM(union.node_attrs()["region"], learnable=False)
    p.regional_reproduction_number = torch.ones(3)
    with pytest.raises(ValueError, match=r"\[C\] or \[T, C\] with C = 2"):
        _run(p, union, steps=2)
    p.regional_reproduction_number = torch.ones(2)
    p.regional_mortality = torch.tensor([0.1, 1.5])
    with pytest.raises(ValueError, match="probability"):
        _run(p, union, steps=2)
    with pytest.raises(ValueError, match="integer tensor"):
        RegionalSEIRM(torch.zeros(3))
    small = RegionalSEIRM(torch.zeros(10, dtype=torch.long), learnable=False)
    with pytest.raises(ValueError, match="10 entries but the graph has 600"):
        _run(small, union, steps=2)


def test_regional_ode_equals_the_ode_of_each_region():
    torch.set_default_dtype(torch.float64)
    try:
        r = torch.stack([torch.linspace(3.0, 0.8, 40), torch.full((40,), 1.4)], 1)
        m, i0 = torch.tensor([0.01, 0.03]), torch.tensor([1e-3, 1e-4])
        out = RegionalODE(torch.tensor([1e5, 2e6]), 40, substeps=4)(r, m, i0)
        for k, pop in enumerate((1e5, 2e6)):
            ref = seirm_ode(r[:, k], m[k], i0[k], 40, substeps=4)
            for name in ("infections", "onsets", "deaths"):
                torch.testing.assert_close(out[name][:, k], ref[name] * pop, rtol=1e-10, atol=1e-9)
    finally:
        torch.set_default_dtype(torch.float32)


def test_calibnn_is_causal_and_bounded():
    torch.manual_seed(0)
    features = torch.randn(3, 35, 2)
    bounds = {"reproduction_number": (0.5, 2.0), "mortality": (0.001, 0.05)}
    net = RegionalCalibNN(features, bounds, steps=49, seed=1)
    out = net()
    assert out["reproduction_number"].shape == (49, 3) and out["mortality"].shape == (3,)
    r = net.weekly()["reproduction_number"]
    assert r.shape == (5, 3) and bool(((r > 0.5) & (r < 2.0)).all())
    # weeks past the signals hold the last week's value
    assert torch.equal(out["reproduction_number"][35:], r[-1].expand(14, 3))
    later = features.clone()
    later[:, 21:] += 5.0  # change the signals from week 4 on
    net2 = RegionalCalibNN(later, bounds, steps=49, seed=1)
    with torch.no_grad():
        for p, q in zip(net2.parameters(), net.parameters()):
            p.copy_(q + 0.1)  # non-zero decoder, the same in both
            q.copy_(q + 0.1)
    # standardisation uses the whole window, so compare a network on standardised inputs:
    net2.x.copy_(net.x)
    net2.x[:, 21:, :2] += 5.0
    a, b = net.weekly()["reproduction_number"], net2.weekly()["reproduction_number"]
    torch.testing.assert_close(a[:3], b[:3])
    assert not torch.allclose(a[3:], b[3:])


def test_calibnn_refuses_bad_input():
    with pytest.raises(ValueError, match=r"\[regions, days, signals\]"):
        RegionalCalibNN(torch.zeros(10, 2), {"a": (0, 1)}, steps=10)
    with pytest.raises(ValueError, match="low < high"):
        RegionalCalibNN(torch.zeros(1, 14, 2), {"a": (1, 0)}, steps=10)
    with pytest.raises(ValueError, match="no bounds"):
        RegionalCalibNN(torch.zeros(1, 14, 2), {"a": (0, 1)}, steps=10, time_varying=("b",))


def test_calibnn_starts_where_asked():
    bounds = {"reproduction_number": (0.2, 3.0), "mortality": (0.001, 0.05)}
    net = RegionalCalibNN(
        torch.randn(2, 21, 3), bounds, steps=21, start={"reproduction_number": 1.0}
    )
    out = net()
    torch.testing.assert_close(out["reproduction_number"], torch.full((21, 2), 1.0))
    torch.testing.assert_close(out["mortality"], torch.full((2,), 0.0255))  # the middle
    with pytest.raises(ValueError, match="strictly inside its bounds"):
        RegionalCalibNN(torch.randn(1, 14, 1), bounds, steps=14, start={"mortality": 0.2})
    with pytest.raises(ValueError, match="no bounds"):
        RegionalCalibNN(torch.randn(1, 14, 1), bounds, steps=14, start={"x": 0.2})
