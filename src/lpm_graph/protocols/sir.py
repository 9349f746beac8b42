"""Network SIR: the reference protocol."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

from .._checks import check_rate
from ..layers.transmission import Transmission
from .base import CompartmentalProtocol, Phase, State, StepContext

if TYPE_CHECKING:
    from ..graph import PopulationGraph, Relation

__all__ = ["SIR", "Infection", "Recovery"]

ORDERS = ("infect_first", "recover_first")
# Infection (agents in S) and recovery (agents in I at the start of the step) move disjoint
# sets of agents, so they share one uniform per agent and step: each agent uses its number
# at most once, the draws are as independent as from two streams, and a step draws half the
# numbers (the draws were a quarter of the step at 1e6 agents).
DRAWS = "sir"


class Infection(Phase):
    r"""Susceptible agents are infected by their infectious in-neighbours.

    .. math::
        \lambda_i = \sum_{r} \sum_{j \to_r i} \tau_{ji}\, w_{ji}\, I_j, \qquad
        P(\text{infected in } [t, t + \Delta t)) = 1 - e^{-\lambda_i \Delta t}

    which equals ``1 - prod_j (1 - p)`` with ``p = 1 - exp(-tau dt)`` per infectious contact.
    The rate ``tau`` is per unit time; halving ``dt`` halves the per-step hazard, and the
    process converges to the continuous-time SIR as ``dt -> 0``. Moves ``S -> I`` and records
    the flow as ``"infections"``.
    """

    name = "infection"

    def __init__(
        self,
        protocol: SIR,
        relations: Sequence[Relation] | None,
        backend: str | None,
    ) -> None:
        super().__init__(protocol)
        if isinstance(relations, str):  # list("contact") would be seven one-letter names
            raise ValueError(
                f"relations must be a list of relations, got the str {relations!r}; write "
                f"relations=[{relations!r}]."
            )
        self.transmission = Transmission(backend=backend)
        self._relations = None if relations is None else list(relations)

    def relations(self, graph: PopulationGraph) -> list[Relation]:
        if self._relations is not None:
            return [graph.relation(r) for r in self._relations]
        t = self.owner.node_type
        return [r for r in graph.relations if r[0] == t and r[2] == t]

    def forward(self, graph: PopulationGraph, state: State, ctx: StepContext) -> State:
        # dt and the sign of exp(-lambda dt) folded into the rate once: tau * (-dt) is
        # -(tau * dt) exactly, and so is every product and sum below, so the values equal
        # those of exp(-(sum of the hazards)) bit for bit without a pass over the agents
        rate = self.owner.transmission_rate * -ctx.dt
        infectious = state["I"]
        # stochastic states are 0/1 and change in few agents a step: the layer updates its
        # last force of infection from the changes (same values; see IncrementalSum)
        indicator = ctx.mode == "stochastic"
        minus_hazard_dt = None  # -lambda_i * dt
        for rel in self.relations(graph):
            lam = self.transmission(
                graph.csr(rel),
                infectious,
                rate,
                edge_weight=graph.edge_weight(rel),
                indicator=indicator,
            )
            minus_hazard_dt = lam if minus_hazard_dt is None else minus_hazard_dt + lam
        if minus_hazard_dt is None:
            return state
        escape = torch.exp(minus_hazard_dt)  # probability of no infection during the step
        new = ctx.flow(self.name, escape, state["S"], stream=DRAWS)
        ctx.flows["infections"] = new
        return {**state, "S": state["S"] - new, "I": state["I"] + new}

    def extra_repr(self) -> str:
        return "S -> I, p = 1 - exp(-dt * sum_j tau_ji w_ji I_j)"


class Recovery(Phase):
    r"""Agents infectious at the start of the step recover with probability
    :math:`r = 1 - e^{-\gamma \Delta t}` (a geometric infectious period of mean
    :math:`\Delta t / r \approx 1/\gamma`). Agents infected earlier in the same step are not
    eligible. Moves ``I -> R`` and records the flow as ``"recoveries"``."""

    name = "recovery"

    def __init__(self, protocol: SIR) -> None:
        super().__init__(protocol)

    def forward(self, graph: PopulationGraph, state: State, ctx: StepContext) -> State:
        eligible = ctx.start["I"]
        stay = torch.exp(-self.owner.recovery_rate * ctx.dt)  # 1 - r, a scalar
        recovered = ctx.flow(self.name, stay, eligible, stream=DRAWS)
        ctx.flows["recoveries"] = recovered
        return {**state, "I": state["I"] - recovered, "R": state["R"] + recovered}

    def extra_repr(self) -> str:
        return "I -> R, r = 1 - exp(-gamma dt), agents infectious at the start of the step"


class SIR(CompartmentalProtocol):
    r"""Discrete-time stochastic SIR on a contact network.

    Each step of length ``dt``: a susceptible agent with infectious in-neighbours ``j`` is
    infected with probability ``1 - prod_j (1 - p_ji)``, ``p_ji = 1 - exp(-tau w_ji dt)``; an
    infectious agent recovers with probability ``r = 1 - exp(-gamma dt)``.

    The order of the two phases inside a step is explicit, because at ``dt = 1`` it changes the
    outcome by more than stochastic noise. With per-step probabilities ``p`` and ``r`` the
    per-edge transmissibility (the probability that an infected agent ever infects a given
    susceptible neighbour) is

    * ``order="infect_first"`` (infect, then recover): ``T = p / (1 - (1 - p)(1 - r))``;
    * ``order="recover_first"`` (recover, then infect): ``T = (1 - r) p / (1 - (1 - p)(1 - r))``.

    :meth:`transmissibility` returns it; on a configuration-model network the final size
    follows from ``T`` and the degree distribution alone (Newman 2002, Phys. Rev. E 66, 016128).

    Args:
        transmission_rate: ``tau``, per contact per unit time (``>= 0``); a scalar, or ``[E]``
            per edge when the graph has a single relation. Multiplied by the graph's
            ``edge_weight`` where it has one.
        recovery_rate: ``gamma`` per unit time (``>= 0``).
        dt: step length (time units, default 1).
        order: ``"infect_first"`` (default) or ``"recover_first"``.
        relations: relations that carry infection (default: every agent -> agent relation).
        backend: aggregation backend (see :func:`lpm_graph.ops.resolve_backend`).
        learnable: register the rates as ``nn.Parameter`` (default) or as buffers. A tensor
            that already requires grad is used as it is, so gradients reach it (functional use).
    """

    compartments = ("S", "I", "R")
    flow_names = ("infections", "recoveries")

    def __init__(
        self,
        transmission_rate: float | Tensor,
        recovery_rate: float | Tensor,
        dt: float = 1.0,
        order: Literal["infect_first", "recover_first"] = "infect_first",
        *,
        relations: Sequence[Relation] | None = None,
        backend: str | None = None,
        learnable: bool = True,
    ) -> None:
        if order not in ORDERS:
            raise ValueError(f"order={order!r} is not a step order; choose one of {ORDERS}.")
        check_rate(transmission_rate, "transmission_rate")
        check_rate(recovery_rate, "recovery_rate")
        infection, recovery = Infection(self, relations, backend), Recovery(self)
        phases = [infection, recovery] if order == "infect_first" else [recovery, infection]
        super().__init__(phases, dt)
        self.order = order
        self.declare_parameter(
            "transmission_rate",
            transmission_rate,
            constraint="nonnegative",
            unit="1/day",
            learnable=learnable,
        )
        self.declare_parameter(
            "recovery_rate",
            recovery_rate,
            constraint="nonnegative",
            unit="1/day",
            learnable=learnable,
        )

    def check(self, graph: PopulationGraph) -> None:
        super().check(graph)
        tau = self.transmission_rate
        if tau.dim() > 0:
            relations = self.phases[0 if self.order == "infect_first" else 1].relations(graph)
            if len(relations) != 1 or tau.shape != (graph.num_edges(relations[0]),):
                raise ValueError(
                    f"transmission_rate has shape {list(tau.shape)}; per-edge rates need exactly "
                    f"one relation and shape [E] = [{graph.num_edges(relations[0])}]"
                    if len(relations) == 1
                    else f"transmission_rate has shape {list(tau.shape)}; per-edge rates need a "
                    f"graph with a single infection relation, this one has {relations}."
                )
        if self.recovery_rate.dim() > 0:
            raise ValueError("recovery_rate must be a scalar rate per unit time.")

    def transmissibility(self) -> Tensor:
        """Per-edge transmissibility ``T`` of this step order (unit edge weight)."""
        p = -torch.expm1(-self.transmission_rate.detach() * self.dt)
        r = -torch.expm1(-self.recovery_rate.detach() * self.dt)
        t = p / (1 - (1 - p) * (1 - r))
        return t if self.order == "infect_first" else (1 - r) * t

    def extra_repr(self) -> str:
        return f"order={self.order!r}"
