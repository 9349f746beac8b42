"""Round trips through networkx, scipy.sparse, PyG and edge-list files; the bundled dataset."""

from __future__ import annotations

import gzip
import re
import sys

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch_geometric.data import Data, HeteroData

from lpm_graph import PopulationGraph
from lpm_graph.datasets import franklin_contact_network
from lpm_graph.graph import from_pyg, read_edge_list, to_networkx, to_scipy
from lpm_graph.ops import propagate


def edge_set(graph: PopulationGraph, relation=None) -> dict[tuple[int, int], float]:
    """``{(src, dst): weight}`` (weight 1.0 when unweighted); asserts no parallel edges."""
    ei = graph.edge_index(relation).tolist()
    weight = graph.edge_weight(relation)
    weights = [1.0] * len(ei[0]) if weight is None else weight.tolist()
    out = dict(zip(zip(ei[0], ei[1]), weights))
    assert len(out) == len(weights), "unexpected parallel edges"
    return out


# ---------------------------------------------------------------------------- networkx


def weighted_nx_graph(cls):
    g = cls()
    g.add_nodes_from(range(5))  # node 4 has no edge
    g.add_weighted_edges_from([(0, 1, 0.5), (1, 2, 2.0), (2, 3, 1.5), (3, 0, 4.0)])
    return g


def test_from_networkx_graph_gives_both_directions_with_weights():
    graph = PopulationGraph.from_networkx(weighted_nx_graph(nx.Graph), weight="weight")
    assert graph.num_nodes() == 5
    assert graph.num_edges() == 8
    assert edge_set(graph) == {
        (0, 1): 0.5, (1, 0): 0.5, (1, 2): 2.0, (2, 1): 2.0,
        (2, 3): 1.5, (3, 2): 1.5, (3, 0): 4.0, (0, 3): 4.0,
    }  # fmt: skip


def test_from_networkx_digraph_keeps_direction():
    graph = PopulationGraph.from_networkx(weighted_nx_graph(nx.DiGraph), weight="weight")
    assert edge_set(graph) == {(0, 1): 0.5, (1, 2): 2.0, (2, 3): 1.5, (3, 0): 4.0}


def test_from_networkx_unweighted_has_no_edge_weight():
    graph = PopulationGraph.from_networkx(weighted_nx_graph(nx.DiGraph))
    assert graph.edge_weight() is None


def assert_same_networkx(back, original):
    """Exactly the same graph: type, nodes in order, node data, edges and edge data."""
    assert type(back) is type(original)
    assert list(back.nodes) == list(original.nodes)
    assert dict(back.nodes(data=True)) == dict(original.nodes(data=True))
    assert nx.utils.graphs_equal(back, original)  # adjacency with edge data, node data


def labelled_nx_graph(cls, labels, weighted):
    """Isolated node, self-loop, labels not 0..n-1, weights that float32 would round."""
    g = cls()
    g.add_nodes_from(labels)  # labels[4] stays isolated
    a, b, c, d, _ = labels
    edges = [(b, a, 0.1), (a, c, 1 / 3), (c, c, 2.5), (d, b, 1e-7), (c, d, 7.0)]
    for u, v, w in edges:
        g.add_edge(u, v, **({"strength": w} if weighted else {}))
    for k, node in enumerate(labels):
        g.nodes[node].update(age=20 + k, risk=k / 7, sick=k % 2 == 0)
    return g


@pytest.mark.parametrize("cls", [nx.Graph, nx.DiGraph])
@pytest.mark.parametrize("weighted", [True, False], ids=["weighted", "unweighted"])
@pytest.mark.parametrize(
    "labels",
    [
        [0, 1, 2, 3, 4],
        [40, 10, 30, 20, 99],
        ["eve", "ann", "cy", "bob", "dan"],
        [(0, 1), "a", 3.5, 7, frozenset({2})],
    ],
    ids=["ids", "int-labels", "str-labels", "mixed-labels"],
)
def test_networkx_round_trip_is_exact(cls, weighted, labels):
    original = labelled_nx_graph(cls, labels, weighted)
    graph = PopulationGraph.from_networkx(
        original, weight="strength" if weighted else None, node_attrs=["age", "risk", "sick"]
    )
    assert graph.num_nodes() == 5
    back = graph.to_networkx()
    assert_same_networkx(back, original)
    # and again through the device move (the undirected mark and weight name travel along)
    assert_same_networkx(to_networkx(graph.to("cpu")), original)


