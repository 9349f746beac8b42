"""SIR at scale: lpm-graph against Starsim on a static random network.

Run ``python benchmarks/sir_scale.py`` (1e6 agents, mean degree 10, 100 daily steps; minutes on
2 cores); ``--num-agents 100000 --repeats 1`` is a quick check, ``--no-peers`` skips Starsim
(``pip install starsim``). Prints a Markdown table and writes it to ``--output``.

lpm-graph, ``SIR(0.05, 0.1, dt=1, order="infect_first")``, 100 initial infected: graph build
(``erdos_renyi``, excluded from the runs); a first stochastic run, which also builds and caches
the CSR; then medians over ``--repeats`` of (a) the stochastic forward under ``no_grad``, (b) the
expected-value forward + backward of the final R count, (c) the stochastic forward + backward
(straight-through): wall time, agent-steps/s (N * steps / time), peak RSS. Starsim runs first,
in a child process (so its memory is its own), with the same SIR:

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

Starsim's one-time costs are reported, not timed: a small warm-up sim (numba JIT or cache load)
and ``sim.init()`` (people, network). Attack rates (1 - S_final / N) show that the epidemics are
comparable. The machine is shared and noisy: compare numbers from one run only.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

TAU, GAMMA, SEEDS = 0.05, 0.1, 100
CASES = {"a": "(a) stochastic forward, no_grad", "b": "(b) expected-value forward + backward"}
CASES["c"] = "(c) stochastic forward + backward (straight-through)"


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def peak_rss_gib(since_reset: bool = False) -> float | None:
    """Peak RSS of this process: ru_maxrss, or VmHWM since the last reset_peak_rss() (Linux;
    also for the child, as Linux carries ru_maxrss over fork + exec)."""
    if not since_reset:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    with contextlib.suppress(OSError), open("/proc/self/status") as f:
        return next(int(x.split()[1]) for x in f if x.startswith("VmHWM")) / 2**20
    return None


def reset_peak_rss() -> None:
    """Hand freed heap back to the OS, then restart VmHWM from the current RSS (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")


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
    out = {"build": build, "first": first, "rss_first": peak_rss_gib(), "torch": torch.__version__}
    cases = {"a": forward, "b": lambda: forward_backward("expected")}
    cases["c"] = lambda: forward_backward("stochastic")
    for key, fn in cases.items():
        times = []
        traj = reset_peak_rss()  # drop the previous trajectory first
        for _ in range(args.repeats):
            traj = None
            t, traj = timed(fn)
            times.append(t)
        out[key] = statistics.median(times)
        out[f"attack_{key}"], out[f"rss_{key}"] = attack(traj), peak_rss_gib(since_reset=True)
    out["rss"] = peak_rss_gib()
    return out


def run_starsim(args) -> dict:
    import starsim as ss

    def make(n: int, days: int):
        dur_inf = ss.expon(scale=ss.days(1 / GAMMA), loc=ss.days(1))  # 1 + Exp(mean 10) days
        seeding = ss.bernoulli(p=min(1.0, SEEDS / n))
        sir = ss.SIR(beta=ss.perday(TAU), init_prev=seeding, dur_inf=dur_inf, p_death=0)
        net = ss.RandomNet(n_contacts=args.mean_degree, dynamic=False)
        kw = dict(start=0, dur=ss.days(days), dt=ss.days(1), rand_seed=1, verbose=0)
        return ss.Sim(n_agents=n, diseases=sir, networks=net, **kw)

    warmup, _ = timed(lambda: make(10_000, 10).run())
    inits, runs = [], []
    for _ in range(args.repeats):
        sim = make(args.num_agents, args.steps)
        inits.append(timed(sim.init)[0])
        runs.append(timed(sim.run)[0])
    n, s_final = args.num_agents, float(sim.results.sir.n_susceptible[-1])
    out = dict(version=ss.__version__, warmup=warmup, steps=int(sim.t.npts), attack=1 - s_final / n)
    out.update(init=statistics.median(inits), run=statistics.median(runs))
    return dict(out, degree=2 * len(sim.networks[0]) / n, rss=peak_rss_gib(since_reset=True))


def peer_in_child(args) -> dict:
    """Starsim in a fresh interpreter, so that its memory and threads are its own."""
    cmd = [sys.executable, __file__, *sys.argv[1:], "--peer-child"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    if proc.returncode or not lines:
        return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(lines[-1])


def table(args, ours: dict, peer: dict | None) -> str:
    n, steps = args.num_agents, args.steps

    def row(system, what, t, agent_steps=None, attack=None, rss=None):
        rate = f"{agent_steps / t:.3g}" if agent_steps else ""
        att, mem = (f"{x:.{k}f}" if x is not None else "" for x, k in ((attack, 4), (rss, 2)))
        return f"| {system} | {what} | {t:.2f} | {rate} | {att} | {mem} |"

    lines = [
        f"N = {n:,}, mean degree {args.mean_degree:g}, {steps} steps (dt = 1 day), "
        f"median of {args.repeats}, torch {ours['torch']} with {args.threads} threads",
        "",
        "| system | measurement | time (s) | agent-steps/s | attack rate | peak RSS (GiB) |",
        "|---|---|---:|---:|---:|---:|",
        row("lpm-graph", "graph build (erdos_renyi, not in the runs)", ours["build"]),
        row("lpm-graph", "first run: stochastic forward + CSR build", ours["first"], n * steps,
            rss=ours["rss_first"]),
    ]  # fmt: skip
    for key, what in CASES.items():
        attack, rss = ours[f"attack_{key}"], ours[f"rss_{key}"]
        lines.append(row("lpm-graph", what, ours[key], n * steps, attack, rss))
    notes = [
        f"- peak RSS: per lpm-graph case, VmHWM from that case's start (after freeing the "
        f"previous one); whole lpm-graph process (getrusage) {ours['rss']:.2f} GiB"
    ]
    if peer and "error" not in peer:
        name, peer_steps, attack = f"Starsim {peer['version']}", peer["steps"], peer["attack"]
        lines += [
            row(name, "warm-up sim, N = 10,000 (numba JIT / cache load)", peer["warmup"]),
            row(name, "init: people + RandomNet (not in the run)", peer["init"]),
            row(name, f"SIR forward ({peer_steps} steps)", peer["run"], n * peer_steps, attack,
                peer["rss"]),
        ]  # fmt: skip
        speed = (n * steps / ours["a"]) / (n * peer_steps / peer["run"])
        notes += [
            f"- Starsim: own process (peak RSS over its whole run), single-threaded (numba, "
            f"parallel=False); realised mean degree {peer['degree']:.3f}",
            f"- forward (a), ours / Starsim: wall time {ours['a'] / peer['run']:.2f}x, "
            f"agent-steps/s {speed:.2f}x (> 1: lpm-graph faster)",
        ]
    elif peer:
        notes.append(f"- Starsim skipped: {peer['error']}")
    return "\n".join([*lines, "", *notes]) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-agents", type=int, default=1_000_000)
    p.add_argument("--mean-degree", type=float, default=10)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--no-peers", action="store_true", help="skip Starsim")
    p.add_argument("--output", type=Path, default=Path("benchmarks/results/sir_scale.md"))
    p.add_argument("--peer-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.peer_child:
        print(json.dumps(run_starsim(args)))
        return
    peer = None
    if not args.no_peers:  # first, while this process is still small
        print("Starsim (child process) ...", flush=True)
        peer = peer_in_child(args)
    print(f"lpm-graph: N = {args.num_agents:,}, {args.repeats} repeats ...", flush=True)
    ours = run_ours(args)
    text = table(args, ours, peer)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(text + f"\nwritten to {args.output}")


if __name__ == "__main__":
    main()
