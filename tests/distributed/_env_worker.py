"""One rank of a torchrun-style launch (run by test_launch.py, not collected by pytest):
``init_from_env`` from the environment, then a partitioned SIR; writes ``rank<r>.pt`` to the
folder given as the first argument."""

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from lpm_graph import PopulationGraph
from lpm_graph.distributed import Partition, gather_rows, init_from_env, simulate_partitioned
from lpm_graph.protocols import SIR

STEPS = 12


def graph() -> PopulationGraph:
    gen = torch.Generator().manual_seed(5)
    return PopulationGraph.from_edge_index(torch.randint(0, 300, (2, 1500), generator=gen), 300)


def protocol() -> SIR:
    return SIR(0.15, 0.1)


def main(folder: str) -> None:
    worker = init_from_env(timeout=60)
    g = graph()
    partition = Partition.contiguous(g, worker.world_size)
    run = simulate_partitioned(protocol(), g, partition, STEPS, initial_infected=6, seed=2)
    shard = partition.shard(g, worker.rank)
    infectious = gather_rows(run.final_state["I"], shard)
    who = torch.tensor([worker.rank, worker.world_size])
    result = {"who": who, "backend": worker.backend, "counts": run.counts, "I": infectious}
    torch.save(result, Path(folder) / f"rank{worker.rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
