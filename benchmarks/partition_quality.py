"""Partition quality for partitioned simulation: METIS against contiguous and by-household
partitions of a 200,000-agent SyntheticPopulation, for k = 2, 4 and 8 ranks.

Run ``python benchmarks/partition_quality.py`` (about a minute on 2 cores);
``--num-agents 20000 --parts 2`` is a quick check. Prints a Markdown table and writes it to
``--output`` (default ``benchmarks/results/partition_quality.md``, which git ignores).

What the columns mean (see :class:`lpm_graph.distributed.PartitionQuality`):

- edge cut: directed edges (all four relations; each contact is stored in both directions)
  whose two agents are on different ranks, and their share of all edges;
- halo: rows received per exchange, summed over the ranks (the communication volume of one
  halo exchange, per per-agent value), and the largest rank's halo as a share of its own agents;
- halo by relation: the same total for each relation alone (their union is the halo);
- balance: the largest part over the mean part (1 = perfect);
- time: building the partition (METIS itself plus the halo and send lists).

The population numbers the members of a household consecutively, which favours contiguous
partitions; the ``shuffled ids`` rows relabel the agents at random first (any real data set
whose ids do not follow the contact structure), where a contiguous split is a random one.
The ``no community layer`` rows drop the random community contacts (an expander graph that
no partition cuts well) to show what the structured layers alone cost.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch_geometric.data import HeteroData

from lpm_graph import PopulationGraph
from lpm_graph.datasets import SyntheticPopulation
from lpm_graph.distributed import Partition


def without(graph: PopulationGraph, name: str) -> PopulationGraph:
    """The same population without the relation ``name``."""
    data = HeteroData()
    data["agent"].num_nodes = graph.num_nodes()
    for attr, value in graph.node_attrs().items():
        data["agent"][attr] = value
    for rel in graph.relations:
        if rel[1] != name:
            data[rel].edge_index = graph.edge_index(rel)
    return PopulationGraph(data)


def shuffled(graph: PopulationGraph, seed: int) -> PopulationGraph:
    """The same population with agent ids permuted at random."""
    n = graph.num_nodes()
    new_id = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    data = HeteroData()
    data["agent"].num_nodes = n
    for name, value in graph.node_attrs().items():
        moved = torch.empty_like(value)
        moved[new_id] = value
        data["agent"][name] = moved
    for rel in graph.relations:
        data[rel].edge_index = new_id[graph.edge_index(rel)]
    return PopulationGraph(data)


def measure(label: str, ids: str, build: Callable[..., Partition], *args: object) -> dict:
    start = time.perf_counter()
    partition = build(*args)
    elapsed = time.perf_counter() - start
    q = partition.quality()
    largest = max(h / max(o, 1) for h, o in zip(q.halo, q.owned))
    return {
        "k": q.parts,
        "method": label,
        "ids": ids,
        "cut": q.edge_cut,
        "cut_pct": 100 * q.edge_cut_fraction,
        "halo": q.total_halo,
        "halo_max_pct": 100 * largest,
        "by_relation": {rel: sum(v) for rel, v in q.halo_by_relation.items()},
        "balance": q.balance,
        "time": elapsed,
        "edges": q.num_edges,
    }


def table(rows: list[dict], relations: list[str]) -> str:
    head = (
        "| k | partition | ids | edge cut | cut % | halo rows (all ranks) | largest halo / own "
        "agents | " + " | ".join(f"halo {r}" for r in relations) + " | balance | time (s) |"
    )
    lines = [head, "|" + "---|" * (9 + len(relations))]
    for r in rows:
        rel = " | ".join(
            f"{r['by_relation'][x]:,}" if x in r["by_relation"] else "-" for x in relations
        )
        lines.append(
            f"| {r['k']} | {r['method']} | {r['ids']} | {r['cut']:,} | {r['cut_pct']:.2f} | "
            f"{r['halo']:,} | {r['halo_max_pct']:.1f} % | {rel} | {r['balance']:.3f} | "
            f"{r['time']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-agents", type=int, default=200_000)
    parser.add_argument("--parts", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--output", default=str(Path(__file__).parent / "results/partition_quality.md")
    )
    args = parser.parse_args()
    torch.set_num_threads(2)

    start = time.perf_counter()
    graph = SyntheticPopulation(args.num_agents, seed=args.seed)[0]
    built = time.perf_counter() - start
    variants = [
        ("household order", graph),
        ("shuffled", shuffled(graph, args.seed + 1)),
        ("household order, no community layer", without(graph, "community")),
    ]
    relations = [rel[1] for rel in graph.relations]
    methods = [
        ("METIS", Partition.metis, ()),
        ("contiguous", Partition.contiguous, ()),
        ("by household", Partition.by_attribute, ("household",)),
    ]
    rows = []
    for k in args.parts:
        for ids, g in variants:
            for label, build, extra in methods:
                rows.append(measure(label, ids, build, g, *extra, k))
        print(table(rows[-3 * len(variants) :], relations), flush=True)

    import pymetis

    edges = rows[0]["edges"]
    text = (
        f"# Partition quality: SyntheticPopulation({args.num_agents:,}, seed={args.seed})\n\n"
        f"{edges:,} directed edges ({', '.join(relations)}), built in {built:.2f} s. "
        f"pymetis {getattr(pymetis, 'version', '?')}, "
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"2 threads.\n\n{table(rows, relations)}\n"
    )
    print()
    print(text)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(text)


if __name__ == "__main__":
    main()
