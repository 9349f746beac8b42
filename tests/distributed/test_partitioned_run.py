"""Partitioned runs on 2 and 3 gloo ranks (CPU, float64, 20 steps) equal the single-process run:
SIR and SEIRM (age groups, four edge types), stochastic (straight-through) and expected mode.

One launch per world size runs every scenario; the tests read its results. Stochastic states
are 0/1 and every draw is the single-process draw, so counts, flows and per-agent states are
equal exactly. In expected mode the per-agent states are equal exactly with the native
backend (sequential sums in edge order); the CSR backend's sparse product groups a row's terms
by the row's position in memory, an ulp apart. Counts sum agents in another order (per rank,
then over ranks): equal to 1e-12 relative in expected mode. Gradients: 1e-10 relative.
"""

from contextlib import contextmanager
from dataclasses import dataclass

import pytest
import torch
import torch.distributed as dist
from torch import nn

from lpm_graph import PopulationGraph, Simulator, simulate
from lpm_graph.datasets import SyntheticPopulation
from lpm_graph.distributed import (
    Partition,
    PartitionedProtocol,
    distributed_backward,
    exchange_halo,
    gather_rows,
    launch,
    reduce_gradients,
    simulate_partitioned,
)
from lpm_graph.protocols import SEIRM, SIR

STEPS = 20
SEED = 11


@dataclass(frozen=True)
class Scenario:
    model: str  # "sir" or "seirm"
    mode: str
    backend: str | None = None
    order: str = "infect_first"
    refresh: str = "step"
    checkpoint: int | None = None
    exact_states: bool = True


SCENARIOS = {
    "sir_stochastic": Scenario("sir", "stochastic"),
    "sir_expected": Scenario("sir", "expected", backend="native"),
    "sir_recover_first_by_phase": Scenario(
        "sir", "stochastic", order="recover_first", refresh="phase"
    ),
    "sir_expected_checkpointed": Scenario("sir", "expected", backend="native", checkpoint=6),
    "seirm_stochastic": Scenario("seirm", "stochastic"),
    "seirm_expected": Scenario("seirm", "expected", backend="native"),
    "seirm_expected_csr": Scenario("seirm", "expected", exact_states=False),
}
EDGE_TYPES = {"household": 1.0, "school": 0.6, "work": 0.8, "community": 0.4}


