r"""Supply chain: firms in a directed supplier -> buyer network with inventories, orders,
capacities and shipments; a capacity shock propagates downstream as shortages.

Firms ``i`` belong to sectors ``s(i)``. An edge ``e = j -> i`` of the relation
``("firm", "supplies", "firm")`` says that ``j`` supplies ``i``; its weight ``a_e`` is the
input coefficient, the units of ``j``'s good that ``i`` uses per unit of its own output (1 when
the graph has no ``edge_weight``). Goods of one sector are interchangeable, so firm ``i`` holds
one inventory ``S_ik`` per input sector ``k`` (a slot ``(i, k)``) and needs

.. math::
    A_{ik} = \sum_{e = j \to i,\ s(j) = k} a_e, \qquad w_e = a_e / A_{i, s(j)}

units of sector ``k`` per unit of output; it orders from its sector-``k`` suppliers in the
fixed shares ``w_e``. A step of length :math:`\Delta t` runs four phases (capacities ``c`` and
final demand ``f`` are per unit time; the target inventory ``n`` and the adjustment time
``\tau`` are in time units; ``O_{ik}`` are the orders placed at the end of the previous step):

1. **demand** (orders travel upstream, a sum over the supplier's out-edges):
   :math:`D_j = f_j \Delta t + \sum_{e = j \to i} w_e\, O_{i, s(j)}`.
2. **production** (Leontief, limited by capacity, by every input and by demand; no stock of
   finished goods): :math:`x_i = \min\big(c_i(t) \Delta t,\ \min_{k: A_{ik} > 0}
   S_{ik} / A_{ik},\ D_i\big)`, and the inputs are used up: :math:`S_{ik} \mathrel{-}=
   A_{ik} x_i`.
3. **shipping** (proportional rationing; shipments travel downstream, a sum over the slot's
   in-edges): every customer of ``j`` gets the same share :math:`\phi_j = x_j / D_j` of what it
   asked for (:math:`\phi_j = 1` when :math:`D_j = 0`), so
   :math:`S_{ik} \mathrel{+}= O_{ik} \sum_{e = j \to i,\ s(j) = k} w_e\, \phi_j`, final
   consumers get :math:`\phi_j f_j \Delta t` and the shortage of ``j`` is :math:`D_j - x_j`.
4. **ordering** (target-inventory policy with the current demand as the expected one):
   :math:`O_{ik} = \max\big(0,\ A_{ik} D_i + \frac{\Delta t}{\tau_i}
   (n_i A_{ik} D_i / \Delta t - S_{ik})\big)`.

Unmet orders are lost (no backlog); the inventory gap makes the buyer order them again.
Starting from the steady state of the final demand, :math:`x^* = (I - A)^{-1} f`,
:math:`S^*_{ik} = n_i A_{ik} x^*_i`, :math:`O^*_{ik} = A_{ik} x^*_i \Delta t` (see
:func:`steady_output`), nothing changes until a shock, provided capacities exceed
:math:`x^*` and the target inventory covers at least one step (:math:`n \ge \Delta t`: goods
shipped in a step are used from the next one).

Sources: the firm-level model of Inoue & Todo (2019), "Firm-level propagation of shocks through
supply-chain networks", Nature Sustainability 2, 841-847 (Leontief production from input
inventories, target inventories of ``n`` days of use, orders closing the gap at rate
``1 / tau``, proportional rationing), and the industry-level dynamic input-output model of
Pichler, Pangallo, del Rio-Chanona, Lafond & Farmer (2022), "Forecasting the propagation of
pandemic shocks with a dynamic input-output model", J. Economic Dynamics and Control 144, 104527
(the same inventory and order rules; proportional rationing is one of the schemes it compares),
both after the ARIO model of Hallegatte (2008), Risk Analysis 28(3), 779-799.
Simplifications: final demand is exogenous and constant (no income feedback), suppliers are
not re-chosen after a shock, and every quantity is deterministic.

Gradients. The step is continuous in its state and parameters and smooth between the kinks of
its ``min`` and ``max``, so autograd gives the exact gradient wherever none is tied. Ties (a
capacity equal to the demand, two inputs running out together, an order at exactly zero) are
kinks: there autograd returns a subgradient (``torch.minimum`` and ``amin`` split the gradient
evenly among tied arguments, ``relu`` passes none at 0). A capacity that never binds has a
zero gradient, so a calibration must start from capacities low enough to bind.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch_geometric.data import HeteroData

from .._checks import check_edge_index, check_memory, check_positive
from ..graph import PopulationGraph
from ..layers.protocol import ProtocolLayer
from ..ops import CSR, fixed_order_sum, propagate
from .base import Phase, Protocol, State, StepContext

if TYPE_CHECKING:
    from ..graph import Relation
    from ..layers.samplers import RandomStreams
    from .base import Mode

__all__ = [
    "CapacityShock",
    "OrderFlow",
    "ShipmentFlow",
    "SupplyChain",
    "firm_graph",
    "firm_network",
    "sector_values",
    "steady_output",
]

FIRM = "firm"
SUPPLIES: Relation = (FIRM, "supplies", FIRM)


# ---------------------------------------------------------------------------- checks


def _check_amount(value: float | Tensor, name: str, unit: str, positive: bool = False) -> None:
    """Finite and ``>= 0`` (``> 0`` when ``positive``); the message names the first bad firm."""
    t = torch.as_tensor(value).detach()
    if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
        raise ValueError(f"{name} must be real numbers ({unit}), got dtype {t.dtype}.")
    bad = ~torch.isfinite(t) | ((t <= 0) if positive else (t < 0))
    if bool(bad.any()):
        where = "" if t.dim() == 0 else f" at firm {int(bad.reshape(-1).nonzero()[0])}"
        value_bad = t.reshape(-1)[bad.reshape(-1)][0].item()
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be finite and {bound} ({unit}), got {value_bad:g}{where}.")


def _check_per_firm(value: Tensor, name: str, n: int) -> None:
    if value.dim() != 0 and tuple(value.shape) != (n,):
        raise ValueError(
            f"{name} has shape {list(value.shape)}; give a scalar (every firm) or one value per "
            f"firm, shape [{n}] (sector_values() turns a {{sector: value}} dict into one)."
        )


def _long_ids(ids: object, name: str) -> Tensor:
    t = torch.as_tensor(ids)
    if t.is_floating_point() or t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"{name} must be integer firm ids, got dtype {t.dtype}.")
    return t.long().reshape(-1)


# ---------------------------------------------------------------------------- the network


@dataclass(eq=False)
class _Network:
    """What the step needs from a firm graph, derived once per graph (cached by the protocol).

    Slots ``(i, k)`` (firm, input sector) are numbered ``i * K + k``. ``down`` has the edges
    ``j -> slot(i, s(j))`` (rows = slots, for shipments) and ``up`` the reverse (rows =
    suppliers, for orders); both keep the graph's edge order, so per-edge values line up.
    """

    relation: Relation
    sector: Tensor  # [N] long
    names: tuple[str, ...]
    down: CSR
    up: CSR
    coefficients64: Tensor  # [N, K] A_ik
    share64: Tensor  # [E] w_e, graph edge order
    key: tuple[int, int, int]  # ids of the tensors it was derived from
    _cast: dict[torch.dtype, tuple[Tensor, Tensor]] = field(default_factory=dict)

    @property
    def num_firms(self) -> int:
        return int(self.sector.shape[0])

    @property
    def num_sectors(self) -> int:
        return len(self.names)

    def tensors(self, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """``(A [N, K], w [E])`` in ``dtype`` (cast once)."""
        if dtype not in self._cast:
            self._cast[dtype] = (self.coefficients64.to(dtype), self.share64.to(dtype))
        return self._cast[dtype]

    def upstream(self, x: Tensor, backend: str | None = None) -> Tensor:
        """``(A x)_j = sum_{e = j -> i} a_e x_i``: inputs the suppliers must deliver."""
        a, w = self.tensors(x.dtype)
        return propagate(self.up, (a * x[:, None]).reshape(-1), w, "sum", backend)

    def downstream(self, g: Tensor, backend: str | None = None) -> Tensor:
        """``(A^T g)_i = sum_{e = j -> i} a_e g_j``."""
        a, w = self.tensors(g.dtype)
        pulled = propagate(self.down, g, w, "sum", backend).reshape(self.num_firms, -1)
        return (a * pulled).sum(1)


def _resolve_relation(graph: PopulationGraph, relation: str | Relation) -> Relation:
    try:
        rel = graph.relation(relation)
    except ValueError as err:
        raise ValueError(
            f"relation={relation!r}: {err} A supply chain runs on a firm network: build one "
            "with firm_network() or firm_graph(), or name its supply relation."
        ) from None
    if rel[0] != rel[2]:
        raise ValueError(
            f"the supply relation must link firms to firms, got {rel}; build the graph with "
            "firm_graph() or name a (firm, supplies, firm) relation."
        )
    return rel


def _sector_names(graph: PopulationGraph, sector: Tensor) -> tuple[str, ...]:
    names = graph.meta.get("sector_names")
    if names is None:
        k = int(sector.max()) + 1 if sector.numel() else 0
        return tuple(str(s) for s in range(k))
    return tuple(str(s) for s in names)


def _network(
    graph: PopulationGraph,
    relation: str | Relation = "supplies",
    sector_attr: str = "sector",
    cached: _Network | None = None,
) -> _Network:
    """The derived structure of ``graph``'s supply relation (``cached`` when it was derived
    from the same tensors)."""
    rel = _resolve_relation(graph, relation)
    attrs = graph.node_attrs(rel[0])
    if sector_attr not in attrs:
        raise ValueError(
            f"the firms have no {sector_attr!r} attribute (an integer sector id per firm); "
            f"add it with graph.set_node_attrs({rel[0]!r}, {sector_attr}=...) or build the graph "
            "with firm_graph()."
        )
    sector = attrs[sector_attr]
    weight = graph.edge_weight(rel)
    key = (id(sector), id(graph.edge_index(rel)), id(weight))
    if cached is not None and cached.key == key and cached.relation == rel:
        return cached
    n = graph.num_nodes(rel[0])
    if sector.is_floating_point() or sector.dtype == torch.bool or sector.shape != (n,):
        raise ValueError(
            f"{sector_attr!r} must be an integer tensor [{n}] of sector ids, got {sector.dtype} "
            f"{list(sector.shape)}."
        )
    sector = sector.long()
    names = _sector_names(graph, sector)
    if n and (int(sector.min()) < 0 or int(sector.max()) >= len(names)):
        raise ValueError(
            f"{sector_attr!r} has ids in [{int(sector.min())}, {int(sector.max())}]; the graph "
            f"names {len(names)} sectors {names} (ids 0..{len(names) - 1})."
        )
    k = max(len(names), 1)
    src, dst = graph.edge_index(rel)
    a = torch.ones(src.shape[0], dtype=torch.float64, device=src.device)
    if weight is not None:
        a = weight.to(torch.float64)
    slot = dst * k + sector[src]  # [E]: the buyer's input slot that edge e feeds
    coefficients = torch.zeros(n * k, dtype=torch.float64, device=src.device)
    coefficients.index_add_(0, slot, a)
    total = coefficients[slot]
    share = torch.where(total > 0, a / torch.where(total > 0, total, 1.0), 0.0)
    net = _Network(
        relation=rel,
        sector=sector,
        names=names,
        down=CSR.from_edge_index(torch.stack([src, slot]), n, n * k),
        up=CSR.from_edge_index(torch.stack([slot, src]), n * k, n),
        coefficients64=coefficients.reshape(n, k),
        share64=share,
        key=key,
    )
    return net


# ---------------------------------------------------------------------------- layers


class OrderFlow(ProtocolLayer):
    r"""Orders travel upstream: the demand on every supplier from its buyers' orders.

    .. math::
        D_j = \sum_{e = j \to i} w_e\, O_{i, s(j)}

    over a bipartite relation from input slots ``(i, k)`` to firms (the reverse of the supply
    edges), with ``w_e`` the supplier's share of the buyer's orders of its sector.

    Shapes:
        ``orders: [N K]`` (slots), ``share: [E]`` -> ``[N]``.
    """

    def __init__(self, *, backend: str | None = None) -> None:
        super().__init__("sum", backend=backend)

    def forward(self, csr: CSR, orders: Tensor, share: Tensor) -> Tensor:
        return self.propagate(csr, orders=orders, edge_weight=share)

    def message(self, orders_j: Tensor, edge_weight: Tensor) -> Tensor:
        return orders_j * edge_weight

    def message_and_aggregate(self, csr: CSR, **kwargs: Any) -> Tensor:
        return propagate(csr, kwargs["orders"], kwargs["edge_weight"], "sum", self.backend)


class ShipmentFlow(ProtocolLayer):
    r"""Shipments travel downstream: what each input slot receives under proportional
    rationing.

    .. math::
        R_{ik} = O_{ik} \sum_{e = j \to i,\ s(j) = k} w_e\, \phi_j

    with :math:`\phi_j` the fill rate of supplier ``j`` (its output over its demand), over a
    bipartite relation from firms to input slots.

    Shapes:
        ``fill: [N]``, ``orders: [N K]``, ``share: [E]`` -> ``[N K]``.
    """

    def __init__(self, *, backend: str | None = None) -> None:
        super().__init__("sum", backend=backend)

    def forward(self, csr: CSR, fill: Tensor, orders: Tensor, share: Tensor) -> Tensor:
        return self.propagate(csr, fill=fill, orders=orders, edge_weight=share)

    def message(self, fill_j: Tensor, edge_weight: Tensor) -> Tensor:
        return fill_j * edge_weight

    def message_and_aggregate(self, csr: CSR, **kwargs: Any) -> Tensor:
        return propagate(csr, kwargs["fill"], kwargs["edge_weight"], "sum", self.backend)

    def update(self, aggr_out: Tensor, orders: Tensor) -> Tensor:
        return orders * aggr_out


# ---------------------------------------------------------------------------- steady state


class _SteadyOutput(torch.autograd.Function):
    """``x = (I - A)^{-1} f`` by the fixed point ``x <- f + A x``; backward solves
    ``g = grad + A^T g`` the same way (exact implicit gradient, no unrolled iterations)."""

    @staticmethod
    def forward(ctx, demand: Tensor, net: _Network, backend: str | None) -> Tensor:  # type: ignore[override]
        ctx.net, ctx.backend = net, backend
        return _fixed_point(demand, lambda x: net.upstream(x, backend))

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        g = _fixed_point(grad, lambda y: ctx.net.downstream(y, ctx.backend))
        return g, None, None


def _fixed_point(b: Tensor, apply: Any, max_iter: int = 100_000) -> Tensor:
    """The solution of ``x = b + M x`` for a non-negative ``M`` of spectral radius < 1.

    The increments ``M^k b`` shrink geometrically once past a transient (at most one pass
    around the longest cycle, fewer than ``N`` iterations); when they have not reached a new
    low for ``max(100, N)`` iterations, ``M`` is taken to have a spectral radius >= 1.
    """
    x64 = b.detach().to(torch.float64)
    x = x64
    tol = 8 * torch.finfo(torch.float64).eps
    best, stalled, patience = math.inf, 0, max(100, x64.shape[0])
    for _ in range(max_iter):
        if x64.numel() == 0:
            return x.to(b.dtype)
        new = x64 + apply(x)
        step = float((new - x).abs().max())
        if not math.isfinite(step):
            break
        x = new
        if step <= tol * max(float(new.abs().max()), 1e-300):
            return x.to(b.dtype)
        best, stalled = (step, 0) if step < best else (best, stalled + 1)
        if stalled > patience:
            break
    raise ValueError(
        "the input coefficients do not describe a productive economy: x = f + A x has no "
        "finite solution (the spectral radius of A is >= 1). Keep every firm's total input "
        "coefficient (the sum of its in-edge weights) below 1."
    )


def steady_output(
    graph: PopulationGraph,
    final_demand: float | Tensor,
    *,
    relation: str | Relation = "supplies",
    sector_attr: str = "sector",
    backend: str | None = None,
) -> Tensor:
    r"""Gross output per firm (per unit time) that meets the final demand exactly.

    .. math::
        x = f + A x, \qquad x = (I - A)^{-1} f, \qquad (A x)_j = \sum_{e = j \to i} a_e x_i

    (Leontief 1936). Solved by the fixed-point iteration, which converges when the spectral
    radius of :math:`A` is below 1 (a productive economy); differentiable in ``final_demand``
    (the backward pass solves the transposed system). A natural capacity is a margin above it:
    ``capacity = 1.2 * steady_output(graph, f)``.

    Args:
        graph: a firm network (see :func:`firm_graph`).
        final_demand: ``f`` per unit time, a scalar or ``[N]``.
        relation: the supply relation, as for :class:`SupplyChain`.
        sector_attr: the firms' sector attribute, as for :class:`SupplyChain`.
        backend: aggregation backend, as for :class:`SupplyChain`.

    Shapes:
        ``final_demand: []`` or ``[N]`` -> ``[N]``.
    """
    return _steady_output(_network(graph, relation, sector_attr), final_demand, backend)


def _steady_output(net: _Network, final_demand: float | Tensor, backend: str | None) -> Tensor:
    f = _floating(final_demand)
    _check_amount(f, "final_demand", "goods per unit time")
    _check_per_firm(f, "final_demand", net.num_firms)
    f = f.expand(net.num_firms).to(net.sector.device)
    return _SteadyOutput.apply(f, net, backend)


# ---------------------------------------------------------------------------- shocks


class CapacityShock(nn.Module):
    r"""Some firms lose a fraction of their capacity during a window of time.

    .. math::
        c_i(t) = c_i \prod_{\text{shocks}} \big(1 - \delta\, \mathbb{1}[i \in F]\,
            \mathbb{1}[\text{start} \le t \Delta t < \text{end}]\big)

    Args:
        fraction: ``delta`` in ``[0, 1]``, the share of capacity lost: a scalar, or one value
            per firm of ``firms``. A tensor that requires grad is used as it is, so gradients
            (what-if questions) reach it.
        firms: the firm ids hit (an int, a list or a long tensor).
        sector: or a sector name: every firm of that sector is hit.
        start: first time hit (time units; the step ``t`` is hit when ``start <= t dt``).
        end: first time no longer hit (default: never).
    """

    def __init__(
        self,
        fraction: float | Tensor,
        *,
        firms: int | Sequence[int] | Tensor | None = None,
        sector: str | None = None,
        start: float = 0.0,
        end: float = math.inf,
    ) -> None:
        super().__init__()
        if (firms is None) == (sector is None):
            raise ValueError("CapacityShock needs exactly one of firms= (ids) or sector= (name).")
        if not (isinstance(start, (int, float)) and math.isfinite(start)):
            raise ValueError(f"start must be a finite time, got {start!r}.")
        if not (isinstance(end, (int, float)) and end > start):
            raise ValueError(f"end must be a time after start={start!r}, got {end!r}.")
        frac = torch.as_tensor(fraction)
        if not frac.is_floating_point():
            frac = frac.to(torch.get_default_dtype())
        detached = frac.detach()
        if not bool(torch.isfinite(detached).all()) or bool(
            ((detached < 0) | (detached > 1)).any()
        ):
            raise ValueError(
                f"fraction must be a share of capacity lost, in [0, 1], got {detached.tolist()}."
            )
        self.firms = None if firms is None else _long_ids(firms, "firms")
        if sector is not None and not isinstance(sector, str):
            raise ValueError(f"sector must be a sector name (str), got {sector!r}.")
        self.sector = sector
        if frac.dim() > 1 or (
            frac.dim() == 1 and (self.firms is None or frac.shape[0] != self.firms.numel())
        ):
            per_firm = (
                "a sector shock takes a scalar"
                if self.firms is None
                else (f"{self.firms.numel()} firms")
            )
            raise ValueError(
                f"fraction has shape {list(frac.shape)}; give a scalar, or one value per firm "
                f"of firms= ({per_firm})."
            )
        self.start, self.end = float(start), float(end)
        if frac.requires_grad:
            object.__setattr__(self, "fraction", frac)
        else:
            self.register_buffer("fraction", frac.clone())

    def firm_ids(self, sector: Tensor, names: Sequence[str]) -> Tensor:
        """The ids of the firms hit, checked against a network of ``len(sector)`` firms."""
        n = sector.shape[0]
        if self.sector is not None:
            if self.sector not in names:
                raise ValueError(
                    f"CapacityShock names an unknown sector {self.sector!r}; the sectors are "
                    f"{list(names)}."
                )
            return (sector == names.index(self.sector)).nonzero().reshape(-1)
        ids = self.firms.to(sector.device)
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= n):
            bad = int(ids[(ids < 0) | (ids >= n)][0])
            raise ValueError(f"CapacityShock firm id {bad} is outside [0, {n}) (the firm ids).")
        return ids

    def active(self, time: float) -> bool:
        return self.start <= time < self.end

    def remaining(self, ids: Tensor, n: int, dtype: torch.dtype) -> Tensor:
        """``1 - delta`` for the firms hit and 1 elsewhere, ``[N]``."""
        lost = torch.zeros(n, dtype=dtype, device=ids.device)
        frac = self.fraction.to(dtype=dtype, device=ids.device).expand(ids.shape[0])
        return 1 - lost.index_put((ids,), frac)

    def extra_repr(self) -> str:
        who = (
            f"sector={self.sector!r}" if self.sector is not None else f"firms={self.firms.tolist()}"
        )
        frac = self.fraction.detach()
        frac_s = f"{frac.item():g}" if frac.dim() == 0 else str(frac.tolist())
        return f"fraction={frac_s}, {who}, time in [{self.start:g}, {self.end:g})"


# ---------------------------------------------------------------------------- phases


class _Demand(Phase):
    """Orders travel upstream; records per-firm ``"demand"``."""

    name = "demand"

    def __init__(self, protocol: SupplyChain, backend: str | None) -> None:
        super().__init__(protocol)
        self.orders = OrderFlow(backend=backend)

    def forward(self, graph: PopulationGraph, state: State, ctx: StepContext) -> State:
        p, net = self.owner, self.owner.network(graph)
        _check_state(state, net)
        orders = state["orders"]
        _, share = net.tensors(orders.dtype)
        intermediate = self.orders(net.up, orders.reshape(-1), share)
        ctx.flows["demand"] = intermediate + p.final_demand.to(orders.dtype) * ctx.dt
        return state

    def extra_repr(self) -> str:
        return "D_j = f_j dt + sum_{j -> i} w_ji O_i,s(j)"


class _Production(Phase):
    """Leontief production limited by capacity, inputs and demand; records ``"output"`` and
    ``"input_use"``."""

    name = "production"

    def forward(self, graph: PopulationGraph, state: State, ctx: StepContext) -> State:
        p, net = self.owner, self.owner.network(graph)
        inventory = state["inventory"]
        a, _ = net.tensors(inventory.dtype)
        demand = ctx.flows["demand"]
        uses = a > 0
        per_input = torch.where(uses, inventory / torch.where(uses, a, 1.0), math.inf)
        input_limit = per_input.amin(1) if a.shape[1] else torch.full_like(demand, math.inf)
        capacity = p.capacity_at(ctx.t, ctx.dt, inventory.dtype) * ctx.dt
        output = torch.minimum(torch.minimum(capacity, input_limit), demand)
        use = a * output[:, None]
        ctx.flows.update(output=output, input_use=use)
        # S - A x >= 0 in exact arithmetic; the clamp removes rounding below 0 (there the
        # binding input's stock is A x itself and its derivative is 0 either way).
        return {**state, "inventory": (inventory - use).clamp_min(0)}

    def extra_repr(self) -> str:
        return "x_i = min(c_i(t) dt, min_k S_ik / A_ik, D_i); S_ik -= A_ik x_i"


class _Shipping(Phase):
    """Proportional rationing; shipments travel downstream; records ``"shipments"``,
    ``"consumption"`` and ``"shortage"``."""

    name = "shipping"

    def __init__(self, protocol: SupplyChain, backend: str | None) -> None:
        super().__init__(protocol)
        self.shipments = ShipmentFlow(backend=backend)

    def forward(self, graph: PopulationGraph, state: State, ctx: StepContext) -> State:
        p, net = self.owner, self.owner.network(graph)
        demand, output = ctx.flows["demand"], ctx.flows["output"]
        inventory, orders = state["inventory"], state["orders"]
        _, share = net.tensors(inventory.dtype)
        has_demand = demand > 0
        fill = torch.where(has_demand, output / torch.where(has_demand, demand, 1.0), 1.0)
        received = self.shipments(net.down, fill, orders.reshape(-1), share)
        consumption = fill * p.final_demand.to(demand.dtype) * ctx.dt
        ctx.flows.update(
            shipments=output - consumption, consumption=consumption, shortage=demand - output
        )
        return {**state, "inventory": inventory + received.reshape(inventory.shape)}

    def extra_repr(self) -> str:
        return "phi_j = x_j / D_j; S_ik += O_ik sum_{j -> i, s(j) = k} w_ji phi_j"


class _Ordering(Phase):
    """Target-inventory orders for the next step (state ``"orders"``)."""

    name = "ordering"

    def forward(self, graph: PopulationGraph, state: State, ctx: StepContext) -> State:
        p, net = self.owner, self.owner.network(graph)
        inventory = state["inventory"]
        a, _ = net.tensors(inventory.dtype)
        need = a * ctx.flows["demand"][:, None]  # [N, K]: inputs for this step's demand
        n = _column(p.target_inventory.to(inventory.dtype))
        rate = ctx.dt / _column(p.adjustment_time.to(inventory.dtype))
        orders = torch.relu(need + rate * (n * need / ctx.dt - inventory))
        return {**state, "orders": orders}

    def extra_repr(self) -> str:
        return "O_ik = max(0, A_ik D_i + dt / tau_i (n_i A_ik D_i / dt - S_ik))"


def _check_state(state: State, net: _Network) -> None:
    shape = tuple(net.coefficients64.shape)
    for name in ("inventory", "orders"):
        value = state.get(name)
        if value is None or tuple(value.shape) != shape or not value.is_floating_point():
            got = "missing" if value is None else f"{value.dtype} {list(value.shape)}"
            raise ValueError(
                f"the state's {name!r} must be a floating tensor [N, K] = {list(shape)} (firms x "
                f"input sectors), got {got}; SupplyChain.steady_state(graph) builds one."
            )


def _column(value: Tensor) -> Tensor:
    """A scalar or ``[N]`` per-firm value shaped to broadcast against ``[N, K]``."""
    return value if value.dim() == 0 else value[:, None]


# ---------------------------------------------------------------------------- the protocol


class SupplyChain(Protocol):
    r"""Firm-level supply-chain dynamics over a directed supplier -> buyer network.

    The rules, their sources and where gradients are subgradients are in the module docstring
    (:mod:`lpm_graph.protocols.supply_chain`); ``print(protocol)`` shows the four phases
    (demand, production, shipping, ordering). Every quantity is deterministic, so ``mode``
    and ``seed`` of :func:`~lpm_graph.simulate` change nothing; a run starts from the steady
    state of the final demand (or from ``state=``, with the entries below).

    State: ``inventory`` ``[N, K]`` (stock of sector ``k``'s goods held by firm ``i``) and
    ``orders`` ``[N, K]`` (orders firm ``i`` placed for sector ``k``, to be filled next step).
    Per-sector observables, ``[T + 1, K]`` counts and ``[T, K]`` flows:

    * counts ``inventory`` and ``orders``: by sector of the goods;
    * flows ``demand``, ``output``, ``shortage`` (demand not met), ``shipments`` (to other
      firms), ``consumption`` (to final demand): by sector of the firm producing;
      ``input_use``: by sector of the goods used.

    Goods are conserved: per sector, ``output = shipments + consumption`` and
    ``inventory[t + 1] - inventory[t] = shipments - input_use``. With ``by_firm=True`` also
    ``output_by_firm`` and ``shortage_by_firm`` (``[T, N]``).

    Args:
        capacity: ``c``, the most a firm can produce per unit time (``>= 0``), a scalar or
            ``[N]``. Learnable.
        final_demand: ``f``, households' and exports' demand per unit time (``>= 0``), a scalar
            or ``[N]`` (:func:`sector_values` builds one from a ``{sector: value}`` dict).
        target_inventory: ``n``, the inventory each firm aims to hold, in time units of input
            use (``>= 0``, default 5), a scalar or ``[N]``. Learnable (order policy).
        adjustment_time: ``tau``, the time over which a firm closes its inventory gap
            (``> 0``, time units, default 5), a scalar or ``[N]``. Learnable (order policy).
            ``tau < dt`` over-orders (the gap is closed more than once a step).
        dt: step length (time units, default 1). A step is also the delivery lag, so changing
            ``dt`` changes the dynamics, not only their resolution.
        shocks: :class:`CapacityShock` s applied to the capacities.
        relation: the supply relation (edge-type name or full relation, default
            ``"supplies"``); its weights are the input coefficients ``a_e``.
        sector_attr: the firms' integer sector attribute; sector names are read from the
            graph's ``sector_names`` (``graph.meta``), else ``"0"``, ``"1"``, ...
        by_firm: also record output and shortage per firm.
        backend: aggregation backend (see :func:`lpm_graph.ops.resolve_backend`).
        learnable: register ``capacity``, ``final_demand``, ``target_inventory`` and
            ``adjustment_time`` as ``nn.Parameter`` (default) or as buffers. A tensor that
            already requires grad is used as it is (functional use).

    Raises:
        ValueError: negative, NaN or infinite values, a non-positive ``adjustment_time``,
            shapes other than a scalar or ``[N]``, a graph without the relation or the sector
            attribute, shocks naming unknown sectors or firm ids out of range, and a network
            whose final demand has no steady state (not productive).

    Example::

        graph = firm_network([4, 4, 4], [[0, .5, 0], [0, 0, .5], [0, 0, 0]], seed=0)
        f = sector_values(graph, {"2": 1.0})
        chain = SupplyChain(1.2 * steady_output(graph, f), f,
                            shocks=[CapacityShock(0.5, sector="0", start=10)])
        traj = simulate(chain, graph, steps=60)
        traj.flows["shortage"]  # [60, 3]
    """

    def __init__(
        self,
        capacity: float | Tensor,
        final_demand: float | Tensor,
        target_inventory: float | Tensor = 5.0,
        adjustment_time: float | Tensor = 5.0,
        *,
        dt: float = 1.0,
        shocks: Sequence[CapacityShock] = (),
        relation: str | Relation = "supplies",
        sector_attr: str = "sector",
        by_firm: bool = False,
        backend: str | None = None,
        learnable: bool = True,
    ) -> None:
        check_positive(dt, "dt")
        self._check_values(capacity, final_demand, target_inventory, adjustment_time)
        for shock in shocks:
            if not isinstance(shock, CapacityShock):
                raise ValueError(
                    f"shocks must be CapacityShock modules, got {type(shock).__name__}."
                )
        phases = [
            _Demand(self, backend),
            _Production(self),
            _Shipping(self, backend),
            _Ordering(self),
        ]
        super().__init__(phases, dt)
        self.shocks = nn.ModuleList(shocks)
        self.relation = relation
        self.sector_attr = sector_attr
        self.by_firm = bool(by_firm)
        self.backend = backend
        self.declare_parameter(
            "capacity",
            capacity,
            constraint="nonnegative",
            unit="units/day",
            learnable=learnable,
            keep_dtype=True,
        )
        self.declare_parameter(
            "final_demand",
            final_demand,
            constraint="nonnegative",
            unit="units/day",
            learnable=learnable,
            keep_dtype=True,
        )
        self.declare_parameter(
            "target_inventory",
            target_inventory,
            constraint="nonnegative",
            unit="days of input",
            learnable=learnable,
            keep_dtype=True,
        )
        self.declare_parameter(
            "adjustment_time",
            adjustment_time,
            constraint="positive",
            unit="days",
            learnable=learnable,
            keep_dtype=True,
        )
        self._networks: weakref.WeakKeyDictionary[PopulationGraph, _Network] = (
            weakref.WeakKeyDictionary()
        )
        self._net: _Network | None = None
        self._graph: weakref.ref[PopulationGraph] = _dead_ref
        self._shock_ids: list[Tensor] = []

    @staticmethod
    def _check_values(
        capacity: Any, final_demand: Any, target_inventory: Any, adjustment_time: Any
    ) -> None:
        _check_amount(capacity, "capacity", "goods per unit time")
        _check_amount(final_demand, "final_demand", "goods per unit time")
        _check_amount(target_inventory, "target_inventory", "time units of input use")
        _check_amount(adjustment_time, "adjustment_time", "time units", positive=True)

    # ------------------------------------------------------------------ graph-derived pieces

    def network(self, graph: PopulationGraph) -> _Network:
        """The graph's derived supply structure (from the last :meth:`check` of this graph)."""
        if self._net is None or self._graph() is not graph:
            self.check(graph)
        assert self._net is not None
        return self._net

    def check(self, graph: PopulationGraph) -> None:
        self._check_values(
            self.capacity, self.final_demand, self.target_inventory, self.adjustment_time
        )
        net = _network(graph, self.relation, self.sector_attr, self._networks.get(graph))
        self._networks[graph] = net
        n = net.num_firms
        for name in ("capacity", "final_demand", "target_inventory", "adjustment_time"):
            _check_per_firm(getattr(self, name), name, n)
        self._shock_ids = [s.firm_ids(net.sector, net.names) for s in self.shocks]
        self._net = net
        self._graph = weakref.ref(graph)

    @property
    def sector_names(self) -> tuple[str, ...]:
        """The sector names of the last graph checked (the columns of every observable)."""
        if self._net is None:
            raise ValueError("no graph yet: sector names are known once a run has started.")
        return self._net.names

    def capacity_at(self, t: int, dt: float, dtype: torch.dtype) -> Tensor:
        """Capacity per unit time at step ``t``, shocks applied: a scalar or ``[N]``."""
        capacity = self.capacity.to(dtype)
        for shock, ids in zip(self.shocks, self._shock_ids):
            if shock.active(t * dt):
                assert self._net is not None
                capacity = capacity * shock.remaining(ids, self._net.num_firms, dtype)
        return capacity

    # ------------------------------------------------------------------ states

    def steady_state(self, graph: PopulationGraph, dtype: torch.dtype | None = None) -> State:
        """The state in which the final demand is met every step (see the module docstring).

        Differentiable in ``final_demand`` and ``target_inventory``.
        """
        dtype = dtype or torch.get_default_dtype()
        net = self.network(graph)
        x = _steady_output(net, self.final_demand.to(dtype), self.backend)
        a, _ = net.tensors(dtype)
        need = a * x[:, None]  # [N, K]: inputs used per unit time
        return {
            "inventory": _column(self.target_inventory.to(dtype)) * need,
            "orders": need * self.dt,
        }

    def initial_state(
        self,
        graph: PopulationGraph,
        initial_infected: object,
        streams: RandomStreams,
        replicates: int | None,
        dtype: torch.dtype,
        mode: Mode,
    ) -> State:
        if initial_infected is not None:
            raise ValueError(
                "SupplyChain has no initial_infected: a run starts from the steady state of its "
                "final demand, or from state={'inventory': ..., 'orders': ...} (with "
                "SimulatorModel, pass initial_infected=None)."
            )
        if replicates is not None:
            raise ValueError(
                "SupplyChain is deterministic: replicates would be identical copies; run it once "
                "(replicates=None)."
            )
        return self.steady_state(graph, dtype)

    # ------------------------------------------------------------------ observables

    def observe(self, state: State) -> dict[str, Tensor]:
        return {
            "inventory": fixed_order_sum(state["inventory"]),
            "orders": fixed_order_sum(state["orders"]),
        }

    def total_flows(self, flows: Mapping[str, Tensor]) -> dict[str, Tensor]:
        assert self._net is not None, "check(graph) runs before the first step"
        sector, k = self._net.sector, self._net.num_sectors
        names = ("demand", "output", "shortage", "shipments", "consumption")
        per_firm = torch.stack([flows[name] for name in names], 1)  # [N, 5]
        per_sector = per_firm.new_zeros(k, len(names)).index_add(0, sector, per_firm)
        out = dict(zip(names, per_sector.unbind(1)))
        out["input_use"] = fixed_order_sum(flows["input_use"])
        if self.by_firm:
            out["output_by_firm"] = flows["output"]
            out["shortage_by_firm"] = flows["shortage"]
        return out

    def extra_repr(self) -> str:
        return f"relation={self.relation!r}, sector_attr={self.sector_attr!r}"


def _dead_ref() -> None:
    """A weak reference to no graph (before the first check)."""
    return None


def _floating(value: float | Tensor) -> Tensor:
    """A floating tensor: a float tensor keeps its dtype, anything else takes the default."""
    t = torch.as_tensor(value)
    return t if t.is_floating_point() else t.to(torch.get_default_dtype())


# ---------------------------------------------------------------------------- graphs


def firm_graph(
    edge_index: Tensor,
    sector: Tensor | Sequence[int],
    *,
    input_coefficients: Tensor | None = None,
    sector_names: Sequence[str] | None = None,
) -> PopulationGraph:
    """A firm network from a supplier -> buyer edge list.

    Node type ``"firm"`` with an integer ``sector`` attribute, relation
    ``("firm", "supplies", "firm")`` whose ``edge_weight`` holds the input coefficients, and the
    sector names in ``graph.meta["sector_names"]``.

    Args:
        edge_index: ``[2, E]`` integer tensor, row 0 suppliers, row 1 buyers.
        sector: sector id of every firm, ``[N]`` (ints ``0 .. K - 1``).
        input_coefficients: ``[E]`` units of the supplier's good per unit of the buyer's output
            (``>= 0``; default: no weights, i.e. 1 per edge).
        sector_names: ``K`` names (default ``"0"``, ``"1"``, ...).

    Shapes:
        ``edge_index: [2, E]``, ``sector: [N]``, ``input_coefficients: [E]``.
    """
    sector_t = torch.as_tensor(sector)
    if sector_t.is_floating_point() or sector_t.dtype == torch.bool or sector_t.dim() != 1:
        raise ValueError(
            f"sector must be a 1-D integer tensor (one sector id per firm), got {sector_t.dtype} "
            f"{list(sector_t.shape)}."
        )
    sector_t = sector_t.long()
    k = int(sector_t.max()) + 1 if sector_t.numel() else 0
    if sector_t.numel() and int(sector_t.min()) < 0:
        raise ValueError(f"sector ids must be >= 0, got {int(sector_t.min())}.")
    if sector_names is None:
        names = tuple(str(s) for s in range(k))
    else:
        names = tuple(str(s) for s in sector_names)
        if len(set(names)) != len(names):
            raise ValueError(f"sector_names must be distinct, got {list(names)}.")
        if k > len(names):
            raise ValueError(
                f"sector has ids up to {k - 1} but only {len(names)} sector_names {list(names)}."
            )
    n = int(sector_t.shape[0])
    try:
        check_edge_index(edge_index, n, n, as_long=False)
    except ValueError as err:
        raise ValueError(
            f"{err} The firms are those of sector ({n}): give one sector id per firm."
        ) from None
    data = HeteroData()
    data[FIRM].num_nodes = n
    data[FIRM].sector = sector_t
    store = data[SUPPLIES]
    store.edge_index = edge_index
    if input_coefficients is not None:
        store.edge_weight = _floating(torch.as_tensor(input_coefficients))
    data.sector_names = names
    return PopulationGraph(data)


def firm_network(
    firms_per_sector: Sequence[int],
    input_coefficients: Tensor | Sequence[Sequence[float]],
    *,
    suppliers_per_input: int = 2,
    sector_names: Sequence[str] | None = None,
    seed: int = 0,
) -> PopulationGraph:
    """A random firm network from a sector-level input-output table.

    Firms are numbered sector by sector. For every input sector ``k`` of a sector-``l`` firm
    (``input_coefficients[k, l] > 0``) the firm draws ``suppliers_per_input`` distinct suppliers
    uniformly among the firms of sector ``k`` (not itself; fewer when the sector is smaller)
    and splits the coefficient equally among them, so every firm of sector ``l`` needs
    ``input_coefficients[k, l]`` units of sector ``k`` per unit of output. Columns summing to
    less than 1 make a productive economy. Runs in O(E * suppliers_per_input).

    Args:
        firms_per_sector: ``K`` positive firm counts.
        input_coefficients: ``[K, K]``, entry ``[k, l]`` = units of sector ``k``'s goods per
            unit of a sector-``l`` firm's output (``>= 0``). A chain of tiers is a
            superdiagonal: ``[[0, a, 0], [0, 0, b], [0, 0, 0]]``.
        suppliers_per_input: suppliers per input sector of each firm.
        sector_names: ``K`` names (default ``"0"``, ``"1"``, ...).
        seed: random seed (the same seed gives the same network).
    """
    counts = list(firms_per_sector)
    if not counts or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in counts):
        raise ValueError(f"firms_per_sector must be positive ints, got {counts}.")
    # every firm's ids and sector, before any draw (edges add suppliers_per_input per input)
    check_memory(
        sum(counts) * 16,
        f"firm_network of {sum(counts):,} firms",
        "choose fewer firms per sector",
    )
    k = len(counts)
    table = torch.as_tensor(input_coefficients, dtype=torch.float64)
    if table.shape != (k, k):
        raise ValueError(
            f"input_coefficients must be [K, K] = [{k}, {k}] for {k} sectors, got "
            f"{list(table.shape)}."
        )
    _check_amount(table, "input_coefficients", "units of input per unit of output")
    if isinstance(suppliers_per_input, bool) or not isinstance(suppliers_per_input, int):
        raise ValueError(
            f"suppliers_per_input must be a positive int, got {suppliers_per_input!r}."
        )
    if suppliers_per_input < 1:
        raise ValueError(
            f"suppliers_per_input must be a positive int, got {suppliers_per_input!r}."
        )
    gen = torch.Generator().manual_seed(seed)
    offset = [0]
    for c in counts:
        offset.append(offset[-1] + c)
    sources, targets, weights = [], [], []
    for buyer_sector in range(k):
        buyers = torch.arange(offset[buyer_sector], offset[buyer_sector + 1])
        for input_sector in range(k):
            coefficient = float(table[input_sector, buyer_sector])
            if coefficient == 0:
                continue
            same = input_sector == buyer_sector
            pool = counts[input_sector]
            m = min(suppliers_per_input, pool - same)
            if m < 1:
                raise ValueError(
                    f"sector {input_sector} uses its own goods but has a single firm, which "
                    "cannot supply itself; give it more firms or a zero diagonal coefficient."
                )
            own = (buyers - offset[buyer_sector]) if same else None
            local = _distinct_draws(buyers.shape[0], pool, m, own, gen)  # [buyers, m]
            sources.append((local + offset[input_sector]).reshape(-1))
            targets.append(buyers.repeat_interleave(m))
            weights.append(torch.full((buyers.shape[0] * m,), coefficient / m))
    if sources:
        edge_index = torch.stack([torch.cat(sources), torch.cat(targets)])
        coefficients = torch.cat(weights).to(torch.get_default_dtype())
    else:
        edge_index = torch.zeros(2, 0, dtype=torch.long)
        coefficients = torch.zeros(0)
    sector = torch.repeat_interleave(torch.arange(k), torch.tensor(counts))
    names = sector_names if sector_names is not None else tuple(str(s) for s in range(k))
    if len(names) != k:
        raise ValueError(f"sector_names has {len(names)} names for {k} sectors.")
    return firm_graph(edge_index, sector, input_coefficients=coefficients, sector_names=names)


