"""Conversions between PopulationGraph and networkx, scipy.sparse and PyG (files: :mod:`.io`)."""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data, HeteroData

from .io import read_edge_list  # noqa: F401  (moved to .io; still importable from here)
from .population import DEFAULT_EDGE_TYPE, DEFAULT_NODE_TYPE, PopulationGraph, Relation

if TYPE_CHECKING:
    import networkx as nx
    import scipy.sparse as sp

__all__ = [
    "from_dgl",
    "from_networkx",
    "from_pyg",
    "from_scipy",
    "to_dgl",
    "to_networkx",
    "to_scipy",
]


def from_networkx(
    graph: nx.Graph,
    *,
    weight: str | None = None,
    node_attrs: Sequence[str] = (),
    node_type: str = DEFAULT_NODE_TYPE,
    edge_type: str = DEFAULT_EDGE_TYPE,
    **kwargs: object,
) -> PopulationGraph:
    """A networkx graph as one node type and one relation; :func:`to_networkx` undoes it.

    Nodes are numbered in ``graph.nodes`` order. Labels that are not ``0..n-1`` are kept:
    integers as the int64 tensor ``graph["agent"].node_label``, anything else as the list
    ``graph["agent"].node_labels``. An undirected edge ``{u, v}`` becomes the two directed
    edges ``u -> v`` and ``v -> u`` and the relation is marked ``undirected``; a directed graph
    keeps its direction.

    Args:
        graph: a ``networkx.Graph`` or ``DiGraph``.
        weight: an edge attribute to read as ``edge_weight`` (float64, so the values come back
            exactly; its name is kept as the relation's ``weight_name``).
        node_attrs: numeric node attributes to copy as per-node tensors (ints -> int64,
            floats -> float64, bools -> bool); every node must have them.
        node_type: name of the node type.
        edge_type: name of the relation.
        **kwargs: other keyword arguments, passed to
            :meth:`PopulationGraph.from_edge_index`.
    """
    import networkx as nx

    if not isinstance(graph, nx.Graph):  # DiGraph, MultiGraph, ... are Graphs too
        raise ValueError(
            f"graph must be a networkx Graph or DiGraph, got {type(graph).__name__}; build one "
            "with networkx.Graph(edges), or use PopulationGraph.from_edge_index for a tensor."
        )
    if isinstance(node_attrs, str):
        raise ValueError(
            f"node_attrs must be a list of attribute names, got the str {node_attrs!r}; "
            f"write node_attrs=[{node_attrs!r}]."
        )
    nodes = list(graph.nodes)
    index = {node: k for k, node in enumerate(nodes)}
    pairs, weights = [], []
    for u, v, d in graph.edges(data=True):
        pairs.append((index[u], index[v]))
        if weight is not None:
            if weight not in d:
                raise ValueError(
                    f"weight={weight!r}: an edge of the networkx graph has no {weight!r} "
                    "attribute; set it on every edge or pass weight=None."
                )
            try:
                weights.append(float(d[weight]))
            except (TypeError, ValueError) as err:
                raise ValueError(
                    f"weight={weight!r}: the edge {u!r} -> {v!r} has the non-numeric weight "
                    f"{d[weight]!r}; edge weights must be numbers."
                ) from err
    attrs = {name: _node_attr(graph, nodes, name) for name in node_attrs}
    edge_index = torch.tensor(pairs, dtype=torch.long).reshape(-1, 2).t().contiguous()
    out = PopulationGraph.from_edge_index(
        edge_index,
        len(nodes),
        edge_weight=None if weight is None else torch.tensor(weights, dtype=torch.float64),
        undirected=not isinstance(graph, nx.DiGraph),
        node_type=node_type,
        edge_type=edge_type,
        **kwargs,  # type: ignore[arg-type]
    )
    if weight is not None:
        out.data[node_type, edge_type, node_type].weight_name = weight
    store = out.data[node_type]
    for name, value in attrs.items():
        store[name] = value
    if nodes != list(range(len(nodes))):
        integral = all(isinstance(x, numbers.Integral) and not isinstance(x, bool) for x in nodes)
        if integral and all(-(2**63) <= x < 2**63 for x in nodes):
            store.node_label = torch.tensor([int(x) for x in nodes], dtype=torch.long)
        else:
            store.node_labels = nodes  # other labels stay a Python list
    return out