@contextmanager
def _float64():
    """Parameters made from Python floats take the default dtype: build them in float64."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def _graphs():
    gen = torch.Generator().manual_seed(0)
    n, e = 400, 2400
    edges = torch.randint(0, n, (2, e), generator=gen)
    weight = 0.5 + torch.rand(e, generator=gen, dtype=torch.float64)
    sir = PopulationGraph.from_edge_index(edges, n, edge_weight=weight)
    seirm = SyntheticPopulation(500, seed=1)[0]
    return {"sir": sir, "seirm": seirm}


def _metis_or_contiguous(graph, k):
    """METIS where the optional pymetis is installed, else a contiguous split."""
    try:
        import pymetis  # noqa: F401
    except ImportError:
        return Partition.contiguous(graph, k)
    return Partition.metis(graph, k)


def _partitions(graphs, world):
    sir, seirm = graphs["sir"], graphs["seirm"]
    shuffled = torch.randint(0, 2, (seirm.num_nodes(),), generator=torch.Generator().manual_seed(2))
    if world == 2:
        return {"sir": _metis_or_contiguous(sir, 2), "seirm": Partition(seirm, shuffled, 2)}
    shuffled = torch.randperm(sir.num_nodes(), generator=torch.Generator().manual_seed(3)) % 3
    return {
        "sir": Partition(sir, shuffled, 3),
        "seirm": Partition.by_attribute(seirm, "household", 3),
    }


def _protocol(sc: Scenario):
    with _float64():
        if sc.model == "sir":
            return SIR(0.09, 0.15, order=sc.order, backend=sc.backend)
        return SEIRM(
            nn.Parameter(torch.linspace(3.0, 2.0, STEPS)),
            nn.Parameter(torch.linspace(0.01, 0.08, 8)),
            edge_type_weights=EDGE_TYPES,
            by_age=True,
            backend=sc.backend,
        )


def _loss(run, n):
    """Uses every observable kind, so every parameter (and every age group) gets a gradient."""
    t = torch.arange(1, STEPS + 1, dtype=torch.float64)
    loss = (run.flows["infections"] ** 2 * t).sum() / n**2 + (run.counts["S"] * t.mean()).sum() / n
    if "deaths_by_age" in run.flows:
        age_weight = torch.arange(1, 9, dtype=torch.float64)
        loss = loss + (run.flows["deaths_by_age"] * age_weight).sum() * 10 / n
    return loss


def _run(sc: Scenario, graph, partition=None):
    protocol = _protocol(sc)
    kwargs = dict(initial_infected=12, seed=SEED, mode=sc.mode, dtype=torch.float64)
    if partition is None:
        run = simulate(protocol, graph, STEPS, checkpoint=sc.checkpoint, **kwargs)
        _loss(run, graph.num_nodes()).backward()
        state = run.final_state
    else:
        run = simulate_partitioned(
            protocol,
            graph,
            partition,
            STEPS,
            refresh=sc.refresh,
            checkpoint=sc.checkpoint,
            **kwargs,
        )
        distributed_backward(_loss(run, graph.num_nodes()), protocol)
        shard = partition.shard(graph, dist.get_rank())
        state = {k: gather_rows(v, shard) for k, v in run.final_state.items()}
    return {
        "counts": {k: v.detach() for k, v in run.counts.items()},
        "flows": {k: v.detach() for k, v in run.flows.items()},
        "state": {k: v.detach() for k, v in state.items()},
        "grads": {k: p.grad.clone() for k, p in protocol.named_parameters()},
    }


# ---------------------------------------------------------------------- in the ranks
def _halo_checks(worker, graph, partition):
    """Forward: halo rows become the owners' rows. Backward: the adjoint of the exchange,
    <A x, y> = <x, A^T y> summed over the ranks."""
    shard = partition.shard(graph, worker.rank)
    whole = torch.arange(graph.num_nodes() * 2, dtype=torch.float64).reshape(-1, 2)
    x = whole[shard.nodes].clone()
    x[shard.num_owned :] = -1.0  # stale halo rows
    fresh = exchange_halo(x, shard)
    forward_ok = torch.equal(fresh, whole[shard.nodes])
    gen = torch.Generator().manual_seed(100 + worker.rank)
    x = torch.rand(shard.num_local, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.rand(shard.num_local, 3, generator=gen, dtype=torch.float64)
    (exchange_halo(x, shard) * y).sum().backward()
    sides = torch.stack([(exchange_halo(x.detach(), shard) * y).sum(), (x.detach() * x.grad).sum()])
    dist.all_reduce(sides)
    stale = shard.nodes.clone()
    stale[shard.num_owned :] = -1
    ints = exchange_halo(stale, shard)  # integers: no autograd
    # a partition with no halo at all (one clique per rank): empty messages both ways
    n = 4 * worker.world_size
    pairs = torch.tensor([(i, j) for i in range(n) for j in range(n) if i // 4 == j // 4]).T
    cliques = PopulationGraph.from_edge_index(pairs, n)
    alone = Partition.contiguous(cliques, worker.world_size).shard(cliques, worker.rank)
    z = torch.rand(4, 2, dtype=torch.float64, requires_grad=True)
    exchange_halo(z, alone).sum().backward()
    no_halo = alone.num_halo == 0 and torch.equal(z.grad, torch.ones(4, 2, dtype=torch.float64))
    return {
        "no_halo": no_halo,
        "forward": forward_ok,
        "adjoint": sides.tolist(),
        "ints": torch.equal(ints, shard.nodes),
        "halo_grad_zero": bool((x.grad[shard.num_owned :] == 0).all()),
    }


def _reduce_checks(worker):
    """A parameter with a gradient on rank 0 only gets rank 0's gradient everywhere; one with
    no gradient anywhere keeps None."""
    some = nn.Parameter(torch.zeros(3, dtype=torch.float64))
    none = nn.Parameter(torch.zeros(2, dtype=torch.float64))
    if worker.rank == 0:
        some.grad = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    reduce_gradients([some, none])
    return some.grad.tolist(), none.grad


def _mismatch_checks(worker, graphs, partitions):
    """A rank holding another rank's shard, or ranks holding shards of different partitions."""
    graph = graphs["sir"]
    errors = []
    wrong = partitions["sir"].shard(graph, (worker.rank + 1) % worker.world_size)
    sim = Simulator(PartitionedProtocol(SIR(0.1, 0.1), wrong, graph), 2)
    try:
        sim(wrong.graph, initial_infected=3)
    except ValueError as error:
        errors.append(str(error))
    n, world = graph.num_nodes(), worker.world_size
    owner = torch.arange(n) * world // n
    if worker.rank == 0:  # rank 0 alone uses another partition: all but world - 1 agents its own
        owner = torch.zeros(n, dtype=torch.long)
        owner[n - world + 1 :] = torch.arange(1, world)
    other = Partition(graph, owner, worker.world_size).shard(graph, worker.rank)
    sim = Simulator(PartitionedProtocol(SIR(0.1, 0.1), other, graph), 2)
    try:
        sim(other.graph, initial_infected=3)
    except ValueError as error:
        errors.append(str(error))
    return errors


