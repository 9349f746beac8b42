"""SEIRM step at scale: agent-steps per second and memory per agent, forward and backward.

Run ``python benchmarks/seirm_step.py`` (1,000,000 agents with 10 to 20 contacts each; a few
minutes on 2 cores); ``--num-agents 100000 --repeats 1`` is a quick check. Prints a Markdown
table and writes it to ``--output``.

Population: every agent picks ``U{5..10}`` partners uniformly at random and each contact is
undirected, so degrees are 10 to 20 plus the contacts others picked (mean 15); age groups drawn
with the Franklin County shares of the bundled GradABM population. Model:
``SEIRM(R=2.5, mortality=0.02)`` with the default fixed stays (E 3 days, I 5 days) and the Gamma
kernel. The state is taken mid-epidemic: 1% seeded, then ``--warmup`` steps under ``no_grad``.

Measured (medians over ``--repeats``), each from that same state:

* (a) ``--steps`` stochastic steps, forward only (``no_grad``);
* (b) ``--steps`` stochastic steps, forward + backward of new infections + deaths
  (straight-through);
* (c) the same in expected-value mode;

agent-steps/s = ``N * steps / time`` and the peak resident memory of each case (VmHWM from the
case's start, after freeing the previous one) per agent.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from sir_scale import peak_rss_gib, reset_peak_rss, timed  # noqa: E402

AGE_SHARES = (14468, 8137, 7865, 9450, 12140, 10983, 4588, 3285)  # Franklin, 70,916 agents


def population(n: int, seed: int):
    import torch

    from lpm_graph import PopulationGraph

    gen = torch.Generator().manual_seed(seed)
    picks = torch.randint(5, 11, (n,), generator=gen)
    src = torch.repeat_interleave(torch.arange(n), picks)
    dst = torch.randint(0, n, (src.numel(),), generator=gen)
    keep = src != dst
    edges = torch.stack([src[keep], dst[keep]])
    graph = PopulationGraph.from_edge_index(edges, n, undirected=True)
    shares = torch.tensor(AGE_SHARES, dtype=torch.float64)
    age = torch.multinomial(shares / shares.sum(), n, replacement=True, generator=gen)
    graph.set_node_attrs("agent", age_group=age)
    return graph


def run(args) -> dict:
    import torch

    from lpm_graph import simulate
    from lpm_graph.protocols import SEIRM

    torch.set_num_threads(args.threads)
    n = args.num_agents
    build, graph = timed(lambda: population(n, 0))
    degree = graph.num_edges() / n
    model = SEIRM(2.5, 0.02)

    def warm(mode):
        with torch.no_grad():
            traj = simulate(
                model, graph, args.warmup, initial_infected=0.01, seed=1, mode=mode,
                record_states=True,
            )  # fmt: skip
        return traj.states[-1]

    states = {"stochastic": warm("stochastic"), "expected": warm("expected")}

    def forward():
        with torch.no_grad():
            return simulate(model, graph, args.steps, state=states["stochastic"], seed=2)

    def forward_backward(mode):
        model.zero_grad(set_to_none=True)
        traj = simulate(model, graph, args.steps, state=states[mode], seed=2, mode=mode)
        # touches every phase: the infection draws (through R) and the deaths
        (traj.flows["infections"].sum() + traj.counts["M"][-1]).backward()
        return traj

    cases = {
        "a": ("(a) stochastic forward, no_grad", forward),
        "b": ("(b) stochastic forward + backward (straight-through)", lambda: forward_backward(
            "stochastic")),
        "c": ("(c) expected-value forward + backward", lambda: forward_backward("expected")),
    }  # fmt: skip
    out = {"build": build, "degree": degree, "torch": torch.__version__, "cases": {}}
    for key, (what, fn) in cases.items():
        fn()  # warm caches (CSR, contact normalisation)
        reset_peak_rss()
        times = []
        for _ in range(args.repeats):
            t, _ = timed(fn)
            times.append(t)
        rss = peak_rss_gib(since_reset=True)
        out["cases"][key] = (what, statistics.median(times), rss)
    return out


def table(args, out: dict) -> str:
    n, steps = args.num_agents, args.steps
    lines = [
        f"SEIRM, N = {n:,}, mean degree {out['degree']:.2f}, {steps} step(s) from a mid-epidemic "
        f"state, median of {args.repeats}, torch {out['torch']} with {args.threads} threads",
        "",
        "| measurement | time (s) | agent-steps/s | peak RSS (GiB) | bytes per agent |",
        "|---|---:|---:|---:|---:|",
        f"| population build (not timed in the runs) | {out['build']:.2f} | | | |",
    ]
    for what, t, rss in out["cases"].values():
        per_agent = f"{rss * 2**30 / n:.0f}" if rss is not None else ""
        mem = f"{rss:.2f}" if rss is not None else ""
        lines.append(f"| {what} | {t:.3f} | {n * steps / t:.3g} | {mem} | {per_agent} |")
    lines += [
        "",
        "- peak RSS: VmHWM from the case's start; it includes the graph, its CSR and the "
        "starting states, so bytes per agent is an upper bound on what the step itself needs",
        "- target (issue 3): forward + backward at least 4e6 agent-steps/s (10x AgentTorch's "
        "COVID model as measured at about 4e5 on this kind of machine)",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-agents", type=int, default=1_000_000)
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--output", type=Path, default=Path("benchmarks/results/seirm_step.md"))
    args = p.parse_args()
    print(f"SEIRM step: N = {args.num_agents:,} ...", flush=True)
    text = table(args, run(args))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(text + f"\nwritten to {args.output}")


if __name__ == "__main__":
    main()
