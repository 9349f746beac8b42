"""Memory of an unrolled run: checkpointed gradients equal the plain ones bit for bit, what
autograd keeps per agent and step, SEIRM's cached per-agent constants, and a step loop that
never reads a tensor back to the host."""

from __future__ import annotations

import pytest
import torch

from lpm_graph import simulate
from lpm_graph.datasets import erdos_renyi
from lpm_graph.ops import IncrementalSum
from lpm_graph.protocols import SEIRM, SIR

N = 2_000


def _graph(n: int = N):
    graph = erdos_renyi(n, 8.0, seed=1)
    age = torch.randint(0, 8, (n,), generator=torch.Generator().manual_seed(0))
    graph.set_node_attrs("agent", age_group=age)
    return graph


def _model(name: str, dtype: torch.dtype):
    model = SIR(0.1, 0.1) if name == "sir" else SEIRM(2.5, 0.05)
    return model.to(dtype)


def _loss(name, traj):
    last = "R" if name == "sir" else "M"
    return traj.flows["infections"].sum() + traj.counts[last][-1]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", ["sir", "seirm"])
@pytest.mark.parametrize("mode", ["stochastic", "expected"])
def test_checkpointed_gradients_equal_the_plain_ones_exactly(name, dtype, mode):
    graph = _graph(600)
    runs = []
    for checkpoint in (None, 1, 4, 25):
        model = _model(name, dtype)
        traj = simulate(model, graph, 25, initial_infected=6, seed=3, mode=mode,
                        checkpoint=checkpoint, dtype=dtype)  # fmt: skip
        _loss(name, traj).backward()
        runs.append((traj.counts, [p.grad for p in model.parameters()]))
    counts, grads = runs[0]
    assert counts["S"][-1] < counts["S"][0] - 5  # an epidemic happened
    assert all(g is not None and bool(g.abs().sum() > 0) for g in grads)
    for other_counts, other_grads in runs[1:]:
        for key in counts:
            assert torch.equal(other_counts[key], counts[key]), key
        for a, b in zip(other_grads, grads):
            assert torch.equal(a, b)


def _saved_bytes_per_agent(name: str, steps: int) -> float:
    """Bytes per agent of the distinct agent- or edge-sized tensors autograd keeps for the
    backward of a ``steps``-step stochastic run."""
    graph = _graph()
    model = _model(name, torch.float32)
    seen: dict[int, int] = {}

    def pack(t):
        if t.numel() >= N:
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        simulate(model, graph, steps, initial_infected=20, seed=0)
    return sum(seen.values()) / N


@pytest.mark.parametrize(("name", "limit"), [("sir", 20), ("seirm", 30)])
def test_autograd_keeps_few_bytes_per_agent_and_step(name, limit):
    # Measured 18 (SIR) and 26 (SEIRM) bytes per agent-step in float32; before the fused
    # straight-through flow (bool draws) and SEIRM's cached per-agent factors, 24 and 44.
    per_step = (_saved_bytes_per_agent(name, 12) - _saved_bytes_per_agent(name, 4)) / 8
    assert 10 < per_step <= limit, per_step


def test_seirm_reuses_its_per_agent_factors_and_follows_changes():
    graph = _graph(500)
    model = SEIRM(2.5, 0.05)
    first = model.per_agent(graph, "susceptibility", model.susceptibility)
    assert model.per_agent(graph, "susceptibility", model.susceptibility) is first
    assert torch.equal(first, model.susceptibility[graph["agent"].age_group])

    def final(m):
        traj = simulate(m, graph, 30, initial_infected=5, seed=1)
        return traj.counts["S"][-1]

    before = final(model)
    with torch.no_grad():
        model.susceptibility.mul_(3.0)  # in place: the cached factors must not be reused
    fresh = SEIRM(2.5, 0.05, susceptibility=(model.susceptibility).tolist())
    assert torch.equal(final(model), final(fresh))
    assert final(model) < before


