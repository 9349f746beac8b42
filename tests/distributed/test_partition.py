"""Partitions by hand on tiny graphs: owners, halos (per relation), send lists, local graphs,
edge cut and balance; the three constructors; input errors. No processes."""

import sys

import pytest
import torch
from torch_geometric.data import HeteroData

from lpm_graph import PopulationGraph
from lpm_graph.distributed import Partition
from lpm_graph.ops import propagate

A = ("agent", "a", "agent")
B = ("agent", "b", "agent")


@pytest.fixture
def tiny():
    """6 agents, relation a: 0>1 1>0 1>2 2>3 3>4 4>5 5>3 0>5 (weighted), relation b: 2>0 4>1."""
    data = HeteroData()
    data["agent"].num_nodes = 6
    data["agent"].age = torch.tensor([10, 11, 12, 13, 14, 15])
    data[A].edge_index = torch.tensor([[0, 1, 1, 2, 3, 4, 5, 0], [1, 0, 2, 3, 4, 5, 3, 5]])
    data[A].edge_weight = torch.arange(8, dtype=torch.float64) + 1
    data[B].edge_index = torch.tensor([[2, 4], [0, 1]])
    return PopulationGraph(data)


def test_halos_send_lists_and_cut_by_hand(tiny):
    p = Partition(tiny, torch.tensor([0, 0, 0, 1, 1, 1]))
    assert p.num_parts == 2
    assert [o.tolist() for o in p.owned] == [[0, 1, 2], [3, 4, 5]]
    # cut: a 2>3 and 0>5 (into rank 1), b 4>1 (into rank 0)
    assert (p.edge_cut, p.num_edges) == (3, 10)
    assert [h.tolist() for h in p.halo] == [[4], [0, 2]]
    assert p.halo_by_relation[0][A].tolist() == [] and p.halo_by_relation[0][B].tolist() == [4]
    assert p.halo_by_relation[1][A].tolist() == [0, 2] and p.halo_by_relation[1][B].tolist() == []
    assert [s.tolist() for s in p.send] == [[0, 2], [4]]
    assert p.send_counts == [[0, 2], [1, 0]]
    assert p.recv_counts == [[0, 1], [2, 0]]
    q = p.quality()
    assert q.owned == (3, 3) and q.halo == (1, 2) and q.total_halo == 3
    assert q.halo_by_relation == {"a": (0, 2), "b": (1, 0)}
    assert q.edge_cut_fraction == pytest.approx(0.3) and q.balance == 1.0
    assert "edge cut 3 / 10 (30.00 %)" in str(q)


def test_shard_is_the_local_graph_by_hand(tiny):
    p = Partition(tiny, torch.tensor([0, 0, 0, 1, 1, 1]))
    s = p.shard(tiny, 1)
    assert s.nodes.tolist() == [3, 4, 5, 0, 2] and (s.num_owned, s.num_halo) == (3, 2)
    assert s.send_index.tolist() == [1]  # agent 4, to rank 0
    assert (s.send_counts, s.recv_counts) == ([1, 0], [2, 0])
    g = s.graph
    assert g.num_nodes() == 5
    # in-edges of 3, 4, 5 in their original order: 2>3 3>4 4>5 5>3 0>5, in local ids
    assert g.edge_index(A).tolist() == [[4, 0, 1, 2, 3], [0, 1, 2, 0, 2]]
    assert g.edge_weight(A).tolist() == [4.0, 5.0, 6.0, 7.0, 8.0]
    assert g.edge_index(B).shape == (2, 0)
    assert g.node_attrs()["age"].tolist() == [13, 14, 15, 10, 12]
    s0 = p.shard(tiny, 0)
    assert s0.nodes.tolist() == [0, 1, 2, 4] and s0.send_index.tolist() == [0, 2]
    assert s0.graph.edge_index(B).tolist() == [[2, 3], [0, 1]]


def test_a_row_sent_to_two_ranks_appears_in_both_send_blocks():
    # 0 is a source into ranks 1 and 2; halo of rank 0 groups rank 1's rows before rank 2's
    edges = torch.tensor([[0, 0, 3, 4], [1, 2, 0, 0]])
    g = PopulationGraph.from_edge_index(edges, 5)
    p = Partition(g, torch.tensor([0, 1, 2, 2, 1]), 3)
    assert [h.tolist() for h in p.halo] == [[4, 3], [0], [0]]
    assert p.send[0].tolist() == [0, 0] and p.send_counts[0] == [0, 1, 1]
    assert p.recv_counts[0] == [0, 1, 1]


