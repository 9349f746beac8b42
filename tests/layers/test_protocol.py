"""ProtocolLayer, Transmission and HeteroLayer on hand-built graphs with values computed by hand."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn
from torch_geometric.data import HeteroData
from torch_geometric.nn import GCNConv

from lpm_graph import PopulationGraph
from lpm_graph.layers import HeteroLayer, ProtocolLayer, Transmission
from lpm_graph.ops import BACKENDS, CSR

BACKEND_PARAMS = [
    pytest.param(
        name,
        marks=pytest.mark.skipif(
            name == "torch_scatter" and importlib.util.find_spec("torch_scatter") is None,
            reason="torch-scatter not installed",
        ),
    )
    for name in BACKENDS
]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny graphs: avoid OpenMP barrier costs in sparse products (see tests/ops)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Exchange(ProtocolLayer):
    """``h_i = aggr_{j -> i} (w_ji x_j - x_i)``: uses both ends of the edge and its weight."""

    def forward(self, edge_index, x, edge_weight, size=None):
        return self.propagate(edge_index, x=x, edge_weight=edge_weight, size=size)

    def message(self, x_j, x_i, edge_weight):
        return edge_weight * x_j - x_i


class ExchangePlusSelf(Exchange):
    """Adds the destination's own ``x`` in ``update``."""

    def update(self, aggr_out, x):
        return aggr_out + x


# Four agents; edges listed out of destination order on purpose:
#   e0: 0 -> 1 (w 2),  e1: 1 -> 3 (w 3),  e2: 3 -> 0 (w 0.5),  e3: 2 -> 1 (w 2)
EDGE_INDEX = torch.tensor([[0, 1, 3, 2], [1, 3, 0, 1]])
EDGE_WEIGHT = torch.tensor([2.0, 3.0, 0.5, 2.0])
X = torch.tensor([1.0, 3.0, 4.0, 8.0])
# messages w x_j - x_i: e0 = 2*1 - 3 = -1, e1 = 3*3 - 8 = 1, e2 = 0.5*8 - 1 = 3, e3 = 2*4 - 3 = 5
# agent 0 <- [3]; agent 1 <- [-1, 5]; agent 2 <- nothing; agent 3 <- [1]
BY_HAND = {
    "sum": [3.0, 4.0, 0.0, 1.0],
    "mean": [3.0, 2.0, 0.0, 1.0],
    "max": [3.0, 5.0, 0.0, 1.0],
    "min": [3.0, -1.0, 0.0, 1.0],
    "prod": [3.0, -5.0, 1.0, 1.0],
}


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("aggr", list(BY_HAND))
def test_custom_layer_by_hand(aggr, backend):
    layer = Exchange(aggr, backend=backend)
    csr = CSR.from_edge_index(EDGE_INDEX, 4, 4)
    assert layer(csr, X, EDGE_WEIGHT).tolist() == BY_HAND[aggr]


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("aggr", ["sum", "max"])
def test_raw_edge_index_and_csr_agree(aggr, backend):
    layer = Exchange(aggr, backend=backend)
    from_tensor = layer(EDGE_INDEX, X, EDGE_WEIGHT)
    from_csr = layer(CSR.from_edge_index(EDGE_INDEX, 4, 4), X, EDGE_WEIGHT)
    graph = PopulationGraph.from_edge_index(EDGE_INDEX, 4, edge_weight=EDGE_WEIGHT)
    from_graph = layer(graph.csr(), X, graph.edge_weight())
    assert from_tensor.tolist() == BY_HAND[aggr]
    assert torch.equal(from_tensor, from_csr)
    assert torch.equal(from_tensor, from_graph)


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_update_receives_the_destination_input(backend):
    layer = ExchangePlusSelf(backend=backend)
    assert layer(EDGE_INDEX, X, EDGE_WEIGHT).tolist() == [4.0, 7.0, 4.0, 9.0]


