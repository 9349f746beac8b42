"""In the default (private) mode a secure run is a fresh realisation nobody can redo: its
statistics must still be the plaintext model's. 20 secure runs' final sizes against 20
plaintext runs' (two-sample Kolmogorov-Smirnov and Mann-Whitney tests, and the means within
four standard errors)."""

from __future__ import annotations

import math
import statistics

import pytest
import torch
from scipy import stats

from lpm_graph import simulate
from lpm_graph.datasets import SyntheticPopulation
from lpm_graph.datasets.generators import erdos_renyi
from lpm_graph.protocols import SEIRM, SIR
from lpm_graph.secure import ProtocolInputs, Session, secure_simulate


def sir_inputs(n, initial_infected, **kwargs):
    """The private inputs of an SIR run (its initial state and draws)."""
    return ProtocolInputs(SIR(0.1, 0.1), n, initial_infected, **kwargs)


RUNS = 20


def _compare(secure: list[float], plain: list[float], what: str) -> None:
    ks = stats.ks_2samp(secure, plain).pvalue
    mw = stats.mannwhitneyu(secure, plain).pvalue
    se = math.sqrt(statistics.variance(secure) / RUNS + statistics.variance(plain) / RUNS)
    gap = abs(statistics.mean(secure) - statistics.mean(plain))
    summary = (
        f"{what}: secure mean {statistics.mean(secure):.1f} sd {statistics.stdev(secure):.1f}, "
        f"plaintext mean {statistics.mean(plain):.1f} sd {statistics.stdev(plain):.1f}, "
        f"KS p {ks:.3f}, Mann-Whitney p {mw:.3f}"
    )
    print(summary)
    assert ks > 1e-3 and mw > 1e-3, summary
    assert gap < 4 * se + 1e-9, summary


def test_secure_sir_final_sizes_follow_the_plaintext_distribution():
    n, steps = 1000, 60
    graph = erdos_renyi(n, 6.0, seed=0)
    protocol = SIR(0.06, 0.1, learnable=False)
    runs = [
        secure_simulate(protocol, graph, steps, Session(2, owner=sir_inputs(n, 10)))
        for _ in range(RUNS)
    ]
    secure = [float(run.counts["R"][-1]) for run in runs]
    plain = [
        float(simulate(protocol, graph, steps, initial_infected=10, seed=s).counts["R"][-1])
        for s in range(RUNS)
    ]
    _compare(secure, plain, "SIR final recovered")


@pytest.mark.parametrize("series", ["R", "M"])
def test_secure_seirm_final_sizes_follow_the_plaintext_distribution(series, seirm_runs):
    secure, plain = seirm_runs
    _compare([r[series] for r in secure], [r[series] for r in plain], f"SEIRM final {series}")


@pytest.fixture(scope="module")
def seirm_runs():
    n, steps = 1000, 60
    population = SyntheticPopulation(n, seed=0)[0]
    protocol = SEIRM(torch.tensor(2.5, dtype=torch.float64), 0.05, learnable=False)

    def final(run):
        return {k: float(run.counts[k][-1]) for k in ("R", "M")}

    secure = [
        final(
            secure_simulate(
                protocol, population, steps, Session(2, owner=ProtocolInputs(protocol, n, 10))
            )
        )
        for _ in range(RUNS)
    ]
    plain = [
        final(
            simulate(protocol, population, steps, initial_infected=10, seed=s, dtype=torch.float64)
        )
        for s in range(RUNS)
    ]
    return secure, plain
