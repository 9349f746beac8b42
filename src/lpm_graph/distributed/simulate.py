"""Run an unchanged Protocol on one rank's part of the population.

How a partitioned run equals the single-process run (same seed, any number of ranks):

1. **Graph.** Rank ``r`` simulates the local graph of its :class:`~lpm_graph.distributed.
   partition.Shard`: its own agents plus a halo of read-only copies of the remote sources of
   their in-edges. Each own agent keeps all its in-edges in their original order, so its
   aggregations sum the same terms in the same order as on the whole graph.
2. **State.** At the start of every step (``refresh="step"``, default) the halo rows of every
   per-agent state tensor are refreshed from their owners (:func:`~lpm_graph.distributed.halo.
   refresh_halo`, one ``all_to_all_single`` per dtype). Per-agent phases update halo rows
   exactly as their owners do (same state, same draws); only the aggregations of a halo row are
   wrong (it has no in-edges here), and nothing of them is kept past the step. This is exact
   when every phase that aggregates over neighbours reads state that was fresh at the start of
   the step or written since by per-agent phases only: true of SIR (either order) and SEIRM.
   ``refresh="phase"`` refreshes before every phase instead (one exchange per phase), for
   protocols where one aggregation reads what an earlier aggregation of the same step wrote.
3. **Draws.** Every rank draws each per-agent random stream for the whole population and keeps
   its own rows (``O(N)`` numbers per stream and step on every rank; torch's generators cannot
   skip ahead to a row). Draws that are not per-agent are drawn whole, the same on every rank.
   The initial state is made on the whole graph and sliced.
4. **Observables.** Per-step counts and flow totals sum the owned rows only (halo rows zeroed)
   and are all-reduced, so every rank returns the global :class:`~lpm_graph.Trajectory`.
   Their backward is the identity (:mod:`lpm_graph.distributed.reduce`): compute the same loss
   on every rank and sum parameter gradients with :func:`~lpm_graph.distributed.reduce.
   distributed_backward`.

Limits: one node type (agents) and agent -> agent relations; per-edge parameters (``[E]``
transmission rates) are not sliced; random numbers must come through ``ctx.uniform`` /
``ctx.flow`` / ``streams.uniform`` with the agents first (a phase that builds its own
``torch.Generator`` draws local-sized numbers); state coupled across all agents (a global
ranking such as :class:`~lpm_graph.protocols.Vaccination`'s priority order) and the
``"stochastic_derivative"`` estimator (a reservoir over every agent's moves) are not supported.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal

import torch
import torch.distributed as dist
from torch import Tensor

from ..layers.samplers import RandomStreams
from ..protocols.base import Estimator, Mode, Protocol, State, StepContext
from ..simulator import RunOptions, Simulator, Trajectory
from .halo import refresh_halo
from .heartbeat import named_failures
from .partition import Partition, Shard
from .reduce import all_reduce_dict

if TYPE_CHECKING:
    from ..graph import PopulationGraph

__all__ = ["PartitionedProtocol", "simulate_partitioned"]

Refresh = Literal["step", "phase"]
REFRESH: tuple[str, ...] = ("step", "phase")


class _RowStreams(RandomStreams):
    """The run's streams, drawn for the whole population and cut to the local rows.

    A draw is per-agent when its first dimension is the number of local nodes; a draw of
    another kind whose first dimension happens to equal it would be mistaken for one.
    """

    def __init__(self, streams: RandomStreams, shard: Shard) -> None:
        super().__init__(streams.seed, streams.device)
        self.shard = shard

    def uniform(self, name: str, step: int, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        s = self.shard
        if len(shape) == 0 or shape[0] != s.num_local or s.num_local == s.num_global_nodes:
            return super().uniform(name, step, shape, dtype)
        whole = super().uniform(name, step, (s.num_global_nodes, *shape[1:]), dtype)
        return whole.index_select(0, s.nodes)


class PartitionedProtocol(Protocol):
    """A protocol run on one rank's :class:`~lpm_graph.distributed.partition.Shard`.

    Use it with an ordinary :class:`~lpm_graph.Simulator` on ``shard.graph`` (or call
    :func:`simulate_partitioned`); see the module docstring for how it equals the
    single-process run. Its parameters are the wrapped protocol's (replicated on every rank).

    Args:
        protocol: any protocol (``SIR``, ``SEIRM``, ...), unchanged.
        shard: this rank's shard.
        graph: the whole population graph (for the initial state and whole-graph statistics
            such as SEIRM's mean contacts per age group).
        refresh: ``"step"`` (default) or ``"phase"``: when the halo rows are refreshed.
        group: process group (default: the world).

    The shard's index tensors live on the device of the graph it was built from: build it from
    the graph on the run's device (``.to()`` moves the parameters only).

    Shapes:
        state entries ``[num_owned + num_halo, *F]``; observables as the wrapped protocol's,
        summed over the whole population.
    """

    def __init__(
        self,
        protocol: Protocol,
        shard: Shard,
        graph: PopulationGraph,
        *,
        refresh: Refresh = "step",
        group: dist.ProcessGroup | None = None,
    ) -> None:
        if not isinstance(protocol, Protocol):
            raise ValueError(
                f"protocol must be a lpm_graph Protocol, got {type(protocol).__name__}."
            )
        if refresh not in REFRESH:
            raise ValueError(f"refresh={refresh!r} is not known; choose one of {REFRESH}.")
        super().__init__([], protocol.dt)
        self.protocol = protocol
        self.shard = shard
        self.refresh = refresh
        self.group = group
        self.global_graph = graph

    # ------------------------------------------------------------------ the run
    def check(self, graph: PopulationGraph) -> None:
        """The shard against the world, the wrapped protocol's :meth:`~lpm_graph.protocols.
        Protocol.prepare` hook (whole-graph statistics such as SEIRM's ``1 / Ibar``), its
        check on the local graph, and no per-agent module buffer (which would be sized for
        the whole population and silently misread by the local rows)."""
        _refuse_per_agent_buffers(self.protocol, self.shard)
        _check_world(self.shard, self.group)
        self.protocol.prepare(graph, self.global_graph)
        self.protocol.check(graph)

    def initial_state(
        self,
        graph: PopulationGraph,
        initial_infected: object,
        streams: RandomStreams,
        replicates: int | None,
        dtype: torch.dtype,
        mode: Mode,
    ) -> State:
        """The wrapped protocol's initial state on the whole graph, cut to the local rows."""
        whole = self.protocol.initial_state(
            self.global_graph, initial_infected, streams, replicates, dtype, mode
        )
        return self.local_rows(whole)

    def local_rows(self, state: Mapping[str, Tensor]) -> State:
        """Per-agent entries of a whole-population state (``[N, ...]``) cut to the local rows."""
        n, nodes = self.shard.num_global_nodes, self.shard.nodes
        return {
            k: v.index_select(0, nodes) if torch.is_tensor(v) and v.dim() and v.shape[0] == n else v
            for k, v in state.items()
        }

    def step(self, graph: PopulationGraph, state: State, ctx: StepContext) -> State:
        if ctx.coupling is not None or ctx.estimator == "stochastic_derivative":
            raise ValueError(
                "estimator='stochastic_derivative' is not supported in a partitioned run (its "
                "reservoir picks among every agent's moves); use 'straight_through', "
                "'conditional_mean' or mode='expected'."
            )
        ctx.streams = _RowStreams(ctx.streams, self.shard)
        state = refresh_halo(state, self.shard, self.group)
        ctx.start = state
        if self.refresh == "phase":
            ctx.between_phases = self._refresh
        return self.protocol.step(graph, state, ctx)

    def _refresh(self, state: State) -> State:
        return refresh_halo(state, self.shard, self.group)

    def observe(self, state: State) -> dict[str, Tensor]:
        """The wrapped observables over the owned agents, summed over the ranks."""
        return all_reduce_dict(self.protocol.observe(self._owned_only(state)), self.group)

    def total_flows(self, flows: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The wrapped flow totals over the owned agents, summed over the ranks."""
        return all_reduce_dict(self.protocol.total_flows(self._owned_only(flows)), self.group)

    def _owned_only(self, values: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Per-agent entries with the halo rows set to zero (the shapes the protocol expects)."""
        s = self.shard
        out = {}
        for name, v in values.items():
            if torch.is_tensor(v) and v.dim() > 0 and v.shape[0] == s.num_local and s.num_halo:
                v = torch.cat([v[: s.num_owned], v.new_zeros((s.num_halo, *v.shape[1:]))])
            out[name] = v
        return out

    def owned(self, state: Mapping[str, Tensor]) -> State:
        """The owned rows of every per-agent entry of a local state."""
        s = self.shard
        return {
            k: v[: s.num_owned]
            if torch.is_tensor(v) and v.dim() and v.shape[0] == s.num_local
            else v
            for k, v in state.items()
        }

    def plan(self) -> str:
        head = f"partitioned over {self.shard.world_size} ranks (this one: {self.shard}), "
        head += f"halo refreshed every {self.refresh}:"
        return head + "\n" + self.protocol.plan()


def _refuse_per_agent_buffers(protocol: Protocol, shard: Shard) -> None:
    """A buffer or attribute tensor with one row per agent of the whole population cannot be
    read by a rank's local rows: refuse it, naming it, before any step."""
    n = shard.num_global_nodes
    if n == shard.num_local:  # one rank: the local rows are the population
        return
    for module_name, module in protocol.named_modules():
        tensors = dict(module.named_buffers(recurse=False))
        tensors.update(
            (k, v) for k, v in vars(module).items() if torch.is_tensor(v) and k not in tensors
        )
        for name, value in tensors.items():
            if value.dim() and value.shape[0] == n and not isinstance(value, torch.nn.Parameter):
                where = f"{module_name}.{name}" if module_name else name
                raise ValueError(
                    f"{type(module).__name__} keeps a per-agent tensor {where!r} of shape "
                    f"{list(value.shape)} on the module; a partitioned run gives each rank only "
                    "its own agents' rows, so it would read the wrong agents. Keep per-agent "
                    "values in the state (initial_state) or as graph node attributes "
                    "(graph.set_node_attrs), which are cut to each rank's rows."
                )


def _check_world(shard: Shard, group: dist.ProcessGroup | None) -> None:
    """Every rank holds the shard of the same partition for its own rank."""
    if not dist.is_initialized():
        raise RuntimeError(
            "a partitioned run needs torch.distributed initialised: run it under "
            "lpm_graph.distributed.launch(...) or call init_from_env() under torchrun."
        )
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    if (shard.rank, shard.world_size) != (rank, world):
        raise ValueError(
            f"this process is rank {rank} of {world} but holds the shard of rank {shard.rank} "
            f"of a {shard.world_size}-part partition."
        )
    device = shard.nodes.device
    if device.type == "cpu" or "nccl" not in str(dist.get_backend(group)).lower():
        device = torch.device("cpu")
    mine = torch.tensor(
        [*shard.send_counts, *shard.recv_counts, shard.num_global_nodes], device=device
    )
    every = [torch.zeros_like(mine) for _ in range(world)]
    with named_failures():
        dist.all_gather(every, mine, group=group)
    sends = torch.stack([e[:world] for e in every])  # [q, r]: q sends to r
    recvs = torch.stack([e[world : 2 * world] for e in every])  # [r, q]: r receives from q
    sizes = {int(e[-1]) for e in every}
    if len(sizes) > 1 or not torch.equal(sends, recvs.T):
        raise ValueError(
            "the ranks hold shards of different partitions (their send and receive counts "
            "disagree): build the Partition once and pass it to every rank, or build it the "
            "same way (same graph, method, k and seed) on every rank."
        )


def simulate_partitioned(
    protocol: Protocol,
    graph: PopulationGraph,
    partition: Partition,
    steps: int,
    *,
    initial_infected: object = None,
    seed: int = 0,
    state: Mapping[str, Tensor] | None = None,
    mode: Mode = "stochastic",
    replicates: int | None = None,
    checkpoint: int | None = None,
    record_states: bool = False,
    dtype: torch.dtype | None = None,
    estimator: Estimator = "straight_through",
    refresh: Refresh = "step",
    group: dist.ProcessGroup | None = None,
) -> Trajectory:
    """:func:`~lpm_graph.simulate` on this rank's part of ``graph``; call it on every rank.

    Arguments as in :func:`~lpm_graph.simulate` (``state``, if given, is the whole
    population's initial state, the same on every rank), plus:

    Args:
        partition: a :class:`~lpm_graph.distributed.Partition` of ``graph`` into as many
            parts as there are ranks.
        refresh: when halo rows are refreshed (see :class:`PartitionedProtocol`).
        group: process group (default: the world).

    Returns:
        The trajectory: counts and flows of the whole population (the same on every rank);
        ``final_state`` (and ``states``) hold this rank's owned rows only, in the order of
        ``partition.owned[rank]``; :func:`~lpm_graph.distributed.gather_rows` assembles them.
    """
    if not dist.is_initialized():
        raise RuntimeError(
            "simulate_partitioned needs torch.distributed initialised: run it under "
            "lpm_graph.distributed.launch(...) or call init_from_env() under torchrun."
        )
    if estimator == "stochastic_derivative":
        raise ValueError(
            "estimator='stochastic_derivative' is not supported in a partitioned run; use "
            "'straight_through', 'conditional_mean' or mode='expected'."
        )
    shard = partition.shard(graph, dist.get_rank(group))
    wrapped = PartitionedProtocol(protocol, shard, graph, refresh=refresh, group=group)
    options = RunOptions(
        steps, mode=mode, checkpoint=checkpoint, record_states=record_states, estimator=estimator
    )
    sim = Simulator(wrapped, options=options)
    local_state = None if state is None else wrapped.local_rows(state)
    run = sim(
        shard.graph,
        local_state,
        initial_infected=initial_infected,
        seed=seed,
        replicates=replicates,
        dtype=dtype,
    )
    run.final_state = wrapped.owned(run.final_state)
    if run.states is not None:
        run.states = [wrapped.owned(s) for s in run.states]
    return run
