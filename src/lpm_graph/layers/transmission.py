"""Transmission: the force of infection from infectious sources to each destination."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..ops import CSR, IncrementalSum, propagate

__all__ = ["Transmission"]

from .protocol import ProtocolLayer


class Transmission(ProtocolLayer):
    r"""Force of infection (a hazard per unit time) on every destination agent.

    .. math::
        \lambda_i = \sum_{j \to i} \tau_{ji}\, w_{ji}\, \iota_j

    with :math:`\iota_j` the infectiousness of source :math:`j` (0/1 in a stochastic run, a
    probability in expected-value mode), :math:`\tau_{ji}` the transmission rate per unit time
    and :math:`w_{ji}` the edge weight. Independent per-edge transmissions over a step of length
    :math:`\Delta t` give the per-agent infection probability
    :math:`1 - \prod_{j \to i}(1 - p_{ji}) = 1 - e^{-\lambda_i \Delta t}` with
    :math:`p_{ji} = 1 - e^{-\tau_{ji} w_{ji} \iota_j \Delta t}`, so one draw per agent replaces one
    draw per edge. Runs as one fused sparse product over the relation's cached CSR.

    In a stochastic run few agents change infectious status per step. Called with
    ``indicator=True`` on a cached CSR with unit or scalar weights, the layer then updates its
    last force of infection from the agents whose ``infectious`` changed (see
    :class:`~lpm_graph.ops.IncrementalSum`): the same values, bit for bit, and the same
    gradients, for a fraction of the work.

    Args:
        backend: aggregation backend (see :func:`lpm_graph.ops.resolve_backend`).

    Shapes:
        ``infectious: [num_src, *R]``, ``transmission_rate: []`` or ``[E]``,
        ``edge_weight: [E]`` -> ``[num_dst, *R]``.
    """

    def __init__(self, *, backend: str | None = None) -> None:
        super().__init__("sum", backend=backend)
        self._incremental = IncrementalSum()

    def forward(
        self,
        edge_index: Tensor | CSR,
        infectious: Tensor | tuple[Tensor, Tensor],
        transmission_rate: Tensor,
        edge_weight: Tensor | None = None,
        size: tuple[int, int] | None = None,
        *,
        indicator: bool = False,
    ) -> Tensor:
        """``indicator=True``: ``infectious`` is a 0/1 indicator (a stochastic run), so the
        sum may be updated from this layer's last one (checked; any other input is summed in
        full)."""
        rate = transmission_rate if edge_weight is None else transmission_rate * edge_weight
        if indicator and isinstance(edge_index, CSR) and torch.is_tensor(infectious):
            _check_sources(edge_index, infectious)
            return propagate(
                edge_index, infectious, rate, "sum", self.backend, incremental=self._incremental
            )
        return self.propagate(edge_index, infectious=infectious, edge_weight=rate, size=size)

    def message(self, infectious_j: Tensor, edge_weight: Tensor) -> Tensor:
        if edge_weight.dim() == 0:
            return infectious_j * edge_weight
        return infectious_j * edge_weight.reshape(-1, *([1] * (infectious_j.dim() - 1)))

    def message_and_aggregate(self, csr: CSR, **kwargs: Any) -> Tensor:
        infectious = kwargs["infectious"]
        if isinstance(infectious, (tuple, list)):
            infectious = infectious[0]
        return propagate(csr, infectious, kwargs["edge_weight"], "sum", self.backend)


def _check_sources(csr: CSR, infectious: Tensor) -> None:
    if infectious.dim() == 0 or infectious.shape[0] != csr.num_cols:
        raise ValueError(
            f"infectious has shape {tuple(infectious.shape)} but the relation has "
            f"{csr.num_cols} source nodes; pass one row per source node."
        )
