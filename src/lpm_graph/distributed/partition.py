"""Partitions of a population graph over ranks: owners, halos, send lists and local graphs.

A :class:`Partition` says which rank owns every agent. Rank ``r`` then simulates its own agents
on a :class:`Shard`: a local :class:`~lpm_graph.PopulationGraph` whose nodes are its owned agents
followed by its *halo*, the agents of other ranks that are sources of an edge into one of its
own (every relation of the agents' node type). The halo nodes have no incoming edge in the local
graph; their state rows are copies that :func:`~lpm_graph.distributed.halo.exchange_halo`
refreshes from their owners.

Halo order: grouped by owner rank, then by global id, so that the rows received from each rank
form one contiguous block of an ``all_to_all_single``. Rank ``q`` sends rank ``r`` the rows of
its agents in ``r``'s halo, in that order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from ..graph import PopulationGraph

if TYPE_CHECKING:
    from ..graph import Relation

__all__ = ["Partition", "PartitionQuality", "Shard"]


@dataclass(frozen=True)
class PartitionQuality:
    """How good a partition is for halo exchange.

    Attributes:
        parts: number of parts (ranks) ``k``.
        num_nodes: agents ``N``.
        num_edges: directed edges over every relation of the agents.
        edge_cut: directed edges whose ends are owned by different ranks.
        owned: agents owned per rank.
        halo: halo size per rank (distinct remote sources of the rank's agents, over every
            relation): the rows a rank receives per exchange.
        halo_by_relation: per relation, the halo size per rank for that relation alone.
    """

    parts: int
    num_nodes: int
    num_edges: int
    edge_cut: int
    owned: tuple[int, ...]
    halo: tuple[int, ...]
    halo_by_relation: dict[str, tuple[int, ...]]

    @property
    def edge_cut_fraction(self) -> float:
        """Share of the directed edges that cross ranks."""
        return self.edge_cut / max(self.num_edges, 1)

    @property
    def balance(self) -> float:
        """Largest part over the mean part size (1 is perfect balance)."""
        return max(self.owned) * self.parts / max(self.num_nodes, 1)

    @property
    def total_halo(self) -> int:
        """Rows sent over all ranks in one exchange (the communication volume)."""
        return sum(self.halo)

    def __str__(self) -> str:
        return (
            f"{self.parts} parts of {self.num_nodes:,} agents: edge cut "
            f"{self.edge_cut:,} / {self.num_edges:,} ({100 * self.edge_cut_fraction:.2f} %), "
            f"halo {self.total_halo:,} rows (largest {max(self.halo):,}), "
            f"balance {self.balance:.3f}"
        )


@dataclass
class Shard:
    """What one rank needs to simulate its part of the population.

    Attributes:
        rank: this rank.
        world_size: number of ranks.
        graph: the local graph: ``num_owned`` owned agents, then the halo agents (no edges into
            halo agents); every per-agent attribute and per-edge attribute sliced to it.
        nodes: global id of every local node, ``[num_owned + num_halo]`` (owned ids ascending,
            then the halo grouped by owner rank).
        num_owned: number of agents this rank owns.
        num_global_nodes: agents in the whole population.
        send_index: local ids of the owned rows sent to the other ranks, grouped by
            destination rank, ``[sum(send_counts)]``.
        send_counts: rows sent to each rank (``0`` for this rank).
        recv_counts: halo rows received from each rank (``0`` for this rank).
    """

    rank: int
    world_size: int
    graph: PopulationGraph
    nodes: Tensor
    num_owned: int
    num_global_nodes: int
    send_index: Tensor
    send_counts: list[int]
    recv_counts: list[int]

    @property
    def num_local(self) -> int:
        return int(self.nodes.numel())

    @property
    def num_halo(self) -> int:
        return self.num_local - self.num_owned

    @property
    def owned_nodes(self) -> Tensor:
        """Global ids of the owned agents (ascending)."""
        return self.nodes[: self.num_owned]

    def __repr__(self) -> str:
        return (
            f"Shard(rank={self.rank} of {self.world_size}, owned={self.num_owned:,}, "
            f"halo={self.num_halo:,}, sends={sum(self.send_counts):,})"
        )


class Partition:
    """Which rank owns each agent, and each rank's halo and send lists.

    Build one with :meth:`metis`, :meth:`contiguous` or :meth:`by_attribute`, or from any owner
    vector. It holds index tensors only (not the graph), so it pickles cheaply to the ranks:
    compute it once and pass it to :func:`~lpm_graph.distributed.launch`, or compute it on every
    rank (every constructor is deterministic).

    Args:
        graph: the population graph; every relation must join agents of ``node_type``.
        owner: rank of every agent, ``[N]`` integers in ``[0, num_parts)``.
        num_parts: number of ranks ``k`` (default ``owner.max() + 1``).
        method: a label for reports.

    Shapes:
        ``owner: [N]``; ``owned[r]: [N_r]`` and ``halo[r]: [H_r]`` global ids;
        ``send[q]: [S_q]`` global ids rank ``q`` sends, grouped by destination rank.
    """

    def __init__(
        self,
        graph: PopulationGraph,
        owner: Tensor,
        num_parts: int | None = None,
        *,
        method: str = "given",
    ) -> None:
        node_type = _single_node_type(graph)
        n = graph.num_nodes(node_type)
        owner = torch.as_tensor(owner).detach().to("cpu")
        if owner.shape != (n,) or owner.is_floating_point() or owner.dtype == torch.bool:
            raise ValueError(
                f"owner must be an integer tensor with one rank per agent ([{n}]), got "
                f"{owner.dtype} {list(owner.shape)}."
            )
        owner = owner.long()
        k = int(owner.max()) + 1 if num_parts is None and n else num_parts
        k = 1 if k is None else k
        _check_parts(k, n)
        if n and (int(owner.min()) < 0 or int(owner.max()) >= k):
            raise ValueError(
                f"owner has ranks in [{int(owner.min())}, {int(owner.max())}]; ranks are "
                f"0..{k - 1} for num_parts={k}."
            )
        self.method = method
        self.node_type = node_type
        self.num_parts = k
        self.num_nodes = n
        self.owner = owner
        self.relations: list[Relation] = graph.relations
        sizes = torch.bincount(owner, minlength=k)
        order = torch.argsort(owner, stable=True)  # owned ids of rank 0, then rank 1, ...
        self.owned: list[Tensor] = list(order.split(sizes.tolist()))
        starts = torch.cumsum(sizes, 0) - sizes
        self.local_id = torch.empty(n, dtype=torch.long)  # position among the owner's agents
        self.local_id[order] = torch.arange(n) - starts[owner[order]]

        src, dst = _all_edges(graph)
        cross = owner[src] != owner[dst]
        self.num_edges = int(src.numel())
        self.edge_cut = int(cross.sum())
        dest_rank, node = _pairs(owner[dst[cross]], src[cross], n)
        # halo of each rank grouped by owner rank, then by id (pairs come sorted by rank, id)
        by_owner = torch.argsort(dest_rank * k + owner[node], stable=True)
        dest_rank, node = dest_rank[by_owner], node[by_owner]
        counts = torch.bincount(dest_rank * k + owner[node], minlength=k * k).reshape(k, k)
        self.recv_counts: list[list[int]] = counts.tolist()  # [r][q]: r receives from q
        self.send_counts: list[list[int]] = counts.T.tolist()  # [q][r]: q sends to r
        self.halo: list[Tensor] = list(node.split(counts.sum(1).tolist()))
        by_sender = torch.argsort(owner[node] * k + dest_rank, stable=True)
        self.send: list[Tensor] = list(node[by_sender].split(counts.sum(0).tolist()))
        self.halo_by_relation: list[dict[Relation, Tensor]] = [{} for _ in range(k)]
        for rel in self.relations:
            s, d = graph.edge_index(rel).cpu()
            crossing = owner[s] != owner[d]
            ranks, nodes = _pairs(owner[d[crossing]], s[crossing], n)
            per_rank = nodes.split(torch.bincount(ranks, minlength=k).tolist())
            for r in range(k):
                self.halo_by_relation[r][rel] = per_rank[r]

    # ------------------------------------------------------------------ constructors
    @classmethod
    def contiguous(cls, graph: PopulationGraph, k: int) -> Partition:
        """Agents ``0 .. N/k - 1`` on rank 0, the next ``N/k`` on rank 1, and so on.

        Good when ids already follow the contact structure (a
        :class:`~lpm_graph.datasets.SyntheticPopulation` numbers household members
        consecutively), poor on shuffled ids.
        """
        n = graph.num_nodes(_single_node_type(graph))
        _check_parts(k, n)
        return cls(graph, torch.arange(n) * k // max(n, 1), k, method="contiguous")

    @classmethod
    def by_attribute(cls, graph: PopulationGraph, name: str, k: int) -> Partition:
        """Whole groups of an agent attribute per rank (e.g. ``"household"``), balanced.

        Agents are ordered by the attribute (ties by id) and cut into ``k`` runs of about
        ``N / k`` agents; a group is never split: it goes to the rank that holds its midpoint,
        so the parts differ from ``N / k`` by at most about the largest group. A group that
        holds most agents (``school = -1`` for everyone not at school) unbalances the parts.

        Args:
            graph: the population graph.
            name: an agent attribute, ``[N]`` (integer labels, or any sortable value).
            k: number of ranks.
        """
        node_type = _single_node_type(graph)
        n = graph.num_nodes(node_type)
        _check_parts(k, n)
        attrs = graph.node_attrs(node_type)
        if name not in attrs or attrs[name].shape != (n,):
            raise ValueError(
                f"by_attribute needs a per-agent attribute [{n}]; {name!r} is "
                + (
                    f"shaped {list(attrs[name].shape)}"
                    if name in attrs
                    else f"not one of {sorted(attrs)}"
                )
                + "."
            )
        value = attrs[name].detach().cpu()
        order = torch.argsort(value, stable=True)
        _, sizes = torch.unique_consecutive(value[order], return_counts=True)
        starts = torch.cumsum(sizes, 0) - sizes
        middle = starts.double() + sizes.double() / 2
        group_part = (middle * k / max(n, 1)).floor().long().clamp(0, k - 1)
        owner = torch.empty(n, dtype=torch.long)
        owner[order] = group_part.repeat_interleave(sizes)
        return cls(graph, owner, k, method=f"by_attribute({name!r})")

    @classmethod
    def metis(cls, graph: PopulationGraph, k: int, *, seed: int = 0) -> Partition:
        """A METIS k-way partition (pymetis) minimising the contacts cut, balanced in agents.

        METIS sees the undirected contact graph of every relation together: one edge per pair
        of agents in contact, weighted by the number of directed edges between them (self-loops
        dropped). Deterministic for a given graph, ``k`` and ``seed``.

        Args:
            graph: the population graph.
            k: number of ranks.
            seed: METIS's random seed.

        Raises:
            ImportError: pymetis is not installed.
        """
        try:
            import pymetis
        except ImportError as err:
            raise ImportError(
                "Partition.metis needs the optional pymetis package (METIS): install it with "
                "`pip install pymetis`, or use Partition.contiguous / Partition.by_attribute."
            ) from err
        n = graph.num_nodes(_single_node_type(graph))
        _check_parts(k, n)
        if k == 1:
            return cls(graph, torch.zeros(n, dtype=torch.long), 1, method="metis")
        src, dst = _all_edges(graph)
        keep = src != dst
        lo = torch.minimum(src[keep], dst[keep])
        hi = torch.maximum(src[keep], dst[keep])
        pair, weight = torch.unique(lo * n + hi, return_counts=True)
        lo, hi = pair // n, pair % n
        rows, cols = torch.cat([lo, hi]), torch.cat([hi, lo])
        weight = torch.cat([weight, weight])
        order = torch.argsort(rows * n + cols)
        xadj = torch.zeros(n + 1, dtype=torch.long)
        torch.cumsum(torch.bincount(rows, minlength=n), 0, out=xadj[1:])
        adjncy, eweights = cols[order].numpy(), weight[order].numpy()
        options = pymetis.Options(seed=seed)
        if hasattr(pymetis, "CSRAdjacency"):  # pymetis >= 2025.2
            adjacency = pymetis.CSRAdjacency(xadj.numpy(), adjncy)
            result = pymetis.part_graph(k, adjacency, eweights=eweights, options=options)
        else:  # pragma: no cover - older pymetis
            result = pymetis.part_graph(
                k, xadj=xadj.numpy(), adjncy=adjncy, eweights=eweights, options=options
            )
        parts = np.asarray(result[1], dtype=np.int64)
        return cls(graph, torch.from_numpy(parts), k, method="metis")

    # ------------------------------------------------------------------ use
    def quality(self) -> PartitionQuality:
        """Edge cut, halo sizes and balance (see :class:`PartitionQuality`)."""
        return PartitionQuality(
            parts=self.num_parts,
            num_nodes=self.num_nodes,
            num_edges=self.num_edges,
            edge_cut=self.edge_cut,
            owned=tuple(int(o.numel()) for o in self.owned),
            halo=tuple(int(h.numel()) for h in self.halo),
            halo_by_relation={
                rel[1]: tuple(
                    int(self.halo_by_relation[r][rel].numel()) for r in range(self.num_parts)
                )
                for rel in self.relations
            },
        )

    def shard(self, graph: PopulationGraph, rank: int) -> Shard:
        """Rank ``rank``'s local graph and exchange lists, on the graph's device.

        Keeps every relation (with the edges into the rank's agents, in their original order,
        so each agent sums its in-edges in the same order as on the whole graph), every edge
        attribute sliced to those edges, and every per-agent attribute of the local nodes.
        """
        if not 0 <= rank < self.num_parts:
            raise ValueError(f"rank must be in [0, {self.num_parts}), got {rank}.")
        if graph.num_nodes(_single_node_type(graph)) != self.num_nodes:
            raise ValueError(
                f"this partition is of {self.num_nodes} agents; the graph has "
                f"{graph.num_nodes(self.node_type)}."
            )
        device = graph.device
        nodes = torch.cat([self.owned[rank], self.halo[rank]])
        local = torch.full((self.num_nodes,), -1, dtype=torch.long)
        local[nodes] = torch.arange(nodes.numel())
        owner, local = self.owner.to(device), local.to(device)
        data = HeteroData()
        store = data[self.node_type]
        store.num_nodes = int(nodes.numel())
        nodes_dev = nodes.to(device)
        for name, value in graph.node_attrs(self.node_type).items():
            if value.dim() > 0 and value.shape[0] == self.num_nodes:
                store[name] = value.index_select(0, nodes_dev)
        for rel in self.relations:
            old = graph[rel]
            edge_index = old.edge_index
            num_edges = edge_index.shape[1]
            keep = (owner[edge_index[1]] == rank).nonzero().squeeze(1)  # original edge order
            new = data[rel]
            new.edge_index = local[edge_index.index_select(1, keep)]
            for key, value in old.items():
                if key == "edge_index" or key == "undirected":  # local edges are one-sided
                    continue
                if torch.is_tensor(value) and value.dim() > 0 and value.shape[0] == num_edges:
                    new[key] = value.index_select(0, keep)
                else:
                    new[key] = value
        send = self.send[rank]
        return Shard(
            rank=rank,
            world_size=self.num_parts,
            graph=PopulationGraph(data),
            nodes=nodes_dev,
            num_owned=int(self.owned[rank].numel()),
            num_global_nodes=self.num_nodes,
            send_index=self.local_id[send].to(device),
            send_counts=list(self.send_counts[rank]),
            recv_counts=list(self.recv_counts[rank]),
        )

    def __repr__(self) -> str:
        return f"Partition({self.method}, {self.quality()})"


# ---------------------------------------------------------------------- helpers
def _single_node_type(graph: PopulationGraph) -> str:
    """The one node type every relation joins (partitions of place nodes are not supported)."""
    types = graph.node_types
    if len(types) != 1:
        raise ValueError(
            f"partitioned simulation needs a graph of one node type (agents), this one has "
            f"{types}; partitions of graphs with place nodes are not supported yet."
        )
    return types[0]


def _check_parts(k: object, n: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"the number of parts must be a positive int, got {k!r}.")
    if k > max(n, 1):
        raise ValueError(f"cannot split {n} agents into {k} parts; use at most {n} ranks.")


def _all_edges(graph: PopulationGraph) -> tuple[Tensor, Tensor]:
    """Sources and destinations of every relation, concatenated (on the CPU)."""
    edges: Sequence[Tensor] = [graph.edge_index(rel).cpu() for rel in graph.relations]
    if not edges:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty
    both = torch.cat(list(edges), 1)
    return both[0], both[1]


def _pairs(rank: Tensor, node: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """Distinct ``(rank, node)`` pairs, sorted by rank then node."""
    key = torch.unique(rank * n + node)
    return key // max(n, 1), key % max(n, 1)