def test_networkx_round_trip_keeps_float64_node_and_edge_values():
    g = nx.DiGraph()
    g.add_edge(0, 1, weight=0.1)
    g.nodes[0]["x"], g.nodes[1]["x"] = 0.1, 1e-300
    graph = PopulationGraph.from_networkx(g, weight="weight", node_attrs=["x"])
    assert graph.edge_weight().dtype == torch.float64
    assert graph["agent"].x.dtype == torch.float64
    back = graph.to_networkx()
    assert back.edges[0, 1]["weight"] == 0.1  # float32 would give 0.10000000149...
    assert back.nodes[1]["x"] == 1e-300


@pytest.mark.parametrize("cls", [nx.Graph, nx.DiGraph])
def test_networkx_round_trip(cls):
    original = weighted_nx_graph(cls)
    back = PopulationGraph.from_networkx(original, weight="weight").to_networkx()
    assert isinstance(back, cls)
    assert sorted(back.nodes) == sorted(original.nodes)
    assert {(u, v): d["weight"] for u, v, d in back.edges(data=True)} == {
        (u, v): d["weight"] for u, v, d in original.edges(data=True)
    }


def test_to_networkx_undirected_choice():
    graph = PopulationGraph.from_networkx(weighted_nx_graph(nx.Graph), weight="weight")
    assert graph["agent", "contact", "agent"].undirected is True
    directed = graph.to_networkx(undirected=False)
    assert isinstance(directed, nx.DiGraph)
    assert directed.number_of_edges() == 8  # both directions of each contact
    # a directed relation that happens to be symmetric may be asked for as a Graph
    sym = PopulationGraph.from_edge_index(
        torch.tensor([[0, 1, 2], [1, 0, 2]]), 3, edge_weight=torch.tensor([0.5, 0.5, 1.0])
    )
    assert isinstance(sym.to_networkx(), nx.DiGraph)
    g = sym.to_networkx(undirected=True)
    assert isinstance(g, nx.Graph) and not g.is_directed()
    assert sorted(g.edges(data="weight")) == [(0, 1, 0.5), (2, 2, 1.0)]


@pytest.mark.parametrize(
    ("edge_index", "weight", "message"),
    [
        ([[0, 1], [1, 2]], None, r"the edge 0 -> 1 \(node ids, weight 0\) has no reverse 1 -> 0"),
        (
            [[0, 1], [1, 0]],
            [0.5, 0.25],
            r"the edge 1 -> 0 \(node ids, weight 0\.25\) has no reverse 0 -> 1",
        ),
        ([[0, 0, 1], [1, 1, 0]], None, r"the edge 0 -> 1 .* has no reverse 1 -> 0"),
    ],
    ids=["one-way", "different-weights", "parallel-one-way"],
)
def test_to_networkx_undirected_needs_symmetry(edge_index, weight, message):
    graph = PopulationGraph.from_edge_index(
        torch.tensor(edge_index), 3, edge_weight=None if weight is None else torch.tensor(weight)
    )
    with pytest.raises(
        ValueError,
        match=r"relation \('agent', 'contact', 'agent'\) is not symmetric: "
        + message
        + r".*pass undirected=False",
    ):
        graph.to_networkx(undirected=True)


def test_from_networkx_bad_node_attrs():
    g = nx.Graph()
    g.add_nodes_from([(0, {"age": 3}), (1, {"age": "old"}), (2, {})])
    with pytest.raises(ValueError, match=r"node 2 has no 'age' attribute; set it on every node"):
        PopulationGraph.from_networkx(g, node_attrs=["age"])
    g.nodes[2]["age"] = 5
    with pytest.raises(ValueError, match=r"'age' holds <U\d+ values; only numbers and bools"):
        PopulationGraph.from_networkx(g, node_attrs=["age"])


