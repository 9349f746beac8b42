"""PopulationGraph: a heterogeneous population graph on top of PyG's HeteroData."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from .._checks import check_edge_index, check_int
from ..ops.csr import CSR

if TYPE_CHECKING:
    import networkx as nx
    import scipy.sparse as sp
    from torch_geometric.data import Data

__all__ = ["PopulationGraph", "Relation"]

Relation = tuple[str, str, str]
"""``(source node type, edge type, destination node type)``, as in PyG."""

DEFAULT_NODE_TYPE = "agent"
DEFAULT_EDGE_TYPE = "contact"


class PopulationGraph:
    """A population of agents (and places) with typed edges and named per-node state.

    The graph is stored in a :class:`torch_geometric.data.HeteroData` (``graph.data``), so
    node types, relations and attributes read as in PyG: ``graph["agent"].age``,
    ``graph["agent", "household", "agent"].edge_index``. Edge direction follows PyG:
    ``edge_index[0]`` are sources ``j``, ``edge_index[1]`` destinations ``i``, and a message
    flows ``j -> i``. The edge structure is fixed once built (build a new graph to change it),
    which is what lets :meth:`csr` cache the destination-sorted CSR of every relation.

    Args:
        data: the node counts (``data[t].num_nodes``), edges (``edge_index``, optional
            ``edge_weight``) and named per-node tensors.
        allow_self_loops: if False, an edge ``i -> i`` raises.
        allow_duplicates: if False, a repeated ``(j, i)`` pair within a relation raises.

    Raises:
        ValueError: node ids out of range, wrong dtypes or shapes, per-node tensors whose
            first dimension is not the node count, negative or NaN edge weights, and
            self-loops or duplicates when disallowed.
    """

    def __init__(
        self,
        data: HeteroData,
        *,
        allow_self_loops: bool = True,
        allow_duplicates: bool = True,
    ) -> None:
        if not isinstance(data, HeteroData):
            raise ValueError(
                f"data must be a torch_geometric.data.HeteroData, got {type(data).__name__}; "
                "use PopulationGraph.from_edge_index / from_pyg for other inputs."
            )
        self.data = data
        self._csr: dict[Relation, CSR] = {}
        self._validate(allow_self_loops, allow_duplicates)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_edge_index(
        cls,
        edge_index: Tensor,
        num_nodes: int,
        *,
        edge_weight: Tensor | None = None,
        undirected: bool = False,
        node_type: str = DEFAULT_NODE_TYPE,
        edge_type: str = DEFAULT_EDGE_TYPE,
        allow_self_loops: bool = True,
        allow_duplicates: bool = True,
    ) -> PopulationGraph:
        """One node type and one relation from a ``[2, E]`` tensor of directed edges.

        Args:
            edge_index: ``[2, E]`` integer tensor, row 0 sources, row 1 destinations.
            num_nodes: number of agents; ids must be in ``[0, num_nodes)``.
            edge_weight: optional ``[E]`` non-negative weights.
            undirected: if True, each listed pair is one undirected contact and the reverse
                edge is added (weights copied); a self-loop stays a single edge. The relation
                is marked ``undirected = True`` (read by ``to_networkx``).
            node_type: name of the node type.
            edge_type: name of the relation.
        """
        num_nodes = _check_num_nodes(num_nodes)
        _check_type_name(node_type, "node_type")
        _check_type_name(edge_type, "edge_type")
        edge_index = check_edge_index(edge_index, num_nodes, num_nodes)
        rel = (node_type, edge_type, node_type)
        if edge_weight is not None:  # before the reverse edges copy it
            _check_edge_weight(edge_weight, edge_index.shape[1], rel)
        if undirected:  # add the reverse of every contact except self-loops
            reverse = edge_index[0] != edge_index[1]
            edge_index = torch.cat([edge_index, edge_index[:, reverse].flip(0)], dim=1)
            if edge_weight is not None:
                edge_weight = torch.cat([edge_weight, edge_weight[reverse]])
        data = HeteroData()
        data[node_type].num_nodes = num_nodes
        store = data[node_type, edge_type, node_type]
        store.edge_index = edge_index
        if edge_weight is not None:
            store.edge_weight = edge_weight
        if undirected:
            store.undirected = True
        return cls(data, allow_self_loops=allow_self_loops, allow_duplicates=allow_duplicates)

    @classmethod
    def from_networkx(cls, graph: nx.Graph, **kwargs: Any) -> PopulationGraph:
        """From a networkx graph; see :func:`lpm_graph.graph.interop.from_networkx`."""
        from .interop import from_networkx

        return from_networkx(graph, **kwargs)

    @classmethod
    def from_scipy(cls, matrix: sp.spmatrix | sp.sparray, **kwargs: Any) -> PopulationGraph:
        """From a scipy sparse adjacency; see :func:`lpm_graph.graph.interop.from_scipy`."""
        from .interop import from_scipy

        return from_scipy(matrix, **kwargs)

    @classmethod
    def from_edge_list(cls, path: str | Path, **kwargs: Any) -> PopulationGraph:
        """From an edge list file; see :func:`lpm_graph.graph.io.read_edge_list`."""
        from .io import read_edge_list

        return read_edge_list(path, **kwargs)

    @classmethod
    def from_files(
        cls, edges: str | Path, nodes: str | Path | None = None, **kwargs: Any
    ) -> PopulationGraph:
        """From an edge list and a node table file; see :func:`lpm_graph.graph.io.from_files`."""
        from .io import from_files

        return from_files(edges, nodes, **kwargs)

    @classmethod
    def from_pyg(cls, data: Data | HeteroData, **kwargs: Any) -> PopulationGraph:
        """From a PyG ``Data`` or ``HeteroData``; see :func:`lpm_graph.graph.interop.from_pyg`."""
        from .interop import from_pyg

        return from_pyg(data, **kwargs)

    @classmethod
    def from_dgl(cls, graph: Any, **kwargs: Any) -> PopulationGraph:
        """From a DGL graph (needs DGL); see :func:`lpm_graph.graph.interop.from_dgl`."""
        from .interop import from_dgl

        return from_dgl(graph, **kwargs)

    # ------------------------------------------------------------------ conversion
    def to_dgl(self) -> Any:
        """A heterogeneous ``dgl.DGLGraph`` (needs DGL); see :func:`lpm_graph.graph.interop.
        to_dgl`."""
        from .interop import to_dgl

        return to_dgl(self)

    def to_pyg(self) -> HeteroData:
        """The underlying ``HeteroData`` (shared, not copied)."""
        return self.data

    def to_networkx(
        self, relation: Relation | None = None, *, undirected: bool | None = None
    ) -> nx.Graph | nx.DiGraph:
        """One relation as a networkx graph; see :func:`lpm_graph.graph.interop.to_networkx`."""
        from .interop import to_networkx

        return to_networkx(self, relation, undirected=undirected)

    def to_scipy(self, relation: Relation | None = None) -> sp.csr_array:
        """One relation as a scipy CSR adjacency with ``A[i, j]`` for the edge ``j -> i``."""
        from .interop import to_scipy

        return to_scipy(self, relation)

    # ------------------------------------------------------------------ access
    @property
    def node_types(self) -> list[str]:
        return list(self.data.node_types)

    @property
    def relations(self) -> list[Relation]:
        return list(self.data.edge_types)

    @property
    def device(self) -> torch.device:
        for rel in self.relations:
            return self.data[rel].edge_index.device
        for node_type in self.node_types:
            for value in self.data[node_type].values():
                if torch.is_tensor(value):
                    return value.device
        return torch.device("cpu")

    def num_nodes(self, node_type: str | None = None) -> int:
        return int(self.data[self._node_type(node_type)].num_nodes)

    def num_edges(self, relation: Relation | None = None) -> int:
        return int(self.edge_index(relation).shape[1])

    def edge_index(self, relation: Relation | None = None) -> Tensor:
        return self.data[self.relation(relation)].edge_index

    def edge_weight(self, relation: Relation | None = None) -> Tensor | None:
        store = self.data[self.relation(relation)]
        return store["edge_weight"] if "edge_weight" in store else None

    def relation(self, relation: Relation | str | None = None) -> Relation:
        """Resolve ``None`` (the only relation) or an edge-type name to a full relation."""
        relations = self.relations
        if relation is None:
            if len(relations) == 1:
                return relations[0]
            raise ValueError(
                f"this graph has {len(relations)} relations {relations}; name one "
                "(e.g. relation=('agent', 'household', 'agent'))."
            )
        if isinstance(relation, str):
            matches = [r for r in relations if r[1] == relation]
            if len(matches) == 1:
                return matches[0]
        elif not isinstance(relation, (tuple, list)):
            raise ValueError(
                f"relation must be an edge-type name or a (src_type, edge_type, dst_type) "
                f"tuple, got {relation!r}; this graph has {relations}."
            )
        elif tuple(relation) in relations:
            return tuple(relation)  # type: ignore[return-value]
        raise ValueError(f"unknown relation {relation!r}; this graph has {relations}.")

    def _node_type(self, node_type: str | None) -> str:
        types = self.node_types
        if node_type is None:
            if len(types) == 1:
                return types[0]
            raise ValueError(f"this graph has node types {types}; name one (node_type=...).")
        if node_type not in types:
            raise ValueError(f"unknown node type {node_type!r}; this graph has {types}.")
        return node_type

    def __getitem__(self, key: Any) -> Any:
        return self.data[key]

    def node_attrs(self, node_type: str | None = None) -> dict[str, Tensor]:
        """The named per-node tensors of a node type (``num_nodes`` excluded)."""
        store = self.data[self._node_type(node_type)]
        return {k: v for k, v in store.items() if torch.is_tensor(v)}

    def set_node_attrs(self, node_type: str | None = None, **tensors: Tensor) -> None:
        """Attach named per-node tensors (first dimension = number of nodes of that type)."""
        node_type = self._node_type(node_type)
        n = self.num_nodes(node_type)
        for name, value in tensors.items():
            if name == "num_nodes":
                raise ValueError(
                    f"num_nodes is the number of {node_type!r} nodes ({n}), not a per-node "
                    "attribute, and it cannot change on a built graph: name the attribute "
                    "otherwise, or build a new graph with the number of nodes you want."
                )
            _check_node_tensor(value, n, node_type, name)
        for name, value in tensors.items():  # all checked first: nothing half-set
            self.data[node_type][name] = value

    def csr(self, relation: Relation | str | None = None) -> CSR:
        """The destination-sorted CSR of a relation, built once and reused by every step."""
        rel = self.relation(relation)
        cached = self._csr.get(rel)
        if cached is None:
            src_type, _, dst_type = rel
            cached = CSR.from_edge_index(  # the graph checked its edges when they were set
                self.edge_index(rel),
                self.num_nodes(src_type),
                self.num_nodes(dst_type),
                validate=False,
            )
            self._csr[rel] = cached
        return cached

    def to(self, device: torch.device | str) -> PopulationGraph:
        """A graph on ``device`` (cached CSRs move along)."""
        device = _check_device(device)
        out = PopulationGraph.__new__(PopulationGraph)
        out.data = copy.copy(self.data).to(device)  # HeteroData.to works in place
        out._csr = {rel: csr.to(device) for rel, csr in self._csr.items()}
        return out

    def __copy__(self) -> PopulationGraph:
        """A new graph whose stores can be changed without touching this one (tensors shared)."""
        out = PopulationGraph.__new__(PopulationGraph)
        out.data = copy.copy(self.data)
        out._csr = dict(self._csr)
        return out

    @property
    def meta(self) -> dict[str, Any]:
        """Graph-level values (``graph.data.<name>``), e.g. a generator's ``erased_fraction``."""
        return dict(self.data.to_dict().get("_global_store", {}))

    def save(self, path: str | Path) -> None:
        """Write the graph to ``path``; see :func:`lpm_graph.graph.storage.save_graph`."""
        from .storage import save_graph

        save_graph(self, path)

    @classmethod
    def load(cls, path: str | Path) -> PopulationGraph:
        """Read a graph written by :meth:`save`."""
        from .storage import load_graph

        return load_graph(path)

    def __repr__(self) -> str:
        nodes = ", ".join(f"{t}={self.num_nodes(t):,}" for t in self.node_types)
        edges = ", ".join(f"{r[1]}={self.num_edges(r):,}" for r in self.relations)
        return f"PopulationGraph(nodes: {nodes}; edges: {edges})"

    # ------------------------------------------------------------------ validation
    def _validate(self, allow_self_loops: bool, allow_duplicates: bool) -> None:
        for node_type in self.data.node_types:
            store = self.data[node_type]
            if "num_nodes" not in store:
                raise ValueError(
                    f"node type {node_type!r} has no num_nodes; set data[{node_type!r}].num_nodes."
                )
            n = _check_num_nodes(store.num_nodes, f"data[{node_type!r}].num_nodes")
            for name, value in store.items():
                if torch.is_tensor(value):
                    _check_node_tensor(value, n, node_type, name)
        for rel in self.data.edge_types:
            src_type, _, dst_type = rel
            for t in (src_type, dst_type):
                if t not in self.data.node_types:
                    raise ValueError(f"relation {rel} names node type {t!r}, which has no nodes.")
            store = self.data[rel]
            if "edge_index" not in store:
                raise ValueError(f"relation {rel} has no edge_index; set it to a [2, E] tensor.")
            store.edge_index = check_edge_index(
                store.edge_index,
                self.num_nodes(src_type),
                self.num_nodes(dst_type),
                name=f"edge_index of {rel}",
            )
            if "edge_weight" in store:
                _check_edge_weight(store.edge_weight, store.edge_index.shape[1], rel)
            if not allow_self_loops and src_type == dst_type:
                loops = store.edge_index[0] == store.edge_index[1]
                if bool(loops.any()):
                    pos = int(loops.nonzero()[0])
                    node = int(store.edge_index[0, pos])
                    raise ValueError(
                        f"edge_index of {rel} has a self-loop {node} -> {node} at edge {pos} "
                        "and allow_self_loops=False; remove self-loops "
                        "(torch_geometric.utils.remove_self_loops) or allow them."
                    )
            if not allow_duplicates:
                _check_no_duplicates(store.edge_index, self.num_nodes(dst_type), rel)


