"""Population graphs: construction, validation, interop, file readers and cached CSR structures."""

from .interop import (
    from_dgl,
    from_networkx,
    from_pyg,
    from_scipy,
    to_dgl,
    to_networkx,
    to_scipy,
)
from .io import NodeTable, attach_node_table, from_files, read_edge_list, read_node_table
from .population import PopulationGraph, Relation

__all__ = [
    "NodeTable",
    "PopulationGraph",
    "Relation",
    "attach_node_table",
    "from_files",
    "from_networkx",
    "from_dgl",
    "from_pyg",
    "from_scipy",
    "read_edge_list",
    "read_node_table",
    "to_dgl",
    "to_networkx",
    "to_scipy",
]
