"""Secure SIR / SEIRM: cost per step with 2 parties in separate processes, and how it scales.

    python benchmarks/secure.py                      # SIR, 100,000 private agents x 60 steps
    python benchmarks/secure.py --model seirm        # SEIRM on a synthetic population
    python benchmarks/secure.py --device cuda        # the parties' shares on the GPU
    python benchmarks/secure.py --agents 20000 --steps 10 --scaling 0   # quick check

Prints (and writes as Markdown, default ``benchmarks/results/secure.md``):

1. the full run (``--agents`` private agents, mean degree ``--degree``, ``--steps`` steps,
   2 parties, each in its own process, plus a dealer process; gloo over localhost): wall time,
   rounds, bytes sent per party and dealer bytes per party, per step (median) and in total; the
   plaintext ``simulate`` time of the same run for the ratio; and whether the daily counts
   equal the plaintext ones;
2. scaling (in-process parties, a 2-step run): bytes per party per step for several numbers
   of agents and mean degrees, showing that the bytes grow with the agents and not with the
   edges (aggregation is local).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from lpm_graph import simulate
from lpm_graph.datasets import SyntheticPopulation
from lpm_graph.datasets.generators import erdos_renyi
from lpm_graph.protocols import SEIRM, SIR
from lpm_graph.secure import SEIRMInputs, Session, SIRInputs, launch, secure_seirm, secure_sir

TAU, GAMMA = 0.06, 0.1
MORTALITY = (0.0, 0.005, 0.01, 0.03, 0.06, 0.12, 0.25, 0.4)


def protocol(model: str) -> SIR | SEIRM:
    if model == "sir":
        return SIR(TAU, GAMMA, learnable=False)
    mortality = torch.tensor(MORTALITY, dtype=torch.float64)
    return SEIRM(torch.tensor(1.8, dtype=torch.float64), mortality, learnable=False)


def population(model: str, agents: int, degree: float, seed: int):
    """SIR: G(n, m) with mean degree ``degree``; SEIRM: a synthetic population (households,
    schools, workplaces, community; ages)."""
    if model == "sir":
        return erdos_renyi(agents, degree, seed=seed)
    return SyntheticPopulation(agents, seed=seed)[0]


def party(session: Session, model: str, agents: int, degree: float, steps: int, seed: int) -> dict:
    graph = population(model, agents, degree, seed).to(session.device)
    start = time.perf_counter()
    run_secure = secure_sir if model == "sir" else secure_seirm
    run = run_secure(protocol(model), graph, steps, session)
    if session.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    per_step = [s for s in session.cost.steps if isinstance(s.step, int)]
    return {
        "seconds": seconds,
        "counts": {k: v.tolist() for k, v in {**run.counts, **run.flows}.items()},
        "step_seconds": [s.seconds for s in per_step],
        "step_rounds": [s.rounds for s in per_step],
        "step_bytes": [s.bytes_per_party for s in per_step],
        "step_dealer": [s.dealer_bytes for s in per_step],
        "rounds": session.cost.rounds,
        "bytes": session.cost.bytes_per_party,
        "openings": dict(session.audit.kinds()),
    }


def scaling(agents: int, degree: float) -> tuple[int, int]:
    graph = erdos_renyi(agents, degree, seed=0)
    session = Session(2, seed=0, owner=SIRInputs(agents, 10, seed=0))
    secure_sir(SIR(TAU, GAMMA, learnable=False), graph, 2, session)
    return graph.num_edges(), session.cost.steps[-1].bytes_per_party


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("sir", "seirm"), default="sir")
    parser.add_argument("--device", default="cpu", help="where the parties keep their shares")
    parser.add_argument("--agents", type=int, default=100_000)
    parser.add_argument("--degree", type=float, default=10.0)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frac-bits", type=int, default=16, help="fixed-point fractional bits")
    parser.add_argument("--scaling", type=int, default=1, help="0: skip the scaling table")
    parser.add_argument("--output", default=None, help="default benchmarks/results/secure*.md")
    args = parser.parse_args()
    suffix = "" if args.model == "sir" else f"_{args.model}"
    suffix += "" if args.device == "cpu" else f"_{torch.device(args.device).type}"
    output = args.output or f"benchmarks/results/secure{suffix}.md"
    lines = [
        f"# Secure {args.model.upper()}, 2 parties: {args.agents:,} agents x {args.steps} steps, "
        f"{args.frac_bits} fractional bits, shares on {args.device}",
        "",
    ]
    if args.model == "sir":
        owner = SIRInputs(args.agents, 20, seed=args.seed)
    else:
        owner = SEIRMInputs(protocol("seirm"), args.agents, 20, seed=args.seed)
    start = time.perf_counter()
    results = launch(
        party,
        parties=2,
        seed=args.seed,
        owner=owner,
        frac_bits=args.frac_bits,
        args=(args.model, args.agents, args.degree, args.steps, args.seed),
        timeout=1800,
        device=args.device,
        force_insecure=True,  # seeded (reproducible) randomness: to check counts = plaintext
    )
    total = time.perf_counter() - start
    r = results[0]
    graph = population(args.model, args.agents, args.degree, args.seed)
    times = []
    for _ in range(3):  # the first run builds the CSR: take the median of three
        plain_start = time.perf_counter()
        plain = simulate(
            protocol(args.model), graph, args.steps, initial_infected=20, seed=args.seed,
            dtype=torch.float64,
        )  # fmt: skip
        times.append(time.perf_counter() - plain_start)
    plain_seconds = statistics.median(times)
    same = all(r["counts"][k] == v.tolist() for k, v in {**plain.counts, **plain.flows}.items())
    mb = 1024**2
    lines += [
        "| quantity | value |",
        "|---|---:|",
        f"| secure run (party 0, steps only) | {r['seconds']:.1f} s |",
        f"| launch to results (spawn, imports, setup, run) | {total:.1f} s |",
        f"| plaintext simulate on the CPU, same run (median of 3) | {plain_seconds:.2f} s |",
        f"| ratio secure / plaintext | {r['seconds'] / plain_seconds:.0f}x |",
        f"| median step time | {statistics.median(r['step_seconds']):.3f} s |",
        f"| rounds per step | {statistics.median(r['step_rounds']):.0f} |",
        f"| bytes sent per party per step | {statistics.median(r['step_bytes']) / mb:.2f} MiB |",
        f"| bytes per party per step per agent | "
        f"{statistics.median(r['step_bytes']) / args.agents:.1f} |",
        f"| dealer bytes per party per step | {statistics.median(r['step_dealer']) / mb:.2f} MiB |",
        f"| total bytes sent per party | {r['bytes'] / mb:.0f} MiB |",
        f"| final recovered (secure / plaintext) | {r['counts']['R'][-1]:.0f} / "
        f"{float(plain.counts['R'][-1]):.0f} |",
        f"| daily counts equal to plaintext | {same} |",
        f"| openings by kind | {r['openings']} |",
        "",
    ]
    if args.scaling and args.model == "sir":
        lines += ["## Bytes per party per step (in-process parties, 2-step run)", ""]
        lines += ["| agents | mean degree | edges | bytes per party | bytes per agent |"]
        lines += ["|---:|---:|---:|---:|---:|"]
        for agents in (10_000, 20_000, 40_000):
            for degree in (4.0, 40.0):
                edges, sent = scaling(agents, degree)
                lines.append(
                    f"| {agents:,} | {degree:g} | {edges:,} | {sent:,} | {sent / agents:.1f} |"
                )
        lines.append("")
    text = "\n".join(lines)
    print(text)
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