# Three agents -> two places: e0: 0 -> 0 (w 1), e1: 1 -> 0 (w 2), e2: 2 -> 1 (w 1), e3: 0 -> 1 (w 3)
BIPARTITE = torch.tensor([[0, 1, 2, 0], [0, 0, 1, 1]])
BIPARTITE_WEIGHT = torch.tensor([1.0, 2.0, 1.0, 3.0])
X_SRC, X_DST = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([10.0, 20.0])


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_bipartite_pair_by_hand(backend):
    # place 0: (1*1 - 10) + (2*2 - 10) = -15; place 1: (1*3 - 20) + (3*1 - 20) = -34
    layer = Exchange(backend=backend)
    pair = (X_SRC, X_DST)
    assert layer(BIPARTITE, pair, BIPARTITE_WEIGHT).tolist() == [-15.0, -34.0]
    csr = CSR.from_edge_index(BIPARTITE, 3, 2)
    assert layer(csr, pair, BIPARTITE_WEIGHT).tolist() == [-15.0, -34.0]
    # update sees the destination side of the pair
    assert ExchangePlusSelf(backend=backend)(csr, pair, BIPARTITE_WEIGHT).tolist() == [-5.0, -14.0]


def test_size_overrides_inference():
    # a third place receives nothing; only size= can say it exists
    layer = Exchange()
    out = layer(BIPARTITE, (X_SRC, X_DST), BIPARTITE_WEIGHT, size=(3, 3))
    assert out.tolist() == [-15.0, -34.0, 0.0]
    with pytest.raises(ValueError, match=r"destination id 1 at edge 2, outside \[0, 1\)"):
        layer(BIPARTITE, (X_SRC, X_DST), BIPARTITE_WEIGHT, size=(3, 1))


def test_message_with_the_wrong_number_of_rows():
    class Bad(ProtocolLayer):
        def message(self, x_j):
            return x_j[:1]

    with pytest.raises(
        ValueError,
        match=r"Bad\.message returned 1 rows for 4 edges; return one "
        r"message per edge",
    ):
        Bad().propagate(EDGE_INDEX, x=X)


def test_missing_input_names_the_keyword():
    with pytest.raises(
        ValueError,
        match=r"Exchange\.message needs 'x_j'; pass x=\.\.\. to "
        r"propagate\(\)",
    ):
        Exchange().propagate(EDGE_INDEX, y=X, edge_weight=EDGE_WEIGHT)


def test_bad_aggr_and_backend():
    with pytest.raises(ValueError, match=r"aggr='median'.*'sum', 'mean', 'max', 'min', 'prod'"):
        Exchange("median")
    with pytest.raises(ValueError, match=r"backend='gpu'.*'csr', 'native', 'torch_scatter'"):
        Exchange(backend="gpu")


# ---------------------------------------------------------------------------- inside PyG


class Spread(ProtocolLayer):
    """``h_i = rate * sum_{j -> i} x_j`` with a learnable ``rate``."""

    def __init__(self, backend=None):
        super().__init__("sum", backend=backend)
        self.rate = nn.Parameter(torch.tensor(0.3))

    def forward(self, edge_index, x):
        return self.propagate(edge_index, x=x)

    def message(self, x_j):
        return self.rate * x_j


class GCNThenSpread(nn.Module):
    def __init__(self, backend):
        super().__init__()
        self.gcn = GCNConv(3, 2)
        self.spread = Spread(backend)

    def forward(self, x, edge_index):
        return self.spread(edge_index, torch.tanh(self.gcn(x, edge_index)))  # [N, 2]


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_layer_trains_inside_a_torch_geometric_model(backend):
    torch.manual_seed(0)
    edge_index = torch.tensor([[0, 1, 1, 2, 2, 3, 3, 4, 4, 0], [1, 0, 2, 1, 3, 2, 4, 3, 0, 4]])
    x = torch.randn(5, 3)
    target = torch.randn(5, 2)
    model = GCNThenSpread(backend)
    assert "spread.rate" in dict(model.named_parameters())

    loss = nn.functional.mse_loss(model(x, edge_index), target)
    loss.backward()
    assert model.spread.rate.grad is not None and model.spread.rate.grad.abs() > 0
    assert model.gcn.lin.weight.grad is not None and model.gcn.lin.weight.grad.abs().sum() > 0

    optimiser = torch.optim.Adam(model.parameters(), lr=0.05)
    first = loss.item()
    for _ in range(60):
        optimiser.zero_grad()
        loss = nn.functional.mse_loss(model(x, edge_index), target)
        loss.backward()
        optimiser.step()
    assert loss.item() < 0.6 * first
    assert model.spread.rate.item() != pytest.approx(0.3)