def _node_attr(graph: nx.Graph, nodes: list[Any], name: str) -> Tensor:
    if name in ("node_label", "node_labels", "num_nodes"):
        raise ValueError(f"node_attrs: {name!r} is a reserved name; rename the node attribute.")
    values = []
    for node in nodes:
        data = graph.nodes[node]
        if name not in data:
            raise ValueError(
                f"node_attrs: node {node!r} has no {name!r} attribute; set it on every node "
                f"or leave {name!r} out of node_attrs."
            )
        values.append(data[name])
    array = np.asarray(values)
    if array.dtype.kind not in "biuf" or array.dtype.itemsize > 8:
        raise ValueError(
            f"node_attrs: the node attribute {name!r} holds {array.dtype} values; only numbers "
            "and bools become tensors."
        )
    if array.dtype.kind in "iu":
        if array.size and array.max() > np.iinfo(np.int64).max:
            raise ValueError(f"node_attrs: the node attribute {name!r} exceeds int64.")
        array = array.astype(np.int64)
    elif array.dtype.kind == "f":
        array = array.astype(np.float64)
    return torch.from_numpy(array)


def to_networkx(
    graph: PopulationGraph, relation: Relation | None = None, *, undirected: bool | None = None
) -> nx.Graph | nx.DiGraph:
    """One relation as a networkx graph; the inverse of :func:`from_networkx`.

    Args:
        graph: the population graph.
        relation: a relation within one node type (default: the only one).
        undirected: ``True``: a ``networkx.Graph`` (the relation must be symmetric, weights
            included); ``False``: a ``DiGraph``; ``None`` (default): a ``Graph`` when the
            relation was built undirected (its ``undirected`` mark), else a ``DiGraph``.

    Nodes come in id order under their original labels (``node_label`` / ``node_labels``,
    see :func:`from_networkx`), with every 1-D node tensor as a node attribute (Python
    numbers). Weights are written under the relation's ``weight_name`` (default
    ``"weight"``). Parallel edges collapse (networkx keeps the last one).
    """
    import networkx as nx

    rel = graph.relation(relation)
    if rel[0] != rel[2]:
        raise ValueError(
            f"to_networkx needs a relation within one node type, got {rel}; convert a "
            "bipartite relation with to_scipy instead."
        )
    store = graph.data[rel]
    if undirected is None:
        undirected = bool(store.get("undirected", False))
    ei = graph.edge_index(rel).cpu().numpy()
    weight = graph.edge_weight(rel)
    w = None if weight is None else weight.detach().cpu().numpy()
    if undirected:
        _check_symmetric(ei, w, rel)
    n = graph.num_nodes(rel[0])
    node_store = graph.data[rel[0]]
    labels, label_key = _labels(node_store, n)
    columns = {
        name: value.detach().cpu().tolist()
        for name, value in node_store.items()
        if torch.is_tensor(value) and value.dim() == 1 and name != label_key
    }
    out = nx.Graph() if undirected else nx.DiGraph()
    out.add_nodes_from(
        (label, {name: values[k] for name, values in columns.items()})
        for k, label in enumerate(labels)
    )
    src = [labels[j] for j in ei[0].tolist()]
    dst = [labels[i] for i in ei[1].tolist()]
    if w is None:
        out.add_edges_from(zip(src, dst))
    else:
        name = store.get("weight_name", "weight")
        out.add_weighted_edges_from(zip(src, dst, w.tolist()), weight=name)
    return out


def _labels(node_store: Any, n: int) -> tuple[list[Any], str | None]:
    """The node labels kept by :func:`from_networkx` (if still valid) and their key."""
    labels = node_store.get("node_labels")
    if isinstance(labels, list) and len(labels) == n:
        labels = [_unlist(label) for label in labels]
        if len(set(labels)) == n:
            return labels, "node_labels"
    label = node_store.get("node_label")
    if torch.is_tensor(label) and label.dim() == 1 and not label.is_floating_point():
        values = label.tolist()
        if len(set(values)) == n:
            return values, "node_label"
    return list(range(n)), None


def _unlist(label: Any) -> Any:
    """Undo PyG's ``.to()``, which turns tuples in a stored list into lists: a networkx node is
    hashable, so a list label was a tuple."""
    return tuple(_unlist(x) for x in label) if isinstance(label, list) else label