def _rank(worker, graphs, partitions):
    out = {
        "halo": _halo_checks(worker, graphs["sir"], partitions["sir"]),
        "reduce": _reduce_checks(worker),
        "mismatch": _mismatch_checks(worker, graphs, partitions),
    }
    for name, sc in SCENARIOS.items():
        out[name] = _run(sc, graphs[sc.model], partitions[sc.model])
    return out


# ---------------------------------------------------------------------- the tests
@pytest.fixture(scope="module")
def graphs():
    return _graphs()


@pytest.fixture(scope="module")
def reference(graphs):
    return {name: _run(sc, graphs[sc.model]) for name, sc in SCENARIOS.items()}


@pytest.fixture(scope="module", params=[2, 3], ids=["2_ranks", "3_ranks"])
def ranks(request, graphs):
    world = request.param
    return launch(_rank, world, args=(graphs, _partitions(graphs, world)), timeout=120)


def _max_rel(a, b):
    return float((a - b).abs().max() / a.abs().max())


@pytest.mark.parametrize("name", SCENARIOS)
def test_counts_and_flows_equal_the_single_process_run(ranks, reference, name):
    ref, exact = reference[name], SCENARIOS[name].mode == "stochastic"
    for out in ranks:
        for table in ("counts", "flows"):
            assert set(out[name][table]) == set(ref[table])
            for key, value in ref[table].items():
                if exact:
                    assert torch.equal(out[name][table][key], value), (table, key)
                else:
                    torch.testing.assert_close(out[name][table][key], value, rtol=1e-12, atol=0)
    assert ref["flows"]["infections"].sum() > 20  # an epidemic happened
    for out in ranks[1:]:  # every rank returns the same global trajectory
        for key, value in ranks[0][name]["counts"].items():
            assert torch.equal(out[name]["counts"][key], value)


@pytest.mark.parametrize("name", SCENARIOS)
def test_per_agent_final_states_equal_the_single_process_run(ranks, reference, name):
    ref = reference[name]["state"]
    for out in ranks:
        for key, value in ref.items():
            if SCENARIOS[name].exact_states:
                assert torch.equal(out[name]["state"][key], value), key
            else:
                torch.testing.assert_close(out[name]["state"][key], value, rtol=0, atol=1e-14)


@pytest.mark.parametrize("name", SCENARIOS)
def test_gradients_of_every_parameter_within_1e_10(ranks, reference, name):
    ref = reference[name]["grads"]
    assert len(ref) == (2 if SCENARIOS[name].model == "sir" else 3)
    for key, value in ref.items():
        assert value.abs().max() > 0, key
        for out in ranks:
            assert _max_rel(value, out[name]["grads"][key]) < 1e-10, key


def test_halo_exchange_forward_and_backward(ranks):
    for out in ranks:
        h = out["halo"]
        assert h["forward"] and h["ints"] and h["halo_grad_zero"] and h["no_halo"]
        left, right = h["adjoint"]
        assert left == pytest.approx(right, rel=1e-13)


def test_gradient_reduction_sums_over_ranks_and_keeps_missing_gradients_none(ranks):
    for out in ranks:
        assert out["reduce"] == ([1.0, 2.0, 3.0], None)


def test_mismatched_shards_raise_on_every_rank(ranks):
    for out in ranks:
        wrong, other = out["mismatch"]
        assert "holds the shard of rank" in wrong
        assert "different partitions" in other
