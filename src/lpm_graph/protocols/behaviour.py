r"""Behaviour-epidemic coupling: a behaviour model inside SEIRM, its compliance scaling contacts.

:class:`BehaviourCoupling` is an :class:`~lpm_graph.protocols.interventions.Intervention`:
handed to :class:`~lpm_graph.protocols.SEIRM` (``interventions=[...]``) it adds the phase of a
:class:`~lpm_graph.protocols.opinion.Behaviour` (threshold adoption or bounded confidence) to
every step, before infection, and scales each contact ``j -> i`` by the compliance of its ends.
The epidemic drives the behaviour through the risk parameter of the behaviour model (local
prevalence of infectious neighbours), and the behaviour damps the epidemic: a coupled model in
the sense of Funk, Salathé and Jansen (2010).

References:
    S. Funk, E. Gilad, C. Watkins, V. A. A. Jansen, The spread of awareness and its impact on
    epidemic outbreaks, PNAS 106 (2009) 6872.
    S. Funk, M. Salathé, V. A. A. Jansen, Modelling the influence of human behaviour on the
    spread of infectious diseases: a review, J. R. Soc. Interface 7 (2010) 1247.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor, nn

from .._checks import check_probability
from .base import declare_parameter
from .interventions import Intervention
from .opinion import Behaviour

if TYPE_CHECKING:
    from ..graph import PopulationGraph, Relation
    from ..layers.samplers import RandomStreams
    from .base import Mode, Phase, State, StepContext

__all__ = ["SIDES", "BehaviourCoupling"]

SIDES: tuple[str, ...] = ("both", "source", "destination")
"""Which end of a contact compliance protects: both, the infectious source (e.g. masks
protect others) or the susceptible destination (e.g. protective distancing)."""


class BehaviourCoupling(Intervention):
    r"""Run a behaviour model inside an epidemic; compliant agents transmit and catch less.

    Every step of the epidemic first runs the behaviour's phase (its state evolves inside the
    same step, from the epidemic state at the start of the step: with a risk parameter
    :math:`\rho > 0` infectious neighbours push agents to comply), then infection with each
    contact ``j -> i`` of the affected edge types scaled by

    .. math::
        \big(1 - e\, c_j\big)\big(1 - e\, c_i\big)

    with :math:`c` the behaviour's compliance (``adopted`` of a
    :class:`~lpm_graph.protocols.opinion.ThresholdAdoption`, ``opinion`` of a
    :class:`~lpm_graph.protocols.opinion.BoundedConfidence`) and :math:`e` the efficacy
    (``sides`` keeps one factor only). In expected mode :math:`c` is the probability of
    complying, and the factor is the mean of independent agents' factors.

    A coupled model in a few lines (``graph`` has ``age_group`` for SEIRM)::

        behaviour = ThresholdAdoption(threshold=0.3, sharpness=20.0, risk_weight=4.0)
        epidemic = SEIRM(2.5, 0.01, interventions=[
            BehaviourCoupling(behaviour, efficacy=0.7, initial=torch.tensor(0.05)),
        ])
        traj = simulate(epidemic, graph, 60, initial_infected=10, mode="expected")
        size = traj.counts["S"][0] - traj.counts["S"][-1]  # epidemic size
        size.backward()  # d size / d threshold, sharpness, risk_weight, efficacy
        traj.counts["adopted"], traj.flows["adoptions"]  # the behaviour, per day

    Behaviour and infection share the graph: by default the behaviour spreads over every
    agent -> agent relation and SEIRM infects over every one too; a separate social layer
    (e.g. ``"social"``) is named in the behaviour's ``relations`` and left out of SEIRM's
    ``edge_type_weights``. The behaviour's parameters are checked against the graph when
    the run builds its initial state (not when a state is passed in).

    Args:
        behaviour: the behaviour model (its parameters become this module's).
        efficacy: :math:`e` in ``[0, 1]``, the reduction of a contact at full compliance.
        initial: the initial behaviour (see the behaviour's ``start``): for threshold adoption,
            the initial adopters (``None``: nobody; an int count, a fraction, ids, a mask,
            per-agent probabilities, or a 0-dim tensor, one probability for every agent, which
            may be an ``nn.Parameter``); for bounded confidence, the initial opinions
            (``None``: uniform draws). An ``nn.Parameter`` is registered here. The
            ``"stochastic_derivative"`` estimator needs an initial without gradient.
        sides: ``"both"`` (default), ``"source"`` or ``"destination"`` (see :data:`SIDES`).
        edge_types: the edge types whose contacts compliance reduces (default: every relation
            of the epidemic), e.g. ``("work", "community")`` to leave households alone.
        learnable: register ``efficacy`` as an ``nn.Parameter`` (default) or a buffer.
    """

    name = "behaviour"

    def __init__(
        self,
        behaviour: Behaviour,
        efficacy: float | Tensor = 0.5,
        *,
        initial: object = None,
        sides: Literal["both", "source", "destination"] = "both",
        edge_types: Sequence[str] | None = None,
        learnable: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(behaviour, Behaviour):
            raise ValueError(
                f"behaviour must be a lpm_graph Behaviour (ThresholdAdoption, "
                f"BoundedConfidence), got {type(behaviour).__name__}."
            )
        if sides not in SIDES:
            raise ValueError(f"sides={sides!r} is not known; choose one of {SIDES}.")
        if isinstance(edge_types, str):
            raise ValueError(f"edge_types must be a sequence of names, e.g. ({edge_types!r},).")
        check_probability(efficacy, "efficacy")
        if torch.as_tensor(efficacy).dim() > 0:
            raise ValueError("efficacy must be a scalar.")
        self.behaviour = behaviour
        declare_parameter(
            self,
            "efficacy",
            efficacy,
            constraint="probability",
            unit="probability",
            learnable=learnable,
        )
        if isinstance(initial, nn.Parameter):
            self.register_parameter("initial", initial)
        else:
            self.initial = initial
        self.sides = sides
        self.edge_types = None if edge_types is None else tuple(edge_types)

    def phase(self) -> Phase:
        return self.behaviour.phases[0]

    def initial_state(
        self, graph: PopulationGraph, state: State, streams: RandomStreams, mode: Mode, dt: float
    ) -> State:
        like = state["S"]
        if dt != self.behaviour.dt:
            raise ValueError(
                f"the behaviour's dt ({self.behaviour.dt:g}) differs from the epidemic's "
                f"({dt:g}); build both with the same dt."
            )
        self.behaviour.check(graph)
        if "I" not in state and bool((self.behaviour.risk.detach() != 0).any()):
            raise ValueError(
                f"{type(self.behaviour).__name__}.{self.behaviour.risk_name} reads the "
                "epidemic's infectious compartment 'I', which this epidemic's state lacks; "
                "set it to 0."
            )
        return self.behaviour.start(
            graph, self.initial, streams, tuple(like.shape), like.dtype, mode
        )

    def contact_factors(
        self, graph: PopulationGraph, rel: Relation, state: State, ctx: StepContext
    ) -> tuple[Tensor, Tensor] | None:
        if self.edge_types is not None and rel[1] not in self.edge_types:
            return None
        factor = 1 - self.efficacy * self.behaviour.compliance(state)
        one = factor.new_ones(())
        if self.sides == "source":
            return factor, one
        if self.sides == "destination":
            return one, factor
        return factor, factor

    def observe(self, state: State) -> dict[str, Tensor]:
        return self.behaviour.observe({k: state[k] for k in self.behaviour.state_names})

    def extra_repr(self) -> str:
        types = "every edge type" if self.edge_types is None else ", ".join(self.edge_types)
        return f"efficacy={float(self.efficacy.detach()):g}, sides={self.sides!r}, on {types}"
