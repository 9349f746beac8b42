"""Secure runs with the shares on a GPU: in one process, and one process per party (gloo
staging through the host, or NCCL when there is one GPU per party). Skipped without CUDA."""

from __future__ import annotations

import pytest
import torch

from lpm_graph import simulate
from lpm_graph.datasets import SyntheticPopulation
from lpm_graph.protocols import SEIRM
from lpm_graph.secure import ProtocolInputs, Session, launch, secure_simulate

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

N, STEPS, SEED = 3000, 25, 5
DOUBLE = torch.float64
MORTALITY = torch.linspace(0.01, 0.3, 8, dtype=torch.float64)


def seirm() -> SEIRM:
    return SEIRM(torch.tensor(2.5, dtype=torch.float64), MORTALITY, learnable=False)


def population():
    return SyntheticPopulation(N, seed=1)[0]


def test_secure_seirm_on_the_gpu_equals_the_plaintext_run():
    graph = population()
    plain = simulate(seirm(), graph, STEPS, initial_infected=10, seed=SEED, dtype=DOUBLE)
    session = Session(2, seed=0, owner=ProtocolInputs(seirm(), N, 10, seed=SEED), device="cuda")
    # the protocol's own phases run on shares: it lives where the graph is, as in plaintext
    model = seirm().to("cuda")
    run = secure_simulate(model, graph.to("cuda"), STEPS, session, tangents=("mortality",))
    assert float(plain.counts["M"][-1]) > 0
    for name, value in {**plain.counts, **plain.flows}.items():
        assert torch.equal(run.opened()[name].cpu(), value), name
    _, grad = run.gradient(lambda s: s["deaths"].sum())
    assert grad.device.type == "cuda" and float(grad[0]) > 0


def _party(session: Session) -> dict:
    assert session.device.type == "cuda" and session.local == (torch.distributed.get_rank(),)
    graph = SyntheticPopulation(N, seed=1)[0].to(session.device)
    run = secure_simulate(seirm().to(session.device), graph, STEPS, session)
    return {k: v.cpu() for k, v in run.opened().items()}


@pytest.mark.parametrize("backend", ["gloo", "cpu:gloo,cuda:nccl"])
def test_parties_in_processes_with_shares_on_gpus(backend):
    if "nccl" in backend and torch.cuda.device_count() < 2:
        pytest.skip("NCCL needs one GPU per party (it refuses two ranks on one device)")
    owner = ProtocolInputs(seirm(), N, 10, seed=SEED)
    results = launch(_party, 2, seed=0, owner=owner, device="cuda", backend=backend, timeout=300)
    plain = simulate(seirm(), population(), STEPS, initial_infected=10, seed=SEED, dtype=DOUBLE)
    for opened in results:
        for name, value in {**plain.counts, **plain.flows}.items():
            assert torch.equal(opened[name], value), (backend, name)
