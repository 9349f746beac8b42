"""Ensembles: M seeded runs one by one, batched as replicate columns, and on Ray.

Run ``python benchmarks/ensembles.py`` (SIR and SEIRM, 64 members, 10,000 and 100,000 agents,
100 SIR days / 30 SEIRM days; a few minutes on 2 cores). Prints a Markdown table and writes it
to ``--output``: per way of running, the median wall time of ``--repeats`` runs of the whole
ensemble, members per second and the speed-up over one-by-one. Every way must give the same
members (it checks ``torch.equal`` on every count series against the one-by-one run, and says
so in the table).

* one by one: ``run_ensemble(..., batch_size=1)``: a run per seed, as a loop over
  ``simulate(seed=s)`` would do.
* batched ``B``: ``run_ensemble(..., batch_size=B)``: ``M / B`` runs of ``B`` replicate columns.
* Ray: ``run_ensemble(..., backend="ray", batch_size=B)`` on a local Ray with ``--ray-workers``
  CPUs; ``ray.init`` and the first task's start are not timed (one warm-up run), the transfer
  of the graph and of the results is. Skipped when Ray is not installed.

SIR(0.05, 0.1) on ``erdos_renyi(N, 10)``, 10 initial infections; SEIRM(2.5, 0.02) on
``seirm_step.population(N)`` (U{5..10} partners, Franklin age shares), 1% initial
infections; forward only (``no_grad``), observables only (``keep_final_state=False``).
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from seirm_step import population  # noqa: E402

from lpm_graph.datasets import erdos_renyi  # noqa: E402
from lpm_graph.ensemble import run_ensemble  # noqa: E402
from lpm_graph.protocols import SEIRM, SIR  # noqa: E402


def setup(model: str, n: int):
    if model == "sir":
        return SIR(0.05, 0.1), erdos_renyi(n, 10, seed=0), 10
    return SEIRM(2.5, 0.02), population(n, 0), max(1, n // 100)


def ensemble(protocol, graph, days: int, seeds: list[int], infected: int, **kw):
    with torch.no_grad():
        return run_ensemble(
            protocol, graph, days, seeds, initial_infected=infected, keep_final_state=False, **kw
        )


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["sir", "seirm"], choices=["sir", "seirm"])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--members", type=int, default=64)
    p.add_argument("--batches", type=int, nargs="+", default=[8, 64])
    p.add_argument("--sir-days", type=int, default=100)
    p.add_argument("--seirm-days", type=int, default=30)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--ray-workers", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--ray-batch", type=int, default=8)
    p.add_argument("--output", type=Path, default=Path("benchmarks/results/ensembles.md"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    has_ray = importlib.util.find_spec("ray") is not None
    seeds = list(range(args.members))
    rows = []
    for model in args.models:
        days = args.sir_days if model == "sir" else args.seirm_days
        for n in args.sizes:
            protocol, graph, infected = setup(model, n)
            graph.csr()
            run = functools.partial(ensemble, protocol, graph, days, seeds, infected)

            ways = [("one by one", {"batch_size": 1})]
            ways += [(f"batched {b}", {"batch_size": b}) for b in args.batches]
            if has_ray:
                ray_kw = {"backend": "ray", "batch_size": args.ray_batch,
                          "num_workers": args.ray_workers}  # fmt: skip
                ways.append((f"Ray, {args.ray_workers} workers, batches of {args.ray_batch}",
                             ray_kw))  # fmt: skip
            reference = None
            base = None
            for name, kw in ways:
                if kw.get("backend") == "ray":
                    run(**kw)  # warm-up: starts Ray and its workers
                print(f"{model} N={n:,}: {name} ...", flush=True)
                wall, traj = timed(functools.partial(run, **kw), args.repeats)
                if reference is None:
                    reference, base = traj, wall
                same = all(torch.equal(traj.counts[k], reference.counts[k]) for k in traj.counts)
                rows.append((model.upper(), n, days, name, wall, args.members / wall,
                             base / wall, same))  # fmt: skip
                print(f"  {wall:.2f} s, same members: {same}", flush=True)
    if has_ray:
        import ray

        ray.shutdown()
    lines = [
        f"{args.members} members per ensemble, torch {torch.__version__} with {args.threads} "
        f"threads, median of {args.repeats}; forward only, observables only"
        + ("" if has_ray else "; Ray not installed: its rows are missing"),
        "",
        "| model | agents | days | how | time (s) | members/s | speed-up | same members |",
        "|---|---:|---:|---|---:|---:|---:|---|",
    ]
    for model, n, days, name, wall, rate, speedup, same in rows:
        lines.append(
            f"| {model} | {n:,} | {days} | {name} | {wall:.2f} | {rate:.1f} | "
            f"{speedup:.2f}x | {'yes' if same else 'NO'} |"
        )
    text = "\n".join(lines) + "\n"
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print("\n" + text + f"\nwritten to {args.output}")


if __name__ == "__main__":
    main()