def _check_num_nodes(num_nodes: object, name: str = "num_nodes") -> int:
    return check_int(num_nodes, name)


def _check_type_name(value: object, name: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty str, e.g. 'agent', got {value!r}.")


def _check_device(device: object) -> torch.device:
    """``device`` as a torch.device this process can use, or a clear error."""
    if not isinstance(device, (str, torch.device)):
        raise ValueError(f"device must be a str or a torch.device, e.g. 'cuda', got {device!r}.")
    try:
        out = torch.device(device)
    except RuntimeError:
        raise ValueError(
            f"device={device!r} is not a device; use 'cpu', 'cuda' or 'cuda:N'."
        ) from None
    if out.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (out.index is not None and out.index >= count):
            raise ValueError(
                f"device={device!r} is not available: this machine has {count} usable CUDA "
                "GPU(s); use 'cpu'" + (f" or 'cuda:0'..'cuda:{count - 1}'." if count else ".")
            )
    return out


def _check_node_tensor(value: Tensor, n: int, node_type: str, name: str) -> None:
    if not torch.is_tensor(value):
        raise ValueError(f"node attribute {name!r} of {node_type!r} must be a tensor.")
    if value.dim() == 0 or value.shape[0] != n:
        raise ValueError(
            f"node attribute {name!r} of {node_type!r} has shape {list(value.shape)}; its first "
            f"dimension must be the number of {node_type!r} nodes ({n})."
        )


def _check_edge_weight(weight: object, num_edges: int, rel: Relation) -> None:
    if not torch.is_tensor(weight) or weight.dim() != 1 or weight.shape[0] != num_edges:
        shape = list(weight.shape) if torch.is_tensor(weight) else type(weight).__name__
        raise ValueError(
            f"edge_weight of {rel} must be a 1-D tensor with one weight per edge ({num_edges}), "
            f"got {shape}."
        )
    if not weight.is_floating_point():
        raise ValueError(f"edge_weight of {rel} must be floating point; use .float().")
    if not bool(torch.isfinite(weight).all()) or bool((weight < 0).any()):
        raise ValueError(
            f"edge_weight of {rel} must be finite and non-negative; found NaN, inf or a "
            "negative weight."
        )


def _check_no_duplicates(edge_index: Tensor, num_dst: int, rel: Relation) -> None:
    if edge_index.shape[1] < 2:
        return
    key = edge_index[0] * max(num_dst, 1) + edge_index[1]
    sorted_key, order = torch.sort(key, stable=True)
    dup = (sorted_key[1:] == sorted_key[:-1]).nonzero()
    if dup.numel():
        pos = int(order[int(dup[0]) + 1])
        j, i = int(edge_index[0, pos]), int(edge_index[1, pos])
        raise ValueError(
            f"edge_index of {rel} repeats the edge {j} -> {i} (edge {pos}) and "
            "allow_duplicates=False; remove duplicates (torch_geometric.utils.coalesce) or "
            "allow them (duplicates then count as parallel contacts)."
        )