@pytest.mark.parametrize("cls", [nx.Graph, nx.DiGraph])
def test_networkx_adjacency_is_the_transpose_of_ours(cls):
    # networkx: M[u, v] for u -> v; ours: A[i, j] for j -> i.
    original = weighted_nx_graph(cls)
    ours = to_scipy(PopulationGraph.from_networkx(original, weight="weight")).toarray()
    theirs = nx.to_numpy_array(original, nodelist=range(5), weight="weight")
    np.testing.assert_allclose(ours, theirs.T)


def test_networkx_self_loop_in_an_undirected_graph_is_one_edge():
    original = nx.Graph()
    original.add_weighted_edges_from([(0, 0, 2.0), (0, 1, 1.0)])
    graph = PopulationGraph.from_networkx(original, weight="weight")
    np.testing.assert_allclose(to_scipy(graph).toarray(), nx.to_numpy_array(original).T)


def test_networkx_labels_are_kept():
    g = nx.Graph()
    g.add_edges_from([(10, 20), (20, 30)])
    graph = PopulationGraph.from_networkx(g)
    assert graph["agent"].node_label.tolist() == [10, 20, 30]
    assert edge_set(graph) == {(0, 1): 1.0, (1, 0): 1.0, (1, 2): 1.0, (2, 1): 1.0}

    g = nx.DiGraph()
    g.add_edges_from([("ann", "bob"), ("bob", "cy")])
    graph = PopulationGraph.from_networkx(g)
    assert graph["agent"].node_labels == ["ann", "bob", "cy"]
    assert edge_set(graph) == {(0, 1): 1.0, (1, 2): 1.0}


def test_networkx_missing_weight_attribute():
    g = nx.Graph()
    g.add_edge(0, 1, weight=1.0)
    g.add_edge(1, 2)
    with pytest.raises(
        ValueError,
        match=r"weight='weight': an edge of the networkx graph has no 'weight' "
        r"attribute; set it on every edge or pass weight=None",
    ):
        PopulationGraph.from_networkx(g, weight="weight")


def test_to_networkx_rejects_bipartite_relations():
    data = HeteroData()
    data["agent"].num_nodes = 2
    data["household"].num_nodes = 1
    data["agent", "member", "household"].edge_index = torch.tensor([[0, 1], [0, 0]])
    with pytest.raises(
        ValueError,
        match=r"to_networkx needs a relation within one node type, got "
        r"\('agent', 'member', 'household'\); convert a bipartite relation with to_scipy",
    ):
        to_networkx(PopulationGraph(data))


# ---------------------------------------------------------------------------- scipy


def test_from_scipy_a_ij_is_the_edge_j_to_i():
    # A[0, 1] = 2: edge 1 -> 0;  A[2, 0] = 3: edge 0 -> 2;  A[2, 2] = 5: self-loop on 2
    matrix = sp.csr_array(np.array([[0.0, 2.0, 0.0], [0.0, 0.0, 0.0], [3.0, 0.0, 5.0]]))
    graph = PopulationGraph.from_scipy(matrix)
    assert graph.num_nodes() == 3
    assert edge_set(graph) == {(1, 0): 2.0, (0, 2): 3.0, (2, 2): 5.0}
    # and propagate computes A @ x
    x = torch.tensor([1.0, 10.0, 100.0])
    out = propagate(graph.csr(), x, graph.edge_weight())
    assert out.tolist() == [20.0, 0.0, 503.0]


@pytest.mark.parametrize("fmt", ["csr", "coo", "csc"])
def test_scipy_round_trip(fmt):
    gen = np.random.default_rng(0)
    dense = (gen.random((6, 6)) < 0.4) * gen.uniform(0.5, 2.0, (6, 6))
    matrix = sp.csr_matrix(dense).asformat(fmt)
    back = PopulationGraph.from_scipy(matrix).to_scipy()
    assert back.shape == (6, 6)
    np.testing.assert_array_equal(back.toarray(), dense)


def canonical_csr(matrix):
    out = sp.csr_array(matrix, copy=True)
    out.sum_duplicates()
    return out


