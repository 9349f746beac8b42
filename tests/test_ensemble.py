"""Ensembles: a list of seeds as replicate columns equals the separate runs, at any batch size
and on any backend."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from lpm_graph import simulate
from lpm_graph.datasets import SyntheticPopulation, erdos_renyi
from lpm_graph.ensemble import concat_trajectories, run_ensemble, sweep
from lpm_graph.layers import RandomStreams
from lpm_graph.protocols import (
    SEIRM,
    SIR,
    BehaviourCoupling,
    BoundedConfidence,
    Duration,
    EdgeTypeClosure,
    LabourMarket,
    Schedule,
    StagedSEIRM,
    ThresholdAdoption,
    Vaccination,
    labour_population,
)

SEEDS = [3, 7, 11, 5]


@pytest.fixture(scope="module")
def population():
    return SyntheticPopulation(2000, seed=0)[0]


@pytest.fixture(scope="module")
def er():
    return erdos_renyi(1500, 8, seed=0)


def _cases(population, er):
    return {
        "SIR": (SIR(0.08, 0.1), er, 5),
        "SIR probabilities": (SIR(0.08, 0.1), er, torch.full((1500,), 0.01)),
        "SEIRM by age, random stays": (
            SEIRM(
                2.5,
                0.05,
                exposed=Duration.geometric(3),
                infectious=Duration.gamma(5, 2),
                by_age=True,
            ),
            population,
            20,
        ),
        "SEIRM with closure and vaccination": (
            SEIRM(
                3.0,
                0.05,
                interventions=[
                    EdgeTypeClosure("school", Schedule([(5, 30, 1.0)]), compliance=0.8),
                    Vaccination(100, start_day=3, doses=1),
                ],
            ),
            population,
            20,
        ),
        "StagedSEIRM": (StagedSEIRM(3.0), population, 20),
        "SEIRM + threshold adoption": (
            StagedSEIRM(
                3.0, interventions=[BehaviourCoupling(ThresholdAdoption(0.3), 0.7, initial=0.1)]
            ),
            population,
            20,
        ),
        "SEIRM + bounded confidence": (
            SEIRM(3.0, 0.05, interventions=[BehaviourCoupling(BoundedConfidence(0.2), 0.8)]),
            population,
            20,
        ),
    }


@pytest.mark.parametrize(
    "name",
    [
        "SIR",
        "SIR probabilities",
        "SEIRM by age, random stays",
        "SEIRM with closure and vaccination",
        "StagedSEIRM",
        "SEIRM + threshold adoption",
        "SEIRM + bounded confidence",
    ],
)
def test_every_column_equals_the_run_of_its_seed_alone(name, population, er):
    protocol, graph, infected = _cases(population, er)[name]
    ens = simulate(protocol, graph, 30, initial_infected=infected, seed=SEEDS)
    assert ens.replicates == len(SEEDS) and ens.seeds == tuple(SEEDS)
    # continuous opinions: their sums over agents are rounded in another order with columns
    same = _same if name != "SEIRM + bounded confidence" else _close
    moved = 0.0
    for i, seed in enumerate(SEEDS):
        one = simulate(protocol, graph, 30, initial_infected=infected, seed=seed)
        for series, alone in [*one.counts.items(), *one.flows.items()]:
            same({**ens.counts, **ens.flows}[series][..., i], alone, (name, seed, series))
        for key, value in one.final_state.items():
            same(ens.final_state[key][..., i], value, (name, seed, key))
        moved += float(one.flows[next(iter(one.flows))].detach().sum())
    assert moved > 0  # the runs did something


def _same(a, b, what):
    assert torch.equal(a, b), what


def _close(a, b, what):
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=str(what))


def test_labour_market_ensemble_equals_separate_runs():
    graph = labour_population(1500, num_areas=3, num_occupations=2, seed=1)
    market = LabourMarket(
        torch.tensor([0.1, 0.2]), torch.tensor([0.5, 0.3, 0.4]), initial_unemployment=0.1
    )
    ens = simulate(market, graph, 12, seed=SEEDS)
    for i, seed in enumerate(SEEDS):
        one = simulate(market, graph, 12, seed=seed)
        for key, value in one.counts.items():
            assert torch.equal(ens.counts[key][..., i], value), key


def test_batch_size_does_not_change_any_member(er):
    seeds = [9, 1, 4, 4, 0]
    whole = run_ensemble(SIR(0.08, 0.1), er, 25, seeds, initial_infected=5)
    assert whole.seeds == tuple(seeds)
    for size in (1, 2, 3):
        part = run_ensemble(SIR(0.08, 0.1), er, 25, seeds, initial_infected=5, batch_size=size)
        assert part.seeds == tuple(seeds) and part.replicates == 5
        for key in whole.counts:
            assert torch.equal(part.counts[key], whole.counts[key])
        for key in whole.final_state:
            assert torch.equal(part.final_state[key], whole.final_state[key])
    # the same seed twice gives the same column; different seeds differ
    assert torch.equal(whole.counts["I"][:, 2], whole.counts["I"][:, 3])
    assert not torch.equal(whole.counts["I"][:, 0], whole.counts["I"][:, 1])


def test_a_count_of_seeds_means_seeds_0_to_m_minus_1(er):
    by_count = run_ensemble(SIR(0.08, 0.1), er, 10, 3, initial_infected=5, batch_size=2)
    by_list = run_ensemble(SIR(0.08, 0.1), er, 10, [0, 1, 2], initial_infected=5)
    assert by_count.seeds == (0, 1, 2)
    assert torch.equal(by_count.counts["R"], by_list.counts["R"])
    assert not by_count.final_state or by_count.final_state["S"].shape == (1500, 3)
    light = run_ensemble(SIR(0.08, 0.1), er, 10, 3, initial_infected=5, keep_final_state=False)
    assert light.final_state == {}


def test_ensemble_gradients_are_the_sum_of_the_members_gradients(er):
    def grads(seed):
        sir = SIR(0.08, 0.1).double()
        traj = simulate(sir, er, 20, initial_infected=5, seed=seed, dtype=torch.float64)
        loss = traj.flows["infections"].sum() + traj.counts["R"][-1].sum()
        loss.backward()
        return torch.stack([p.grad for p in sir.parameters()])

    together = grads(SEEDS)
    alone = sum(grads(s) for s in SEEDS)
    torch.testing.assert_close(together, alone, rtol=1e-12, atol=0)
    assert bool((together != 0).all())


def test_sweep_runs_every_protocol_on_the_same_seeds(er):
    models = {"slow": SIR(0.04, 0.1), "fast": SIR(0.12, 0.1)}
    out = sweep(models, er, 30, [2, 3, 4], initial_infected=5, batch_size=2)
    assert list(out) == ["slow", "fast"]
    for name, model in models.items():
        alone = simulate(model, er, 30, initial_infected=5, seed=3)
        assert torch.equal(out[name].counts["I"][:, 1], alone.counts["I"])
    assert float(out["fast"].counts["R"][-1].mean()) > float(out["slow"].counts["R"][-1].mean())
    as_list = sweep(list(models.values()), er, 30, [2, 3, 4], initial_infected=5)
    assert torch.equal(as_list[1].counts["R"], out["fast"].counts["R"])


def test_stochastic_derivative_runs_one_seed_at_a_time(er):
    sd = "stochastic_derivative"
    with pytest.raises(ValueError, match="batch_size=1"):
        run_ensemble(SIR(0.08, 0.1), er, 5, 3, initial_infected=5, estimator=sd)
    with pytest.raises(ValueError, match="cannot run an ensemble of seeds"):
        simulate(SIR(0.08, 0.1), er, 5, initial_infected=5, seed=[1, 2], estimator=sd)
    sir = SIR(0.08, 0.1).double()
    out = run_ensemble(
        sir, er, 15, [4, 8], initial_infected=5, estimator=sd, batch_size=1, alternatives=3,
        dtype=torch.float64,
    )  # fmt: skip
    assert out.counts["I"].shape == (16, 2) and out.coupled.weight.shape == (6,)
    out.expectation(_infected).sum().backward()
    together = torch.stack([p.grad.clone() for p in sir.parameters()])
    alone = 0
    for seed in (4, 8):
        sir.zero_grad()
        one = simulate(
            sir, er, 15, initial_infected=5, seed=seed, estimator=sd, alternatives=3,
            replicates=1, dtype=torch.float64,
        )  # fmt: skip
        assert torch.equal(one.counts["I"][:, 0], out.counts["I"][:, (4, 8).index(seed)])
        one.expectation(_infected).sum().backward()
        alone = alone + torch.stack([p.grad.clone() for p in sir.parameters()])
    torch.testing.assert_close(together, alone, rtol=1e-12, atol=0)
    assert bool((together != 0).any())


def _infected(traj):
    """Infections over the run, per replicate: every alternative path changes it (an extra
    infection or recovery), so the stochastic-derivative gradient is not zero by chance."""
    return traj.flows["infections"].sum(0) + traj.flows["recoveries"].sum(0)


def test_quantiles_match_numpy(er):
    traj = run_ensemble(SIR(0.08, 0.1), er, 30, 9, initial_infected=5)
    q = traj.quantiles("I", (0.05, 0.5, 0.95))
    expected = np.quantile(
        traj.counts["I"].detach().numpy().astype(np.float64), [0.05, 0.5, 0.95], axis=-1
    )
    np.testing.assert_allclose(q.numpy(), expected, rtol=0, atol=1e-9)
    assert traj.quantiles("infections", 0.5).shape == (30,)
    with pytest.raises(ValueError, match="no count or flow named 'X'.*S, I, R"):
        traj.quantiles("X")
    with pytest.raises(ValueError, match=r"levels in \[0, 1\]"):
        traj.quantiles("I", 1.5)
    with pytest.raises(ValueError, match="quantiles need replicates"):
        simulate(SIR(0.08, 0.1), er, 3, initial_infected=5).quantiles("I")


def test_dataframe_names_each_replicates_seed(er):
    frame = run_ensemble(SIR(0.08, 0.1), er, 4, [10, 20], initial_infected=5).to_dataframe()
    assert list(frame.columns[:3]) == ["replicate", "seed", "t"]
    assert sorted(set(zip(frame["replicate"], frame["seed"]))) == [(0, 10), (1, 20)]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda g: run_ensemble(SIR(0.1, 0.1), g, 3, [], initial_infected=1), "non-empty list"),
        (lambda g: run_ensemble(SIR(0.1, 0.1), g, 3, 0, initial_infected=1), "at least 1"),
        (lambda g: run_ensemble(SIR(0.1, 0.1), g, 3, [1.5], initial_infected=1), "list of ints"),
        (lambda g: run_ensemble(SIR(0.1, 0.1), g, 3, "12", initial_infected=1), "count or a list"),
        (
            lambda g: run_ensemble(SIR(0.1, 0.1), g, 3, 2, initial_infected=1, batch_size=0),
            "batch_size must be a positive int",
        ),
        (
            lambda g: run_ensemble(SIR(0.1, 0.1), g, 3, 2, initial_infected=1, backend="dask"),
            r"backend must be one of \('local', 'ray'\)",
        ),
        (lambda g: sweep([], g, 3, 2, initial_infected=1), "protocols is empty"),
        (
            lambda g: simulate(SIR(0.1, 0.1), g, 3, initial_infected=1, seed=[1, 2], replicates=3),
            "replicates=3 but 2 seeds",
        ),
        (lambda g: simulate(SIR(0.1, 0.1), g, 3, initial_infected=1, seed=[]), "empty sequence"),
        (lambda g: simulate(SIR(0.1, 0.1), g, 3, initial_infected=1, seed=[1, True]), "sequence"),
        (lambda g: simulate(SIR(0.1, 0.1), g, 3, initial_infected=1, seed=2.0), "int or a seq"),
    ],
)
def test_bad_ensembles_are_refused_clearly(er, call, message):
    with pytest.raises(ValueError, match=message):
        call(er)


def test_streams_split_by_seed_and_refuse_shared_draws():
    streams = RandomStreams([4, 9])
    u = streams.uniform("x", 2, (5, 2), torch.float32)
    for i, seed in enumerate([4, 9]):
        assert torch.equal(u[:, i], RandomStreams(seed).uniform("x", 2, (5,), torch.float32))
    with pytest.raises(ValueError, match="one column per seed"):
        streams.uniform("x", 2, (5,), torch.float32)
    with pytest.raises(ValueError, match="cannot split by seed"):
        streams.generator("x", 2)


def test_concat_refuses_runs_without_replicates(er):
    one = simulate(SIR(0.1, 0.1), er, 3, initial_infected=1)
    with pytest.raises(ValueError, match="replicate columns"):
        concat_trajectories([one, one])
    with pytest.raises(ValueError, match="no trajectories"):
        concat_trajectories([])


def test_ray_backend_is_refused_clearly_without_ray(er, monkeypatch):
    if importlib.util.find_spec("ray") is not None:
        pytest.skip("ray is installed")
    with pytest.raises(ImportError, match="pip install ray"):
        run_ensemble(SIR(0.1, 0.1), er, 3, 2, initial_infected=1, backend="ray")


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs the ray extra")
def test_ray_backend_equals_the_local_run(er, population):
    import ray

    models = [SIR(0.08, 0.1), SIR(0.1, 0.1)]
    local = sweep(models, er, 20, [1, 2, 3, 4, 5], initial_infected=5, batch_size=2)
    seirm = SEIRM(2.5, 0.05)  # after a local run: its per-graph caches travel too
    local_seirm = run_ensemble(seirm, population, 15, 3, initial_infected=10)
    try:
        remote = sweep(
            models, er, 20, [1, 2, 3, 4, 5], initial_infected=5, batch_size=2, backend="ray",
            num_workers=2,
        )  # fmt: skip
        remote_seirm = run_ensemble(
            seirm, population, 15, 3, initial_infected=10, backend="ray", batch_size=2
        )
    finally:
        ray.shutdown()
    for key, value in local_seirm.counts.items():
        assert torch.equal(value.detach(), remote_seirm.counts[key]), key
    for a, b in zip(local, remote):
        assert b.seeds == (1, 2, 3, 4, 5)
        for key in a.counts:
            assert torch.equal(a.counts[key].detach(), b.counts[key])
        assert not b.counts["I"].requires_grad
