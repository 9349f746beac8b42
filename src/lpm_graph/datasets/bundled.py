"""Real data bundled with the package (see ``data/*/PROVENANCE.md``)."""

from __future__ import annotations

import gzip
from importlib import resources

import torch

from ..graph import PopulationGraph
from ..graph.interop import read_edge_list

__all__ = ["hampshire_contact_network"]

HAMPSHIRE_AGENTS = 70_916


def hampshire_contact_network(agents: bool = True) -> PopulationGraph:
    """The contact network of Hampshire County, MA (FIPS 25011), from GradABM (MIT licence).

    70,916 synthetic agents and 249,991 undirected contacts (179 of them self-loops, kept as
    single edges), stored as 499,803 directed edges. With ``agents=True`` (default) the agents
    carry ``age_group`` (int64, 0..7 = 0-19, 20-29, ..., 80+) and ``stage`` (their initial
    disease stage, 0 = susceptible) from the same source.
    Bundled with the package; nothing is downloaded.
    """
    path = _data("25011_random_network.csv.gz")
    with resources.as_file(path) as file:
        graph = read_edge_list(file, num_nodes=HAMPSHIRE_AGENTS, undirected=True)
    if agents:
        age, stage = _hampshire_agents()
        graph.set_node_attrs("agent", age_group=age, stage=stage)
    return graph


def _data(name: str):  # noqa: ANN202 - an importlib Traversable
    return resources.files("lpm_graph") / "datasets/data/gradabm_ma" / name


def _hampshire_agents() -> tuple[torch.Tensor, torch.Tensor]:
    """Age group and initial stage per agent, in agent-id order."""
    with resources.as_file(_data("25011_AgentsData.csv.gz")) as file, gzip.open(file, "rt") as f:
        header = f.readline().strip().split(",")
        rows = [line.split(",") for line in f.read().split("\n") if line]
    if header != ["", "age_group", "stage"] or len(rows) != HAMPSHIRE_AGENTS:
        raise ValueError(
            f"the bundled Hampshire agents file is damaged (header {header}, {len(rows)} rows); "
            "reinstall lpm-graph."
        )
    table = torch.tensor([[int(v) for v in row] for row in rows], dtype=torch.int64)
    order = torch.argsort(table[:, 0])
    if not torch.equal(table[order, 0], torch.arange(HAMPSHIRE_AGENTS)):
        raise ValueError("the bundled Hampshire agents file does not list ids 0..70,915 once each.")
    return table[order, 1].contiguous(), table[order, 2].contiguous()