def _check_symmetric(ei: np.ndarray, w: np.ndarray | None, rel: Relation) -> None:
    """Raise unless the multiset of edges ``(j, i, w)`` equals that of ``(i, j, w)``."""
    src, dst = ei
    w = np.zeros(src.shape[0]) if w is None else w
    forward = np.lexsort((w, dst, src))
    reverse = np.lexsort((w, src, dst))
    a = (src[forward], dst[forward], w[forward])  # sorted edges
    b = (dst[reverse], src[reverse], w[reverse])  # sorted reversed edges
    differ = (a[0] != b[0]) | (a[1] != b[1]) | (a[2] != b[2])
    if not bool(differ.any()):
        return
    k = int(differ.argmax())
    # the smaller of the two tuples occurs more often on its side: that edge lacks a reverse
    ta, tb = tuple(x[k] for x in a), tuple(x[k] for x in b)
    e = int(forward[k] if ta < tb else reverse[k])
    j, i = int(src[e]), int(dst[e])
    raise ValueError(
        f"relation {rel} is not symmetric: the edge {j} -> {i} (node ids, weight "
        f"{float(w[e]):g}) has no reverse {i} -> {j} with the same weight; pass "
        "undirected=False for a networkx DiGraph."
    )


def from_scipy(
    matrix: sp.spmatrix | sp.sparray,
    *,
    weighted: bool = True,
    node_type: str = DEFAULT_NODE_TYPE,
    edge_type: str = DEFAULT_EDGE_TYPE,
    **kwargs: object,
) -> PopulationGraph:
    """A square sparse adjacency where a stored ``A[i, j]`` is the edge ``j -> i`` (message
    from ``j`` to ``i``, as in ``A @ x``); :func:`to_scipy` undoes it.

    Stored values become ``edge_weight`` unless ``weighted=False``. Duplicate entries are
    summed first; stored zeros are kept as zero-weight edges (so the sparsity pattern comes
    back). Float values keep their dtype; integer and bool values are held as float64
    (exact up to 2**53) and their dtype is kept as the relation's ``weight_dtype``. A
    symmetric matrix gives both directions of each contact.
    """
    import scipy.sparse as sp

    if not sp.issparse(matrix):
        raise ValueError(
            f"matrix must be a scipy.sparse matrix or array, got {type(matrix).__name__}; "
            "wrap dense arrays with scipy.sparse.csr_array(...)."
        )
    if matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"matrix must be square (agents x agents), got shape {matrix.shape}.")
    coo = sp.coo_array(matrix, copy=True)  # sum_duplicates must not touch the caller's arrays
    coo.sum_duplicates()
    rows = torch.from_numpy(coo.row.astype(np.int64))
    cols = torch.from_numpy(coo.col.astype(np.int64))
    edge_index = torch.stack([cols, rows])
    values, dtype = coo.data, None
    if weighted and values.dtype.kind in "biu":
        dtype = values.dtype.name
        if values.size and np.abs(values.astype(np.float64)).max() > 2**53:
            raise ValueError(
                f"matrix has {dtype} values beyond 2**53, which float64 edge weights cannot "
                "hold exactly; rescale them or convert the matrix to float first."
            )
        values = values.astype(np.float64)
    elif weighted and values.dtype not in (np.float16, np.float32, np.float64):
        raise ValueError(
            f"matrix values must be real numbers or bools, got {values.dtype}; convert it "
            "(e.g. abs(matrix)) or pass weighted=False."
        )
    out = PopulationGraph.from_edge_index(
        edge_index,
        matrix.shape[0],
        edge_weight=torch.from_numpy(np.ascontiguousarray(values)) if weighted else None,
        node_type=node_type,
        edge_type=edge_type,
        **kwargs,  # type: ignore[arg-type]
    )
    if dtype is not None:
        out.data[node_type, edge_type, node_type].weight_dtype = dtype
    return out


