"""Bad input to the graph API (construction, node attributes, relations, devices, interop
and the aggregation ops): a ValueError or TypeError naming the argument, raised before any
work; never a crash inside torch, numpy or PyG. Table-driven: each case is the call, the
error class and a phrase of its message."""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch_geometric.data import Data, HeteroData

from lpm_graph import PopulationGraph
from lpm_graph.graph import from_networkx, from_pyg, from_scipy, to_networkx, to_scipy
from lpm_graph.ops import CSR, aggregate, propagate, resolve_backend

N = 6
EDGES = torch.tensor([[0, 1, 2, 3], [1, 2, 3, 4]])
make = PopulationGraph.from_edge_index


@pytest.fixture(scope="module")
def graph() -> PopulationGraph:
    return make(EDGES, N)


def _hetero(*, num_nodes: bool = True, edge_index: bool = True, dst: str = "agent") -> HeteroData:
    data = HeteroData()
    if num_nodes:
        data["agent"].num_nodes = 3
    else:
        data["agent"].x = torch.zeros(3, 1)
    store = data["agent", "contact", dst]
    if edge_index:
        store.edge_index = torch.zeros(2, 1, dtype=torch.long)
    else:
        store.edge_weight = torch.ones(1)
    return data


def _weighted_nx(weight: object) -> nx.Graph:
    g = nx.Graph()
    g.add_edge(0, 1, weight=weight)
    return g