def assert_same_csr(back, expected):
    assert isinstance(back, sp.csr_array)
    assert back.shape == expected.shape
    assert back.dtype == expected.dtype
    assert back.has_canonical_format
    assert (back != expected).nnz == 0
    np.testing.assert_array_equal(back.indptr, expected.indptr)
    np.testing.assert_array_equal(back.indices, expected.indices)  # explicit zeros included
    np.testing.assert_array_equal(back.data, expected.data)


@pytest.mark.parametrize(
    "dtype", [np.float64, np.float32, np.int64, np.int32, np.uint8, np.bool_], ids=str
)
@pytest.mark.parametrize("fmt", ["csr", "csc", "coo", "lil", "dok"])
def test_scipy_round_trip_is_exact(dtype, fmt):
    gen = np.random.default_rng(1)
    mask = gen.random((7, 7)) < 0.35
    values = (
        gen.uniform(0.0, 50.0, (7, 7))
        if dtype in (np.float64, np.float32)
        else gen.integers(1, 9, (7, 7))
    )
    dense = (mask * values).astype(dtype)
    if dtype is np.float64:
        dense[0, 1] = 0.1  # float32 would round it
    matrix = sp.csr_array(dense).asformat(fmt)
    graph = PopulationGraph.from_scipy(matrix)
    assert_same_csr(graph.to_scipy(), canonical_csr(matrix))
    if dtype in (np.float64, np.float32):
        assert graph.edge_weight().dtype == getattr(torch, np.dtype(dtype).name)


def test_scipy_round_trip_keeps_stored_zeros_and_sums_duplicates():
    # COO with a duplicate (0, 1) twice and an explicitly stored zero at (2, 0)
    matrix = sp.coo_array(
        (np.array([1.5, 2.25, 0.0, 4.0]), (np.array([0, 0, 2, 1]), np.array([1, 1, 0, 2]))),
        shape=(3, 3),
    )
    graph = PopulationGraph.from_scipy(matrix)
    assert edge_set(graph) == {(1, 0): 3.75, (0, 2): 0.0, (2, 1): 4.0}  # zero kept as an edge
    back = graph.to_scipy()
    assert back.nnz == 3
    assert_same_csr(back, canonical_csr(matrix))
    assert matrix.nnz == 4  # the caller's matrix is untouched


def test_scipy_rejects_complex_and_huge_integers():
    with pytest.raises(
        ValueError, match=r"matrix values must be real numbers or bools, got complex128"
    ):
        PopulationGraph.from_scipy(sp.csr_array(np.array([[0, 1j], [0, 0]])))
    with pytest.raises(ValueError, match=r"int64 values beyond 2\*\*53"):
        PopulationGraph.from_scipy(sp.csr_array(np.array([[0, 2**60], [0, 0]])))


def test_symmetric_scipy_matrix_gives_both_directions():
    matrix = sp.csr_array(np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 0.0], [2.0, 0.0, 0.0]]))
    graph = PopulationGraph.from_scipy(matrix)
    assert edge_set(graph) == {(1, 0): 1.0, (0, 1): 1.0, (2, 0): 2.0, (0, 2): 2.0}


def test_from_scipy_unweighted_and_options():
    matrix = sp.csr_array(np.array([[0.0, 7.0], [0.0, 0.0]]))
    graph = PopulationGraph.from_scipy(matrix, weighted=False, node_type="p", edge_type="e")
    assert graph.edge_weight() is None
    assert graph.relations == [("p", "e", "p")]
    assert graph.edge_index().tolist() == [[1], [0]]


def test_to_scipy_adds_parallel_edges():
    graph = PopulationGraph.from_edge_index(
        torch.tensor([[0, 0, 1], [1, 1, 0]]), 2, edge_weight=torch.tensor([1.0, 2.5, 4.0])
    )
    np.testing.assert_allclose(to_scipy(graph).toarray(), [[0.0, 4.0], [3.5, 0.0]])


