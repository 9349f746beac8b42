"""Population graphs: construction, validation, interop and cached CSR structures."""

from .interop import from_networkx, from_pyg, from_scipy, read_edge_list, to_networkx, to_scipy
from .population import PopulationGraph, Relation

__all__ = [
    "PopulationGraph",
    "Relation",
    "from_networkx",
    "from_pyg",
    "from_scipy",
    "read_edge_list",
    "to_networkx",
    "to_scipy",
]
