"""PopulationGraph construction, access, caching and input validation."""

from __future__ import annotations

import re

import pytest
import torch
from torch_geometric.data import HeteroData

from lpm_graph import PopulationGraph

CONTACT = ("agent", "contact", "agent")
REL = r"\('agent', 'contact', 'agent'\)"  # how messages print the default relation

# 0 -> 1, 1 -> 2, 2 -> 0 on four agents (agent 3 has no contact)
EDGE_INDEX = torch.tensor([[0, 1, 2], [1, 2, 0]])


def make_household_graph() -> PopulationGraph:
    """Four agents and two households; agents -> household membership and agent contacts."""
    data = HeteroData()
    data["agent"].num_nodes = 4
    data["agent"].age = torch.tensor([30.0, 40.0, 5.0, 70.0])
    data["household"].num_nodes = 2
    data["agent", "member", "household"].edge_index = torch.tensor([[0, 1, 2, 3], [0, 0, 1, 1]])
    data["agent", "household", "agent"].edge_index = torch.tensor([[0, 1, 2, 3], [1, 0, 3, 2]])
    data["agent", "household", "agent"].edge_weight = torch.tensor([1.0, 1.0, 0.5, 0.5])
    return PopulationGraph(data)


# ---------------------------------------------------------------------------- construction


def test_from_edge_index_directed():
    graph = PopulationGraph.from_edge_index(EDGE_INDEX, 4)
    assert graph.node_types == ["agent"]
    assert graph.relations == [CONTACT]
    assert graph.num_nodes() == 4
    assert graph.num_edges() == 3
    assert torch.equal(graph.edge_index(), EDGE_INDEX)
    assert graph.edge_weight() is None
    assert graph.edge_index().dtype == torch.long


def test_from_edge_index_undirected_adds_each_reverse_edge_with_its_weight():
    weight = torch.tensor([1.0, 2.0, 3.0])
    graph = PopulationGraph.from_edge_index(EDGE_INDEX, 4, edge_weight=weight, undirected=True)
    assert graph.num_edges() == 6
    assert graph.edge_index().tolist() == [[0, 1, 2, 1, 2, 0], [1, 2, 0, 0, 1, 2]]
    assert graph.edge_weight().tolist() == [1.0, 2.0, 3.0, 1.0, 2.0, 3.0]


def test_from_edge_index_keeps_edge_weight_and_accepts_int32_ids():
    weight = torch.tensor([0.5, 0.0, 2.0])
    graph = PopulationGraph.from_edge_index(EDGE_INDEX.int(), 4, edge_weight=weight)
    assert torch.equal(graph.edge_weight(), weight)
    assert graph.edge_index().dtype == torch.long


def test_from_edge_index_names_node_and_edge_types():
    graph = PopulationGraph.from_edge_index(EDGE_INDEX, 4, node_type="person", edge_type="work")
    assert graph.node_types == ["person"]
    assert graph.relations == [("person", "work", "person")]
    assert graph.num_nodes("person") == 4


def test_empty_graph_is_allowed():
    graph = PopulationGraph.from_edge_index(torch.empty(2, 0, dtype=torch.long), 3)
    assert graph.num_edges() == 0
    assert graph.csr().degree.tolist() == [0, 0, 0]


def test_node_types_relations_and_attributes_of_a_hetero_graph():
    graph = make_household_graph()
    assert sorted(graph.node_types) == ["agent", "household"]
    assert set(graph.relations) == {
        ("agent", "member", "household"),
        ("agent", "household", "agent"),
    }
    assert graph.num_nodes("household") == 2
    assert graph.num_edges("member") == 4
    assert graph["agent"].age.tolist() == [30.0, 40.0, 5.0, 70.0]
    assert list(graph.node_attrs("agent")) == ["age"]
    assert graph.to_pyg() is graph.data


