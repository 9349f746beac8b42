"""Datasets: SyntheticPopulation at 1e6 / 1e7 agents (time, peak memory, statistics against
the inputs) next to Covasim's hybrid population, and the MassachusettsCounty cache.

Run ``python benchmarks/datasets.py`` (about 10 minutes on 2 cores: three 1e6 runs of ours
and of Covasim, one 1e7 run); ``--sizes 100000 --repeats 1 --no-county`` is a quick check.
Each population is built in a fresh child process, so its peak resident memory (ru_maxrss)
is its own; the time excludes importing the libraries. Prints a Markdown table and writes
it to ``--output``.

Peer: Covasim 4.0.1 ``Sim(pop_type="hybrid").initialize()``, which builds its people and
their household / school / work / community contact layers (``pip install covasim``).
Covasim's layers store each contact once; ours store both directions, so "contacts" below
counts undirected pairs for both.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def child_ours(n: int, seed: int) -> dict:
    from lpm_graph.datasets import PopulationSpec, SyntheticPopulation, population_statistics

    start = time.perf_counter()
    graph = SyntheticPopulation(n, seed=seed)[0]
    elapsed = time.perf_counter() - start
    spec = PopulationSpec()
    stats = population_statistics(graph)
    sizes, shares = spec.household_pmf()
    expected = spec.expected_degrees()
    deviation = {
        "age shares": max(
            abs(a / b - 1) for a, b in zip(stats["age_shares"], spec.age_shares) if b
        ),
        "household sizes": max(
            abs(stats["household_sizes"].get(int(k), 0.0) / p - 1) for k, p in zip(sizes, shares)
        ),
        **{f"{rel} degree": abs(stats["mean_degree"][rel] / expected[rel] - 1) for rel in expected},
    }
    return {
        "time": elapsed,
        "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "contacts": sum(graph.num_edges(r) for r in graph.relations) // 2,
        "mean_degree": stats["mean_degree"],
        "deviation": deviation,
    }


def child_covasim(n: int, seed: int) -> dict:
    import covasim as cv

    start = time.perf_counter()
    sim = cv.Sim(pop_size=n, pop_type="hybrid", rand_seed=seed, verbose=0)
    sim.initialize()
    elapsed = time.perf_counter() - start
    return {
        "time": elapsed,
        "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "contacts": sum(len(layer) for layer in sim.people.contacts.values()),
        "version": cv.__version__,
    }


def spawn(kind: str, n: int, seed: int) -> dict | None:
    cmd = [sys.executable, __file__, "--child", kind, str(n), str(seed)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        print(f"{kind} at {n:,} failed:\n{out.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def county_cache(repeats: int) -> dict:
    from lpm_graph.datasets import MassachusettsCounty

    first, second = [], []
    for _ in range(repeats):
        root = Path(tempfile.mkdtemp())
        try:
            start = time.perf_counter()
            MassachusettsCounty(root)
            first.append(time.perf_counter() - start)
            start = time.perf_counter()
            graph = MassachusettsCounty(root)[0]
            second.append(time.perf_counter() - start)
        finally:
            shutil.rmtree(root)
    return {
        "first": statistics.median(first),
        "second": statistics.median(second),
        "edges": graph.num_edges(),
        "agents": graph.num_nodes(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--repeats", type=int, default=3, help="runs per size below 1e7")
    parser.add_argument("--no-covasim", action="store_true")
    parser.add_argument("--no-county", action="store_true")
    parser.add_argument("--covasim-max", type=int, default=1_000_000)
    parser.add_argument("--output", default=str(Path(__file__).parent / "results/datasets.md"))
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, n, seed = args.child
        fn = child_ours if kind == "ours" else child_covasim
        print(json.dumps(fn(int(n), int(seed))))
        return

    lines = ["# Datasets benchmark", "", f"`python benchmarks/{Path(__file__).name}`", ""]
    lines += [
        "| N | system | median time (s) | runs | peak RSS (GiB) | contacts | Covasim / ours |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    deviations = []
    for n in args.sizes:
        repeats = 1 if n >= 10_000_000 else args.repeats
        ours = [r for r in (spawn("ours", n, seed) for seed in range(repeats)) if r]
        peer = []
        if not args.no_covasim and n <= args.covasim_max:
            peer = [r for r in (spawn("covasim", n, seed) for seed in range(repeats)) if r]
        t_ours = statistics.median(r["time"] for r in ours)
        lines.append(
            f"| {n:,} | lpm-graph SyntheticPopulation | {t_ours:.2f} | {len(ours)} | "
            f"{max(r['peak_gib'] for r in ours):.2f} | {ours[0]['contacts']:,} | |"
        )
        if peer:
            t_peer = statistics.median(r["time"] for r in peer)
            lines.append(
                f"| {n:,} | Covasim {peer[0]['version']} hybrid | {t_peer:.2f} | {len(peer)} | "
                f"{max(r['peak_gib'] for r in peer):.2f} | {peer[0]['contacts']:,} | "
                f"{t_peer / t_ours:.2f} |"
            )
        for seed, r in enumerate(ours):
            deviations.append((n, seed, r["deviation"], r["mean_degree"]))
        print("\n".join(lines[-2:]), flush=True)

    lines += ["", "Largest relative deviation of each statistic from its input (per run):", ""]
    names = list(deviations[0][2])
    lines += ["| N | seed | " + " | ".join(names) + " |", "|---:|---:|" + "---:|" * len(names)]
    for n, seed, dev, _ in deviations:
        lines.append(f"| {n:,} | {seed} | " + " | ".join(f"{dev[k]:.2%}" for k in names) + " |")
    lines += ["", "Mean degree per edge type (seed 0): "]
    for n, seed, _, degree in deviations:
        if seed == 0:
            lines.append(f"- {n:,}: " + ", ".join(f"{k} {v:.3f}" for k, v in degree.items()))

    if not args.no_county:
        county = county_cache(5)
        lines += [
            "",
            "## MassachusettsCounty('25011') cache (median of 5, fresh folder each time)",
            "",
            f"- {county['agents']:,} agents, {county['edges']:,} directed edges",
            f"- first load (copy raw files, parse, save): {county['first'] * 1e3:.1f} ms",
            f"- second load (processed cache): {county['second'] * 1e3:.1f} ms",
            f"- ratio: {county['first'] / county['second']:.1f}x",
        ]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.output).write_text(text)


if __name__ == "__main__":
    main()
