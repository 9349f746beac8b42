"""ProtocolLayer: the message-passing base class of every interaction protocol."""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor, nn

from ..ops import CSR, resolve_backend
from ..ops.aggregate import Reduce, _check_reduce, _reduce_messages

__all__ = ["ProtocolLayer"]

_RESERVED = ("edge_weight", "edge_attr", "index", "dim_size")


class ProtocolLayer(nn.Module):
    r"""One interaction over one relation: per-edge messages, reduced per destination, then an
    update of the destination.

    .. math::
        \mathbf{h}_i = \mathrm{update}\Big(\bigoplus_{j \to i}
            \mathrm{message}(\mathbf{x}_j, \mathbf{x}_i, e_{ji})\Big)

    with :math:`\bigoplus` one of sum / mean / max / min / prod. Subclasses override
    :meth:`message` (and optionally :meth:`update`, or :meth:`message_and_aggregate` for a fused
    path), naming per-agent inputs with ``_j`` (source) and ``_i`` (destination) suffixes:
    ``message(self, infectiousness_j, susceptibility_i, edge_weight)``. :meth:`propagate` looks
    the base names up in its keyword arguments and gathers them along the edges. A keyword
    given as a pair ``(src_tensor, dst_tensor)`` serves bipartite relations (agent -> place).

    Usable standalone, inside any ``nn.Module``, and inside a PyG model: ``edge_index`` may be
    a ``[2, E]`` tensor (its CSR is built on the call) or a cached :class:`~lpm_graph.ops.CSR`
    from :meth:`PopulationGraph.csr` (reused every step).

    Args:
        aggr: ``"sum"`` (default), ``"mean"``, ``"max"``, ``"min"`` or ``"prod"``.
        backend: aggregation backend (see :func:`lpm_graph.ops.resolve_backend`).
    """

    def __init__(self, aggr: Reduce = "sum", *, backend: str | None = None) -> None:
        super().__init__()
        _check_reduce(aggr, "aggr")
        self.aggr = aggr
        self.backend = resolve_backend(backend)
        self._message_args = _arg_names(self.message)
        self._update_args = _arg_names(self.update)[1:]
        self._fused = type(self).message_and_aggregate is not ProtocolLayer.message_and_aggregate

    # ---------------------------------------------------------------- hooks
    def message(self, x_j: Tensor) -> Tensor:
        """Per-edge messages, ``[E, *F]``; the default sends the source feature ``x``."""
        return x_j

    def message_and_aggregate(self, csr: CSR, **kwargs: Any) -> Tensor:
        """Optional fused message + aggregation over the CSR (e.g. a sparse product)."""
        raise NotImplementedError

    def update(self, aggr_out: Tensor) -> Tensor:
        """Per-destination update of the aggregated messages; the default returns them."""
        return aggr_out

    # ---------------------------------------------------------------- propagation
    def propagate(
        self,
        edge_index: Tensor | CSR,
        *,
        size: tuple[int, int] | None = None,
        edge_weight: Tensor | None = None,
        **kwargs: Any,
    ) -> Tensor:
        """Gather, message, aggregate, update.

        Args:
            edge_index: ``[2, E]`` tensor (row 0 sources) or a cached ``CSR``.
            size: ``(num_src, num_dst)``; inferred from the keyword tensors when omitted.
            edge_weight: optional ``[E]`` per-edge weight in ``edge_index`` order.
            **kwargs: per-node tensors by base name (``x=...`` serves ``x_j`` and ``x_i``).
        """
        csr = self._as_csr(edge_index, size, kwargs)
        hook = _propagation_hook([edge_weight, *kwargs.values()])
        if hook is not None:  # e.g. private (secret-shared) inputs: their type propagates
            return hook(self, csr, edge_weight, kwargs)
        if self._fused:
            out = self.message_and_aggregate(csr, edge_weight=edge_weight, **kwargs)
        else:
            sorted_order = self.backend == "csr"
            src = csr.col if sorted_order else csr.src
            dst = csr.row if sorted_order else csr.dst
            perm = csr.perm if sorted_order else None
            args = self._collect(src, dst, perm, edge_weight, kwargs)
            messages = self.message(**args)
            if messages.shape[0] != csr.num_edges:
                raise ValueError(
                    f"{type(self).__name__}.message returned {messages.shape[0]} rows for "
                    f"{csr.num_edges} edges; return one message per edge."
                )
            out = _reduce_messages(messages, csr, self.aggr, self.backend)
        extra = {name: _dst_side(kwargs[name]) for name in self._update_args if name in kwargs}
        return self.update(out, **extra)

    def _collect(
        self,
        src: Tensor,
        dst: Tensor,
        perm: Tensor | None,
        edge_weight: Tensor | None,
        kwargs: dict[str, Any],
    ) -> dict[str, Any]:
        args: dict[str, Any] = {}
        for name in self._message_args:
            if name in ("edge_weight", "edge_attr"):
                value = edge_weight if name == "edge_weight" else kwargs.get(name)
                if torch.is_tensor(value) and value.dim() > 0 and perm is not None:
                    value = value[perm]
                args[name] = value
            elif name.endswith(("_j", "_i")) and name[:-2] in kwargs:
                value = kwargs[name[:-2]]
                side = 0 if name.endswith("_j") else 1
                if isinstance(value, (tuple, list)):
                    value = value[side]
                args[name] = value.index_select(0, src if side == 0 else dst)
            elif name in kwargs:
                args[name] = kwargs[name]
            else:
                raise ValueError(
                    f"{type(self).__name__}.message needs {name!r}; pass "
                    f"{name[:-2] if name.endswith(('_j', '_i')) else name}=... to propagate()."
                )
        return args

    def _as_csr(
        self, edge_index: Tensor | CSR, size: tuple[int, int] | None, kwargs: dict[str, Any]
    ) -> CSR:
        if isinstance(edge_index, CSR):
            return edge_index
        from .._checks import check_edge_index

        if size is None:
            size = _infer_size(edge_index, kwargs)
        edge_index = check_edge_index(edge_index, size[0], size[1])
        return CSR.from_edge_index(edge_index, size[0], size[1])

    def extra_repr(self) -> str:
        return f"aggr={self.aggr!r}, backend={self.backend!r}"