def test_scipy_bad_inputs():
    with pytest.raises(ValueError, match=r"matrix must be square \(agents x agents\), got shape"):
        PopulationGraph.from_scipy(sp.csr_array(np.ones((2, 3))))
    with pytest.raises(
        ValueError,
        match=r"matrix must be a scipy\.sparse matrix or array, got ndarray; wrap "
        r"dense arrays with scipy\.sparse\.csr_array",
    ):
        PopulationGraph.from_scipy(np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"edge_weight .* must be finite and non-negative"):
        PopulationGraph.from_scipy(sp.csr_array(np.array([[0.0, -1.0], [0.0, 0.0]])))


# ---------------------------------------------------------------------------- PyG


def test_from_pyg_data_carries_node_attributes_and_weights():
    data = Data(
        x=torch.arange(12.0).reshape(4, 3),
        y=torch.tensor([0, 1, 1, 0]),
        edge_index=torch.tensor([[0, 1, 2, 3], [1, 2, 3, 0]]),
        edge_weight=torch.tensor([0.1, 0.2, 0.3, 0.4]),
        graph_label=torch.tensor([7]),  # not per node: not carried
    )
    graph = PopulationGraph.from_pyg(data)
    assert graph.relations == [("agent", "contact", "agent")]
    assert graph.num_nodes() == 4
    assert torch.equal(graph.edge_index(), data.edge_index)
    assert torch.equal(graph.edge_weight(), data.edge_weight)
    assert torch.equal(graph["agent"].x, data.x)
    assert torch.equal(graph["agent"].y, data.y)
    assert set(graph.node_attrs()) == {"x", "y"}


def test_from_pyg_data_uses_a_1d_edge_attr_as_weight():
    data = Data(edge_index=torch.tensor([[0, 1], [1, 0]]), edge_attr=torch.tensor([2.0, 3.0]))
    data.num_nodes = 3
    graph = from_pyg(data)
    assert graph.num_nodes() == 3
    assert graph.edge_weight().tolist() == [2.0, 3.0]

    data = Data(edge_index=torch.tensor([[0, 1], [1, 0]]), edge_attr=torch.ones(2, 4))
    data.num_nodes = 2
    assert from_pyg(data).edge_weight() is None


def test_from_pyg_hetero_data_round_trip():
    data = HeteroData()
    data["agent"].num_nodes = 3
    data["agent"].age = torch.tensor([10.0, 20.0, 30.0])
    data["school"].num_nodes = 1
    data["agent", "attends", "school"].edge_index = torch.tensor([[0, 2], [0, 0]])
    data["agent", "household", "agent"].edge_index = torch.tensor([[0, 1], [1, 0]])
    data["agent", "household", "agent"].edge_weight = torch.tensor([1.0, 0.5])

    graph = PopulationGraph.from_pyg(data)
    assert graph.to_pyg() is data
    assert set(graph.relations) == set(data.edge_types)
    assert graph.num_nodes("school") == 1
    assert graph["agent"].age.tolist() == [10.0, 20.0, 30.0]
    assert graph.edge_weight("household").tolist() == [1.0, 0.5]
    assert graph.csr("attends").degree.tolist() == [2]


def test_from_pyg_bad_inputs():
    with pytest.raises(
        ValueError,
        match=r"from_pyg expects torch_geometric Data or HeteroData, "
        r"got dict",
    ):
        from_pyg({"edge_index": torch.zeros(2, 0, dtype=torch.long)})
    with pytest.raises(ValueError, match=r"has no edge_index; set data\.edge_index to a \[2, E\]"):
        from_pyg(Data(x=torch.ones(3, 1)))


# ---------------------------------------------------------------------------- edge-list files


@pytest.mark.parametrize(
    "text",
    [
        "0,1\n1,2\n3,0\n",
        "0 1\n1\t2\n3   0\n",
        "src,dst\n0,1\n1,2\n3,0\n",
        "source target\n0 1\n1 2\n3 0\n",
        "# a contact network\n\n0,1\n# comment in the middle\n1,2\n\n3,0\n",
        "0, 1\n1, 2\n3, 0\n",
    ],
    ids=["comma", "whitespace", "comma-header", "whitespace-header", "comments", "comma-space"],
)
def test_read_edge_list_formats(tmp_path, text):
    path = tmp_path / "edges.txt"
    path.write_text(text)
    graph = read_edge_list(path)
    assert graph.num_nodes() == 4  # max id + 1
    assert graph.edge_index().tolist() == [[0, 1, 3], [1, 2, 0]]
    assert graph.edge_weight() is None


