"""HeteroLayer: one protocol layer per relation, combined per destination node type."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ..ops.aggregate import Reduce, _check_reduce
from .protocol import ProtocolLayer

if TYPE_CHECKING:
    from ..graph import PopulationGraph, Relation

__all__ = ["HeteroLayer"]


class HeteroLayer(nn.Module):
    r"""A dict of relation -> :class:`ProtocolLayer`, run on a heterogeneous population graph.

    .. math::
        \mathbf{h}_i = \bigoplus_{r \,:\, \mathrm{dst}(r) = \mathrm{type}(i)}
            \mathrm{layer}_r(\ldots)_i

    Each relation's layer is called with the relation's cached CSR, its ``edge_weight`` (when
    the graph has one), and the named inputs of its source and destination node types: a name
    present on both sides is passed as a ``(src, dst)`` pair unless both types are the same.
    Results are combined per destination type with ``aggr`` (as PyG's ``HeteroConv``).

    Args:
        layers: ``{(src_type, edge_type, dst_type): layer}``.
        aggr: ``"sum"`` (default), ``"mean"``, ``"max"``, ``"min"`` or ``"prod"``.
    """

    def __init__(self, layers: Mapping[Relation, ProtocolLayer], aggr: Reduce = "sum") -> None:
        super().__init__()
        _check_reduce(aggr, "aggr")
        if not layers:
            raise ValueError("layers is empty; give at least one relation -> layer.")
        for rel, layer in layers.items():
            if not (isinstance(rel, tuple) and len(rel) == 3):
                raise ValueError(
                    f"layer key {rel!r} is not a relation; use (src_type, edge_type, dst_type)."
                )
            if not isinstance(layer, nn.Module):
                raise ValueError(
                    f"layers[{rel!r}] must be a layer (a ProtocolLayer module), got "
                    f"{type(layer).__name__}."
                )
        self.relations: list[Relation] = list(layers)
        self.layers = nn.ModuleDict({"__".join(r): layer for r, layer in layers.items()})
        self.aggr = aggr

    def forward(
        self,
        graph: PopulationGraph,
        inputs: Mapping[str, Mapping[str, Tensor]],
        **shared: Any,
    ) -> dict[str, Tensor]:
        """Run every relation's layer and combine per destination type.

        Args:
            graph: the population graph (its relations must include every layer's).
            inputs: ``{node_type: {name: tensor}}`` per-node inputs.
            **shared: keyword arguments passed to every layer that accepts them.
        """
        results: dict[str, list[Tensor]] = {}
        for rel in self.relations:
            rel = graph.relation(rel)
            src_type, _, dst_type = rel
            layer = self.layers["__".join(rel)]
            accepted = inspect.signature(layer.forward).parameters
            src_in, dst_in = inputs.get(src_type, {}), inputs.get(dst_type, {})
            kwargs: dict[str, Any] = {}
            for name in set(src_in) | set(dst_in):
                if name not in accepted:
                    continue
                if src_type == dst_type:
                    kwargs[name] = src_in[name]
                else:
                    kwargs[name] = (src_in.get(name), dst_in.get(name))
            kwargs.update({k: v for k, v in shared.items() if k in accepted})
            weight = graph.edge_weight(rel)
            if weight is not None and "edge_weight" in accepted:
                kwargs["edge_weight"] = weight
            results.setdefault(dst_type, []).append(layer(graph.csr(rel), **kwargs))
        return {t: _combine(outs, self.aggr) for t, outs in results.items()}


def _combine(outs: list[Tensor], aggr: str) -> Tensor:
    if len(outs) == 1:
        return outs[0]
    stacked = torch.stack(outs)
    if aggr == "sum":
        return stacked.sum(0)
    if aggr == "mean":
        return stacked.mean(0)
    if aggr == "max":
        return stacked.amax(0)
    if aggr == "min":
        return stacked.amin(0)
    return stacked.prod(0)
