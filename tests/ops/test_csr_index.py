"""Compact CSR indices: int32 where the graph allows, identical results to int64, and no int64
per-edge array on the fused sum path."""

from __future__ import annotations

import pytest
import torch

import lpm_graph.ops.csr as csr_module
from lpm_graph import simulate
from lpm_graph.datasets import erdos_renyi
from lpm_graph.ops import CSR, propagate
from lpm_graph.protocols import SIR

EDGE_INDEX = torch.tensor([[0, 1, 3, 2, 1], [1, 0, 1, 3, 1]])


def test_index_dtype_is_int32_up_to_the_int32_limit():
    assert csr_module.index_dtype(10, 4, 4) == torch.int32
    limit = 2**31 - 1
    assert csr_module.index_dtype(limit, limit, limit) == torch.int32
    assert csr_module.index_dtype(limit + 1, 4, 4) == torch.int64  # row offsets overflow
    assert csr_module.index_dtype(10, 4, limit + 1) == torch.int64  # source ids overflow
    assert csr_module.index_dtype(10, limit + 1, 4) == torch.int64


def test_small_graph_stores_int32_and_exposes_int64_views():
    csr = CSR.from_edge_index(EDGE_INDEX, 4, 4)
    assert csr.index_dtype == torch.int32
    assert csr.col_compact().dtype == torch.int32
    assert csr.perm_compact().dtype == torch.int32
    for name in ("row", "col", "perm", "t_index"):
        assert getattr(csr, name).dtype == torch.int64, name
    assert csr.t.col_compact().dtype == torch.int32
    assert torch.equal(csr.rows(), csr.row.int())


def _force_int64(monkeypatch):
    monkeypatch.setattr(csr_module, "index_dtype", lambda *sizes: torch.int64)


@pytest.mark.parametrize("features", [(), (3,)])
def test_int32_and_int64_indices_give_identical_sums_and_gradients(monkeypatch, features):
    gen = torch.Generator().manual_seed(0)
    n = 50
    edge_index = torch.randint(0, n, (2, 400), generator=gen)
    x0 = torch.rand((n, *features), generator=gen, dtype=torch.float64)
    w0 = torch.rand(400, generator=gen, dtype=torch.float64)

    def run(csr):
        x, w = x0.clone().requires_grad_(), w0.clone().requires_grad_()
        out = propagate(csr, x, w)
        (out * torch.arange(out.numel(), dtype=out.dtype).reshape(out.shape)).sum().backward()
        return out.detach(), x.grad, w.grad

    compact = CSR.from_edge_index(edge_index, n, n)
    assert compact.index_dtype == torch.int32
    _force_int64(monkeypatch)
    wide = CSR.from_edge_index(edge_index, n, n)
    assert wide.index_dtype == torch.int64
    for a, b in zip(run(compact), run(wide)):
        assert torch.equal(a, b)
    assert torch.equal(compact.t_index, wide.t_index)
    assert torch.equal(compact.t.t_index, wide.t.t_index)


def test_int32_and_int64_indices_give_the_same_seeded_run(monkeypatch):
    def run():
        graph = erdos_renyi(400, 6.0, seed=2)
        tau = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)
        traj = simulate(SIR(tau, 0.1), graph, 25, initial_infected=4, seed=3, dtype=torch.float64)
        traj.counts["R"][-1].backward()
        return traj.counts["I"], tau.grad, graph.csr().index_dtype

    counts32, grad32, dtype32 = run()
    _force_int64(monkeypatch)
    counts64, grad64, dtype64 = run()
    assert (dtype32, dtype64) == (torch.int32, torch.int64)
    assert counts32[-1] < counts32.max()  # an epidemic, not an empty run
    assert torch.equal(counts32, counts64)
    assert torch.equal(grad32, grad64)


def test_fused_sum_forward_and_backward_build_no_int64_edge_array():
    graph = erdos_renyi(300, 6.0, seed=1)
    csr = graph.csr()
    tau = torch.tensor(0.2, requires_grad=True)
    traj = simulate(SIR(tau, 0.1), graph, 10, initial_infected=3, seed=0)
    traj.counts["R"][-1].backward()
    assert csr._t is not None  # backward built the transpose
    assert csr._views == {} and csr.t._views == {}  # no int64 row / col / perm / src / dst
    per_edge = [csr.col_compact(), csr.perm_compact(), csr.t.col_compact()]
    assert all(t.dtype == torch.int32 for t in per_edge)
    assert csr.t.ones(torch.float32) is csr.ones(torch.float32)  # shared unit values


def test_transposes_index_is_the_inverse_permutation():
    gen = torch.Generator().manual_seed(5)
    csr = CSR.from_edge_index(torch.randint(0, 30, (2, 200), generator=gen), 30, 30)
    forward, back = csr.t_index, csr.t.t_index
    assert torch.equal(back, torch.argsort(forward))
    assert torch.equal(forward[back], torch.arange(200))


def test_to_keeps_the_compact_structure():
    csr = CSR.from_edge_index(EDGE_INDEX, 4, 4)
    moved = csr.to("cpu")
    assert moved.index_dtype == torch.int32
    assert torch.equal(moved.perm, csr.perm)
    assert torch.equal(moved.row, csr.row)
