"""The cached CSR structure, checked entry by entry on a graph small enough to sort by hand."""

from __future__ import annotations

import torch

from lpm_graph.ops import CSR

# Five edges on four nodes, in the caller's order:
#   e0: 0 -> 1,  e1: 1 -> 0,  e2: 3 -> 1,  e3: 2 -> 3,  e4: 1 -> 1
# Node 2 receives nothing; node 1 receives e0, e2, e4 (in that order: the sort is stable).
EDGE_INDEX = torch.tensor([[0, 1, 3, 2, 1], [1, 0, 1, 3, 1]])
WEIGHTS = torch.tensor([10.0, 11.0, 12.0, 13.0, 14.0])  # weight of e_k is 10 + k


def make_csr() -> CSR:
    return CSR.from_edge_index(EDGE_INDEX, 4, 4)


def test_rows_are_destinations_sorted_stably():
    csr = make_csr()
    # sorted order: e1 (dst 0), e0, e2, e4 (dst 1), e3 (dst 3)
    assert csr.perm.tolist() == [1, 0, 2, 4, 3]
    assert csr.row.tolist() == [0, 1, 1, 1, 3]
    assert csr.col.tolist() == [1, 0, 3, 1, 2]
    assert csr.degree.tolist() == [1, 3, 0, 1]  # in-degree
    assert csr.rowptr.tolist() == [0, 1, 4, 4, 5]
    assert (csr.num_rows, csr.num_cols, csr.num_edges) == (4, 4, 5)


def test_sparse_view_is_the_adjacency_with_a_ij_for_edge_j_to_i():
    csr = make_csr()
    dense = csr.sparse(WEIGHTS[csr.perm]).to_dense()
    expected = torch.zeros(4, 4)
    expected[1, 0] = 10.0  # e0: 0 -> 1
    expected[0, 1] = 11.0  # e1: 1 -> 0
    expected[1, 3] = 12.0  # e2: 3 -> 1
    expected[3, 2] = 13.0  # e3: 2 -> 3
    expected[1, 1] = 14.0  # e4: 1 -> 1
    assert torch.equal(dense, expected)


def test_transpose_rows_are_sources():
    csr = make_csr()
    t = csr.t
    assert (t.num_rows, t.num_cols, t.num_edges) == (4, 4, 5)
    # transposed order: (src 0: e0), (src 1: e1, e4), (src 2: e3), (src 3: e2)
    assert t.row.tolist() == [0, 1, 1, 2, 3]
    assert t.col.tolist() == [1, 0, 1, 3, 1]
    assert t.degree.tolist() == [1, 2, 1, 1]  # out-degree
    assert t.rowptr.tolist() == [0, 1, 3, 4, 5]


def test_transpose_is_cached_and_its_transpose_is_the_original():
    csr = make_csr()
    assert csr.t is csr.t
    assert csr.t.t is csr


def test_t_index_reorders_sorted_values_into_the_transposed_order():
    csr = make_csr()
    values = WEIGHTS[csr.perm]  # sorted order: e1, e0, e2, e4, e3
    assert values.tolist() == [11.0, 10.0, 12.0, 14.0, 13.0]
    assert csr.t_index.tolist() == [1, 0, 3, 4, 2]
    assert values[csr.t_index].tolist() == [10.0, 11.0, 14.0, 13.0, 12.0]  # e0, e1, e4, e3, e2
    # and back: the transpose's own t_index undoes it
    assert torch.equal(values[csr.t_index][csr.t.t_index], values)
    # the transposed sparse view is the transposed adjacency
    dense = csr.sparse(values).to_dense()
    assert torch.equal(csr.t.sparse(values[csr.t_index]).to_dense(), dense.T)


def test_src_and_dst_recover_the_callers_edge_order():
    csr = make_csr()
    assert torch.equal(csr.src, EDGE_INDEX[0])
    assert torch.equal(csr.dst, EDGE_INDEX[1])
    # for the transpose the "caller's order" is its own sorted order
    assert torch.equal(csr.t.src, csr.t.col)
    assert torch.equal(csr.t.dst, csr.t.row)


def test_src_and_dst_on_a_shuffled_random_graph():
    gen = torch.Generator().manual_seed(3)
    edge_index = torch.randint(0, 9, (2, 40), generator=gen)
    csr = CSR.from_edge_index(edge_index, 9, 9)
    assert torch.equal(csr.src, edge_index[0])
    assert torch.equal(csr.dst, edge_index[1])
    assert bool((csr.row[1:] >= csr.row[:-1]).all())
    assert torch.equal(csr.degree, torch.bincount(edge_index[1], minlength=9))


def test_bipartite_shape_uses_num_dst_rows_and_num_src_cols():
    csr = CSR.from_edge_index(torch.tensor([[0, 4, 2], [1, 0, 1]]), num_src=5, num_dst=2)
    assert (csr.num_rows, csr.num_cols) == (2, 5)
    assert csr.rowptr.tolist() == [0, 1, 3]
    assert (csr.t.num_rows, csr.t.num_cols) == (5, 2)
    assert csr.t.degree.tolist() == [1, 0, 1, 0, 1]


def test_empty_graph():
    csr = CSR.from_edge_index(torch.empty(2, 0, dtype=torch.long), 3, 3)
    assert csr.num_edges == 0
    assert csr.rowptr.tolist() == [0, 0, 0, 0]
    assert csr.degree.tolist() == [0, 0, 0]
    assert csr.t.num_edges == 0
    assert csr.src.numel() == 0


def test_to_copies_structure():
    csr = make_csr()
    moved = csr.to("cpu")
    assert moved is not csr
    for name in ("row", "col", "perm", "rowptr", "degree"):
        assert torch.equal(getattr(moved, name), getattr(csr, name)), name
    assert torch.equal(moved.t.col, csr.t.col)