def test_relation_resolution():
    graph = make_household_graph()
    member = ("agent", "member", "household")
    assert graph.relation("member") == member
    assert graph.relation(member) == member
    assert graph.relation(list(member)) == member
    assert graph.edge_weight("household").tolist() == [1.0, 1.0, 0.5, 0.5]
    assert graph.edge_weight("member") is None


def test_relation_errors_name_the_choices():
    graph = make_household_graph()
    with pytest.raises(ValueError, match=r"has 2 relations .*name one \(e\.g\. relation="):
        graph.relation()
    with pytest.raises(ValueError, match=r"unknown relation 'school'; this graph has \["):
        graph.relation("school")
    with pytest.raises(ValueError, match=r"unknown relation \('agent', 'x', 'agent'\)"):
        graph.relation(("agent", "x", "agent"))
    with pytest.raises(ValueError, match=r"node types .*name one \(node_type=\.\.\.\)"):
        graph.num_nodes()
    with pytest.raises(ValueError, match=r"unknown node type 'place'; this graph has"):
        graph.num_nodes("place")


def test_csr_is_built_once_per_relation():
    graph = make_household_graph()
    csr = graph.csr("household")
    assert graph.csr("household") is csr
    assert graph.csr(("agent", "household", "agent")) is csr
    member = graph.csr("member")
    assert member is not csr
    assert (member.num_rows, member.num_cols) == (2, 4)  # households x agents
    assert member.degree.tolist() == [2, 2]


def test_csr_matches_the_edge_index():
    graph = PopulationGraph.from_edge_index(EDGE_INDEX, 4)
    csr = graph.csr()
    assert torch.equal(csr.src, EDGE_INDEX[0])
    assert torch.equal(csr.dst, EDGE_INDEX[1])
    assert csr.degree.tolist() == [1, 1, 1, 0]


def test_to_cpu_keeps_everything_and_moves_cached_csrs():
    graph = make_household_graph()
    graph.csr("household")
    moved = graph.to(device="cpu")
    assert moved.device == torch.device("cpu")
    assert set(moved.relations) == set(graph.relations)
    assert torch.equal(moved.edge_index("household"), graph.edge_index("household"))
    assert torch.equal(moved["agent"].age, graph["agent"].age)
    assert torch.equal(moved.csr("household").col, graph.csr("household").col)


def test_to_leaves_the_original_graph_where_it_was():
    graph = PopulationGraph.from_edge_index(EDGE_INDEX, 4)
    moved = graph.to("meta")  # a second device that every machine has
    assert moved.edge_index().device.type == "meta"
    assert graph.edge_index().device.type == "cpu"


def test_set_node_attrs():
    graph = PopulationGraph.from_edge_index(EDGE_INDEX, 4)
    graph.set_node_attrs(age=torch.arange(4.0), household=torch.tensor([0, 0, 1, 1]))
    assert graph["agent"].age.tolist() == [0.0, 1.0, 2.0, 3.0]
    assert set(graph.node_attrs()) == {"age", "household"}


@pytest.mark.parametrize(
    ("value", "shape"),
    [(torch.zeros(3), r"\[3\]"), (torch.zeros(5, 2), r"\[5, 2\]"), (torch.tensor(1.0), r"\[\]")],
)
def test_set_node_attrs_rejects_a_wrong_first_dimension(value, shape):
    graph = PopulationGraph.from_edge_index(EDGE_INDEX, 4)
    with pytest.raises(
        ValueError,
        match=rf"node attribute 'age' of 'agent' has shape {shape}; its first dimension must be "
        r"the number of 'agent' nodes \(4\)",
    ):
        graph.set_node_attrs(age=value)
    assert "age" not in graph.node_attrs()


def test_set_node_attrs_rejects_non_tensors():
    graph = PopulationGraph.from_edge_index(EDGE_INDEX, 4)
    with pytest.raises(ValueError, match=r"node attribute 'age' of 'agent' must be a tensor"):
        graph.set_node_attrs(age=[1, 2, 3, 4])


