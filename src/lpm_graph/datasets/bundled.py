"""Real population graphs bundled with the package (see ``data/*/PROVENANCE.md``)."""

from __future__ import annotations

import warnings
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import torch

from ..graph import PopulationGraph
from ..graph.io import read_edge_list, read_node_table
from .base import Dataset, Transform

__all__ = ["MassachusettsCounty", "franklin_contact_network", "hampshire_contact_network"]

# FIPS -> number of agents, for the counties whose agents and network are bundled.
COUNTIES = {"25011": 70_916}


class MassachusettsCounty(Dataset):
    r"""The synthetic population and contact network of a Massachusetts county (GradABM).

    The bundled county is FIPS 25011, Franklin County (the GradABM data folder calls it
    Hampshire, which is 25015; see ``PROVENANCE.md``).

    One :class:`~lpm_graph.PopulationGraph` with node type ``"agent"`` and the relation
    ``("agent", "contact", "agent")``. Every line of the network file is one undirected
    contact, stored as the two directed edges ``j -> i`` and ``i -> j``; the source's 179
    self-contacts therefore appear as two ``i -> i`` edges each, so in-degrees equal
    networkx's degrees of the source graph. A self-contact carries no infection (an agent is
    never susceptible and infectious at once); pass ``remove_self_loops=True`` to drop them.
    Agents carry ``age_group`` (int64, 0..7 = 0-19, 20-29, ..., 70-79, 80+) and ``stage``
    (int64, the initial disease stage, 0 = susceptible).

    The files are bundled with the package (public GradABM repository, MIT licence; see
    ``lpm_graph/datasets/data/gradabm_ma/PROVENANCE.md``); "downloading" copies them into
    ``root/raw``. Only Franklin County (FIPS 25011) has agents and a network; the daily
    series of all 14 counties are in :class:`~lpm_graph.datasets.CountySeries`.

    **STATS** (county 25011, computed from the files):

    .. list-table::
        :header-rows: 1

        * - agents
          - contacts (undirected)
          - directed edges
          - self-contacts
          - mean degree
          - initially infected
        * - 70,916
          - 249,991
          - 499,982
          - 179
          - 7.05
          - 1

    Age groups (agents): 14,468 / 8,137 / 7,865 / 9,450 / 12,140 / 10,983 / 4,588 / 3,285.

    Args:
        root: cache folder (see :class:`~lpm_graph.datasets.Dataset`).
        county: FIPS code of the county (only ``"25011"``).
        remove_self_loops: drop the self-contacts (499,624 directed edges remain).
        transform: applied to each item on access (as in PyG).
        pre_transform: applied to each item once, before caching (as in PyG).
        force_reload: process again even if a cached copy exists (as in PyG).
    """

    def __init__(
        self,
        root: str | Path | None | bool = None,
        county: str = "25011",
        *,
        remove_self_loops: bool = False,
        transform: Transform | None = None,
        pre_transform: Transform | None = None,
        force_reload: bool = False,
    ) -> None:
        county = str(county)
        if county not in COUNTIES:
            raise ValueError(
                f"county {county!r} has no bundled agents or network; available: "
                f"{sorted(COUNTIES)}. The series of all 14 Massachusetts counties are in "
                "CountySeries."
            )
        self.county = county
        self.remove_self_loops = bool(remove_self_loops)
        super().__init__(root, transform, pre_transform, force_reload)

    @property
    def raw_file_names(self) -> list[str]:
        return [f"{self.county}_random_network.csv.gz", f"{self.county}_AgentsData.csv.gz"]

    def cache_args(self) -> dict[str, Any]:
        return {"county": self.county, "remove_self_loops": self.remove_self_loops}

    def bundled_file(self, name: str) -> Traversable:
        return _bundled(name)

    def process(self) -> None:
        if self.root is None:  # in memory: read the package data directly
            with (
                resources.as_file(_bundled(self.raw_file_names[0])) as net,
                resources.as_file(_bundled(self.raw_file_names[1])) as agents,
            ):
                graph = self._build(Path(net), Path(agents))
        else:
            graph = self._build(*self.raw_paths)
        self.save([graph], self.processed_paths[0] if self.root is not None else None)

    def _build(self, network: Path, agents: Path) -> PopulationGraph:
        n = COUNTIES[self.county]
        pairs = read_edge_list(network, num_nodes=n).edge_index()  # [2, C], one per line
        if self.remove_self_loops:
            pairs = pairs[:, pairs[0] != pairs[1]]
        edge_index = torch.cat([pairs, pairs.flip(0)], dim=1)
        graph = PopulationGraph.from_edge_index(edge_index, n)
        graph.data["agent", "contact", "agent"].undirected = True
        table = read_node_table(
            agents, id_column="", columns={"age_group": "int64", "stage": "int64"}, num_nodes=n
        )
        graph.set_node_attrs("agent", age_group=table["age_group"], stage=table["stage"])
        graph.data.county = self.county
        return graph

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.county!r})"


def franklin_contact_network(agents: bool = True) -> PopulationGraph:
    """Franklin County, MA (FIPS 25011): ``MassachusettsCounty("25011")`` read in memory.

    70,916 agents, 249,991 undirected contacts (499,982 directed edges); with ``agents=True``
    the agents carry ``age_group`` and ``stage``. Nothing is written to disk.
    """
    graph = MassachusettsCounty(root=False)[0]
    if not agents:
        for name in ("age_group", "stage"):
            del graph.data["agent"][name]
    return graph


def hampshire_contact_network(agents: bool = True) -> PopulationGraph:
    """Deprecated: FIPS 25011 is Franklin County; use :func:`franklin_contact_network`."""
    warnings.warn(
        "hampshire_contact_network() is misnamed: the bundled county, FIPS 25011, is Franklin "
        "County, MA (Hampshire is 25015). Use franklin_contact_network(); this alias will go.",
        DeprecationWarning,
        stacklevel=2,
    )
    return franklin_contact_network(agents)


def _bundled(name: str) -> Traversable:
    return resources.files("lpm_graph") / "datasets/data/gradabm_ma" / name