# ---------------------------------------------------------------------------- Transmission

# e0: 0 -> 2 (w 1), e1: 1 -> 2 (w 2), e2: 2 -> 0 (w 0.5), e3: 3 -> 2 (w 4)
T_EDGES = torch.tensor([[0, 1, 2, 3], [2, 2, 0, 2]])
T_WEIGHT = torch.tensor([1.0, 2.0, 0.5, 4.0])
INFECTIOUS = torch.tensor([1.0, 0.0, 1.0, 1.0])


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_transmission_by_hand(backend):
    layer = Transmission(backend=backend)
    csr = CSR.from_edge_index(T_EDGES, 4, 4)
    # scalar rate: lambda_0 = 0.3 * 0.5 * 1, lambda_2 = 0.3 * (1*1 + 2*0 + 4*1)
    out = layer(csr, INFECTIOUS, torch.tensor(0.3), edge_weight=T_WEIGHT)
    torch.testing.assert_close(out, torch.tensor([0.15, 0.0, 1.5, 0.0]))
    # per-edge rate: lambda_2 = 0.1*1*1 + 0.2*2*0 + 0.4*4*1
    tau = torch.tensor([0.1, 0.2, 0.3, 0.4])
    out = layer(csr, INFECTIOUS, tau, edge_weight=T_WEIGHT)
    torch.testing.assert_close(out, torch.tensor([0.15, 0.0, 1.7, 0.0]))
    # no edge weight: lambda_0 = 0.3, lambda_2 = 0.3 * 2
    out = layer(T_EDGES, INFECTIOUS, torch.tensor(0.3))
    torch.testing.assert_close(out, torch.tensor([0.3, 0.0, 0.6, 0.0]))


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_transmission_replicates_and_gradient(backend):
    layer = Transmission(backend=backend)
    infectious = torch.stack([INFECTIOUS, 1.0 - INFECTIOUS], dim=1)  # [N, 2] replicates
    rate = torch.tensor(0.3, requires_grad=True)
    out = layer(T_EDGES, infectious, rate, edge_weight=T_WEIGHT)
    # replicate 2: only agent 1 is infectious, 1 -> 2 with weight 2
    torch.testing.assert_close(out, torch.tensor([[0.15, 0.0], [0.0, 0.0], [1.5, 0.6], [0.0, 0.0]]))
    out.sum().backward()  # d/d rate of sum_i lambda_i = sum_e w_e I_src(e) over both replicates
    torch.testing.assert_close(rate.grad, torch.tensor(5.5 + 2.0))


def test_transmission_bipartite_agents_to_places():
    # agents 0, 1 -> place 0, agent 2 -> place 1; agents 0 and 1 infectious
    layer = Transmission()
    out = layer(
        torch.tensor([[0, 1, 2], [0, 0, 1]]),
        (torch.tensor([1.0, 1.0, 0.0]), torch.zeros(2)),
        torch.tensor(0.5),
    )
    assert out.tolist() == [1.0, 0.0]


# ---------------------------------------------------------------------------- HeteroLayer

HOUSEHOLD = ("agent", "household", "agent")
WORK = ("agent", "work", "agent")
MEMBER = ("agent", "member", "household")