def test_read_edge_list_gz(tmp_path):
    path = tmp_path / "edges.csv.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("src,dst,w\n0,1,0.5\n2,0,1.5\n")
    graph = PopulationGraph.from_edge_list(path, weighted=True)
    assert graph.edge_index().tolist() == [[0, 2], [1, 0]]
    assert graph.edge_weight().tolist() == [0.5, 1.5]


def test_read_edge_list_weighted_undirected_and_num_nodes(tmp_path):
    path = tmp_path / "edges.tsv"
    path.write_text("0\t1\t0.25\n1\t2\t3\n")
    graph = read_edge_list(path, weighted=True, undirected=True, num_nodes=5)
    assert graph.num_nodes() == 5
    assert edge_set(graph) == {(0, 1): 0.25, (1, 0): 0.25, (1, 2): 3.0, (2, 1): 3.0}


def test_read_edge_list_ignores_a_third_column_unless_weighted(tmp_path):
    path = tmp_path / "edges.csv"
    path.write_text("0,1,9\n1,0,9\n")
    assert read_edge_list(path).edge_weight() is None


def test_read_edge_list_explicit_delimiter(tmp_path):
    path = tmp_path / "edges.txt"
    path.write_text("0;1\n2;0\n")
    assert read_edge_list(path, delimiter=";").edge_index().tolist() == [[0, 2], [1, 0]]


@pytest.mark.parametrize(
    ("text", "kwargs", "lineno", "message"),
    [
        (
            "0,1\n1,x\n",
            {},
            2,
            r"node ids must be integers .*got '1,x'; fix the line or "
            r"relabel the nodes to 0\.\.n-1",
        ),
        ("# header comment\n0,1\n2.5,1\n", {}, 3, r"node ids must be integers"),
        (
            "0,1\n\n2\n",
            {},
            3,
            r"expected 2 columns \(src, dst\), got '2'; fix the line or pass "
            r"the right delimiter=",
        ),
        ("0,1,1.0\n1,2\n", {"weighted": True}, 2, r"expected 3 columns \(src, dst, weight\)"),
        (
            "0,1,1.0\n1,2,heavy\n",
            {"weighted": True},
            2,
            r"node ids must be integers \(and weights numbers\), got '1,2,heavy'",
        ),
        ("0,1\n1;2\n", {}, 2, r"expected 2 columns \(src, dst\), got '1;2'"),
    ],
    ids=["non-integer", "float-id", "missing-column", "missing-weight", "bad-weight", "delimiter"],
)
def test_malformed_edge_list_names_file_and_line(tmp_path, text, kwargs, lineno, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=re.escape(f"{path}:{lineno}: ") + message):
        read_edge_list(path, **kwargs)


def test_edge_list_id_out_of_range_names_the_file(tmp_path):
    path = tmp_path / "edges.csv"
    path.write_text("0,1\n1,7\n")
    with pytest.raises(
        ValueError,
        match=re.escape(f"{path}: ") + r"edge_index has destination id 7 at edge 1, "
        r"outside \[0, 4\)",
    ):
        read_edge_list(path, num_nodes=4)


def test_edge_list_missing_or_empty_file(tmp_path):
    missing = tmp_path / "nope.csv"
    with pytest.raises(
        ValueError,
        match=rf"edge list {re.escape(repr(str(missing)))} does not "
        r"exist; check the path",
    ):
        read_edge_list(missing)
    empty = tmp_path / "empty.csv"
    empty.write_text("# nothing\n\n")
    with pytest.raises(ValueError, match=r"has no edges; expected 'src,dst' lines"):
        read_edge_list(empty)


# ---------------------------------------------------------------------------- bundled data


@pytest.fixture(scope="module")
def franklin():
    return franklin_contact_network()


