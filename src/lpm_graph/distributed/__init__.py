"""Partitioned simulation over ``torch.distributed``: one large population, one process per
device, results equal to a single-process run.

Example (2 ranks on the CPU)::

    from lpm_graph.distributed import Partition, distributed_backward, launch, simulate_partitioned

    def rank_run(worker, graph, partition):
        sir = SIR(0.05, 0.1)
        run = simulate_partitioned(sir, graph, partition, 50, initial_infected=10, seed=0)
        loss = run.counts["R"][-1] / graph.num_nodes()  # the same global value on every rank
        distributed_backward(loss, sir)  # gradients summed over the ranks
        return run.counts["I"], sir.transmission_rate.grad

    partition = Partition.metis(graph, 2)
    launch(rank_run, 2, args=(graph, partition))

Under torchrun, call :func:`init_from_env` and then the same code on every rank.

Pieces: :class:`Partition` (owners, halos, send lists; :meth:`Partition.metis`,
:meth:`Partition.contiguous`, :meth:`Partition.by_attribute`, :meth:`Partition.quality`),
:func:`exchange_halo` (differentiable ``all_to_all_single``), :class:`PartitionedProtocol`
(any protocol on one rank's :class:`Shard`), the reductions of :mod:`.reduce`, the
launchers of :mod:`.launch`, and the heartbeat of :mod:`.heartbeat`, which names a frozen or
dead rank within seconds.
"""

from .halo import exchange_halo, refresh_halo
from .launch import Worker, init_from_env, launch
from .partition import Partition, PartitionQuality, Shard
from .reduce import (
    all_reduce_dict,
    all_reduce_sum,
    distributed_backward,
    gather_rows,
    reduce_gradients,
)
from .simulate import PartitionedProtocol, simulate_partitioned

__all__ = [
    "Partition",
    "PartitionQuality",
    "PartitionedProtocol",
    "Shard",
    "Worker",
    "all_reduce_dict",
    "all_reduce_sum",
    "distributed_backward",
    "exchange_halo",
    "gather_rows",
    "init_from_env",
    "launch",
    "reduce_gradients",
    "refresh_halo",
    "simulate_partitioned",
]