# ---------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    ("edge_index", "message"),
    [
        (
            torch.tensor([[0, -1, 2], [1, 2, 0]]),
            r"edge_index has source id -1 at edge 1, outside \[0, 4\); node ids must be 0\.\.3 "
            r"\(pass the right num_nodes or relabel\)",
        ),
        (
            torch.tensor([[0, 1, 2], [1, 2, -5]]),
            r"edge_index has destination id -5 at edge 2, outside \[0, 4\); "
            r"node ids must be 0\.\.3",
        ),
        (
            torch.tensor([[0, 1, 4], [1, 2, 0]]),
            r"edge_index has source id 4 at edge 2, outside \[0, 4\); node ids must be 0\.\.3 "
            r"\(pass the right num_nodes",
        ),
        (
            torch.tensor([[0, 1, 2], [9, 2, 0]]),
            r"edge_index has destination id 9 at edge 0, outside \[0, 4\); node ids must be 0\.\.3",
        ),
    ],
    ids=["negative-source", "negative-destination", "large-source", "large-destination"],
)
def test_ids_out_of_range_name_the_id_and_the_bound(edge_index, message):
    with pytest.raises(ValueError, match=message):
        PopulationGraph.from_edge_index(edge_index, 4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bool])
def test_non_integer_edge_index_says_use_long(dtype):
    with pytest.raises(
        ValueError,
        match=rf"edge_index must hold integer node ids, got dtype {dtype}; use "
        r"edge_index\.long\(\)",
    ):
        PopulationGraph.from_edge_index(EDGE_INDEX.to(dtype), 4)


def test_transposed_edge_index_says_transpose_it():
    with pytest.raises(
        ValueError,
        match=r"edge_index must have shape \[2, E\] \(row 0 sources, row 1 destinations\), got "
        r"\[3, 2\] \(it looks transposed: use edge_index\.t\(\)\)",
    ):
        PopulationGraph.from_edge_index(EDGE_INDEX.t(), 4)


@pytest.mark.parametrize(
    "edge_index", [torch.tensor([0, 1, 2]), torch.zeros(3, 3, dtype=torch.long)]
)
def test_wrong_shape_edge_index_says_the_expected_shape(edge_index):
    with pytest.raises(
        ValueError,
        match=r"edge_index must have shape \[2, E\] \(row 0 sources, row 1 destinations\), got "
        + re.escape(f"{list(edge_index.shape)}.")
        + "$",
    ):
        PopulationGraph.from_edge_index(edge_index, 4)


def test_edge_index_must_be_a_tensor():
    with pytest.raises(
        ValueError,
        match=r"edge_index must be a torch\.Tensor .*torch\.as_tensor\(\.\.\., "
        r"dtype=torch\.long\)",
    ):
        PopulationGraph.from_edge_index([[0, 1], [1, 0]], 2)


def test_self_loop_rejected_when_disallowed():
    edge_index = torch.tensor([[0, 2, 1], [1, 2, 0]])
    with pytest.raises(
        ValueError,
        match=rf"edge_index of {REL} has a self-loop 2 -> 2 at edge 1 and allow_self_loops=False;"
        r" remove self-loops \(torch_geometric\.utils\.remove_self_loops\) or allow them",
    ):
        PopulationGraph.from_edge_index(edge_index, 3, allow_self_loops=False)
    assert PopulationGraph.from_edge_index(edge_index, 3).num_edges() == 3  # allowed by default


def test_duplicate_rejected_when_disallowed():
    edge_index = torch.tensor([[0, 1, 0, 2], [1, 0, 1, 0]])
    with pytest.raises(
        ValueError,
        match=rf"edge_index of {REL} repeats the edge 0 -> 1 \(edge 2\) and "
        r"allow_duplicates=False; remove duplicates \(torch_geometric\.utils\.coalesce\)",
    ):
        PopulationGraph.from_edge_index(edge_index, 3, allow_duplicates=False)
    # the reverse edge is not a duplicate, and duplicates are allowed by default
    assert (
        PopulationGraph.from_edge_index(
            torch.tensor([[0, 1], [1, 0]]), 2, allow_duplicates=False
        ).num_edges()
        == 2
    )
    assert PopulationGraph.from_edge_index(edge_index, 3).num_edges() == 4