@pytest.mark.parametrize("name", ["sir", "seirm"])
@pytest.mark.parametrize("grad", [False, True])
def test_the_step_loop_never_reads_a_tensor_on_the_host(monkeypatch, name, grad):
    # On a GPU every such read is a device synchronisation; check() and the initial state
    # may read values (once per run), the steps must not. The event-driven force of infection
    # reads the number of changed agents on the host, on the CPU only: turned off here, as
    # on an accelerator.
    monkeypatch.setattr(IncrementalSum, "devices", ())
    graph = _graph(300)
    model = _model(name, torch.float32)
    reads = []
    step = type(model).step

    def guarded(self, *args, **kwargs):
        def record(method):
            original = getattr(torch.Tensor, method)

            def wrapper(t, *a, **k):
                reads.append(method)
                return original(t, *a, **k)

            return wrapper

        with monkeypatch.context() as patch:
            for method in ("item", "tolist", "__bool__", "__int__", "__float__", "__index__"):
                patch.setattr(torch.Tensor, method, record(method))
            return step(self, *args, **kwargs)

    monkeypatch.setattr(type(model), "step", guarded)
    with torch.set_grad_enabled(grad):
        traj = simulate(model, graph, 5, initial_infected=5, seed=0, checkpoint=2 if grad else None)
    assert traj.counts["S"].shape == (6,)
    assert reads == []


@pytest.mark.parametrize("replicates", [None, 3])
def test_a_run_without_autograd_records_the_same_series(replicates):
    # without autograd the observables are written into series allocated once per run
    graph = _graph(400)
    model = SEIRM(2.5, 0.05, by_age=True)
    kwargs = dict(initial_infected=5, seed=2, replicates=replicates)
    with torch.no_grad():
        quiet = simulate(model, graph, 15, **kwargs)
    plain = simulate(model, graph, 15, **kwargs)
    assert set(quiet.counts) == set(plain.counts) and set(quiet.flows) == set(plain.flows)
    for table, other in ((quiet.counts, plain.counts), (quiet.flows, plain.flows)):
        for name, value in table.items():
            assert value.shape == other[name].shape, name
            assert torch.equal(value, other[name].detach()), name
    assert quiet.counts["S_by_age"].shape == (16, 8, *(() if replicates is None else (3,)))
    with torch.no_grad():
        empty = simulate(model, graph, 0, **kwargs)
    assert empty.counts["S"].shape[0] == 1 and empty.flows == {}


def test_indicator_tensors_pack_to_bool_exactly():
    from lpm_graph.simulator import _pack_indicators

    ones_and_zeros = torch.tensor([0.0, 1.0, 1.0, 0.0], dtype=torch.float64)
    negative_zero = torch.tensor([0.0, -0.0, 1.0])
    fraction = torch.tensor([0.0, 0.5, 1.0])
    ints = torch.tensor([0, 1, 1])
    packed = _pack_indicators([ones_and_zeros, negative_zero, fraction, ints])
    assert packed[0].dtype == torch.bool and torch.equal(packed[0].double(), ones_and_zeros)
    assert packed[1] is negative_zero and packed[2] is fraction and packed[3] is ints
    assert _pack_indicators([]) == []


def test_a_checkpointed_forward_keeps_no_float_state_of_earlier_blocks():
    import gc
    import weakref

    from lpm_graph.simulator import Simulator

    graph = _graph(500)
    model = SEIRM(2.5, 0.05)
    boundaries = []
    original = Simulator._checkpointed

    def spy(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        boundaries.append([weakref.ref(v) for v in out[0].values()])
        return out

    Simulator._checkpointed = spy
    try:
        traj = simulate(model, graph, 20, initial_infected=5, seed=1, checkpoint=5)
    finally:
        Simulator._checkpointed = original
    gc.collect()
    assert len(boundaries) == 4
    for refs in boundaries[:-1]:  # kept packed as bool, not as float tensors
        assert all(r() is None for r in refs)
    assert all(r() is not None for r in boundaries[-1])  # the final state
    _loss("seirm", traj).backward()
    assert model.reproduction_number.grad is not None
