"""IncrementalSum: the event-driven update of ``A x`` equals the full product bit for bit.

References: an independent float64 loop over the edges (exact for 0/1 inputs), and the full
sparse product itself (``torch.equal``), over sequences of 0/1 inputs whose changes range
from none to every entry.
"""

from __future__ import annotations

import copy
import pickle

import pytest
import torch

from lpm_graph.layers import Transmission
from lpm_graph.ops import CSR, IncrementalSum
from lpm_graph.ops.aggregate import csr_sum
from lpm_graph.ops.incremental import _changed


def loop_sum(edge_index: torch.Tensor, x: torch.Tensor, num_dst: int) -> torch.Tensor:
    out = torch.zeros((num_dst, *x.shape[1:]), dtype=torch.float64)
    for s, d in edge_index.t().tolist():
        out[d] += x[s].double()
    return out


def random_graph(num_src: int, num_dst: int, num_edges: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(num_src, (num_edges,), generator=g)
    dst = torch.randint(num_dst, (num_edges,), generator=g)
    return torch.stack([src, dst])


def flip(x: torch.Tensor, share: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(x.shape, generator=g) < share
    return torch.where(mask, 1 - x, x)


def full(csr: CSR, x: torch.Tensor) -> torch.Tensor:
    return csr_sum(csr, x, csr.ones(x.dtype))


SHAPES = ((), (3,), (2, 3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("features", SHAPES)
@pytest.mark.parametrize("sizes", [(60, 60), (40, 70)])  # square and bipartite
def test_sequence_equals_full_product(dtype, features, sizes):
    num_src, num_dst = sizes
    edge_index = random_graph(num_src, num_dst, 400, seed=1)  # multi-edges included
    csr = CSR.from_edge_index(edge_index, num_src, num_dst)
    inc = IncrementalSum(max_edges=0.4)  # a small graph: a few flips already move many edges
    x = torch.rand((num_src, *features), generator=torch.Generator().manual_seed(0)) < 0.2
    x = x.to(dtype)
    shares = [0.0, 0.01, 0.02, 0.0, 0.05, 0.5, 0.01, 1.0, 0.03, 0.0]
    for k, share in enumerate(shares):
        x = flip(x, share, seed=10 + k)
        out = csr_sum(csr, x, csr.ones(dtype), inc)
        assert out.dtype == dtype
        assert torch.equal(out, full(csr, x)), f"call {k} (share {share})"
        assert torch.equal(out.double(), loop_sum(edge_index, x, num_dst))
    assert 5 <= inc.updates <= 8  # the small changes were updates; 0.5 and 1.0 were not


@pytest.mark.parametrize("n", [0, 7, 2**15 - 1, 2**15, 2**15 + 5, 200_003])
@pytest.mark.parametrize("share", [0.0, 1e-4, 0.01, 0.2, 1.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_changed_entries_are_those_nonzero_finds(n, share, dtype):
    # the two-level search (words of the mask, then their entries; a tail not filling a word;
    # one pass when many words hold a change) against torch.nonzero over the whole mask
    old = (torch.rand(n, generator=torch.Generator().manual_seed(n)) < 0.3).to(dtype)
    new = flip(old, share, seed=1)
    assert torch.equal(_changed(new, old), torch.nonzero(new != old).squeeze(1))
    if n > 100:
        new[[3, n - 1]] = float("nan")  # NaN differs from 0 and 1
        assert {3, n - 1} <= set(_changed(new, old).tolist())


def test_a_negative_zero_is_pushed_as_no_change():
    # bits differ from +0.0, so -0.0 counts as changed; its push adds -0.0, which changes no sum
    edge_index = random_graph(40_000, 40_000, 200_000, seed=4)
    csr = CSR.from_edge_index(edge_index, 40_000, 40_000)
    inc = IncrementalSum(max_edges=0.5)
    x = (torch.rand(40_000, generator=torch.Generator().manual_seed(2)) < 0.1).float()
    csr_sum(csr, x, csr.ones(x.dtype), inc)
    y = flip(x, 0.01, seed=3)
    y[torch.nonzero(y == 0)[:50, 0]] = -0.0
    out = csr_sum(csr, y, csr.ones(y.dtype), inc)
    assert inc.updates == 1
    assert torch.equal(out, full(csr, y))
    assert torch.equal(out.double(), loop_sum(edge_index, y, 40_000))


def test_large_change_takes_the_full_product():
    edge_index = random_graph(50, 50, 300, seed=2)
    csr = CSR.from_edge_index(edge_index, 50, 50)
    inc = IncrementalSum(max_edges=0.1)
    x = torch.zeros(50)
    csr_sum(csr, x, csr.ones(x.dtype), inc)
    x = torch.ones(50)  # every source changed: every edge would move
    out = csr_sum(csr, x, csr.ones(x.dtype), inc)
    assert inc.updates == 0
    assert torch.equal(out, full(csr, x))
    x = x.clone()
    x[3] = 0  # one change after the full product: an update again
    out = csr_sum(csr, x, csr.ones(x.dtype), inc)
    assert inc.updates == 1
    assert torch.equal(out, full(csr, x))


def test_in_place_changes_are_seen():
    edge_index = random_graph(30, 30, 150, seed=3)
    csr = CSR.from_edge_index(edge_index, 30, 30)
    inc = IncrementalSum()
    x = torch.zeros(30)
    x[:5] = 1
    out = csr_sum(csr, x, csr.ones(x.dtype), inc)
    x[5:10] = 1  # the cached input changed in place: the entry is stale
    assert torch.equal(csr_sum(csr, x, csr.ones(x.dtype), inc), full(csr, x))
    out = csr_sum(csr, x.clone(), csr.ones(x.dtype), inc)
    out += 7  # the cached result changed in place by its caller
    y = x.clone()
    y[0] = 0
    assert torch.equal(csr_sum(csr, y, csr.ones(y.dtype), inc), full(csr, y))


def test_outputs_do_not_alias():
    csr = CSR.from_edge_index(random_graph(20, 20, 80, seed=4), 20, 20)
    inc = IncrementalSum()
    x = (torch.arange(20) % 3 == 0).float()
    a = csr_sum(csr, x, csr.ones(x.dtype), inc)
    b = csr_sum(csr, x, csr.ones(x.dtype), inc)  # no change: a copy of the last result
    assert inc.updates == 1
    assert torch.equal(a, b) and a.data_ptr() != b.data_ptr()


@pytest.mark.parametrize("value", [0.5, float("nan"), 2.0, -1.0])
def test_inputs_outside_zero_one_take_the_full_product(value):
    csr = CSR.from_edge_index(random_graph(25, 25, 120, seed=5), 25, 25)
    inc = IncrementalSum()
    x = torch.zeros(25)
    x[:4] = 1
    csr_sum(csr, x, csr.ones(x.dtype), inc)
    y = x.clone()
    y[7] = value  # one changed entry leaves {0, 1}
    out = csr_sum(csr, y, csr.ones(y.dtype), inc)
    assert inc.updates == 0
    torch.testing.assert_close(out, full(csr, y), rtol=0, atol=0, equal_nan=True)
    z = y.clone()
    z[8] = 1  # the last input was not 0/1: no entry to update from
    out = csr_sum(csr, z, csr.ones(z.dtype), inc)
    assert inc.updates == 0
    torch.testing.assert_close(out, full(csr, z), rtol=0, atol=0, equal_nan=True)


def test_weighted_and_low_precision_sums_are_not_cached():
    csr = CSR.from_edge_index(random_graph(25, 25, 120, seed=6), 25, 25)
    inc = IncrementalSum()
    x = (torch.arange(25) % 2).float()
    weights = torch.rand(csr.num_edges)
    for _ in range(2):
        csr_sum(csr, x, weights, inc)
        # float16 counts are exact only to 2048: summed in full whatever the input
        inc(csr, x.half(), lambda h: full(csr, h.float()).half())
    assert inc.updates == 0 and len(inc._last) == 0


def test_gradients_are_those_of_the_full_product():
    edge_index = random_graph(30, 30, 200, seed=7)
    csr = CSR.from_edge_index(edge_index, 30, 30)
    inc = IncrementalSum()
    base = (torch.rand(30, generator=torch.Generator().manual_seed(1)) < 0.3).double()
    w = torch.randn(30, dtype=torch.float64)
    for k in range(3):
        base = flip(base, 0.05, seed=k)
        x1 = base.clone().requires_grad_()
        x2 = base.clone().requires_grad_()
        (csr_sum(csr, x1, csr.ones(x1.dtype), inc) * w).sum().backward()
        (full(csr, x2) * w).sum().backward()
        assert torch.equal(x1.grad, x2.grad)
    assert inc.updates == 2


def test_copies_and_pickles_start_empty():
    csr = CSR.from_edge_index(random_graph(20, 20, 60, seed=8), 20, 20)
    layer = Transmission()
    x = (torch.arange(20) < 5).float()
    layer(csr, x, torch.tensor(0.3), indicator=True)
    assert len(layer._incremental._last) == 1
    for clone in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
        assert len(clone._incremental._last) == 0
        assert torch.equal(
            clone(csr, x, torch.tensor(0.3), indicator=True), layer(csr, x, torch.tensor(0.3))
        )


def test_transmission_indicator_matches_and_checks_shapes():
    edge_index = random_graph(40, 40, 200, seed=9)
    csr = CSR.from_edge_index(edge_index, 40, 40)
    layer, plain = Transmission(), Transmission()
    layer._incremental.max_edges = 0.5
    rate = torch.tensor(0.25)
    x = (torch.arange(40) % 7 == 0).float()
    for k in range(4):
        x = flip(x, 0.05, seed=k)
        assert torch.equal(layer(csr, x, rate, indicator=True), plain(csr, x, rate))
    assert layer._incremental.updates == 3
    with pytest.raises(ValueError, match="source nodes"):
        layer(csr, torch.zeros(39), rate, indicator=True)


def test_max_edges_is_checked():
    with pytest.raises(ValueError, match="max_edges"):
        IncrementalSum(max_edges=1.5)


def _sir_run(graph, devices, monkeypatch, grad: bool, checkpoint: int | None = None):
    from lpm_graph import simulate
    from lpm_graph.protocols import SIR

    monkeypatch.setattr(IncrementalSum, "devices", devices)
    sir = SIR(0.3, 0.1, learnable=grad).double()
    traj = simulate(
        sir, graph, 40, initial_infected=5, seed=3, dtype=torch.float64, checkpoint=checkpoint
    )
    grads = None
    if grad:
        (traj.counts["R"][-1] + traj.flows["infections"].sum()).backward()
        grads = [p.grad.clone() for p in sir.parameters()]
    layer = sir.phases[0].transmission
    return traj, grads, layer._incremental.updates


@pytest.mark.parametrize(("grad", "checkpoint"), [(False, None), (True, None), (True, 7)])
def test_sir_runs_equal_with_and_without_updates(monkeypatch, grad, checkpoint):
    # checkpointed backward re-runs blocks of steps: the layer's last sum is then from
    # another step, which the update must handle like any other input
    from lpm_graph.datasets import erdos_renyi

    graph = erdos_renyi(3000 if checkpoint else 40_000, 8, seed=0)  # 40k: the words' search
    fast, fast_grads, updates = _sir_run(graph, ("cpu",), monkeypatch, grad, checkpoint)
    plain, plain_grads, none = _sir_run(graph, (), monkeypatch, grad, checkpoint)
    assert updates > 20 and none == 0
    for name in fast.counts:
        assert torch.equal(fast.counts[name], plain.counts[name])
    for name in fast.flows:
        assert torch.equal(fast.flows[name], plain.flows[name])
    if grad:
        assert all(torch.equal(a, b) for a, b in zip(fast_grads, plain_grads, strict=True))
