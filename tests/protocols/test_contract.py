"""The one step contract: a protocol written only here, in this test file, runs unchanged in
every execution the library has.

``SIS`` below is the whole protocol (a custom message, two phases, two declared parameters).
It runs in plaintext (both modes, replicates, checkpointing, both cheap gradient estimators),
and partitioned over 2 gloo ranks, where its counts equal the single-process run exactly,
alone and composed with a behaviour (halos refreshed per step or per phase).
"""

import pytest
import torch
import torch.distributed as dist
from torch import nn

from lpm_graph import Compose, PopulationGraph, Simulator, simulate
from lpm_graph.distributed import (
    Partition,
    PartitionedProtocol,
    distributed_backward,
    gather_rows,
    launch,
    simulate_partitioned,
)
from lpm_graph.layers import ProtocolLayer
from lpm_graph.protocols import ThresholdAdoption
from lpm_graph.protocols.base import CompartmentalProtocol, Phase

STEPS, SEED = 25, 5


# ---------------------------------------------------------------- the protocol (29 lines)
class Contact(ProtocolLayer):
    """The custom message: a source's infectiousness times the closeness of the contact."""

    def message(self, infectious_j, edge_weight):
        return infectious_j * edge_weight.reshape(-1, *[1] * (infectious_j.dim() - 1))


class Infect(Phase):
    name = "infection"

    def __init__(self, sis):
        super().__init__(sis)
        self.contact = Contact()

    def forward(self, graph, state, ctx):
        rate = self.owner.beta * ctx.dt * graph.edge_weight()
        pressure = self.contact.propagate(graph.csr(), infectious=state["I"], edge_weight=rate)
        new = ctx.flow(self.name, torch.exp(-pressure), state["S"], stream="sis")
        ctx.flows["infections"] = new
        return {**state, "S": state["S"] - new, "I": state["I"] + new}


class Recover(Phase):
    name = "recovery"

    def forward(self, graph, state, ctx):
        stay = torch.exp(-self.owner.gamma * ctx.dt)
        back = ctx.flow(self.name, stay, ctx.start["I"], stream="sis")
        ctx.flows["recoveries"] = back
        return {**state, "I": state["I"] - back, "S": state["S"] + back}


class SIS(CompartmentalProtocol):
    compartments = ("S", "I")

    def __init__(self, beta, gamma, dt=1.0):
        super().__init__([Infect(self), Recover(self)], dt)
        self.declare_parameter("beta", beta, unit="1/day")
        self.declare_parameter("gamma", gamma, unit="1/day")


# ---------------------------------------------------------------- helpers
def _graph(n=300, e=1800):
    gen = torch.Generator().manual_seed(0)
    edges = torch.randint(0, n, (2, e), generator=gen)
    weight = 0.5 + torch.rand(e, generator=gen, dtype=torch.float64)
    return PopulationGraph.from_edge_index(edges, n, edge_weight=weight)


def _sis():
    with _default_float64():  # parameters made from numbers take the default dtype
        return SIS(0.12, 0.2)


def _loss(run):
    p = "epi." if "epi.I" in run.counts else ""
    return run.flows[p + "infections"].sum() / 100 + (run.counts[p + "I"] ** 2).mean() / 1e4


# ---------------------------------------------------------------- plaintext
def test_sis_declares_its_parameters_and_refuses_a_negative_rate():
    sis = _sis()
    specs = sis.parameter_specs()
    assert set(specs) == {"beta", "gamma"} and specs["beta"].unit == "1/day"
    assert specs["beta"].constraint == "nonnegative" and specs["beta"].learnable
    with pytest.raises(ValueError, match="beta"):
        SIS(-0.1, 0.2)
    with torch.no_grad():
        sis.gamma.fill_(-1.0)  # an optimiser step too far: refused before the run
    with pytest.raises(ValueError, match="gamma"):
        simulate(sis, _graph(), 3, initial_infected=5)


def test_sis_runs_in_plaintext_and_conserves_agents():
    graph = _graph()
    run = simulate(_sis(), graph, STEPS, initial_infected=10, seed=SEED, dtype=torch.float64)
    total = run.counts["S"] + run.counts["I"]
    assert torch.equal(total, torch.full_like(total, graph.num_nodes()))
    assert run.flows["infections"].sum() > 30 and run.flows["recoveries"].sum() > 30
    # I(t+1) - I(t) = infections - recoveries, step by step
    torch.testing.assert_close(
        run.counts["I"].diff(), run.flows["infections"] - run.flows["recoveries"]
    )


def test_sis_expected_mode_approaches_the_stochastic_mean():
    graph = _graph()
    exp = simulate(_sis(), graph, STEPS, initial_infected=30, mode="expected", dtype=torch.float64)
    with torch.no_grad():
        sto = simulate(
            _sis(), graph, STEPS, initial_infected=30, seed=list(range(64)), dtype=torch.float64
        )
    mean = sto.counts["I"].mean(-1)
    # mean-field (expected mode) vs the stochastic mean: same scale, within 25 % at the end
    assert abs(float(exp.counts["I"][-1].detach() - mean[-1])) < 0.25 * float(mean[-1])


