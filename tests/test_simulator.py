"""Simulator: the stochastic-derivative estimator against exact results and finite differences.

The exact references are hand computations: on a single edge j -> k with j infectious at
time 0, k is ever infected with probability ``T = p / (1 - (1 - p)(1 - r))`` (``p`` and ``r``
the per-step infection and recovery probabilities), and on a chain j -> k -> l, l is with
probability ``T^2``.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from lpm_graph import PopulationGraph, simulate
from lpm_graph.datasets.generators import erdos_renyi
from lpm_graph.protocols.sir import SIR

sys.path.insert(0, str(Path(__file__).parent / "protocols"))
from test_sir import _final_size_gradients  # noqa: E402

SD = "stochastic_derivative"


def _transmissibility(tau: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    p, r = -torch.expm1(-tau), -torch.expm1(-gamma)
    return p / (1 - (1 - p) * (1 - r))


def _chain(length: int) -> PopulationGraph:
    edges = torch.stack([torch.arange(length - 1), torch.arange(1, length)])
    return PopulationGraph.from_edge_index(edges, length, undirected=False)


def _batched_gradient(graph, fn, tau0, gamma0, batches, replicates, steps, alternatives=1):
    """Mean and standard error over independent batches of the estimated gradient of E[fn]."""
    first = torch.zeros(graph.num_nodes("agent"), dtype=torch.float64)
    first[0] = 1.0
    grads = []
    for b in range(batches):
        tau = torch.tensor(tau0, dtype=torch.float64, requires_grad=True)
        gamma = torch.tensor(gamma0, dtype=torch.float64, requires_grad=True)
        traj = simulate(
            SIR(tau, gamma),
            graph,
            steps,
            initial_infected=first.bool(),
            seed=100 + b,
            replicates=replicates,
            dtype=torch.float64,
            estimator=SD,
            alternatives=alternatives,
        )
        traj.expectation(fn).mean().backward()
        grads.append(torch.stack([tau.grad, gamma.grad]))
    grads = torch.stack(grads)
    return grads.mean(0), grads.std(0) / math.sqrt(batches)


def _exact_gradient(tau0, gamma0, hops):
    tau = torch.tensor(tau0, dtype=torch.float64, requires_grad=True)
    gamma = torch.tensor(gamma0, dtype=torch.float64, requires_grad=True)
    torch.autograd.backward(_transmissibility(tau, gamma) ** hops)
    return torch.stack([tau.grad, gamma.grad])


@pytest.mark.parametrize(("hops", "tau0", "gamma0"), [(1, 0.3, 0.4), (2, 0.4, 0.5)])
def test_stochastic_derivative_matches_the_exact_gradient(hops, tau0, gamma0):
    graph = _chain(hops + 1)
    mean, se = _batched_gradient(
        graph, lambda tr: tr.final_state["R"][-1], tau0, gamma0, 8, 2_000, 60
    )
    exact = _exact_gradient(tau0, gamma0, hops)
    assert torch.all((mean - exact).abs() < 4 * se + 0.02 * exact.abs()), (mean, se, exact)
    assert torch.all(se < 0.1 * exact.abs())  # the check above has teeth


def test_straight_through_is_biased_where_the_stochastic_derivative_is_not():
    # The motivating example: on a two-hop chain straight-through credits the derivative of
    # every draw to agents that were infected anyway.
    tau0, gamma0 = 0.4, 0.5
    graph = _chain(3)
    first = torch.tensor([True, False, False])
    tau = torch.tensor(tau0, dtype=torch.float64, requires_grad=True)
    traj = simulate(
        SIR(tau, gamma0),
        graph,
        60,
        initial_infected=first,
        seed=1,
        replicates=20_000,
        dtype=torch.float64,
    )
    traj.final_state["R"][-1].mean().backward()
    exact = _exact_gradient(tau0, gamma0, 2)[0]
    assert tau.grad > 1.1 * exact


def test_forward_is_the_same_run_for_every_estimator():
    graph = erdos_renyi(300, 6.0, seed=1)
    runs = [
        simulate(SIR(0.1, 0.2), graph, 40, initial_infected=5, seed=3, replicates=4, estimator=e)
        for e in ("straight_through", "conditional_mean", SD)
    ]
    for traj in runs[1:]:
        for name in ("S", "I", "R"):
            assert torch.equal(traj.counts[name], runs[0].counts[name])


def test_expectation_has_the_value_of_fn_and_is_reproducible():
    graph = erdos_renyi(300, 6.0, seed=1)
    grads, values = [], []
    for _ in range(2):
        tau = torch.tensor(0.1, requires_grad=True)
        traj = simulate(
            SIR(tau, 0.2),
            graph,
            40,
            initial_infected=5,
            seed=3,
            replicates=3,
            estimator=SD,
            alternatives=2,
        )
        y = traj.expectation(lambda tr: tr.counts["R"][-1])
        assert torch.equal(y.detach(), traj.counts["R"][-1])
        y.sum().backward()
        grads.append(tau.grad)
        values.append(y.detach())
    assert torch.equal(grads[0], grads[1])
    assert traj.coupled is not None
    assert traj.coupled.trajectory.counts["R"].shape == (41, 6)


def test_expectation_without_replicates():
    graph = erdos_renyi(200, 6.0, seed=1)
    tau = torch.tensor(0.1, requires_grad=True)
    traj = simulate(SIR(tau, 0.2), graph, 30, initial_infected=5, seed=3, estimator=SD)
    y = traj.expectation(lambda tr: tr.counts["R"][-1])
    assert y.shape == ()
    y.backward()
    assert torch.isfinite(tau.grad)


def test_expectation_is_fn_itself_for_other_estimators():
    graph = erdos_renyi(200, 6.0, seed=1)
    traj = simulate(SIR(0.1, 0.2), graph, 10, initial_infected=5, seed=3)
    assert torch.equal(traj.expectation(lambda tr: tr.counts["I"][-1]), traj.counts["I"][-1])


def test_expectation_rejects_a_reduction_over_replicates():
    graph = erdos_renyi(200, 6.0, seed=1)
    traj = simulate(
        SIR(0.1, 0.2), graph, 10, initial_infected=5, seed=3, replicates=3, estimator=SD
    )
    with pytest.raises(ValueError, match=r"one value per replicate.*not over replicates"):
        traj.expectation(lambda tr: tr.counts["I"][-1].mean())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "expected"}, r"mode='expected' has none.*mode='stochastic'"),
        ({"checkpoint": 5}, r"checkpoint= does not apply.*drop checkpoint"),
        ({"alternatives": 0}, r"alternatives must be a positive int"),
    ],
)
def test_stochastic_derivative_bad_options_raise(kwargs, match):
    graph = erdos_renyi(50, 4.0, seed=1)
    with pytest.raises(ValueError, match=match):
        simulate(SIR(0.1, 0.2), graph, 5, initial_infected=2, estimator=SD, **kwargs)


def test_stochastic_derivative_refuses_differentiable_initial_probabilities():
    graph = erdos_renyi(50, 4.0, seed=1)
    p0 = torch.full((50,), 0.1, requires_grad=True)
    with pytest.raises(ValueError, match=r"does not differentiate the initial draw"):
        simulate(SIR(0.1, 0.2), graph, 5, initial_infected=p0, estimator=SD)


@pytest.mark.slow
def test_stochastic_derivative_matches_finite_differences_on_a_network():
    # The setting where straight-through gives 17.8 against a finite difference of 7.2
    # (tests/protocols/test_sir.py); measured here: 7.7 +- 0.8 (standard error over seeds).
    grad, fd = _final_size_gradients(n=2_000, seeds=50, estimator=SD, alternatives=256)
    assert abs(grad - fd) < 0.25 * abs(fd), (grad, fd)


def test_alternative_paths_are_the_primal_before_their_last_switch():
    # A function of the history (the sum of daily infections) and one of the final state
    # (the agents who left S) are the same number on every path, so their gradients agree
    # only if every alternative's record before its last switch is the primal's.
    graph = erdos_renyi(300, 6.0, seed=1)
    tau = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    traj = simulate(SIR(tau, 0.2), graph, 40, initial_infected=5, seed=3, replicates=4,
                    dtype=torch.float64, estimator=SD, alternatives=2)  # fmt: skip
    alt = traj.coupled.trajectory
    assert torch.equal(alt.flows["infections"].sum(0), alt.counts["S"][0] - alt.counts["S"][-1])
    history = traj.expectation(lambda tr: tr.flows["infections"].sum(0)).sum()
    final = traj.expectation(lambda tr: tr.counts["S"][0] - tr.counts["S"][-1]).sum()
    (g_history,) = torch.autograd.grad(history, tau, retain_graph=True)
    (g_final,) = torch.autograd.grad(final, tau)
    assert float(g_final) != 0
    assert float(g_history) == pytest.approx(float(g_final), rel=1e-12)


def test_trajectory_tells_groups_from_replicates():
    """Per-group series (SEIRM by age) are columns, replicates are rows, in the table and in
    the repr; a run without replicates has no replicate column even with 2-D series."""
    pytest.importorskip("pandas")
    from lpm_graph.datasets import SyntheticPopulation
    from lpm_graph.protocols import SEIRM

    graph = SyntheticPopulation(300, seed=1)[0]
    run = simulate(SEIRM(by_age=True), graph, 4, initial_infected=5, seed=0)
    assert run.replicates is None
    table = run.to_dataframe()
    assert table.shape[0] == 5 and "replicate" not in table
    assert (table["S_by_age_0"] + table["S_by_age_7"] <= table["S"]).all()
    assert "S_by_age=<8>" in repr(run)
    run = simulate(SEIRM(by_age=True), graph, 4, initial_infected=5, seed=0, replicates=3)
    table = run.to_dataframe()
    assert run.replicates == 3 and table.shape[0] == 15
    assert sorted(table["replicate"].unique()) == [0, 1, 2]
    assert "S=<3 replicates>" in repr(run) and "S_by_age=<8 x 3>" in repr(run)


@pytest.mark.parametrize("checkpoint", [None, 4])
def test_draws_ahead_leave_runs_and_gradients_unchanged(monkeypatch, checkpoint, two_threads):
    # each step's draws are filled while the last step's totals are taken: the same numbers,
    # so the same run, with or without gradients and checkpointing
    from lpm_graph.layers import RandomStreams
    from lpm_graph.layers.samplers import CHUNK

    graph = erdos_renyi(CHUNK + 20_000, 6.0, seed=2)
    drawn_ahead = []
    draw_ahead = RandomStreams.draw_ahead

    def counted(self, step, next_step):
        draw_ahead(self, step, next_step)
        drawn_ahead.append(len(self._ahead))

    def run():
        sir = SIR(0.1, 0.2)
        traj = simulate(sir, graph, 12, initial_infected=40, seed=5, checkpoint=checkpoint)
        traj.counts["R"][-1].backward()
        return traj, sir.transmission_rate.grad

    monkeypatch.setattr(RandomStreams, "draw_ahead", counted)
    ahead, ahead_grad = run()
    monkeypatch.setattr(RandomStreams, "draw_ahead", lambda self, step, next_step: None)
    plain, plain_grad = run()
    assert drawn_ahead.count(1) >= 10  # steps 1-10 drew the next one's numbers (not 0 or 11)
    for name in plain.counts:
        assert torch.equal(ahead.counts[name], plain.counts[name])
    assert torch.equal(ahead_grad, plain_grad)


def test_runs_under_inference_mode_draw_in_chunks(two_threads):
    # the chunks fill on pool threads, where inference mode (per thread) must be set again to
    # write an inference tensor
    from lpm_graph.layers.samplers import CHUNK

    graph = erdos_renyi(CHUNK + 10_000, 4.0, seed=2)
    with torch.inference_mode():
        inferred = simulate(SIR(0.1, 0.2), graph, 4, initial_infected=40, seed=3)
    with torch.no_grad():
        plain = simulate(SIR(0.1, 0.2), graph, 4, initial_infected=40, seed=3)
    assert torch.equal(inferred.counts["I"], plain.counts["I"])