def test_undirected_pair_listed_twice_is_a_duplicate():
    with pytest.raises(
        ValueError, match=r"repeats the edge 0 -> 1 \(edge 3\) and allow_duplicates=False"
    ):
        PopulationGraph.from_edge_index(
            torch.tensor([[0, 1], [1, 0]]), 2, undirected=True, allow_duplicates=False
        )


@pytest.mark.parametrize(
    "weight",
    [
        torch.tensor([1.0, -0.5, 1.0]),
        torch.tensor([1.0, float("nan"), 1.0]),
        torch.tensor([float("inf"), 1.0, 1.0]),
    ],
    ids=["negative", "nan", "inf"],
)
def test_bad_edge_weight_values(weight):
    with pytest.raises(
        ValueError,
        match=rf"edge_weight of {REL} must be finite and non-negative; found NaN, inf "
        r"or a negative weight",
    ):
        PopulationGraph.from_edge_index(EDGE_INDEX, 4, edge_weight=weight)


@pytest.mark.parametrize(
    ("weight", "got"),
    [(torch.ones(2), r"\[2\]"), (torch.ones(3, 1), r"\[3, 1\]"), (torch.tensor(1.0), r"\[\]")],
)
def test_edge_weight_of_the_wrong_shape(weight, got):
    with pytest.raises(
        ValueError,
        match=rf"edge_weight of {REL} must be a 1-D tensor with one weight per edge \(3\), "
        rf"got {got}",
    ):
        PopulationGraph.from_edge_index(EDGE_INDEX, 4, edge_weight=weight)


def test_integer_edge_weight_says_use_float():
    with pytest.raises(
        ValueError,
        match=rf"edge_weight of {REL} must be floating point; use "
        r"\.float\(\)",
    ):
        PopulationGraph.from_edge_index(EDGE_INDEX, 4, edge_weight=torch.tensor([1, 2, 3]))


@pytest.mark.parametrize("num_nodes", [-1, 2.5, True, "4"])
def test_bad_num_nodes(num_nodes):
    with pytest.raises(ValueError, match=r"num_nodes must be a non-negative int, got"):
        PopulationGraph.from_edge_index(torch.empty(2, 0, dtype=torch.long), num_nodes)


def test_node_attribute_with_the_wrong_first_dimension_in_data():
    data = HeteroData()
    data["agent"].num_nodes = 4
    data["agent"].age = torch.zeros(3)
    with pytest.raises(
        ValueError,
        match=r"node attribute 'age' of 'agent' has shape \[3\]; its first dimension must be the "
        r"number of 'agent' nodes \(4\)",
    ):
        PopulationGraph(data)


def test_bad_hetero_data():
    with pytest.raises(
        ValueError,
        match=r"data must be a torch_geometric\.data\.HeteroData, got "
        r"Tensor; use PopulationGraph\.from_edge_index",
    ):
        PopulationGraph(EDGE_INDEX)

    data = HeteroData()
    data["agent"].x = torch.zeros(3)
    with pytest.raises(
        ValueError,
        match=r"node type 'agent' has no num_nodes; set "
        r"data\['agent'\]\.num_nodes",
    ):
        PopulationGraph(data)

    data = HeteroData()
    data["agent"].num_nodes = 3
    data["agent", "member", "household"].edge_index = torch.tensor([[0], [0]])
    with pytest.raises(ValueError, match=r"names node type 'household', which has no nodes"):
        PopulationGraph(data)

    data = HeteroData()
    data["agent"].num_nodes = 3
    data["household"].num_nodes = 1
    data["agent", "member", "household"].edge_index = torch.tensor([[0, 2], [0, 1]])
    with pytest.raises(
        ValueError,
        match=r"edge_index of \('agent', 'member', 'household'\) has destination id 1"
        r" at edge 1, outside \[0, 1\)",
    ):
        PopulationGraph(data)
