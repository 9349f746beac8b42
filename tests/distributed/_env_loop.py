"""One rank started from environment variables (run by test_heartbeat.py, not collected by
pytest): ``init_from_env(heartbeat=...)``, then partitioned SIR runs. ``loop``: in a loop
until killed or 60 s pass, writing ``rank<r>.ready`` (its pid) once it runs; ``finish``: one
run, then rank 0 works on alone (no collective) for twice the heartbeat while rank 1 exits.
"""

import os
import sys
import time
from pathlib import Path

import torch

from lpm_graph import PopulationGraph
from lpm_graph.distributed import Partition, init_from_env, simulate_partitioned
from lpm_graph.protocols import SIR


def main(folder: str, heartbeat: float, mode: str) -> None:
    worker = init_from_env(timeout=120, heartbeat=heartbeat)
    gen = torch.Generator().manual_seed(5)
    graph = PopulationGraph.from_edge_index(torch.randint(0, 300, (2, 1500), generator=gen), 300)
    partition = Partition.contiguous(graph, worker.world_size)
    run = lambda: simulate_partitioned(SIR(0.15, 0.1), graph, partition, 5, initial_infected=6)  # noqa: E731
    if mode == "finish":
        run()
        if worker.rank == 0:
            time.sleep(2 * heartbeat)
        return
    ready = Path(folder) / f"rank{worker.rank}.ready"
    end = time.monotonic() + 60
    while time.monotonic() < end:
        run()
        if not ready.exists():
            ready.write_text(str(os.getpid()))


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), sys.argv[3])
