"""Real data bundled with the package (see ``data/*/PROVENANCE.md``)."""

from __future__ import annotations

from importlib import resources

from ..graph import PopulationGraph
from ..graph.interop import read_edge_list

__all__ = ["hampshire_contact_network"]

HAMPSHIRE_AGENTS = 70_916


def hampshire_contact_network() -> PopulationGraph:
    """The contact network of Hampshire County, MA (FIPS 25011), from GradABM (MIT licence).

    70,916 synthetic agents and 249,991 undirected contacts (179 of them self-loops, kept as
    single edges), stored as 499,803 directed edges.
    Bundled with the package; nothing is downloaded.
    """
    path = resources.files("lpm_graph") / "datasets/data/gradabm_ma/25011_random_network.csv.gz"
    with resources.as_file(path) as file:
        return read_edge_list(file, num_nodes=HAMPSHIRE_AGENTS, undirected=True)
