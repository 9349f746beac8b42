"""Transforms of PopulationGraphs, used as ``transform=`` / ``pre_transform=`` of datasets."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch

from ..graph import PopulationGraph

__all__ = ["Compose", "PlacesAsNodes"]

PLACE_CONTACTS = {"household": "household", "school": "school", "workplace": "work"}
"""Agent attribute holding a place id -> the agent -> agent relation of contacts there."""


class PlacesAsNodes:
    """Places as node types with membership edges, instead of agent -> agent contacts.

    For each place attribute of the agents (``household``, ``school``, ``workplace``: an id
    per agent, -1 for none) adds the node type of that name (one node per place id), the
    relation ``("agent", "member_of", place)`` and its reverse
    ``(place, "has_member", "agent")``. With ``drop_contacts=True`` (default) the matching
    agent -> agent relation (``household``, ``school``, ``work``) is removed.

    Two hops ``agent -> place -> agent`` reach every member of the place, the agent itself
    included: exactly the household contacts plus a self term, and *more* than the sampled
    within-school and within-work contacts (everyone in a place meets everyone). It costs
    ``2 * members`` edges instead of ``size * degree``: use it for models that reason about
    places (place-level features, a GNN over places), not to reproduce the contact graph.

    Args:
        places: the agent attributes to turn into node types.
        drop_contacts: remove the agent -> agent relation each place replaces.
    """

    def __init__(
        self,
        places: Sequence[str] = ("household", "school", "workplace"),
        drop_contacts: bool = True,
    ) -> None:
        if isinstance(places, str):
            raise ValueError(
                f"places must be a list of agent attribute names, got the str {places!r}; "
                f"write places=[{places!r}]."
            )
        self.places = tuple(places)
        self.drop_contacts = bool(drop_contacts)

    def __call__(self, graph: PopulationGraph) -> PopulationGraph:
        agents = graph.node_attrs("agent")
        missing = [p for p in self.places if p not in agents]
        if missing:
            raise ValueError(
                f"PlacesAsNodes: the agents have no {missing} attribute(s) (place ids); "
                f"they have {sorted(agents)}. Pass places= naming id attributes."
            )
        data = copy.copy(graph.data)
        for place in self.places:
            ids = agents[place]
            if ids.dtype in (torch.float16, torch.float32, torch.float64, torch.bool):
                raise ValueError(f"PlacesAsNodes: agent attribute {place!r} must hold int ids.")
            member = (ids >= 0).nonzero().view(-1)
            contacts = ("agent", PLACE_CONTACTS.get(place, place), "agent")
            if self.drop_contacts and contacts in data.edge_types:
                del data[contacts]
            # get_*_store: a plain data["household"] would find the relation of that name
            data.get_node_store(place).num_nodes = int(ids.max()) + 1 if ids.numel() else 0
            data.get_edge_store("agent", "member_of", place).edge_index = torch.stack(
                [member, ids[member]]
            )
            data.get_edge_store(place, "has_member", "agent").edge_index = torch.stack(
                [ids[member], member]
            )
        return PopulationGraph(data)

    def __repr__(self) -> str:
        return f"PlacesAsNodes(places={self.places}, drop_contacts={self.drop_contacts})"


class Compose:
    """Apply transforms in order (``Compose([a, b])(g) == b(a(g))``)."""

    def __init__(self, transforms: Sequence[Callable[[PopulationGraph], PopulationGraph]]) -> None:
        if callable(transforms) or not isinstance(transforms, Sequence):
            raise ValueError(
                f"transforms must be a list of callables, got {transforms!r}; wrap a single "
                "transform: Compose([t])."
            )
        bad = [t for t in transforms if not callable(t)]
        if bad:
            raise ValueError(f"transforms must be callables (graph -> graph), got {bad[0]!r}.")
        self.transforms = list(transforms)

    def __call__(self, graph: PopulationGraph) -> PopulationGraph:
        for transform in self.transforms:
            graph = transform(graph)
        return graph

    def __repr__(self) -> str:
        inner = ", ".join(repr(t) for t in self.transforms)
        return f"Compose([{inner}])"
