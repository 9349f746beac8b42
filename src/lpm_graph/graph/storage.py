"""Saving and loading PopulationGraphs (``torch.save`` of plain tensors, read back safely)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch_geometric.data import HeteroData

from .population import PopulationGraph

__all__ = ["atomic_save", "load_graph", "save_graph"]

FORMAT = "lpm-graph/population-graph/1"


def save_graph(graph: PopulationGraph, path: str | Path) -> None:
    """Write ``graph`` (node counts, attributes, edges, graph-level values) to ``path``.

    The file is written next to its destination and renamed into place, so an interrupted
    save never leaves a damaged file where a good one was. Read it back with
    :func:`load_graph`.
    """
    atomic_save({"format": FORMAT, "data": graph.data.to_dict()}, path)


def load_graph(path: str | Path) -> PopulationGraph:
    """Read a graph written by :func:`save_graph` (``weights_only`` loading: no code runs)."""
    payload = torch.load(Path(path), weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(
            f"{path} is not a PopulationGraph file written by lpm_graph.graph.save_graph "
            f"(format {payload.get('format') if isinstance(payload, dict) else None!r}); "
            "delete it and rebuild the graph."
        )
    return PopulationGraph(HeteroData.from_dict(payload["data"]))


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
