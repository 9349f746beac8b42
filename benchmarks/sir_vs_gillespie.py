"""Stochastic SIR on a complete graph against the ODE and an exact continuous-time simulator.

Run ``python benchmarks/sir_vs_gillespie.py`` (``pip install EoN`` first; it does not touch
torch). It measures how far the mean of 20 stochastic runs lies from the well-mixed SIR ODE, and
whether that gap belongs to the stochastic process itself or to our simulator.

Setting (the acceptance test ``test_complete_graph_follows_the_sir_ode`` in
``tests/protocols/test_sir.py``): N agents on a complete graph, per-pair infection rate
``beta / N`` with ``beta = R0 gamma``, recovery rate ``gamma = 0.1``/day, ``N // 100``
initially infected agents. Its metric, for one group of 20 runs, is the largest gap over
integer days ``0..days`` and over S, I, R between the mean fraction of the 20 runs and the ODE
``s' = -beta s i, i' = beta s i - gamma i, r' = gamma i`` (scipy ``solve_ivp``).

Two simulators, the same number of runs each (``--groups`` x ``--runs-per-group``):

* EoN (Kiss, Miller & Simon), ``EoN.fast_SIR`` on ``networkx.complete_graph(N)`` with per-edge
  rate ``tau = beta / N`` and recovery rate ``gamma``: the event-driven algorithm of the book's
  appendix A.3, exact for the Markovian (continuous-time) SIR, like Gillespie's algorithm. Per
  infected node it draws an exponential infectious period, the number of susceptible neighbours
  it transmits to before recovering (binomial) and their transmission times. ``EoN.Gillespie_SIR``
  samples the same process but takes ~50 s per run on this 2-million-edge graph (0.15 s for
  ``fast_SIR``); EoN has no well-mixed stochastic simulator, so the complete graph is used. The
  initially infected nodes are drawn at random; S, I, R are read off the event times as step
  functions at ``t = 0, 0.1, 0.2, ...``.
* lpm-graph, ``simulate(SIR(beta / N, gamma, dt=0.1), complete_graph(N), days / 0.1,
  initial_infected=N // 100, seed=s, replicates=20)`` for ``s = --seed, --seed + 1, ...``: a group
  is one seeded call, exactly as in the test (with ``--seed 0`` and at least 12 groups, the group
  with seed 11 is the test's own call and its error is printed).

Printed per R0, for both: the distribution over groups of the test metric (median, 10th and 90th
percentile, share of groups above the test's bound 0.03); the same metric for the mean of all
runs pooled, with its largest |z| = |pooled mean - ODE| / standard error, which tells a true gap
of the ensemble mean from sampling noise; the pooled mean after shifting every run in time so
that its cumulative incidence ``1 - S`` reaches 0.1 on the ODE's day (what is left once each
run's random delay is removed); the spread (SD over runs) of the day of peak prevalence. Then the
largest gap between the two simulators' pooled means, its largest |z|, and a permutation p-value
of that largest gap (runs shuffled between the two simulators, the max statistic recomputed), and
the deterministic ``mode="expected"`` run of lpm-graph against the ODE, which isolates the time
step dt = 0.1.

Why a gap is expected near threshold: the first generations are a branching process. A run
follows the ODE curve shifted by a random delay ``log(W) / r``, with ``r = gamma (R0 - 1)`` the
early growth rate and ``W`` the random size of the early outbreak relative to its mean. At R0 =
1.5 with 20 seeds, ``W`` has a coefficient of variation near 0.5 and ``r = 0.05``/day, so runs
are spread by about ten days, against about two at R0 = 2.5. The mean of 20 runs then carries
a sampling error of a few percent, and since ``E[log W] < 0`` and the curves are not linear in
time, even the ensemble mean is a delayed, flattened version of the ODE.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.integrate import solve_ivp

GAMMA = 0.1  # recovery rate per day
DT = 0.1  # our time step, also the sampling grid of both simulators
BOUND = 0.03  # the acceptance test's bound on the max error of a 20-run mean
DAYS = {1.5: 300, 2.5: 150, 5.0: 100}  # the acceptance test's horizons
ALIGN_AT = 0.1  # cumulative incidence used to align runs in time
PERMUTATIONS = 1000
COMPARTMENTS = "SIR"


@dataclass
class Runs:
    """Fractions in S, I, R of every run at ``t = 0, DT, ..., days``: ``[runs, 3, steps + 1]``."""

    name: str
    fractions: np.ndarray
    seconds: float


def sir_ode(beta: float, gamma: float, i0: float, times: np.ndarray) -> np.ndarray:
    """Fractions S, I, R of the well-mixed SIR ODE at ``times``: ``[3, len(times)]``."""

    def rhs(_t: float, y: np.ndarray) -> list[float]:
        s, i, _ = y
        return [-beta * s * i, beta * s * i - gamma * i, gamma * i]

    sol = solve_ivp(
        rhs, (0.0, float(times[-1])), [1 - i0, i0, 0.0], t_eval=times, rtol=1e-8, atol=1e-12
    )
    return sol.y


def run_eon(
    n: int, beta: float, seeds: int, steps: int, runs: int, rng: np.random.Generator
) -> Runs:
    """``runs`` exact continuous-time runs (EoN.fast_SIR) on the complete graph, sampled as step
    functions on the grid ``k DT``, ``k = 0..steps``."""
    import EoN
    import networkx as nx

    start = time.perf_counter()
    graph = nx.complete_graph(n)
    grid = np.arange(steps + 1) * DT
    out = np.empty((runs, 3, steps + 1))
    for k in range(runs):
        initial = rng.choice(n, size=seeds, replace=False).tolist()
        t, s, i, r = EoN.fast_SIR(
            graph, beta / n, GAMMA, initial_infecteds=initial, tmax=float(grid[-1]), rng=rng
        )
        # The state at grid time g is the one after the last event at or before g.
        idx = np.searchsorted(t, grid, side="right") - 1
        out[k] = np.stack([s[idx], i[idx], r[idx]]) / n
    return Runs("EoN fast_SIR (exact)", out, time.perf_counter() - start)


def run_ours(
    n: int, beta: float, seeds: int, steps: int, groups: int, per_group: int, seed: int
) -> tuple[Runs, np.ndarray]:
    """``groups`` seeded calls of ``simulate`` with ``per_group`` replicates each (the test's
    call), and one deterministic ``mode="expected"`` run: (runs, expected fractions)."""
    import torch

    from lpm_graph import simulate
    from lpm_graph.datasets.generators import complete_graph
    from lpm_graph.protocols.sir import SIR

    torch.set_num_threads(1)
    start = time.perf_counter()
    graph = complete_graph(n)
    sir = SIR(beta / n, GAMMA, dt=DT)
    parts = []
    with torch.no_grad():
        for g in range(groups):
            traj = simulate(
                sir, graph, steps, initial_infected=seeds, seed=seed + g, replicates=per_group
            )
            counts = torch.stack([traj.counts[c] for c in COMPARTMENTS])  # [3, steps + 1, R]
            parts.append(counts.double().permute(2, 0, 1).numpy() / n)
        runs = Runs(f"lpm-graph (dt = {DT:g})", np.concatenate(parts), time.perf_counter() - start)
        traj = simulate(
            sir, graph, steps, initial_infected=seeds, mode="expected", dtype=torch.float64
        )
    expected = np.stack([traj.counts[c].numpy() / n for c in COMPARTMENTS])
    return runs, expected


def max_error(mean: np.ndarray, ode: np.ndarray) -> tuple[float, int, int]:
    """The test metric for a mean ``[3, days + 1]`` at integer days: the largest |mean - ODE|,
    with its compartment and day."""
    gap = np.abs(mean - ode)
    c, day = np.unravel_index(int(gap.argmax()), gap.shape)
    return float(gap[c, day]), int(c), int(day)


def max_z(diff: np.ndarray, se: np.ndarray) -> float:
    """Largest |diff| / se over the points with a positive standard error."""
    ok = se > 1e-12
    return float(np.abs(diff[ok] / se[ok]).max())


def aligned(fine: np.ndarray, ode_fine: np.ndarray) -> tuple[np.ndarray, int]:
    """Shift every run in time so that its cumulative incidence ``1 - S`` reaches ``ALIGN_AT``
    when the ODE's does; runs that never reach it are dropped. Returns ``[kept, 3, steps + 1]``
    (values past either end of a run are held at its first or last value) and the number
    dropped."""
    grid = np.arange(fine.shape[-1]) * DT

    def crossing(s: np.ndarray) -> float | None:
        c = 1 - s
        k = int(np.argmax(c >= ALIGN_AT))
        if c[k] < ALIGN_AT:
            return None
        if k == 0:
            return 0.0
        return grid[k - 1] + DT * (ALIGN_AT - c[k - 1]) / (c[k] - c[k - 1])

    t_ode = crossing(ode_fine[0])
    out = []
    for run in fine:
        t_run = crossing(run[0])
        if t_run is None or t_ode is None:
            continue
        out.append([np.interp(grid + (t_run - t_ode), grid, x) for x in run])
    return np.asarray(out), len(fine) - len(out)


def permutation_p(a: np.ndarray, b: np.ndarray, observed: float, rng: np.random.Generator) -> float:
    """Share of random relabellings of the pooled runs whose max |mean a - mean b| reaches
    ``observed`` (the max is over days and compartments, so their correlation is accounted
    for)."""
    pooled = np.concatenate([a, b])
    hits = 0
    for _ in range(PERMUTATIONS):
        perm = rng.permutation(len(pooled))
        gap = pooled[perm[: len(a)]].mean(0) - pooled[perm[len(a) :]].mean(0)
        hits += np.abs(gap).max() >= observed
    return (hits + 1) / (PERMUTATIONS + 1)


def summarise(runs: Runs, ode: np.ndarray, ode_fine: np.ndarray, per_group: int) -> dict:
    """The statistics printed for one simulator at one R0."""
    per_day = round(1 / DT)
    daily = runs.fractions[:, :, ::per_day]  # [runs, 3, days + 1]
    groups = daily.reshape(-1, per_group, *daily.shape[1:]).mean(1)
    errors = np.array([max_error(g, ode)[0] for g in groups])
    pooled = daily.mean(0)
    se = daily.std(0, ddof=1) / np.sqrt(len(daily))
    shifted, dropped = aligned(runs.fractions, ode_fine)
    peak_day = runs.fractions[:, 1].argmax(1) * DT
    return {
        "errors": errors,
        "pooled": pooled,
        "pooled_error": max_error(pooled, ode),
        "pooled_z": max_z(pooled - ode, se),
        "aligned_error": max_error(shifted[:, :, ::per_day].mean(0), ode),
        "dropped": dropped,
        "peak_sd": float(peak_day.std(ddof=1)),
        "peak_mean": float(peak_day.mean()),
    }


def percentiles(s: dict) -> np.ndarray:
    return np.percentile(s["errors"], [10, 90])


def where(err: tuple[float, int, int]) -> str:
    return f"{err[0]:.4f} ({COMPARTMENTS[err[1]]}, day {err[2]})"


def report(r0: float, args: argparse.Namespace, groups: int, rng: np.random.Generator) -> list[str]:
    """Simulate both at ``r0`` and return the report's lines."""
    n, per_group = args.n, args.runs_per_group
    beta = r0 * GAMMA  # as in the test, so that our group with seed 11 is the test's call
    seeds = n // 100
    days = args.days or DAYS.get(r0, 300)
    steps = round(days / DT)
    per_day = round(1 / DT)
    ode_fine = sir_ode(beta, GAMMA, seeds / n, np.arange(steps + 1) * DT)
    ode = ode_fine[:, ::per_day]
    runs = groups * per_group

    eon = run_eon(n, beta, seeds, steps, runs, rng)
    ours, expected = run_ours(n, beta, seeds, steps, groups, per_group, args.seed)
    a, b = (summarise(x, ode, ode_fine, per_group) for x in (eon, ours))

    width = 36
    lines = [
        f"== R0 = {r0:g}: N = {n}, beta = {beta:g}/day (per pair beta/N), gamma = {GAMMA:g}/day, "
        f"{seeds} initially infected, {days} days, {groups} groups x {per_group} runs",
        f"{'':{width}}{eon.name:>24}{ours.name:>24}",
        f"max error of a {per_group}-run mean vs ODE, over groups:",
    ]

    def row(label: str, fn: Callable[[dict], str]) -> None:
        lines.append(f"{label:{width}}{fn(a):>24}{fn(b):>24}")

    row("  median", lambda s: f"{np.median(s['errors']):.4f}")
    row("  10th / 90th percentile", lambda s: "{:.4f} / {:.4f}".format(*percentiles(s)))
    row("  min / max", lambda s: f"{s['errors'].min():.4f} / {s['errors'].max():.4f}")
    row(f"  share of groups > {BOUND:g}", lambda s: f"{(s['errors'] > BOUND).mean():.2f}")
    row(f"pooled mean ({runs} runs) vs ODE", lambda s: where(s["pooled_error"]))
    row("  largest |z| = |pooled - ODE| / SE", lambda s: f"{s['pooled_z']:.1f}")
    row(f"time-aligned at 1-S = {ALIGN_AT:g}, vs ODE", lambda s: where(s["aligned_error"]))
    row("  runs never reaching it (dropped)", lambda s: f"{s['dropped']}")
    row("day of peak I: mean / SD", lambda s: f"{s['peak_mean']:.1f} / {s['peak_sd']:.1f}")
    lines.append(f"{'simulation time':{width}}{eon.seconds:>23.1f}s{ours.seconds:>23.1f}s")
    if args.seed <= 11 < args.seed + groups:
        test_error = b["errors"][11 - args.seed]
        lines.append(f"lpm-graph group with seed 11 (the test's own call): {test_error:.4f}")
    da, db = eon.fractions[:, :, ::per_day], ours.fractions[:, :, ::per_day]
    se = np.sqrt(da.var(0, ddof=1) / len(da) + db.var(0, ddof=1) / len(db))
    observed = max_error(a["pooled"], b["pooled"])
    p = permutation_p(da, db, observed[0], rng)
    lines += [
        f"pooled EoN vs pooled lpm-graph: max |diff| {where(observed)}, largest |z| "
        f"{max_z(a['pooled'] - b['pooled'], se):.1f}, permutation p = {p:.3f} "
        f"({PERMUTATIONS} relabellings of the {2 * runs} runs)",
        f"lpm-graph mode='expected' (deterministic, dt = {DT:g}) vs ODE: "
        f"{where(max_error(expected[:, ::per_day], ode))}",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="number of agents")
    parser.add_argument("--r0", type=float, default=1.5, help="R0 = beta / gamma")
    parser.add_argument("--groups", type=int, default=12, help="groups of runs at --r0")
    parser.add_argument("--runs-per-group", type=int, default=20)
    parser.add_argument(
        "--days", type=int, default=None, help="horizon (default: the test's, 300 at R0 = 1.5)"
    )
    parser.add_argument("--seed", type=int, default=0, help="first lpm-graph seed; EoN's rng")
    parser.add_argument(
        "--compare-r0", type=float, default=2.5, help="second R0 for comparison (0: skip)"
    )
    parser.add_argument("--compare-groups", type=int, default=5, help="groups at --compare-r0")
    args = parser.parse_args()

    start = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    cases = [(args.r0, args.groups)]
    if args.compare_r0:
        cases.append((args.compare_r0, args.compare_groups))
    for r0, groups in cases:
        print("\n".join(report(r0, args, groups, rng)) + "\n", flush=True)
    print(f"total runtime {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