@pytest.mark.parametrize("estimator", ["straight_through", "conditional_mean"])
def test_sis_gradients_with_both_cheap_estimators_and_checkpointing(estimator):
    graph = _graph()
    grads = []
    for checkpoint in (None, 5):
        sis = _sis()
        sis.beta.requires_grad_(True)
        run = Simulator(sis, STEPS, checkpoint=checkpoint, estimator=estimator)(
            graph, initial_infected=10, seed=SEED, dtype=torch.float64
        )
        _loss(run).backward()
        grads.append((sis.beta.grad.clone(), sis.gamma.grad.clone()))
    assert grads[0][0] != 0 and grads[0][1] != 0
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])


def test_sis_gradcheck_in_expected_mode():
    graph = _graph(60, 300)

    def final_infectious(beta, gamma):
        run = simulate(SIS(beta, gamma), graph, 6, initial_infected=5, mode="expected")
        return run.counts["I"][-1]

    beta = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    gamma = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)
    with _default_float64():
        assert torch.autograd.gradcheck(final_infectious, (beta, gamma))


class _default_float64:
    def __enter__(self):
        self.old = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)

    def __exit__(self, *exc):
        torch.set_default_dtype(self.old)


# ---------------------------------------------------------------- partitioned
def _composed():
    """The SIS with a protective behaviour linked through ports (see test_compose.py)."""
    with _default_float64():
        return Compose(
            behaviour=ThresholdAdoption(0.3, 20.0, risk_weight=4.0),
            epi=SIS(0.12, 0.2),
            links={"behaviour.infectious": "epi.I"},
        )


def _run(graph, partition=None, mode="stochastic", composed=False, refresh="step"):
    sis = _composed() if composed else _sis()
    start = {"epi": 10, "behaviour": 0.1} if composed else 10
    kwargs = dict(initial_infected=start, seed=SEED, mode=mode, dtype=torch.float64)
    if partition is None:
        run = simulate(sis, graph, STEPS, **kwargs)
        _loss(run).backward()
        state = run.final_state
    else:
        run = simulate_partitioned(sis, graph, partition, STEPS, refresh=refresh, **kwargs)
        distributed_backward(_loss(run), sis)
        shard = partition.shard(graph, dist.get_rank())
        state = {k: gather_rows(v, shard) for k, v in run.final_state.items()}
    return {
        "counts": {k: v.detach() for k, v in run.counts.items()},
        "flows": {k: v.detach() for k, v in run.flows.items()},
        "state": {k: v.detach() for k, v in state.items()},
        "grads": {  # no gradient (a parameter the loss does not reach) as zeros
            k: torch.zeros_like(p) if p.grad is None else p.grad.clone()
            for k, p in sis.named_parameters()
        },
    }


CASES = {
    "stochastic": dict(mode="stochastic"),
    "expected": dict(mode="expected"),
    "composed_by_step": dict(mode="stochastic", composed=True),
    "composed_by_phase": dict(mode="stochastic", composed=True, refresh="phase"),
    "composed_expected": dict(mode="expected", composed=True),
}


def _rank(worker, graph, partition):
    return {name: _run(graph, partition, **case) for name, case in CASES.items()}


def test_sis_partitioned_on_two_gloo_ranks_equals_the_single_process_run():
    graph = _graph()
    owner = torch.randperm(graph.num_nodes(), generator=torch.Generator().manual_seed(1)) % 2
    partition = Partition(graph, owner, 2)
    ranks = launch(_rank, 2, args=(graph, partition), timeout=120)
    for name, case in CASES.items():
        mode = case["mode"]
        ref = _run(graph, composed=case.get("composed", False), mode=mode)
        assert sum(v.sum() for k, v in ref["flows"].items() if k.endswith("infections")) > 30
        for out in ranks:
            out = {mode: out[name]}
            for table in ("counts", "flows"):
                for key, value in ref[table].items():
                    if mode == "stochastic":  # 0/1 states, the same draws: exactly equal
                        assert torch.equal(out[mode][table][key], value), (mode, key)
                    else:  # sums over agents in another order
                        torch.testing.assert_close(out[mode][table][key], value, rtol=1e-12, atol=0)
            for key, value in ref["state"].items():
                if mode == "stochastic":
                    assert torch.equal(out[mode]["state"][key], value), key
            assert set(out[mode]["grads"]) == set(ref["grads"])
            for key, value in ref["grads"].items():
                torch.testing.assert_close(out[mode]["grads"][key], value, rtol=1e-10, atol=0)


class _Memory(SIS):
    """Keeps a per-agent buffer on the module: wrong rows on a rank, so it is refused."""

    def __init__(self, n):
        super().__init__(0.1, 0.1)
        self.register_buffer("immunity", torch.zeros(n))


def test_a_per_agent_module_buffer_is_refused_by_a_partitioned_run_naming_it():
    graph = _graph()
    partition = Partition.contiguous(graph, 2)
    shard = partition.shard(graph, 0)
    wrapped = PartitionedProtocol(_Memory(graph.num_nodes()), shard, graph)
    with pytest.raises(ValueError, match="immunity.*state.*node attributes"):
        wrapped.check(shard.graph)
    # a parameter of another size (a per-edge rate, a per-age value) is not mistaken for one
    ok = _sis()
    ok.extra = nn.Parameter(torch.zeros(8))
    PartitionedProtocol(ok, shard, graph)  # constructing is fine; nothing per-agent