def test_franklin_counts(franklin):
    assert franklin.node_types == ["agent"]
    assert franklin.num_nodes() == 70_916
    # 249,991 contacts (179 of them self-loops), each stored in both directions
    assert franklin.num_edges() == 499_982
    ei = franklin.edge_index()
    assert int(ei.min()) == 0
    assert int(ei.max()) == 70_915
    assert franklin.edge_weight() is None


def test_franklin_is_undirected_line_by_line(franklin):
    ei = franklin.edge_index()
    lines = 249_991
    forward = ei[:, :lines]
    not_loop = forward[0] != forward[1]
    assert int((~not_loop).sum()) == 179  # self-loops in the file, stored both ways too
    assert torch.equal(ei[:, lines:], forward.flip(0))
    assert ei[:, 0].tolist() == [0, 519]  # first line of the file
    # every agent's in-degree equals its out-degree
    assert torch.equal(
        torch.bincount(ei[0], minlength=70_916), torch.bincount(ei[1], minlength=70_916)
    )


# ---------------------------------------------------------------------- DGL (optional)
def _dgl_importable() -> bool:
    try:
        import dgl  # noqa: F401
    except Exception:
        return False
    return True


def test_dgl_round_trip_where_dgl_imports():
    if not _dgl_importable():
        pytest.skip("DGL does not import here (its builds target torch <= 2.2)")
    from lpm_graph.graph import from_dgl, to_dgl

    data = HeteroData()
    data["agent"].num_nodes = 4
    data["agent"].age = torch.tensor([1, 2, 3, 4])
    data["place"].num_nodes = 2
    data["agent", "visits", "place"].edge_index = torch.tensor([[0, 1, 3], [0, 1, 1]])
    data["agent", "visits", "place"].edge_weight = torch.tensor([1.0, 0.5, 2.0])
    data["agent", "contact", "agent"].edge_index = torch.tensor([[0, 1], [1, 0]])
    graph = PopulationGraph(data)
    back = from_dgl(to_dgl(graph))
    assert sorted(back.relations) == sorted(graph.relations)
    for rel in graph.relations:
        assert torch.equal(back.edge_index(rel), graph.edge_index(rel))
        w = graph.edge_weight(rel)
        assert (back.edge_weight(rel) is None) == (w is None)
        if w is not None:
            assert torch.equal(back.edge_weight(rel), w)
    assert torch.equal(back.node_attrs("agent")["age"], data["agent"].age)


def _fail_import(monkeypatch, error: BaseException) -> None:
    import builtins

    real = builtins.__import__

    def fake(name, *args, **kwargs):
        if name == "dgl" or name.startswith("dgl."):
            raise error
        return real(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "dgl", raising=False)
    monkeypatch.setattr(builtins, "__import__", fake)


def test_dgl_missing_gives_a_clear_error(monkeypatch):
    from lpm_graph.graph import from_dgl, to_dgl

    graph = PopulationGraph.from_edge_index(torch.tensor([[0, 1], [1, 0]]), num_nodes=2)
    _fail_import(monkeypatch, ModuleNotFoundError("No module named 'dgl'", name="dgl"))
    with pytest.raises(ImportError, match=r"not installed: pip install 'lpm-graph\[dgl\]'"):
        to_dgl(graph)
    with pytest.raises(ImportError, match="not installed"):
        graph.to_dgl()
    with pytest.raises(ImportError, match="not installed"):
        from_dgl(object())


def test_dgl_that_does_not_import_with_this_torch_says_why(monkeypatch):
    from lpm_graph.graph import to_dgl

    graph = PopulationGraph.from_edge_index(torch.tensor([[0, 1], [1, 0]]), num_nodes=2)
    _fail_import(monkeypatch, OSError("libdgl.so: undefined symbol: _ZN3c10"))
    with pytest.raises(ImportError, match=r"does not import with torch .*undefined symbol"):
        to_dgl(graph)
    _fail_import(monkeypatch, ModuleNotFoundError("No module named 'torchdata'", name="torchdata"))
    with pytest.raises(ImportError, match="installed but does not import.*torchdata"):
        to_dgl(graph)