def to_scipy(graph: PopulationGraph, relation: Relation | None = None) -> sp.csr_array:
    """A relation as a canonical scipy CSR adjacency ``A[i, j]`` for the edge ``j -> i``
    (parallel edges add up; indices sorted). Values have the weights' dtype (or the
    ``weight_dtype`` kept by :func:`from_scipy`); an unweighted relation gives float32 ones."""
    import scipy.sparse as sp

    rel = graph.relation(relation)
    ei = graph.edge_index(rel).cpu().numpy()
    weight = graph.edge_weight(rel)
    data = (
        np.ones(ei.shape[1], dtype=np.float32) if weight is None else weight.detach().cpu().numpy()
    )
    dtype = graph.data[rel].get("weight_dtype")
    if dtype is not None and weight is not None:
        data = data.astype(dtype)
    shape = (graph.num_nodes(rel[2]), graph.num_nodes(rel[0]))
    out = sp.csr_array((data, (ei[1], ei[0])), shape=shape)
    out.sum_duplicates()
    return out


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
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        n = data.num_nodes  # PyG guesses it from edge_index (with a warning) when unset
    if n is None or caught:
        raise ValueError(
            "the PyG Data does not say how many nodes it has (no num_nodes, no x); set "
            "data.num_nodes = N: nodes without an edge would otherwise be lost."
        )
    for key in ("x", "pos"):  # node features by PyG's conventions: one row per node
        value = data[key] if key in data else None
        if torch.is_tensor(value) and (value.dim() == 0 or value.shape[0] != n):
            raise ValueError(
                f"data.{key} has shape {list(value.shape)} but the PyG Data has {n} nodes; "
                f"give data.{key} one row per node (or set data.num_nodes to its row count)."
            )
    weight = data.edge_weight if "edge_weight" in data else None
    if weight is None and data.edge_attr is not None and data.edge_attr.dim() == 1:
        weight = data.edge_attr
    out = PopulationGraph.from_edge_index(
        data.edge_index,
        n,
        edge_weight=weight,
        **kwargs,  # type: ignore[arg-type]
    )
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


# ---------------------------------------------------------------------- DGL (optional)
def _dgl() -> Any:
    """Import DGL, or raise an ImportError that says why it is not usable and what to do."""
    try:
        import dgl
    except ModuleNotFoundError as error:
        if error.name != "dgl":
            raise ImportError(
                f"DGL is installed but does not import: {error}. DGL's newest release (2.1) ships "
                f"compiled parts for torch <= 2.2 only, and this is torch {torch.__version__}; "
                "install a DGL build made for this torch, or use the PyG / networkx / scipy "
                "conversions instead."
            ) from error
        raise ImportError(
            "DGL interop needs the `dgl` package, which is not installed: pip install "
            "'lpm-graph[dgl]' (DGL builds exist for torch <= 2.2), or use the PyG / networkx / "
            "scipy conversions."
        ) from error
    except Exception as error:  # a DGL whose compiled parts do not match this torch
        raise ImportError(
            f"DGL is installed but does not import with torch {torch.__version__}: "
            f"{type(error).__name__}: {error}. DGL's newest release (2.1) ships compiled parts "
            "for torch <= 2.2 only; install a DGL build made for this torch, or use the PyG / "
            "networkx / scipy conversions."
        ) from error
    return dgl


def to_dgl(graph: PopulationGraph) -> Any:
    """A ``dgl.DGLGraph`` (heterogeneous) with the same node types, relations (as canonical
    edge types), node attributes (``ndata``) and edge weights (``edata["weight"]``).

    Raises:
        ImportError: DGL is not installed or does not import with this torch (the message
            says which, and why).
    """
    dgl = _dgl()
    edges = {rel: tuple(graph.edge_index(rel)) for rel in graph.relations}
    sizes = {t: graph.num_nodes(t) for t in graph.node_types}
    out = dgl.heterograph(edges, num_nodes_dict=sizes)
    for t in graph.node_types:
        for name, value in graph.node_attrs(t).items():
            out.nodes[t].data[name] = value
    for rel in graph.relations:
        weight = graph.edge_weight(rel)
        if weight is not None:
            out.edges[rel].data["weight"] = weight
    return out


def from_dgl(graph: Any, weight: str = "weight", **kwargs: object) -> PopulationGraph:
    """From a ``dgl.DGLGraph``: its node types, canonical edge types (as relations), node data
    (as named attributes) and the edge data ``weight`` (as edge weights). A homogeneous DGL
    graph (node type ``_N``, edge type ``_E``) becomes node type ``"agent"`` and relation
    ``("agent", "contact", "agent")``.

    Raises:
        ImportError: DGL is not installed or does not import with this torch.
    """
    _dgl()
    rename = {"_N": DEFAULT_NODE_TYPE, "_E": DEFAULT_EDGE_TYPE}
    data = HeteroData()
    for t in graph.ntypes:
        store = data[rename.get(t, t)]
        store.num_nodes = int(graph.num_nodes(t))
        for name, value in graph.nodes[t].data.items():
            store[name] = value
    for src, etype, dst in graph.canonical_etypes:
        rel = (rename.get(src, src), rename.get(etype, etype), rename.get(dst, dst))
        u, v = graph.edges(etype=(src, etype, dst))
        data[rel].edge_index = torch.stack([u.long(), v.long()])
        edata = graph.edges[(src, etype, dst)].data
        if weight in edata:
            data[rel].edge_weight = edata[weight]
    return PopulationGraph(data, **kwargs)  # type: ignore[arg-type]
