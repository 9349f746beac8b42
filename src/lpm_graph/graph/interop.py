"""Conversions between PopulationGraph and networkx, scipy.sparse, edge-list files and PyG."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch_geometric.data import Data, HeteroData

from .population import DEFAULT_EDGE_TYPE, DEFAULT_NODE_TYPE, PopulationGraph, Relation

if TYPE_CHECKING:
    import networkx as nx
    import scipy.sparse as sp

__all__ = ["from_networkx", "from_pyg", "from_scipy", "read_edge_list", "to_networkx", "to_scipy"]


def from_networkx(
    graph: nx.Graph,
    *,
    weight: str | None = None,
    node_type: str = DEFAULT_NODE_TYPE,
    edge_type: str = DEFAULT_EDGE_TYPE,
    **kwargs: object,
) -> PopulationGraph:
    """A networkx graph as one node type and one relation.

    Nodes are numbered in ``graph.nodes`` order (the original labels are kept as
    ``graph["agent"].node_label`` when they are not already ``0..n-1``). An undirected edge
    ``{u, v}`` becomes the two directed edges ``u -> v`` and ``v -> u``; a directed graph keeps its
    direction. With ``weight="weight"`` the edge attribute becomes ``edge_weight``.
    """
    import networkx as nx

    nodes = list(graph.nodes)
    index = {node: k for k, node in enumerate(nodes)}
    pairs = [(index[u], index[v]) for u, v in graph.edges()]
    weights = None
    if weight is not None:
        try:
            weights = [float(d[weight]) for _, _, d in graph.edges(data=True)]
        except KeyError as err:
            raise ValueError(
                f"weight={weight!r}: an edge of the networkx graph has no {weight!r} attribute; "
                "set it on every edge or pass weight=None."
            ) from err
    edge_index = torch.tensor(pairs, dtype=torch.long).reshape(-1, 2).t().contiguous()
    edge_weight = None if weights is None else torch.tensor(weights)
    out = PopulationGraph.from_edge_index(
        edge_index,
        len(nodes),
        edge_weight=edge_weight,
        undirected=not isinstance(graph, nx.DiGraph),
        node_type=node_type,
        edge_type=edge_type,
        **kwargs,  # type: ignore[arg-type]
    )
    if nodes != list(range(len(nodes))):
        try:
            out.set_node_attrs(node_type, node_label=torch.as_tensor(nodes))
        except (TypeError, ValueError, RuntimeError):
            out.data[node_type].node_labels = nodes  # non-numeric labels stay a Python list
    return out


def to_networkx(graph: PopulationGraph, relation: Relation | None = None) -> nx.DiGraph:
    """One relation as a ``networkx.DiGraph`` over ``0..n-1`` (weights as ``"weight"``).

    The relation must join a node type to itself; parallel edges collapse (networkx keeps one).
    """
    import networkx as nx

    rel = graph.relation(relation)
    if rel[0] != rel[2]:
        raise ValueError(
            f"to_networkx needs a relation within one node type, got {rel}; convert a "
            "bipartite relation with to_scipy instead."
        )
    out = nx.DiGraph()
    out.add_nodes_from(range(graph.num_nodes(rel[0])))
    ei = graph.edge_index(rel).cpu().numpy()
    weight = graph.edge_weight(rel)
    if weight is None:
        out.add_edges_from(zip(ei[0].tolist(), ei[1].tolist()))
    else:
        w = weight.detach().cpu().numpy().tolist()
        out.add_weighted_edges_from(zip(ei[0].tolist(), ei[1].tolist(), w))
    return out


def from_scipy(
    matrix: sp.spmatrix | sp.sparray,
    *,
    weighted: bool = True,
    node_type: str = DEFAULT_NODE_TYPE,
    edge_type: str = DEFAULT_EDGE_TYPE,
    **kwargs: object,
) -> PopulationGraph:
    """A square sparse adjacency where ``A[i, j] != 0`` is the edge ``j -> i`` (message from
    ``j`` to ``i``, as in ``A @ x``). Stored values become ``edge_weight`` unless
    ``weighted=False``. A symmetric matrix gives both directions of each contact."""
    import scipy.sparse as sp

    if not sp.issparse(matrix):
        raise ValueError(
            f"matrix must be a scipy.sparse matrix or array, got {type(matrix).__name__}; "
            "wrap dense arrays with scipy.sparse.csr_array(...)."
        )
    if matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"matrix must be square (agents x agents), got shape {matrix.shape}.")
    coo = sp.coo_array(matrix)
    coo.sum_duplicates()
    rows = torch.from_numpy(coo.row.astype(np.int64))
    cols = torch.from_numpy(coo.col.astype(np.int64))
    edge_index = torch.stack([cols, rows])
    edge_weight = torch.from_numpy(coo.data.astype(np.float32)) if weighted else None
    return PopulationGraph.from_edge_index(
        edge_index,
        matrix.shape[0],
        edge_weight=edge_weight,
        node_type=node_type,
        edge_type=edge_type,
        **kwargs,  # type: ignore[arg-type]
    )


def to_scipy(graph: PopulationGraph, relation: Relation | None = None) -> sp.csr_array:
    """A relation as a scipy CSR adjacency ``A[i, j]`` for the edge ``j -> i`` (parallel edges
    add up)."""
    import scipy.sparse as sp

    rel = graph.relation(relation)
    ei = graph.edge_index(rel).cpu().numpy()
    weight = graph.edge_weight(rel)
    data = (
        np.ones(ei.shape[1], dtype=np.float32) if weight is None else weight.detach().cpu().numpy()
    )
    shape = (graph.num_nodes(rel[2]), graph.num_nodes(rel[0]))
    return sp.csr_array((data, (ei[1], ei[0])), shape=shape)


def read_edge_list(
    path: str | Path,
    *,
    num_nodes: int | None = None,
    delimiter: str | None = None,
    undirected: bool = False,
    weighted: bool = False,
    skip_header: bool | None = None,
    node_type: str = DEFAULT_NODE_TYPE,
    edge_type: str = DEFAULT_EDGE_TYPE,
    **kwargs: object,
) -> PopulationGraph:
    """Read ``src<delim>dst[<delim>weight]`` lines (``.gz`` read transparently).

    Args:
        path: the file.
        num_nodes: number of agents; default ``max id + 1``.
        delimiter: ``","``, ``"\\t"``, ... ; default: comma if the first data line has one,
            else whitespace.
        undirected: each line is one undirected contact (both directions are added).
        weighted: read a third column as ``edge_weight``.
        skip_header: skip the first line; default: skip it when it is not numeric.

    Lines starting with ``#`` and blank lines are ignored. A malformed line raises a
    ValueError naming the file, the line number and the content; nothing is half-loaded.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"edge list {str(path)!r} does not exist; check the path.")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as handle:  # type: ignore[operator]
        lines = handle.read().splitlines()
    first = next(
        (k for k, line in enumerate(lines) if line.strip() and not line.startswith("#")), None
    )
    if first is None:
        raise ValueError(f"edge list {str(path)!r} has no edges; expected 'src,dst' lines.")
    if delimiter is None:
        delimiter = "," if "," in lines[first] else None
    if skip_header is None:
        head = lines[first].split(delimiter)
        skip_header = not all(_is_number(tok) for tok in head[:2])
    ncols = 3 if weighted else 2
    src, dst, wts = [], [], []
    for lineno, line in enumerate(lines, start=1):
        if (skip_header and lineno - 1 == first) or not line.strip() or line.startswith("#"):
            continue
        parts = line.split(delimiter)
        if len(parts) < ncols:
            raise ValueError(
                f"{path}:{lineno}: expected {ncols} columns "
                f"(src, dst{', weight' if weighted else ''}), "
                f"got {line!r}; fix the line or pass the right delimiter=."
            )
        try:
            j, i = int(parts[0]), int(parts[1])
            if weighted:
                wts.append(float(parts[2]))
        except ValueError as err:
            raise ValueError(
                f"{path}:{lineno}: node ids must be integers (and weights numbers), got {line!r}; "
                "fix the line or relabel the nodes to 0..n-1."
            ) from err
        src.append(j)
        dst.append(i)
    edge_index = torch.tensor([src, dst], dtype=torch.long)
    if num_nodes is None:
        num_nodes = int(edge_index.max()) + 1 if edge_index.numel() else 0
    try:
        return PopulationGraph.from_edge_index(
            edge_index,
            num_nodes,
            edge_weight=torch.tensor(wts) if weighted else None,
            undirected=undirected,
            node_type=node_type,
            edge_type=edge_type,
            **kwargs,  # type: ignore[arg-type]
        )
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def from_pyg(data: Data | HeteroData, **kwargs: object) -> PopulationGraph:
    """From PyG: a ``HeteroData`` is used as it is; a homogeneous ``Data`` becomes node type
    ``"agent"`` and relation ``("agent", "contact", "agent")``, with its node tensors (``x``,
    ``y``, ...) as named agent attributes and ``edge_weight`` (or a 1-D ``edge_attr``) kept."""
    if isinstance(data, HeteroData):
        return PopulationGraph(data, **kwargs)  # type: ignore[arg-type]
    if not isinstance(data, Data):
        raise ValueError(
            f"from_pyg expects torch_geometric Data or HeteroData, got {type(data).__name__}."
        )
    if data.edge_index is None:
        raise ValueError("the PyG Data has no edge_index; set data.edge_index to a [2, E] tensor.")
    weight = data.edge_weight if "edge_weight" in data else None
    if weight is None and data.edge_attr is not None and data.edge_attr.dim() == 1:
        weight = data.edge_attr
    out = PopulationGraph.from_edge_index(
        data.edge_index,
        data.num_nodes,
        edge_weight=weight,
        **kwargs,  # type: ignore[arg-type]
    )
    n = data.num_nodes
    attrs = {
        k: v
        for k, v in data.items()
        if torch.is_tensor(v)
        and k not in ("edge_index", "edge_weight", "edge_attr")
        and v.dim() > 0
        and v.shape[0] == n
    }
    out.set_node_attrs(**attrs)
    return out