def _distinct_draws(
    rows: int, pool: int, m: int, exclude: Tensor | None, gen: torch.Generator
) -> Tensor:
    """Per row, ``m`` distinct ids drawn uniformly from ``[0, pool)`` minus ``exclude[row]``.

    Draw ``u`` among the ids not yet taken and map it to the ``u``-th free id by stepping past
    the taken ones in increasing order (O(rows * m^2), no ``rows x pool`` table).
    """
    taken = exclude[:, None] if exclude is not None else torch.zeros(rows, 0, dtype=torch.long)
    first = taken.shape[1]
    for _ in range(m):
        u = torch.randint(0, pool - taken.shape[1], (rows,), generator=gen)
        for column in taken.sort(dim=1).values.unbind(1):
            u = u + (u >= column).long()
        taken = torch.cat([taken, u[:, None]], 1)
    return taken[:, first:]


def sector_values(
    graph: PopulationGraph,
    values: Mapping[str, float | Tensor],
    *,
    default: float = 0.0,
    sector_attr: str = "sector",
    node_type: str = FIRM,
) -> Tensor:
    """A per-firm tensor ``[N]`` giving every firm its sector's value (``default`` for sectors
    not named), e.g. the final demand of the retail sector only. Tensor values stay
    differentiable.

    Raises:
        ValueError: a name that is not one of the graph's sectors.
    """
    attrs = graph.node_attrs(node_type)
    if sector_attr not in attrs:
        raise ValueError(f"the {node_type!r} nodes have no {sector_attr!r} attribute.")
    sector = attrs[sector_attr].long()
    names = _sector_names(graph, sector)
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(f"unknown sector names {unknown}; the sectors are {list(names)}.")
    table = [torch.as_tensor(values.get(name, default)) for name in names]
    dtype = torch.get_default_dtype()
    for value in table:
        if value.is_floating_point():
            dtype = torch.promote_types(dtype, value.dtype)
    if not table:
        return torch.zeros(sector.shape[0], dtype=dtype, device=sector.device)
    return torch.stack([v.to(dtype=dtype, device=sector.device) for v in table])[sector]
