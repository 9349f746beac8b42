"""Step-length convergence of SEIRM and StagedSEIRM: the same epidemic at dt = 1, 0.5, 0.25.

A discrete-time model is only meaningful if its answers converge as the step shrinks: the
differences between successive halvings of ``dt`` must shrink, and the last ones must be
small. This runs each protocol on the same synthetic population (``SyntheticPopulation``,
seed 0), with the same parameters in days, at the three step lengths, in expected-value mode
(deterministic) and in stochastic mode (the mean of ``--replicates`` seeded runs), and prints
for each:

- final size: the share of agents ever infected, ``1 - S(T) / N``;
- peak: the largest share infected at once (``N - S - R - M`` over ``N``: every stage
  between infection and recovery or death);
- peak day: when that happens, in days;

then the relative differences between dt = 1 and 0.5 and between 0.5 and 0.25, and whether
they shrink (in stochastic mode a last difference below two standard errors of the
difference of the means is "within noise": the discretisation error is smaller than the
noise of the replicates there).

    python benchmarks/dt_convergence.py                    # 100,000 agents, both models
    python benchmarks/dt_convergence.py --agents 20000 --models seirm

Time at 100,000 agents on 2 cores: ~8 min for SEIRM with 8 replicates, far longer for
StagedSEIRM (its progression keeps ~400 waiting slots per agent at dt = 1, ~1,600 at
dt = 0.25, and in stochastic mode every slot draws).
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass

import torch

from lpm_graph import simulate
from lpm_graph.datasets import SyntheticPopulation
from lpm_graph.protocols import SEIRM, StagedSEIRM

STEP_LENGTHS = (1.0, 0.5, 0.25)
# R for each model: SEIRM's R is the reproduction number; StagedSEIRM's is a rate per day of
# infectious contact-time (no kernel), so a smaller value gives a comparable epidemic
DEFAULT_R = {"seirm": 2.0, "staged": 0.25}


@dataclass
class Outcome:
    final_size: float
    peak: float
    peak_day: float
    seconds: float
    final_size_se: float = 0.0  # standard error of the mean over the replicates
    peak_se: float = 0.0


def build(model: str, r: float, dt: float) -> SEIRM:
    if model == "seirm":
        return SEIRM(r, 0.01, dt=dt, learnable=False)
    return StagedSEIRM(r, dt=dt, learnable=False)


def run(model: str, graph, r: float, dt: float, mode: str, days: int, replicates: int,
        initial_infected: int) -> Outcome:  # fmt: skip
    """One protocol at one step length: final size, peak and peak day (stochastic: the mean
    over the replicates of each run's values)."""
    protocol = build(model, r, dt)
    n = graph.num_nodes()
    start = time.perf_counter()
    with torch.no_grad():
        traj = simulate(
            protocol, graph, round(days / dt), initial_infected=initial_infected, seed=0,
            mode=mode, replicates=None if mode == "expected" else replicates,
            dtype=torch.float64 if mode == "expected" else torch.float32,  # 0/1 states: exact
        )  # fmt: skip
    seconds = time.perf_counter() - start
    c = {k: v.double() for k, v in traj.counts.items()}
    infected = (n - c["S"] - c["R"] - c["M"]) / n  # [T + 1] or [T + 1, R]
    peak, at = infected.max(0)
    final = 1 - c["S"][-1] / n
    out = Outcome(float(final.mean()), float(peak.mean()), float(at.double().mean()) * dt,
                  seconds)  # fmt: skip
    if final.numel() > 1:
        out.final_size_se = float(final.std() / final.numel() ** 0.5)
        out.peak_se = float(peak.std() / peak.numel() ** 0.5)
    return out


def relative(a: float, b: float) -> float:
    return abs(a - b) / abs(b) if b else float("inf")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=100_000)
    parser.add_argument("--models", nargs="+", choices=("seirm", "staged"),
                        default=["seirm", "staged"])  # fmt: skip
    parser.add_argument("--modes", nargs="+", choices=("expected", "stochastic"),
                        default=["expected", "stochastic"])  # fmt: skip
    parser.add_argument("--days", type=int, default=150)
    parser.add_argument(
        "--replicates",
        type=int,
        default=4,
        help="stochastic runs per model and dt (one seeded call, as columns)",
    )
    parser.add_argument("--initial-infected", type=int, default=100)
    parser.add_argument("--r", type=float, default=None, help="R for every model")
    args = parser.parse_args(argv)

    graph = SyntheticPopulation(args.agents, seed=0)[0]
    contacts = sum(graph.num_edges(r) for r in graph.relations)
    print(f"SyntheticPopulation({args.agents:,}, seed=0): {contacts:,} contacts; "
          f"{args.days} days, {args.initial_infected} initially infected, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads, load average "
          f"{os.getloadavg()[0]:.2f} at the start")  # fmt: skip
    header = ("| model | mode | dt | final size | peak | peak day | time (s) |\n"
              "|---|---|---:|---:|---:|---:|---:|")  # fmt: skip
    rows, summary = [header], []
    for model in args.models:
        r = args.r if args.r is not None else DEFAULT_R[model]
        for mode in args.modes:
            out = {}
            for dt in STEP_LENGTHS:
                o = out[dt] = run(model, graph, r, dt, mode, args.days, args.replicates,
                                  args.initial_infected)  # fmt: skip
                stochastic_columns = mode == "stochastic" and args.replicates > 1
                se = (lambda v: f" ± {v:.4f}") if stochastic_columns else (lambda v: "")
                rows.append(f"| {model} (R={r:g}) | {mode} | {dt:g} | {o.final_size:.4f}"
                            f"{se(o.final_size_se)} | {o.peak:.4f}{se(o.peak_se)} | "
                            f"{o.peak_day:.2f} | {o.seconds:.1f} |")  # fmt: skip
                print(rows[-1], flush=True)
            for name in ("final_size", "peak"):
                v = [getattr(out[dt], name) for dt in STEP_LENGTHS]
                # two standard errors of the difference of the last two means (0 if expected)
                se = [getattr(out[dt], f"{name}_se") for dt in STEP_LENGTHS[1:]]
                noise = 2 * (se[0] ** 2 + se[1] ** 2) ** 0.5
                last, first = abs(v[1] - v[2]), abs(v[0] - v[1])
                verdict = "yes" if last < first else ("within noise" if last < noise else "no")
                summary.append(
                    f"| {model} | {mode} | {name} | {relative(v[0], v[1]):.2%} | "
                    f"{relative(v[1], v[2]):.2%} | {verdict} |"
                )
    print("\n" + "\n".join(rows))
    print("\n| model | mode | value | 1 vs 0.5 | 0.5 vs 0.25 | shrinks |")
    print("|---|---|---|---:|---:|---|")
    print("\n".join(summary))
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
