"""Try the NCCL transport with two parties on one GPU and report what happens (NCCL refuses
two ranks of one communicator on one device; the test suite skips it below two GPUs).

    python benchmarks/nccl_one_gpu.py
"""

from __future__ import annotations

import torch

from lpm_graph.datasets.generators import erdos_renyi
from lpm_graph.protocols import SIR
from lpm_graph.secure import ProtocolInputs, Session, launch, secure_simulate


def party(session: Session) -> float:
    graph = erdos_renyi(2000, 8, seed=0).to(session.device)
    run = secure_simulate(SIR(0.1, 0.1, learnable=False), graph, 5, session)
    return float(run.counts["I"][-1])


if __name__ == "__main__":
    print(f"GPUs: {torch.cuda.device_count()}")
    try:
        out = launch(party, 2, owner=ProtocolInputs(SIR(0.1, 0.1), 2000, 5), device="cuda",
                     backend="cpu:gloo,cuda:nccl", timeout=120)  # fmt: skip
        print(f"NCCL with two parties on one GPU ran: {out}")
    except Exception as error:  # report, whatever it is
        print(f"NCCL with two parties on one GPU failed: {type(error).__name__}: {error}")
