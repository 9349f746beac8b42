"""Message passing on shares: any ProtocolLayer with private inputs, and its twin class."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ..layers.protocol import ProtocolLayer, _dst_side
from .tensor import is_shared

if TYPE_CHECKING:
    from ..ops import CSR

__all__ = ["SecureProtocolLayer", "propagate_private", "secure_propagate"]


def _check_aggregation(layer: ProtocolLayer) -> None:
    if layer.aggr not in ("sum", "mean"):
        raise ValueError(
            f"{type(layer).__name__} aggregates with {layer.aggr!r}; on private inputs only "
            "'sum' (and 'mean', a sum times the public 1 / in-degree) run without revealing "
            "anything. Max, min and product need secure comparisons per edge: use 'sum'."
        )


def propagate_private(
    layer: ProtocolLayer, csr: CSR, edge_weight: Any, kwargs: dict[str, Any]
) -> Any:
    """:meth:`ProtocolLayer.propagate` with private values of a secure program
    (:class:`~lpm_graph.secure.values.Private`, or their tangents) among its inputs: gather
    along the public edges, ``message``, sum (or mean) per destination, ``update``. All local
    on shares; ``message`` may use the whole vocabulary of :mod:`lpm_graph.secure.values`."""
    _check_aggregation(layer)
    if edge_weight is not None and edge_weight.dim() > 0:
        edge_weight = edge_weight[csr.perm.to(edge_weight.device)]  # to the CSR's edge order
    args = layer._collect(csr.col, csr.row, None, edge_weight, kwargs)
    messages = layer.message(**args)
    if messages.shape[0] != csr.num_edges:
        raise ValueError(
            f"{type(layer).__name__}.message returned {messages.shape[0]} rows for "
            f"{csr.num_edges} edges; return one message per edge."
        )
    if torch.is_tensor(messages):  # nothing private reached the messages
        out = messages.new_zeros((csr.num_rows, *messages.shape[1:]))
        out = out.index_add(0, csr.row.to(out.device), messages)
    else:
        out = messages.scatter_sum(csr.row, csr.num_rows)
    if layer.aggr == "mean":
        inverse = 1.0 / csr.degree.clamp(min=1).double()
        out = out * inverse.reshape(-1, *([1] * (out.dim() - 1))).to(out.device)
    extra = {name: _dst_side(kwargs[name]) for name in layer._update_args if name in kwargs}
    return layer.update(out, **extra)


def secure_propagate(
    layer: ProtocolLayer, csr: CSR, edge_weight: Tensor | None, kwargs: dict[str, Any]
) -> Any:
    """Gather, message, sum-aggregate and update with private (shared) node tensors.

    The topology and ``edge_weight`` are public. Gathering shares along the edges and summing
    them per destination is the same scatter-add on every party's shares: no communication,
    exact in the ring. ``message`` may add, subtract and multiply by public values freely
    (local); a product of two private values costs a Beaver round.
    """
    _check_aggregation(layer)
    args = layer._collect(csr.col, csr.row, csr.perm, edge_weight, kwargs)
    messages = layer.message(**args)
    if not is_shared(messages):
        raise TypeError(
            f"{type(layer).__name__}.message returned a public tensor from private inputs; "
            "return the SharedTensor computed from them."
        )
    if messages.shape[0] != csr.num_edges:
        raise ValueError(
            f"{type(layer).__name__}.message returned {messages.shape[0]} rows for "
            f"{csr.num_edges} edges; return one message per edge."
        )
    out = messages.scatter_sum(csr.row, csr.num_rows)
    if layer.aggr == "mean":
        inverse = 1.0 / csr.degree.clamp(min=1).double()
        out = out.mul_public(inverse.reshape(-1, *([1] * (out.dim() - 1))))
    extra = {name: _dst_side(kwargs[name]) for name in layer._update_args if name in kwargs}
    return layer.update(out, **extra)


class SecureProtocolLayer(ProtocolLayer):
    """The private twin of :class:`~lpm_graph.layers.ProtocolLayer`.

    Same hooks (``message``, ``update``) and the same call signature; node tensors may be
    :class:`~lpm_graph.secure.SharedTensor` (private) or plain tensors (public), mixed in one
    call. Aggregation is a sum (or a mean over the public in-degree). Any plaintext layer runs
    on shares too when given a SharedTensor (``ProtocolLayer.propagate`` calls the
    ``__lpm_propagate__`` hook of its inputs' type, which leads here), so
    switching a model to private inputs needs no rewrite; subclass this one for layers that are
    only ever private, or wrap an existing layer class with :meth:`twin`.
    """

    def propagate(
        self,
        edge_index: Tensor | CSR,
        *,
        size: tuple[int, int] | None = None,
        edge_weight: Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        csr = self._as_csr(edge_index, size, kwargs)
        return secure_propagate(self, csr, edge_weight, kwargs)

    @staticmethod
    def twin(layer_class: type[ProtocolLayer]) -> type[ProtocolLayer]:
        """A subclass of ``layer_class`` whose propagation always runs on shares."""
        if issubclass(layer_class, SecureProtocolLayer):
            return layer_class
        name = f"Secure{layer_class.__name__}"
        return type(name, (SecureProtocolLayer, layer_class), {})
