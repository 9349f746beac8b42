"""Protocols pickle after a run (Ray tasks, spawned processes, torch.save) although they
cache per-graph data under weak references; the copy rebuilds its caches and runs the same."""

from __future__ import annotations

import io
import pickle

import pytest
import torch

from lpm_graph import simulate
from lpm_graph.datasets import SyntheticPopulation
from lpm_graph.protocols import SEIRM, SIR, LabourMarket, SupplyChain, labour_population
from lpm_graph.protocols.supply_chain import firm_graph


def _cases():
    population = SyntheticPopulation(800, seed=0)[0]
    labour = labour_population(600, num_areas=3, num_occupations=2, seed=1)
    firms = firm_graph(torch.tensor([[0, 1], [2, 2]]), [0, 0, 1])
    market = LabourMarket(torch.tensor([0.1, 0.2]), torch.tensor([0.5, 0.3, 0.4]),
                          initial_unemployment=0.1)  # fmt: skip
    return {
        "SIR": (SIR(0.1, 0.1), population, {"initial_infected": 5}),
        "SEIRM": (SEIRM(2.5, 0.05, by_age=True), population, {"initial_infected": 10}),
        "LabourMarket": (market, labour, {}),
        "SupplyChain": (SupplyChain(10.0, 0.5, backend="native"), firms, {}),
    }


@pytest.mark.parametrize("name", ["SIR", "SEIRM", "LabourMarket", "SupplyChain"])
def test_a_used_protocol_pickles_and_its_copy_runs_the_same(name):
    protocol, graph, kwargs = _cases()[name]
    with torch.no_grad():
        first = simulate(protocol, graph, 6, seed=3, **kwargs)  # fills the per-graph caches
        copy = pickle.loads(pickle.dumps(protocol))
        again = simulate(copy, graph, 6, seed=3, **kwargs)
    for key, value in first.counts.items():
        assert torch.equal(again.counts[key], value), key
    torch.save(protocol, io.BytesIO())  # nn.Module pickling path
    # the original keeps its caches
    assert simulate(protocol, graph, 2, seed=3, **kwargs).counts