def _arg_names(fn: Any) -> list[str]:
    return [
        p.name
        for p in inspect.signature(fn).parameters.values()
        if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    ]


def _propagation_hook(values: list[Any]) -> Any:
    """The ``__lpm_propagate__(layer, csr, edge_weight, kwargs)`` classmethod of the first
    value whose type has one (tensor-like types that are not tensors, such as secret shares,
    run a layer's message / aggregate / update themselves), or ``None``."""
    for value in values:
        if isinstance(value, (tuple, list)):
            hook = _propagation_hook(list(value))
        else:
            hook = getattr(type(value), "__lpm_propagate__", None)
        if hook is not None:
            return hook
    return None


def _is_array(value: Any) -> bool:
    return torch.is_tensor(value) or _propagation_hook([value]) is not None


def _dst_side(value: Any) -> Any:
    return value[1] if isinstance(value, (tuple, list)) else value


def _infer_size(edge_index: Tensor, kwargs: dict[str, Any]) -> tuple[int, int]:
    num_src = num_dst = None
    for value in kwargs.values():
        if isinstance(value, (tuple, list)) and len(value) == 2:
            if _is_array(value[0]):
                num_src = value[0].shape[0]
            if _is_array(value[1]):
                num_dst = value[1].shape[0]
        elif _is_array(value) and value.dim() > 0:
            num_src = num_src if num_src is not None else value.shape[0]
            num_dst = num_dst if num_dst is not None else value.shape[0]
    if num_src is None or num_dst is None:
        if edge_index.numel() == 0:
            raise ValueError(
                "cannot infer the number of nodes from an empty edge_index; pass size=."
            )
        n = int(edge_index.max()) + 1
        num_src = num_src if num_src is not None else n
        num_dst = num_dst if num_dst is not None else n
    return int(num_src), int(num_dst)
