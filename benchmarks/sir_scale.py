"""SIR at scale: lpm-graph against Starsim on a static random network.

Run ``python benchmarks/sir_scale.py`` (1e6 agents, mean degree 10, 100 daily steps; a few
minutes on 2 cores); ``--num-agents 100000 --repeats 1`` is a quick check, ``--no-peers`` skips
Starsim (``pip install starsim``). Prints a Markdown table and writes it to ``--output``.

lpm-graph, ``SIR(0.05, 0.1, dt=1, order="infect_first")``, 100 initial infected: graph build
(``erdos_renyi``, excluded from the runs); a first stochastic run, which also builds and caches
the CSR; then medians over ``--repeats`` of (a) the stochastic forward under ``no_grad``, (b) the
expected-value forward + backward of the final R count, (c) the stochastic forward + backward
(straight-through): wall time and agent-steps/s (N * steps / time); and peak RSS.

Starsim runs in a child process (its peak RSS is its own) with the same SIR:

* network ``ss.RandomNet(n_contacts=d, dynamic=False)``: Starsim halves ``n_contacts`` and
  creates ``N d / 2`` edges (``d / 2`` per agent as source, random targets), each transmitting
  both ways, so the mean degree is exactly ``d`` (even ``d``), as in ``erdos_renyi(N, d)``.
  Degrees are ``d/2 + Poisson(d/2)`` (variance ``d/2``) against Poisson(d) for G(n, m), and
  Starsim keeps its few self-loops and repeated pairs.
* ``beta = ss.perday(0.05)``: Starsim's per-step, per-edge, per-direction probability is
  ``1 - exp(-0.05 dt)``, the same ``p`` as ours.
* Starsim recovers an agent at the first step ``t >= t_inf + dur_inf``, after
  ``ceil(dur_inf) - 1`` infectious steps; ``dur_inf = 1 + Exponential(mean 1/0.1)`` days makes
  that count geometric with daily recovery probability ``1 - exp(-0.1)``, exactly ours. (Its
  initial infected transmit one extra step; seeding is Bernoulli(100 / N) per agent.)
* ``p_death = 0``; ``dur = 100`` days at ``dt = 1`` day, which Starsim runs as 101 steps (days
  0..100); its agent-days/s counts the steps it ran.

Starsim's one-time costs are reported but not timed: a small warm-up sim (numba JIT or cache
load) and ``sim.init()`` (people, network); only ``sim.run()`` is timed. Attack rates
(1 - S_final / N) show the epidemics are comparable. The machine is shared and noisy: compare
numbers from one run only.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

TAU, GAMMA, SEEDS = 0.05, 0.1, 100
CASES = {
    "a": "(a) stochastic forward, no_grad",
    "b": "(b) expected-value forward + backward",
    "c": "(c) stochastic forward + backward (straight-through)",
}


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def peak_rss_gib(own_process: bool = False) -> float:
    """Peak RSS. Linux carries ru_maxrss over fork + exec, so a child reads VmHWM instead."""
    if own_process and os.path.exists("/proc/self/status"):
        with open("/proc/self/status") as f:
            return next(int(x.split()[1]) for x in f if x.startswith("VmHWM")) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def run_ours(args) -> dict:
    import torch

    from lpm_graph import simulate
    from lpm_graph.datasets import erdos_renyi
    from lpm_graph.protocols import SIR

    torch.set_num_threads(args.threads)
    n, steps = args.num_agents, args.steps
    build, g = timed(lambda: erdos_renyi(n, args.mean_degree, seed=0))
    sir = SIR(transmission_rate=TAU, recovery_rate=GAMMA, dt=1.0, order="infect_first")

    def forward():
        with torch.no_grad():
            return simulate(sir, g, steps=steps, initial_infected=SEEDS, seed=1)

    def forward_backward(mode):
        sir.zero_grad(set_to_none=True)
        traj = simulate(sir, g, steps=steps, initial_infected=SEEDS, seed=1, mode=mode)
        traj.counts["R"][-1].backward()
        return traj

    def attack(traj) -> float:
        return 1.0 - traj.counts["S"][-1].item() / n

    first, traj = timed(forward)
    out = {"build": build, "first": first, "attack_a": attack(traj), "torch": torch.__version__}
    cases = {"a": forward, "b": lambda: forward_backward("expected")}
    cases["c"] = lambda: forward_backward("stochastic")
    for key, fn in cases.items():
        times = [timed(fn) for _ in range(args.repeats)]
        out[key] = statistics.median(t for t, _ in times)
        out.setdefault(f"attack_{key}", attack(times[-1][1]))
    out["rss"] = peak_rss_gib()
    return out


def run_starsim(args) -> dict:
    import starsim as ss

    def make(n: int, days: int):
        sir = ss.SIR(
            beta=ss.perday(TAU),
            init_prev=ss.bernoulli(p=min(1.0, SEEDS / n)),
            dur_inf=ss.expon(scale=ss.days(1 / GAMMA), loc=ss.days(1)),
            p_death=0,
        )
        net = ss.RandomNet(n_contacts=args.mean_degree, dynamic=False)
        kw = dict(start=0, dur=ss.days(days), dt=ss.days(1), rand_seed=1, verbose=0)
        return ss.Sim(n_agents=n, diseases=sir, networks=net, **kw)

    warmup, _ = timed(lambda: make(10_000, 10).run())
    inits, runs = [], []
    for _ in range(args.repeats):
        sim = make(args.num_agents, args.steps)
        inits.append(timed(sim.init)[0])
        runs.append(timed(sim.run)[0])
    s_final = float(sim.results.sir.n_susceptible[-1])
    return {
        "version": ss.__version__,
        "warmup": warmup,
        "init": statistics.median(inits),
        "run": statistics.median(runs),
        "steps": int(sim.t.npts),
        "degree": 2 * len(sim.networks[0]) / args.num_agents,
        "attack": 1.0 - s_final / args.num_agents,
        "rss": peak_rss_gib(own_process=True),
    }


def peer_in_child(args) -> dict:
    """Starsim in a fresh interpreter, so that its memory and threads are its own."""
    flags = ["--num-agents", str(args.num_agents), "--mean-degree", str(args.mean_degree)]
    flags += ["--steps", str(args.steps), "--repeats", str(args.repeats), "--peer-child"]
    proc = subprocess.run([sys.executable, __file__, *flags], capture_output=True, text=True)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    if proc.returncode or not lines:
        return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(lines[-1])


def table(args, ours: dict, peer: dict | None) -> str:
    n, steps = args.num_agents, args.steps

    def row(system, what, t, agent_steps=None, attack=None):
        rate = f"{agent_steps / t:.3g}" if agent_steps else ""
        att = f"{attack:.4f}" if attack is not None else ""
        return f"| {system} | {what} | {t:.2f} | {rate} | {att} |"

    lines = [
        f"N = {n:,}, mean degree {args.mean_degree:g}, {steps} steps (dt = 1 day), "
        f"median of {args.repeats}, torch {ours['torch']} with {args.threads} threads",
        "",
        "| system | measurement | time (s) | agent-steps/s | attack rate |",
        "|---|---|---:|---:|---:|",
        row("lpm-graph", "graph build (erdos_renyi, not in the runs)", ours["build"]),
        row("lpm-graph", "first run: stochastic forward + CSR build", ours["first"], n * steps),
    ]
    for key, what in CASES.items():
        lines.append(row("lpm-graph", what, ours[key], n * steps, ours[f"attack_{key}"]))
    notes = [f"- lpm-graph peak RSS: {ours['rss']:.2f} GiB"]
    if peer and "error" not in peer:
        name, peer_steps, attack = f"Starsim {peer['version']}", peer["steps"], peer["attack"]
        lines += [
            row(name, "warm-up sim, N = 10,000 (numba JIT / cache load)", peer["warmup"]),
            row(name, "init: people + RandomNet (not in the run)", peer["init"]),
            row(name, f"SIR forward ({peer_steps} steps)", peer["run"], n * peer_steps, attack),
        ]
        speed = (n * steps / ours["a"]) / (n * peer_steps / peer["run"])
        notes += [
            f"- Starsim peak RSS (own process): {peer['rss']:.2f} GiB; mean degree "
            f"{peer['degree']:.3f}; single-threaded (numba, parallel=False)",
            f"- forward, ours / Starsim: wall time {ours['a'] / peer['run']:.2f}x, "
            f"agent-steps/s {speed:.2f}x (> 1: lpm-graph faster)",
        ]
    elif peer:
        notes.append(f"- Starsim skipped: {peer['error']}")
    return "\n".join([*lines, "", *notes]) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-agents", type=int, default=1_000_000)
    p.add_argument("--mean-degree", type=float, default=10)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--no-peers", action="store_true", help="skip Starsim")
    p.add_argument("--output", type=Path, default=Path("benchmarks/results/sir_scale.md"))
    p.add_argument("--peer-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.peer_child:
        print(json.dumps(run_starsim(args)))
        return
    print(f"lpm-graph: N = {args.num_agents:,}, {args.repeats} repeats ...", flush=True)
    ours = run_ours(args)
    peer = None
    if not args.no_peers:
        print("Starsim (child process) ...", flush=True)
        peer = peer_in_child(args)
    text = table(args, ours, peer)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(text + f"\nwritten to {args.output}")


if __name__ == "__main__":
    main()