CASES = [
    # (id, call(graph), error class, phrase)
    (
        "num_nodes negative",
        lambda g: make(EDGES, -1),
        ValueError,
        "num_nodes must be a non-negative int, got -1",
    ),
    (
        "num_nodes a float",
        lambda g: make(EDGES, 6.0),
        ValueError,
        "num_nodes must be a non-negative int, got 6.0",
    ),
    (
        "num_nodes a float tensor",
        lambda g: make(EDGES, torch.tensor(6.7)),
        ValueError,
        "num_nodes must be",
    ),
    (
        "num_nodes a 2-element tensor",
        lambda g: make(EDGES, torch.tensor([6, 7])),
        ValueError,
        "num_nodes must be",
    ),
    (
        "num_nodes a str",
        lambda g: make(EDGES, "6"),
        ValueError,
        "num_nodes must be a non-negative int, got '6'",
    ),
    ("num_nodes a bool", lambda g: make(EDGES, True), ValueError, "num_nodes must be"),
    (
        "num_nodes too small for the ids",
        lambda g: make(EDGES, 3),
        ValueError,
        "pass the right num_nodes",
    ),
    (
        "edge_index a list",
        lambda g: make([[0, 1], [1, 2]], 3),
        ValueError,
        "edge_index must be a torch.Tensor",
    ),
    (
        "edge_index a numpy array",
        lambda g: make(np.array([[0, 1], [1, 2]]), 3),
        ValueError,
        "torch.as_tensor",
    ),
    (
        "edge_index of floats",
        lambda g: make(EDGES.float(), N),
        ValueError,
        "edge_index must hold integer node ids",
    ),
    (
        "edge_index of bools",
        lambda g: make(torch.ones(2, 3, dtype=torch.bool), N),
        ValueError,
        "edge_index must hold integer",
    ),
    ("edge_index transposed", lambda g: make(EDGES.t(), N), ValueError, "use edge_index.t()"),
    (
        "edge_index 1-D",
        lambda g: make(torch.tensor([0, 1, 2]), N),
        ValueError,
        "edge_index must have shape [2, E]",
    ),
    (
        "edge_index with 3 rows",
        lambda g: make(torch.zeros(3, 4, dtype=torch.long), N),
        ValueError,
        "shape [2, E]",
    ),
    (
        "edge_index with a negative id",
        lambda g: make(torch.tensor([[0, -1], [1, 2]]), N),
        ValueError,
        "source id -1 at edge 1",
    ),
    (
        "edge_weight of the wrong length",
        lambda g: make(EDGES, N, edge_weight=torch.ones(3)),
        ValueError,
        "one weight per edge (4), got [3]",
    ),
    (
        "edge_weight of the wrong length, undirected",
        lambda g: make(EDGES, N, edge_weight=torch.ones(3), undirected=True),
        ValueError,
        "one weight per edge (4), got [3]",
    ),
    (
        "edge_weight 2-D, undirected",
        lambda g: make(EDGES, N, edge_weight=torch.ones(4, 1), undirected=True),
        ValueError,
        "edge_weight of",
    ),
    ("edge_weight a list", lambda g: make(EDGES, N, edge_weight=[1.0] * 4), ValueError, "got list"),
    (
        "edge_weight negative",
        lambda g: make(EDGES, N, edge_weight=torch.tensor([1.0, -1, 1, 1])),
        ValueError,
        "finite and non-negative",
    ),
    (
        "edge_weight NaN",
        lambda g: make(EDGES, N, edge_weight=torch.tensor([1.0, math.nan, 1, 1])),
        ValueError,
        "finite and non-negative",
    ),
    (
        "edge_weight inf",
        lambda g: make(EDGES, N, edge_weight=torch.tensor([1.0, math.inf, 1, 1])),
        ValueError,
        "finite and non-negative",
    ),
    (
        "edge_weight of ints",
        lambda g: make(EDGES, N, edge_weight=torch.ones(4, dtype=torch.long)),
        ValueError,
        "use .float()",
    ),
    (
        "node_type empty",
        lambda g: make(EDGES, N, node_type=""),
        ValueError,
        "node_type must be a non-empty str",
    ),
    (
        "node_type an int",
        lambda g: make(EDGES, N, node_type=3),
        ValueError,
        "node_type must be a non-empty str, e.g. 'agent', got 3",
    ),
    (
        "edge_type None",
        lambda g: make(EDGES, N, edge_type=None),
        ValueError,
        "edge_type must be a non-empty str",
    ),
    (
        "a self-loop, disallowed",
        lambda g: make(torch.tensor([[0], [0]]), 2, allow_self_loops=False),
        ValueError,
        "allow_self_loops=False",
    ),
    (
        "a duplicate, disallowed",
        lambda g: make(torch.tensor([[0, 0], [1, 1]]), 2, allow_duplicates=False),
        ValueError,
        "allow_duplicates=False",
    ),
    (
        "PopulationGraph(Data)",
        lambda g: PopulationGraph(Data()),
        ValueError,
        "data must be a torch_geometric.data.HeteroData, got Data",
    ),
    (
        "HeteroData without num_nodes",
        lambda g: PopulationGraph(_hetero(num_nodes=False)),
        ValueError,
        "set data['agent'].num_nodes",
    ),
    (
        "HeteroData without edge_index",
        lambda g: PopulationGraph(_hetero(edge_index=False)),
        ValueError,
        "has no edge_index",
    ),
    (
        "HeteroData relation to a type without nodes",
        lambda g: PopulationGraph(_hetero(dst="place")),
        ValueError,
        "names node type 'place'",
    ),
    (
        "set_node_attrs of the wrong length",
        lambda g: g.set_node_attrs(age=torch.zeros(N + 1)),
        ValueError,
        "node attribute 'age' of 'agent' has shape [7]",
    ),
    (
        "set_node_attrs a scalar",
        lambda g: g.set_node_attrs(age=torch.tensor(1.0)),
        ValueError,
        "node attribute 'age'",
    ),
    (
        "set_node_attrs a list",
        lambda g: g.set_node_attrs(age=[1] * N),
        ValueError,
        "node attribute 'age' of 'agent' must be a tensor",
    ),
    (
        "set_node_attrs on an unknown type",
        lambda g: g.set_node_attrs("person", age=torch.zeros(N)),
        ValueError,
        "unknown node type 'person'",
    ),
    (
        "relation unknown",
        lambda g: g.relation("household"),
        ValueError,
        "unknown relation 'household'",
    ),
    (
        "relation an int",
        lambda g: g.relation(3),
        ValueError,
        "relation must be an edge-type name or a (src_type, edge_type, dst_type) tuple, got 3",
    ),
    (
        "relation a short tuple",
        lambda g: g.relation(("agent", "contact")),
        ValueError,
        "unknown relation ('agent', 'contact')",
    ),
    (
        "to a device that does not exist",
        lambda g: g.to("tpu"),
        ValueError,
        "device='tpu' is not a device",
    ),
    (
        "to an int device",
        lambda g: g.to(12345),
        ValueError,
        "device must be a str or a torch.device",
    ),
    (
        "to CUDA without a GPU",
        lambda g: g.to("cuda:99"),
        ValueError,
        "device='cuda:99' is not available",
    ),
    (
        "from_pyg of a tensor",
        lambda g: from_pyg(torch.zeros(2, 3)),
        ValueError,
        "from_pyg expects torch_geometric Data or HeteroData, got Tensor",
    ),
    (
        "from_pyg without num_nodes",
        lambda g: from_pyg(Data(edge_index=EDGES)),
        ValueError,
        "set data.num_nodes = N",
    ),
    (
        "from_pyg with x of the wrong length",
        lambda g: from_pyg(Data(edge_index=EDGES, num_nodes=N, x=torch.zeros(N + 1, 2))),
        ValueError,
        "data.x has shape [7, 2]",
    ),
    (
        "from_networkx of a list",
        lambda g: from_networkx([(0, 1)]),
        ValueError,
        "graph must be a networkx Graph or DiGraph, got list",
    ),
    (
        "from_networkx node_attrs a str",
        lambda g: from_networkx(nx.Graph([(0, 1)]), node_attrs="age"),
        ValueError,
        "write node_attrs=['age']",
    ),
    (
        "from_networkx missing weight",
        lambda g: from_networkx(nx.Graph([(0, 1)]), weight="w"),
        ValueError,
        "weight='w'",
    ),
    (
        "from_networkx text weight",
        lambda g: from_networkx(_weighted_nx("a"), weight="weight"),
        ValueError,
        "non-numeric weight 'a'",
    ),
    (
        "from_networkx NaN weight",
        lambda g: from_networkx(_weighted_nx(math.nan), weight="weight"),
        ValueError,
        "edge_weight of",
    ),
    (
        "from_networkx missing node attribute",
        lambda g: from_networkx(nx.Graph([(0, 1)]), node_attrs=["age"]),
        ValueError,
        "node 0 has no 'age' attribute",
    ),
    (
        "from_scipy of a dense array",
        lambda g: from_scipy(np.ones((2, 2))),
        ValueError,
        "matrix must be a scipy.sparse matrix",
    ),
    (
        "from_scipy not square",
        lambda g: from_scipy(sp.csr_array(np.ones((2, 3)))),
        ValueError,
        "matrix must be square",
    ),
    (
        "from_scipy negative weight",
        lambda g: from_scipy(sp.csr_array(np.array([[0, -1.0], [1, 0]]))),
        ValueError,
        "finite and non-negative",
    ),
    (
        "to_networkx unknown relation",
        lambda g: to_networkx(g, ("a", "b", "c")),
        ValueError,
        "unknown relation ('a', 'b', 'c')",
    ),
    ("to_scipy unknown relation", lambda g: to_scipy(g, "x"), ValueError, "unknown relation 'x'"),
    (
        "CSR.from_edge_index with ids beyond the nodes",
        lambda g: CSR.from_edge_index(EDGES, 2, 2),
        ValueError,
        "outside [0, 2)",
    ),
    (
        "CSR.from_edge_index num_dst negative",
        lambda g: CSR.from_edge_index(EDGES, N, -1),
        ValueError,
        "num_dst must be a non-negative int",
    ),
    (
        "aggregate messages of the wrong length",
        lambda g: aggregate(torch.ones(3), g.csr()),
        ValueError,
        "messages has 3 rows but the relation has 4 edges",
    ),
    (
        "aggregate an unknown reduce",
        lambda g: aggregate(torch.ones(4), g.csr(), reduce="median"),
        ValueError,
        "reduce='median'",
    ),
    ("resolve_backend unknown", lambda g: resolve_backend("magic"), ValueError, "backend='magic'"),
    (
        "propagate x of the wrong length",
        lambda g: propagate(g.csr(), torch.ones(N + 2)),
        ValueError,
        "x has shape [8]",
    ),
    (
        "propagate x of ints",
        lambda g: propagate(g.csr(), torch.ones(N, dtype=torch.long)),
        ValueError,
        "x must be a floating-point tensor",
    ),
    (
        "propagate x a list",
        lambda g: propagate(g.csr(), [1.0] * N),
        ValueError,
        "x must be a floating-point tensor [num_src, *F], got list",
    ),
    (
        "propagate edge_weight of the wrong length",
        lambda g: propagate(g.csr(), torch.ones(N), torch.ones(2)),
        ValueError,
        "edge_weight has shape [2]",
    ),
]


@pytest.mark.parametrize(
    ("call", "error", "phrase"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_graph_input_is_a_clear_error(graph, call, error, phrase):
    with pytest.raises(error) as raised:
        call(graph)
    assert phrase in str(raised.value)


def test_a_refused_call_leaves_the_graph_as_it_was(graph):
    before = dict(graph.node_attrs())
    with pytest.raises(ValueError):
        graph.set_node_attrs(ok=torch.zeros(N), bad=torch.zeros(N + 1))
    assert graph.node_attrs().keys() == before.keys()


def test_numpy_and_tensor_counts_are_accepted():
    """A count from numpy or a 0-d integer tensor is a count, not an error."""
    assert make(EDGES, np.int64(N)).num_nodes() == N
    assert make(EDGES, torch.tensor(N)).num_nodes() == N
    assert PopulationGraph.from_pyg(Data(edge_index=EDGES, num_nodes=N)).num_nodes() == N