def make_hetero_graph() -> PopulationGraph:
    data = HeteroData()
    data["agent"].num_nodes = 4
    data["household"].num_nodes = 2
    # households {0, 1} and {2, 3}; the second pair's contact weighs 0.5
    data[HOUSEHOLD].edge_index = torch.tensor([[0, 1, 2, 3], [1, 0, 3, 2]])
    data[HOUSEHOLD].edge_weight = torch.tensor([1.0, 1.0, 0.5, 0.5])
    # work: 0 -> 2 (w 0.5), 3 -> 1 (w 3)
    data[WORK].edge_index = torch.tensor([[0, 3], [2, 1]])
    data[WORK].edge_weight = torch.tensor([0.5, 3.0])
    data[MEMBER].edge_index = torch.tensor([[0, 1, 2, 3], [0, 0, 1, 1]])
    return PopulationGraph(data)


INFECTIOUS_HETERO = torch.tensor([1.0, 0.0, 0.0, 1.0])
# tau = 0.2. household: lambda_1 = 0.2*1*1 (from 0), lambda_2 = 0.2*0.5*1 (from 3)
#            work:      lambda_2 = 0.2*0.5*1 (from 0), lambda_1 = 0.2*3*1 (from 3)
HOUSEHOLD_BY_HAND = [0.0, 0.2, 0.1, 0.0]
WORK_BY_HAND = [0.0, 0.6, 0.1, 0.0]


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_hetero_layer_sums_relations_per_destination(backend):
    graph = make_hetero_graph()
    layers = {HOUSEHOLD: Transmission(backend=backend), WORK: Transmission(backend=backend)}
    hetero = HeteroLayer(layers)
    rate = torch.tensor(0.2)
    out = hetero(graph, {"agent": {"infectious": INFECTIOUS_HETERO}}, transmission_rate=rate)
    assert set(out) == {"agent"}
    torch.testing.assert_close(out["agent"], torch.tensor([0.0, 0.8, 0.2, 0.0]))

    separately = [
        layers[rel](graph.csr(rel), INFECTIOUS_HETERO, rate, edge_weight=graph.edge_weight(rel))
        for rel in (HOUSEHOLD, WORK)
    ]
    torch.testing.assert_close(separately[0], torch.tensor(HOUSEHOLD_BY_HAND))
    torch.testing.assert_close(separately[1], torch.tensor(WORK_BY_HAND))
    torch.testing.assert_close(out["agent"], separately[0] + separately[1])


def test_hetero_layer_max_and_several_destination_types():
    graph = make_hetero_graph()
    hetero = HeteroLayer({HOUSEHOLD: Transmission(), WORK: Transmission()}, aggr="max")
    out = hetero(graph, {"agent": {"infectious": INFECTIOUS_HETERO}}, transmission_rate=0.2)
    torch.testing.assert_close(out["agent"], torch.tensor([0.0, 0.6, 0.1, 0.0]))

    # agent -> household membership feeds a second destination type
    hetero = HeteroLayer({HOUSEHOLD: Transmission(), MEMBER: Transmission()})
    out = hetero(graph, {"agent": {"infectious": INFECTIOUS_HETERO}}, transmission_rate=0.2)
    assert set(out) == {"agent", "household"}
    torch.testing.assert_close(out["agent"], torch.tensor(HOUSEHOLD_BY_HAND))
    torch.testing.assert_close(out["household"], torch.tensor([0.2, 0.2]))


def test_hetero_layer_bad_arguments():
    with pytest.raises(ValueError, match=r"layers is empty; give at least one relation"):
        HeteroLayer({})
    with pytest.raises(
        ValueError,
        match=r"layer key 'work' is not a relation; use \(src_type, "
        r"edge_type, dst_type\)",
    ):
        HeteroLayer({"work": Transmission()})
    with pytest.raises(ValueError, match=r"aggr='avg'.*'sum', 'mean'"):
        HeteroLayer({WORK: Transmission()}, aggr="avg")
