"""A partitioned run with the ranks' tensors on a GPU (gloo, staged through the host, since
NCCL needs a GPU per rank) equals the single-process run on that GPU. Skipped without CUDA."""

import pytest
import torch
import torch.distributed as dist
from torch import nn

from lpm_graph import simulate
from lpm_graph.datasets import SyntheticPopulation
from lpm_graph.distributed import Partition, distributed_backward, launch, simulate_partitioned
from lpm_graph.protocols import SEIRM

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
STEPS = 20


def _model():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # every parameter in float64
    try:
        return SEIRM(nn.Parameter(torch.tensor(2.5)), nn.Parameter(torch.linspace(0.01, 0.08, 8)))
    finally:
        torch.set_default_dtype(old)


def _loss(run):
    return run.flows["deaths"].sum() + (run.flows["infections"] ** 2).sum() / 1000


def _run(graph, partition=None):
    protocol = _model().to(graph.device)
    kwargs = dict(initial_infected=10, seed=3, dtype=torch.float64)
    if partition is None:
        run = simulate(protocol, graph, STEPS, **kwargs)
        _loss(run).backward()
    else:
        run = simulate_partitioned(protocol, graph, partition, STEPS, **kwargs)
        distributed_backward(_loss(run), protocol)
    grads = torch.cat([p.grad.reshape(-1) for p in protocol.parameters()]).cpu()
    return {k: v.detach().cpu() for k, v in {**run.counts, **run.flows}.items()}, grads


def _rank(worker):
    assert worker.device.type == "cuda" and dist.get_backend() == "gloo"
    graph = SyntheticPopulation(2000, seed=1)[0].to(worker.device)
    return _run(graph, Partition.contiguous(graph.to("cpu"), worker.world_size))


def test_partitioned_seirm_on_the_gpu_equals_the_single_process_run():
    graph = SyntheticPopulation(2000, seed=1)[0].to("cuda")
    series, grads = _run(graph)
    assert float(series["M"][-1]) > 0
    for rank_series, rank_grads in launch(_rank, 2, device="cuda", backend="gloo"):
        for name, value in series.items():
            assert torch.equal(rank_series[name], value), name
        assert torch.allclose(rank_grads, grads, rtol=1e-10, atol=0)
