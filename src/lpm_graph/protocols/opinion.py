r"""Opinion and behaviour protocols over a social graph: threshold adoption and bounded confidence.

Two models of how a behaviour (mask wearing, distancing, vaccination intent) spreads between
agents, each a :class:`Behaviour`: a protocol that runs alone under
:func:`~lpm_graph.simulate`, or inside an epidemic through
:class:`~lpm_graph.protocols.behaviour.BehaviourCoupling`, where its per-agent
:meth:`~Behaviour.compliance` in ``[0, 1]`` scales contacts.

* :class:`ThresholdAdoption`: complex contagion (Granovetter 1978; Watts 2002; Centola and Macy
  2007): an agent adopts once the weighted fraction of its adopting neighbours reaches its
  threshold, exactly (``sharpness=math.inf``) or through a logistic adoption probability with
  a learnable sharpness (differentiable; stochastic or expected mode).
* :class:`BoundedConfidence`: continuous opinions in ``[0, 1]`` (Hegselmann and Krause 2002;
  Deffuant et al. 2000): each agent moves towards the neighbours whose opinions lie within its
  confidence bound, exactly or through a smooth confidence kernel.

Both may be driven by an epidemic in the same state: when it holds an infectious compartment
``"I"`` (SEIRM), the local prevalence ``g_i`` (weighted fraction of infectious social
neighbours) raises adoption or opinion (perceived risk; Funk et al. 2009).

Message passing: :class:`NeighbourFraction` (weighted mean of a neighbour signal) and
:class:`ConfidenceAverage` (one bounded-confidence round), both :class:`~lpm_graph.layers.
ProtocolLayer` subclasses usable on their own or in a PyG model.

References:
    M. Granovetter, Threshold models of collective behavior, Am. J. Sociol. 83 (1978) 1420.
    D. J. Watts, A simple model of global cascades on random networks, PNAS 99 (2002) 5766.
    D. Centola, M. Macy, Complex contagions and the weakness of long ties, Am. J. Sociol. 113
    (2007) 702.
    G. Deffuant, D. Neau, F. Amblard, G. Weisbuch, Mixing beliefs among interacting agents,
    Adv. Complex Syst. 3 (2000) 87.
    R. Hegselmann, U. Krause, Opinion dynamics and bounded confidence: models, analysis and
    simulation, JASSS 5(3) (2002) 2.
    S. Funk, E. Gilad, C. Watkins, V. A. A. Jansen, The spread of awareness and its impact on
    epidemic outbreaks, PNAS 106 (2009) 6872.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor
from torch.nn import functional as F

from .._checks import check_probability, check_rate
from ..layers.protocol import ProtocolLayer
from ..layers.samplers import RandomStreams
from ..ops import CSR, fixed_order_sum, propagate
from .base import Mode, Phase, Port, Protocol, State, StepContext, seed_infected
from .compose import NamespacedStreams
from .seirm import _per_agent

if TYPE_CHECKING:
    from ..graph import PopulationGraph, Relation

__all__ = [
    "RULES",
    "Behaviour",
    "BoundedConfidence",
    "ConfidenceAverage",
    "NeighbourFraction",
    "ThresholdAdoption",
    "confidence_kernel",
]

RULES: tuple[str, ...] = ("hk", "pairwise")
"""Bounded-confidence update rules: ``"hk"`` (Hegselmann-Krause average over the confidants
and oneself) and ``"pairwise"`` (Deffuant-style compromise with every confidant at once)."""


# ---------------------------------------------------------------------------- layers


class NeighbourFraction(ProtocolLayer):
    r"""Weighted fraction of in-neighbours in a state (or weighted mean of a neighbour signal).

    .. math::
        f_i = \frac{\sum_{j \to i} w_{ji}\, x_j}{\sum_{j \to i} w_{ji}}

    with :math:`f_i = 0` for an agent without in-neighbours. With ``x`` the 0/1 adoption
    indicators this is the fraction of adopting neighbours of a threshold model; with
    probabilities (expected mode) it is its expectation given independent neighbours.
    :meth:`totals` returns numerator and denominator separately, so that several relations
    pool into one fraction (sum both, then divide). One fused sparse product computes both.

    Args:
        backend: aggregation backend (see :func:`lpm_graph.ops.resolve_backend`).

    Shapes:
        ``x: [num_src, *R]``, ``edge_weight: [E]`` -> ``[num_dst, *R]``.
    """

    def __init__(self, *, backend: str | None = None) -> None:
        super().__init__("sum", backend=backend)

    def forward(
        self,
        edge_index: Tensor | CSR,
        x: Tensor,
        edge_weight: Tensor | None = None,
        size: tuple[int, int] | None = None,
    ) -> Tensor:
        total, weight = self.totals(edge_index, x, edge_weight, size)
        return _ratio(total, weight)

    def totals(
        self,
        edge_index: Tensor | CSR,
        x: Tensor,
        edge_weight: Tensor | None = None,
        size: tuple[int, int] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """``(sum_j w_ji x_j, sum_j w_ji)``: ``[num_dst, *R]`` and ``[num_dst]``."""
        flat = x.reshape(x.shape[0], -1)  # [N, R]
        both = torch.cat([flat, torch.ones_like(flat[:, :1])], 1)  # [N, R + 1]: x, then 1
        out = self.propagate(edge_index, x=both, edge_weight=edge_weight, size=size)
        return out[:, :-1].reshape(out.shape[0], *x.shape[1:]), out[:, -1]

    def message(self, x_j: Tensor, edge_weight: Tensor | None) -> Tensor:
        return x_j if edge_weight is None else x_j * _edge_column(edge_weight, x_j)

    def message_and_aggregate(self, csr: CSR, **kwargs: Any) -> Tensor:
        x = kwargs["x"]
        x = x[0] if isinstance(x, (tuple, list)) else x
        return propagate(csr, x, kwargs.get("edge_weight"), "sum", self.backend)


def confidence_kernel(difference: Tensor, confidence: Tensor | float, sharpness: Any) -> Tensor:
    r"""Weight of a neighbour whose opinion differs by ``d``:
    :math:`k(d) = \sigma(\beta (\varepsilon - |d|))`, or :math:`\mathbf 1[|d| \le \varepsilon]`
    when ``sharpness`` (:math:`\beta`) is ``math.inf`` (Hegselmann-Krause's exact kernel)."""
    if _is_inf(sharpness):
        return (difference.abs() <= confidence).to(difference.dtype)
    return torch.sigmoid(sharpness * (confidence - difference.abs()))


class ConfidenceAverage(ProtocolLayer):
    r"""One bounded-confidence round: agents move towards in-neighbours of similar opinion.

    .. math::
        P_i = \sum_{j \to i} w_{ji}\, k(x_j - x_i)\, (x_j - x_i), \qquad
        W_i = \sum_{j \to i} w_{ji}\, k(x_j - x_i)

    .. math::
        \text{hk:}\quad x_i' = x_i + \mu \frac{P_i}{1 + W_i}, \qquad
        \text{pairwise:}\quad x_i' = x_i + \mu P_i

    with :func:`confidence_kernel` :math:`k` (bound :math:`\varepsilon`, sharpness
    :math:`\beta`) and convergence :math:`\mu`. With :math:`\mu = 1`, unit weights and the exact
    kernel, ``"hk"`` is the Hegselmann-Krause update (Hegselmann and Krause 2002): the mean of
    the opinions within :math:`\varepsilon`, one's own included; every new opinion is a convex
    combination of old ones (for :math:`\mu \le 1`), so opinions stay in ``[0, 1]`` and their
    range never widens. ``"pairwise"`` is Deffuant's compromise :math:`x_i \mathrel{+}= \mu
    (x_j - x_i)` (Deffuant et al. 2000) with every confidant at once: on symmetric weights it
    preserves the total opinion exactly, and it is a convex combination when
    :math:`\mu \sum_j w_{ji} \le 1`.

    :meth:`propagate` returns the sums ``[num_dst, *R, 2]`` (``P``, ``W``; pool relations by
    adding them) and :meth:`combine` applies the rule; :meth:`forward` does both.

    Args:
        rule: ``"hk"`` (default) or ``"pairwise"``.
        backend: aggregation backend (see :func:`lpm_graph.ops.resolve_backend`).

    Shapes:
        ``opinion: [N, *R]``, ``edge_weight: [E]`` -> ``[N, *R]``.
    """

    def __init__(self, rule: Literal["hk", "pairwise"] = "hk", *, backend: str | None = None):
        super().__init__("sum", backend=backend)
        if rule not in RULES:
            raise ValueError(
                f"rule={rule!r} is not a bounded-confidence rule; choose one of {RULES}."
            )
        self.rule = rule

    def forward(
        self,
        edge_index: Tensor | CSR,
        opinion: Tensor,
        confidence: Tensor | float,
        convergence: Tensor | float = 1.0,
        sharpness: Tensor | float = math.inf,
        edge_weight: Tensor | None = None,
    ) -> Tensor:
        sums = self.propagate(
            edge_index,
            opinion=opinion,
            confidence=confidence,
            sharpness=sharpness,
            edge_weight=edge_weight,
        )
        return self.combine(sums, opinion, convergence)

    def message(
        self,
        opinion_j: Tensor,
        opinion_i: Tensor,
        confidence: Tensor | float,
        sharpness: Tensor | float,
        edge_weight: Tensor | None,
    ) -> Tensor:
        d = opinion_j - opinion_i  # [E, *R]
        k = confidence_kernel(d, confidence, sharpness)
        if edge_weight is not None:
            k = k * _edge_column(edge_weight.to(k.dtype), k)
        return torch.stack([k * d, k], -1)  # [E, *R, 2]: pull, weight

    def combine(self, sums: Tensor, opinion: Tensor, convergence: Tensor | float) -> Tensor:
        """The new opinions from the (pooled) sums ``[N, *R, 2]``."""
        pull, weight = sums.unbind(-1)
        if self.rule == "hk":
            return opinion + convergence * pull / (1 + weight)
        return opinion + convergence * pull

    def extra_repr(self) -> str:
        return f"rule={self.rule!r}, " + super().extra_repr()


# ---------------------------------------------------------------------------- base


class Behaviour(Protocol):
    """A behaviour protocol: one phase over a social graph and a per-agent compliance.

    Runs alone (:func:`~lpm_graph.simulate` with ``initial_infected`` read as the initial
    behaviour; see :meth:`start`) or inside an epidemic through
    :class:`~lpm_graph.protocols.behaviour.BehaviourCoupling`. Subclasses define
    :attr:`state_names`, :meth:`start`, :meth:`compliance` and :attr:`risk` (the parameter
    through which the epidemic drives the behaviour).

    Args:
        phase: the behaviour's phase.
        dt: step length (days).
        relations: the social relations (default: every ``node_type -> node_type`` relation).
        node_type: the agents' node type.
    """

    state_names: tuple[str, ...] = ()
    risk_name: str = ""
    ports = (
        Port(
            "infectious",
            "per-agent infectious indicator (or probability) [N, *R] in [0, 1]; its weighted "
            "share among an agent's social contacts is the perceived risk g_i",
            "the state's 'I' summed over its stages when the behaviour runs inside an "
            "epidemic (BehaviourCoupling), else no risk term",
        ),
    )

    def __init__(
        self,
        phase: Phase,
        dt: float,
        relations: Sequence[Relation | str] | None,
        node_type: str,
    ) -> None:
        super().__init__([phase], dt)
        self._relations = None if relations is None else list(relations)
        self.node_type = node_type

    def social_relations(self, graph: PopulationGraph) -> list[Relation]:
        """The relations the behaviour spreads over."""
        if self._relations is not None:
            return [graph.relation(r) for r in self._relations]
        t = self.node_type
        return [r for r in graph.relations if r[0] == t and r[2] == t]

    @property
    def risk(self) -> Tensor:
        """The parameter scaling the epidemic's push on the behaviour (0: none)."""
        return getattr(self, self.risk_name)

    def start(
        self,
        graph: PopulationGraph,
        initial: object,
        streams: RandomStreams,
        shape: tuple[int, ...],
        dtype: torch.dtype,
        mode: Mode,
    ) -> State:
        """The behaviour's initial per-agent state, ``{name: [N, *R]}``."""
        raise NotImplementedError

    def compliance(self, state: State) -> Tensor:
        """Per-agent compliance in ``[0, 1]`` (``[N, *R]``)."""
        raise NotImplementedError

    def initial_state(
        self,
        graph: PopulationGraph,
        initial_infected: object,
        streams: RandomStreams,
        replicates: int | None,
        dtype: torch.dtype,
        mode: Mode,
    ) -> State:
        n = graph.num_nodes(self.node_type)
        shape = (n,) if replicates is None else (n, replicates)
        return self.start(graph, initial_infected, streams, shape, dtype, mode)


def _infectious(state: State, like: Tensor) -> Tensor | None:
    """The epidemic's infectious indicator ``[N, *R]`` when the state holds an ``"I"``
    (summed over its stages), else ``None`` (the behaviour runs alone)."""
    infectious = state.get("I")
    if infectious is not None and infectious.dim() > like.dim():
        infectious = infectious.sum(1)  # SEIRM: [N, K_I, *R] by steps spent in I
    return infectious


def _pooled_fraction(
    layer: NeighbourFraction, graph: PopulationGraph, relations: Sequence[Relation], x: Tensor
) -> Tensor:
    """:class:`NeighbourFraction` pooled over ``relations`` (numerators and denominators
    summed): ``[N, *R]``; 0 without relations."""
    total = weight = None
    for rel in relations:
        t, w = layer.totals(graph.csr(rel), x, graph.edge_weight(rel))
        total, weight = (t, w) if total is None else (total + t, weight + w)
    if total is None or weight is None:
        return torch.zeros_like(x)
    return _ratio(total, weight)


def _ratio(total: Tensor, weight: Tensor) -> Tensor:
    """``total / weight`` per agent (``weight`` ``[N]``), 0 where ``weight`` is 0."""
    w = _per_agent(weight.to(total.dtype), total)
    return torch.where(w > 0, total / w.clamp_min(torch.finfo(total.dtype).tiny), 0.0)


# ---------------------------------------------------------------------------- threshold


class _Adoption(Phase):
    """Non-adopters adopt, adopters abandon; records ``"adoptions"`` and ``"abandonments"``."""

    name = "adoption"

    def __init__(self, protocol: ThresholdAdoption, backend: str | None) -> None:
        super().__init__(protocol)
        self.fraction = NeighbourFraction(backend=backend)

    def forward(self, graph: PopulationGraph, state: State, ctx: StepContext) -> State:
        p = self.owner
        adopted, waiting = state["adopted"], state["not_adopted"]
        relations = p.social_relations(graph)
        infectious = ctx.port("infectious")
        if infectious is None:
            infectious = _infectious(state, adopted)
        if infectious is None:
            f = _pooled_fraction(self.fraction, graph, relations, adopted)
        else:  # adopters and infectious neighbours in one sparse product
            both = _pooled_fraction(
                self.fraction, graph, relations, torch.stack([adopted, infectious], -1)
            )
            f = both[..., 0] + p.risk_weight * both[..., 1]
        z = f - _per_agent(p.threshold, adopted)
        if p.hard:
            survival = (z < 0).to(adopted.dtype)  # adopt iff f_i >= theta_i
        else:  # (1 - sigmoid(beta z))^dt = exp(-dt softplus(beta z))
            survival = torch.exp(-ctx.dt * F.softplus(p.sharpness * z))
        new = ctx.flow("adoption", survival, waiting)
        left = ctx.flow("abandonment", torch.exp(-p.abandonment * ctx.dt), adopted)
        ctx.flows["adoptions"], ctx.flows["abandonments"] = new, left
        return {**state, "adopted": adopted + new - left, "not_adopted": waiting - new + left}

    def extra_repr(self) -> str:
        rule = "f_i >= theta_i" if self.owner.hard else "p = 1 - (1 - sigmoid(beta z_i))^dt"
        return f"not_adopted -> adopted ({rule}, z_i = f_i + rho g_i - theta_i); abandon at alpha"


class ThresholdAdoption(Behaviour):
    r"""Complex contagion: an agent adopts once enough of its neighbours have.

    With :math:`a_j \in \{0, 1\}` the adoption indicator, :math:`w_{ji}` the social edge
    weights, :math:`I_j` the infectious indicator of an epidemic in the same state (0 when
    alone) and :math:`\theta_i` the agent's threshold:

    .. math::
        f_i = \frac{\sum_{j \to i} w_{ji} a_j}{\sum_{j \to i} w_{ji}}, \quad
        g_i = \frac{\sum_{j \to i} w_{ji} I_j}{\sum_{j \to i} w_{ji}}, \quad
        z_i = f_i + \rho\, g_i - \theta_i

    .. math::
        P(\text{adopt during } [t, t + \Delta t)) = 1 - \big(1 - \sigma(\beta z_i)\big)^{\Delta t}
            = 1 - e^{-\Delta t\, \mathrm{softplus}(\beta z_i)}

    so :math:`\sigma(\beta z_i)` is the probability per unit time (per step at
    :math:`\Delta t = 1`; a smaller step keeps the hazard per day). As :math:`\beta \to \infty`
    this is the deterministic threshold rule of Granovetter (1978) on a network (Watts 2002;
    Centola and Macy 2007): adopt as soon as :math:`f_i \ge \theta_i`; ``sharpness=math.inf``
    runs that rule exactly. A finite :math:`\beta` makes the step differentiable in
    :math:`\theta, \beta, \rho` (and lets an agent adopt below threshold with probability
    :math:`\sigma(-\beta \theta_i)` per day). Adopters abandon at rate :math:`\alpha`
    (probability :math:`1 - e^{-\alpha \Delta t}` per step; 0 makes adoption permanent).
    Both moves are computed from the state at the start of the phase (synchronous update).
    :math:`\rho g_i` is the perceived risk of Funk et al. (2009) (local awareness).

    State: ``adopted`` and ``not_adopted`` (0/1 indicators, or probabilities in expected mode,
    which propagates them as if neighbours were independent: a mean-field approximation of the
    stochastic model, deterministic with exact gradients); ``adopted + not_adopted = 1``.
    Flows: ``adoptions``, ``abandonments``. Compliance: ``adopted``.

    Run alone, ``initial_infected`` gives the initial adopters (as for the epidemic: a count,
    a fraction of agents, ids, a bool mask, per-agent probabilities, or a 0-dim tensor, one
    probability for every agent)::

        traj = simulate(ThresholdAdoption(0.3), graph, 20, initial_infected=0.05, seed=0)
        traj.counts["adopted"]  # [21]

    Args:
        threshold: :math:`\theta` in ``[0, 1]``, a scalar or ``[N]`` (one per agent).
        sharpness: :math:`\beta > 0` (default 20: the adoption probability goes from 0.12 to
            0.88 as :math:`f_i` crosses :math:`\theta_i \pm 0.1`); ``math.inf`` for the exact
            rule (not learnable then).
        risk_weight: :math:`\rho \ge 0`, the weight of infectious neighbours (default 0).
        abandonment: :math:`\alpha \ge 0`, per unit time (default 0).
        dt: step length (days).
        relations: the social relations (default: every agent -> agent relation).
        node_type: the agents' node type.
        backend: aggregation backend.
        learnable: register the parameters as ``nn.Parameter`` (default) or buffers; a tensor
            that requires grad is used as it is (functional use).
    """

    state_names = ("adopted", "not_adopted")
    flow_names = ("adoptions", "abandonments")
    initial_condition = "initial_adopters"
    risk_name = "risk_weight"

    def __init__(
        self,
        threshold: float | Tensor = 0.5,
        sharpness: float | Tensor = 20.0,
        *,
        risk_weight: float | Tensor = 0.0,
        abandonment: float | Tensor = 0.0,
        dt: float = 1.0,
        relations: Sequence[Relation | str] | None = None,
        node_type: str = "agent",
        backend: str | None = None,
        learnable: bool = True,
    ) -> None:
        check_probability(threshold, "threshold")
        self.hard = _check_sharpness(sharpness)
        check_rate(risk_weight, "risk_weight")
        check_rate(abandonment, "abandonment")
        super().__init__(_Adoption(self, backend), dt, relations, node_type)
        self.declare_parameter(
            "threshold",
            threshold,
            constraint="probability",
            unit="fraction of neighbours",
            learnable=learnable,
        )
        if self.hard:
            self.sharpness = math.inf
        else:
            self.declare_parameter(
                "sharpness", sharpness, constraint="positive", unit="", learnable=learnable
            )
        self.declare_parameter(
            "risk_weight", risk_weight, constraint="nonnegative", unit="", learnable=learnable
        )
        self.declare_parameter(
            "abandonment", abandonment, constraint="nonnegative", unit="1/day", learnable=learnable
        )

    def check(self, graph: PopulationGraph) -> None:
        check_probability(self.threshold, "threshold")
        check_rate(self.risk_weight, "risk_weight")
        check_rate(self.abandonment, "abandonment")
        if not self.hard:
            _check_sharpness(self.sharpness)
        n = graph.num_nodes(self.node_type)
        if self.threshold.dim() > 0 and self.threshold.shape != (n,):
            raise ValueError(
                f"threshold has shape {list(self.threshold.shape)}; give a scalar or one "
                f"threshold per agent, [{n}]."
            )
        for name in ("risk_weight", "abandonment"):
            if getattr(self, name).dim() > 0:
                raise ValueError(f"{name} must be a scalar.")

    def start(
        self,
        graph: PopulationGraph,
        initial: object,
        streams: RandomStreams,
        shape: tuple[int, ...],
        dtype: torch.dtype,
        mode: Mode,
    ) -> State:
        """``initial`` adopters: ``None`` (nobody), or as ``initial_infected`` of
        :func:`~lpm_graph.protocols.base.seed_infected`, plus a 0-dim float tensor (one
        probability for every agent, differentiable). Drawn from their own stream."""
        device = graph.device
        if initial is None:
            adopted = torch.zeros(shape, dtype=dtype, device=device)
        else:
            if torch.is_tensor(initial) and initial.dim() == 0:
                if not initial.is_floating_point():
                    raise ValueError("initial adopters as a 0-dim tensor must be a probability.")
                initial = initial.expand(shape[0])
            try:
                adopted = seed_infected(
                    initial, shape, NamespacedStreams(streams, "adoption:"), dtype, device, mode
                )
            except ValueError as err:
                raise ValueError(f"initial adopters: {err}") from None
        return {"adopted": adopted, "not_adopted": 1 - adopted}

    def compliance(self, state: State) -> Tensor:
        return state["adopted"]

    def extra_repr(self) -> str:
        beta = "inf (exact)" if self.hard else f"{_fmt(self.sharpness)}"
        return f"threshold={_fmt(self.threshold)}, sharpness={beta}"


# ---------------------------------------------------------------------------- bounded confidence


class _Compromise(Phase):
    """One bounded-confidence round, then the push of perceived risk; records
    ``"opinion_shift"``."""

    name = "opinion"

    def __init__(self, protocol: BoundedConfidence, rule: str, backend: str | None) -> None:
        super().__init__(protocol)
        self.average = ConfidenceAverage(rule, backend=backend)  # type: ignore[arg-type]
        self.fraction = NeighbourFraction(backend=backend)

    def forward(self, graph: PopulationGraph, state: State, ctx: StepContext) -> State:
        p = self.owner
        x = state["opinion"]
        sums = None
        for rel in p.social_relations(graph):
            s = self.average.propagate(
                graph.csr(rel),
                opinion=x,
                confidence=p.confidence,
                sharpness=p.sharpness,
                edge_weight=graph.edge_weight(rel),
            )
            sums = s if sums is None else sums + s
        new = x if sums is None else self.average.combine(sums, x, p.convergence)
        infectious = ctx.port("infectious")
        if infectious is None:
            infectious = _infectious(state, x)
        if infectious is not None:  # towards 1 by 1 - exp(-kappa g dt) of the distance
            g = _pooled_fraction(self.fraction, graph, p.social_relations(graph), infectious)
            new = new - (1 - new) * torch.expm1(-p.risk_rate * g * ctx.dt)
        ctx.flows["opinion_shift"] = (new - x).abs()
        return {**state, "opinion": new}

    def extra_repr(self) -> str:
        return f"opinion -> {self.average.rule} average within confidence; risk at kappa g_i"


class BoundedConfidence(Behaviour):
    r"""Continuous opinions in ``[0, 1]`` that move towards neighbours of similar opinion.

    Each step is one round of :class:`ConfidenceAverage` over the social relations (pooled),
    then, when an epidemic's ``"I"`` is in the state, a push towards 1 by the local prevalence
    :math:`g_i` (fraction of infectious neighbours):

    .. math::
        k(d) = \sigma\big(\beta (\varepsilon - |d|)\big), \qquad
        \tilde x_i = x_i + \mu \frac{\sum_{j \to i} w_{ji} k(x_j - x_i)(x_j - x_i)}
            {1 + \sum_{j \to i} w_{ji} k(x_j - x_i)}

    .. math::
        x_i' = \tilde x_i + (1 - \tilde x_i)\big(1 - e^{-\kappa g_i \Delta t}\big)

    (``rule="pairwise"`` drops the denominator; see :class:`ConfidenceAverage`). With
    ``sharpness=math.inf``, :math:`\mu = 1` and unit weights the round is exactly the
    Hegselmann-Krause model (2002) on the graph; a finite :math:`\beta` makes it
    differentiable in :math:`\varepsilon, \beta, \mu`. Opinions stay in ``[0, 1]``. The round
    is one compromise per step whatever ``dt``; only the risk term is a rate per day. The
    model is deterministic: ``mode`` does not change it.

    State: ``opinion`` ``[N, *R]``. Observables: ``opinion`` (the sum over agents) and
    ``opinion_variance`` (the variance over agents). Flow: ``opinion_shift``, ``|x_i' - x_i|``
    (summed over agents, the total movement of a step: with the variance it separates
    :math:`\varepsilon` from :math:`\mu` in calibration). Compliance: the opinion itself.

    Run alone, ``initial_infected`` gives the initial opinions (see :meth:`start`)::

        traj = simulate(BoundedConfidence(0.2), graph, 30, initial_infected=None, seed=0)

    Args:
        confidence: :math:`\varepsilon` in ``[0, 1]``.
        convergence: :math:`\mu` in ``(0, 1]`` (default 1).
        sharpness: :math:`\beta > 0` (default 50: the kernel falls from 0.88 to 0.12 over
            :math:`|d| = \varepsilon \mp 0.04`); ``math.inf`` for the exact kernel.
        rule: ``"hk"`` (default) or ``"pairwise"`` (needs :math:`\mu \max_i \sum_j w_{ji}
            \le 1`, checked per run).
        risk_rate: :math:`\kappa \ge 0`, per unit time (default 0).
        dt: step length (days).
        relations: the social relations (default: every agent -> agent relation).
        node_type: the agents' node type.
        backend: aggregation backend.
        learnable: register the parameters as ``nn.Parameter`` (default) or buffers.
    """

    state_names = ("opinion",)
    flow_names = ("opinion_shift",)
    initial_condition = "initial_opinions"
    risk_name = "risk_rate"

    def __init__(
        self,
        confidence: float | Tensor = 0.2,
        convergence: float | Tensor = 1.0,
        sharpness: float | Tensor = 50.0,
        *,
        rule: Literal["hk", "pairwise"] = "hk",
        risk_rate: float | Tensor = 0.0,
        dt: float = 1.0,
        relations: Sequence[Relation | str] | None = None,
        node_type: str = "agent",
        backend: str | None = None,
        learnable: bool = True,
    ) -> None:
        if rule not in RULES:
            raise ValueError(
                f"rule={rule!r} is not a bounded-confidence rule; choose one of {RULES}."
            )
        check_probability(confidence, "confidence")
        _check_convergence(convergence)
        self.hard = _check_sharpness(sharpness)
        check_rate(risk_rate, "risk_rate")
        super().__init__(_Compromise(self, rule, backend), dt, relations, node_type)
        self.rule = rule
        self.declare_parameter(
            "confidence",
            confidence,
            constraint="probability",
            unit="opinion distance",
            learnable=learnable,
        )
        self.declare_parameter(
            "convergence", convergence, constraint="real", unit="", learnable=learnable
        )
        if self.hard:
            self.sharpness = math.inf
        else:
            self.declare_parameter(
                "sharpness", sharpness, constraint="positive", unit="", learnable=learnable
            )
        self.declare_parameter(
            "risk_rate", risk_rate, constraint="nonnegative", unit="1/day", learnable=learnable
        )

    def check(self, graph: PopulationGraph) -> None:
        for name in ("confidence", "convergence", "risk_rate") + (
            () if self.hard else ("sharpness",)
        ):
            if getattr(self, name).dim() > 0:
                raise ValueError(f"{name} must be a scalar.")
        check_probability(self.confidence, "confidence")
        _check_convergence(self.convergence)
        check_rate(self.risk_rate, "risk_rate")
        if not self.hard:
            _check_sharpness(self.sharpness)
        if self.rule == "pairwise":
            n = graph.num_nodes(self.node_type)
            ones = torch.ones(n, dtype=torch.float64, device=graph.device)
            weight = torch.zeros(n, dtype=torch.float64, device=graph.device)
            for rel in self.social_relations(graph):
                weight = weight + propagate(graph.csr(rel), ones, graph.edge_weight(rel))
            mu = float(self.convergence.detach())
            worst = mu * float(weight.max()) if n else 0.0
            if worst > 1 + 1e-9:
                raise ValueError(
                    f"rule='pairwise' with convergence {mu:g} and a largest "
                    f"weighted in-degree of {float(weight.max()):g} moves an agent by up to "
                    f"{worst:g} times the gaps, past its neighbours' opinions (out of [0, 1]); "
                    "use convergence <= 1 / max in-degree, or rule='hk'."
                )

    def start(
        self,
        graph: PopulationGraph,
        initial: object,
        streams: RandomStreams,
        shape: tuple[int, ...],
        dtype: torch.dtype,
        mode: Mode,
    ) -> State:
        """Initial opinions: ``None`` (independent ``U[0, 1)`` draws from stream
        ``"opinion:initial"``), a number (every agent), or a tensor ``[N]`` or ``[N, R]`` in
        ``[0, 1]`` (used as given: gradients reach it)."""
        device = graph.device
        if initial is None:
            return {"opinion": streams.uniform("opinion:initial", 0, shape, dtype)}
        if isinstance(initial, bool) or not (
            isinstance(initial, (int, float)) or torch.is_tensor(initial)
        ):
            raise ValueError(
                f"initial opinions must be None, a number or a tensor [N], got "
                f"{type(initial).__name__}."
            )
        x = torch.as_tensor(initial, dtype=dtype, device=device)
        check_probability(x, "initial opinions")
        if x.dim() == 0:
            return {"opinion": x.expand(shape).clone()}
        if (
            x.shape[0] != shape[0]
            or x.dim() > len(shape)
            or (x.dim() == len(shape) and x.shape != shape)
        ):
            raise ValueError(
                f"initial opinions have shape {list(x.shape)}; expected [{shape[0]}] or "
                f"{list(shape)}."
            )
        if x.dim() < len(shape):
            x = x.unsqueeze(-1).expand(shape)
        return {"opinion": x}

    def compliance(self, state: State) -> Tensor:
        return state["opinion"]

    def observe(self, state: State) -> dict[str, Tensor]:
        x = state["opinion"]
        total = fixed_order_sum(x)
        variance = fixed_order_sum((x - total / x.shape[0]).square()) / x.shape[0]
        return {"opinion": total, "opinion_variance": variance}

    def extra_repr(self) -> str:
        beta = "inf (exact)" if self.hard else f"{_fmt(self.sharpness)}"
        return (
            f"rule={self.rule!r}, confidence={_fmt(self.confidence)}, "
            f"convergence={_fmt(self.convergence)}, sharpness={beta}"
        )


# ---------------------------------------------------------------------------- helpers


def _edge_column(edge_weight: Tensor, like: Tensor) -> Tensor:
    if edge_weight.dim() == 0:
        return edge_weight
    return edge_weight.reshape(-1, *([1] * (like.dim() - 1)))


def _is_inf(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isinf(value)


def _check_sharpness(value: float | Tensor) -> bool:
    """``sharpness`` must be > 0 (``math.inf``: the exact rule); returns whether it is inf."""
    if _is_inf(value):
        if value < 0:
            raise ValueError("sharpness must be > 0 (math.inf for the exact rule), got -inf.")
        return True
    t = torch.as_tensor(value).detach()
    if t.dim() > 0:
        raise ValueError(f"sharpness must be a scalar, got shape {list(t.shape)}.")
    if not (bool(torch.isfinite(t)) and float(t) > 0):
        raise ValueError(
            f"sharpness must be a finite number > 0 or math.inf (the exact rule), got {float(t)}."
        )
    return False


def _check_convergence(value: float | Tensor) -> None:
    t = torch.as_tensor(value).detach()
    if not (bool(torch.isfinite(t).all()) and bool((t > 0).all()) and bool((t <= 1).all())):
        raise ValueError(f"convergence must be in (0, 1], got {t.tolist()}.")


def _fmt(value: Any) -> str:
    if torch.is_tensor(value):
        return f"{float(value.detach()):g}" if value.numel() == 1 else f"<{value.numel()} values>"
    return f"{value:g}"