@pytest.mark.parametrize("backend", ["native", "csr"])
def test_owned_rows_of_a_local_aggregation_equal_the_whole_graph(backend):
    gen = torch.Generator().manual_seed(0)
    n = 300
    edges = torch.randint(0, n, (2, 2000), generator=gen)
    w = torch.rand(2000, generator=gen, dtype=torch.float64)
    g = PopulationGraph.from_edge_index(edges, n, edge_weight=w)
    x = torch.rand(n, 3, generator=gen, dtype=torch.float64)
    whole = propagate(g.csr(), x, g.edge_weight(), backend=backend)
    p = Partition(g, torch.randint(0, 3, (n,), generator=gen), 3)
    for rank in range(3):
        s = p.shard(g, rank)
        local = propagate(s.graph.csr(), x[s.nodes], s.graph.edge_weight(), backend=backend)
        owned = local[: s.num_owned]
        if backend == "native":  # same terms, same order, sequential sums: the same bits
            assert torch.equal(owned, whole[s.owned_nodes])
        else:  # the sparse product groups a row's terms by its position: an ulp at most
            torch.testing.assert_close(owned, whole[s.owned_nodes], rtol=1e-15, atol=1e-15)
        assert torch.equal(local[s.num_owned :], torch.zeros_like(local[s.num_owned :]))


def test_contiguous_and_by_attribute(tiny):
    g = PopulationGraph.from_edge_index(torch.tensor([[0], [1]]), 7)
    assert Partition.contiguous(g, 3).owner.tolist() == [0, 0, 0, 1, 1, 2, 2]
    # households 1 (2 agents), 3 (1 agent), 7 (3 agents), ids interleaved: midpoints 1, 2.5
    # and 4.5 of 6 agents -> ranks 0, 0, 1 (no household split)
    g6 = PopulationGraph.from_edge_index(torch.tensor([[0], [1]]), 6)
    g6.set_node_attrs(household=torch.tensor([7, 3, 7, 1, 7, 1]))
    p = Partition.by_attribute(g6, "household", 2)
    assert p.owner.tolist() == [1, 0, 1, 0, 1, 0]
    assert p.method == "by_attribute('household')"
    with pytest.raises(ValueError, match="not one of"):
        Partition.by_attribute(g6, "school", 2)


def test_metis_cuts_two_cliques_at_their_bridge():
    pytest.importorskip("pymetis", reason="METIS is the optional `metis` extra")
    pairs = [(i, j) for c in (0, 4) for i in range(c, c + 4) for j in range(c, c + 4) if i < j]
    pairs.append((3, 4))
    g = PopulationGraph.from_edge_index(torch.tensor(pairs).T, 8, undirected=True)
    p = Partition.metis(g, 2)
    assert p.owner[:4].unique().numel() == 1 and p.owner[4:].unique().numel() == 1
    assert p.owner[0] != p.owner[4]
    q = p.quality()
    assert (q.edge_cut, q.halo, q.balance) == (2, (1, 1), 1.0)
    assert torch.equal(Partition.metis(g, 2).owner, p.owner)  # deterministic
    assert Partition.metis(g, 1).owner.tolist() == [0] * 8


def test_metis_without_pymetis_names_the_package(tiny, monkeypatch):
    monkeypatch.setitem(sys.modules, "pymetis", None)  # import pymetis raises ImportError
    with pytest.raises(ImportError, match="pip install pymetis"):
        Partition.metis(tiny, 2)


def test_input_errors(tiny):
    with pytest.raises(ValueError, match="positive int"):
        Partition.contiguous(tiny, 0)
    with pytest.raises(ValueError, match="cannot split 6 agents into 7"):
        Partition.contiguous(tiny, 7)
    with pytest.raises(ValueError, match="ranks are 0..1"):
        Partition(tiny, torch.tensor([0, 0, 0, 1, 1, 2]), 2)
    with pytest.raises(ValueError, match=r"one rank per agent \(\[6\]\)"):
        Partition(tiny, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="integer tensor"):
        Partition(tiny, torch.zeros(6))
    with pytest.raises(ValueError, match=r"rank must be in \[0, 2\)"):
        Partition.contiguous(tiny, 2).shard(tiny, 2)
    data = HeteroData()
    data["agent"].num_nodes = 2
    data["place"].num_nodes = 1
    data["agent", "at", "place"].edge_index = torch.tensor([[0, 1], [0, 0]])
    with pytest.raises(ValueError, match="one node type"):
        Partition.contiguous(PopulationGraph(data), 2)
