"""PolicyIntervention: agents choose an action every step with a policy, inside SEIRM."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..protocols.base import Phase, State, StepContext
from ..protocols.interventions import Intervention
from .archetype import ArchetypePolicy
from .base import Policy

if TYPE_CHECKING:
    from ..graph import PopulationGraph, Relation
    from ..layers.samplers import RandomStreams
    from ..protocols.base import Mode

__all__ = ["PolicyIntervention"]

Reader = Callable[["PopulationGraph", State, StepContext], Mapping[str, Tensor]]


class PolicyIntervention(Intervention):
    """Each step, every agent takes an action (e.g. wears a mask) drawn by ``policy``; the
    action scales its susceptibility and its contacts.

    The intervention's phase runs first in every step of
    :class:`~lpm_graph.protocols.SEIRM` (``interventions=[...]``): it reads the observed
    features and observables, calls the policy once, and stores the actions in the state
    entry ``name`` (0/1, or the probability in expected mode). Then, with ``a_i`` the action of
    agent ``i``:

    * susceptibility is scaled by ``1 - susceptibility_effect * a_i``;
    * a contact ``j -> i`` of any type is scaled by
      ``(1 - contact_effect * a_j)(1 - contact_effect * a_i)``.

    Defaults of what the policy sees (override with ``features`` / ``observables``, functions
    ``(graph, state, ctx) -> {name: tensor}``): per agent, every floating state entry at the
    step's start with one value per agent (stage-split entries such as ``E`` and ``I``
    summed over stages), including last step's action ``name``; globally, ``total_<entry>``
    (the sum over agents of each of those), ``new_infections`` (agents infected during the
    previous step, 0 at the first) and ``agents`` (their number). An
    :class:`~lpm_graph.policies.ArchetypePolicy` reads its keys from the graph's node
    attributes.

    Observables: ``name`` (agents taking the action) and, for an archetype policy whose keys
    are node attributes, ``<name>_by_archetype`` ``[A]`` (``[A, R]``) in the archetype order
    of :meth:`ArchetypePolicy.groups` (``archetype_keys`` holds their key values).

    Args:
        policy: a binary :class:`~lpm_graph.policies.Policy`.
        name: the state entry and observable of the actions.
        susceptibility_effect: relative reduction of susceptibility while acting, in [0, 1].
        contact_effect: relative reduction of each contact end while acting, in [0, 1].
        features: the per-agent inputs, a function ``(graph, state, ctx) -> {name: tensor}``
            (default: see above).
        observables: the global inputs, a function of the same form (default: see above).
    """

    def __init__(
        self,
        policy: Policy,
        *,
        name: str = "action",
        susceptibility_effect: float = 0.0,
        contact_effect: float = 0.0,
        features: Reader | None = None,
        observables: Reader | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(policy, Policy):
            raise ValueError(f"policy must be a lpm_graph Policy, got {type(policy).__name__}.")
        if policy.categories is not None:
            raise ValueError("PolicyIntervention needs a binary policy (categories=None).")
        for label, value in (("susceptibility_effect", susceptibility_effect),
                             ("contact_effect", contact_effect)):  # fmt: skip
            if (
                not isinstance(value, (int, float))
                or isinstance(value, bool)
                or not 0 <= value <= 1
            ):
                raise ValueError(f"{label} must be in [0, 1] (a number), got {value!r}.")
        self.policy = policy
        self.name = name
        self.susceptibility_effect = float(susceptibility_effect)
        self.contact_effect = float(contact_effect)
        self.read_features = features
        self.read_observables = observables
        self.archetype_keys: Tensor | None = None
        self._archetype_index: Tensor | None = None
        self._phase = _Decide(self)

    @property
    def _before(self) -> str:
        return f"{self.name}:S_before"  # S at the previous step (for new_infections)

    def initial_state(
        self, graph: PopulationGraph, state: State, streams: RandomStreams, mode: Mode, dt: float
    ) -> State:
        if self.name in state:
            raise ValueError(f"state entry {self.name!r} exists already; rename the intervention.")
        p = self.policy
        self.archetype_keys = self._archetype_index = None
        attrs = graph.node_attrs(p.node_type)
        if isinstance(p, ArchetypePolicy) and all(k in attrs for k in p.keys):
            self.archetype_keys, self._archetype_index, _ = p.groups(graph)
        return {self.name: torch.zeros_like(state["S"]), self._before: state["S"]}

    def phase(self) -> Phase:
        return self._phase

    def features(self, graph: PopulationGraph, state: State, ctx: StepContext) -> dict[str, Tensor]:
        if self.read_features is not None:
            return dict(self.read_features(graph, state, ctx))
        like = state["S"]
        out = {}
        for key, value in state.items():
            per_agent = value.is_floating_point() and value.shape[0] == like.shape[0]
            if key == self._before or not per_agent:
                continue
            if value.dim() == like.dim():
                out[key] = value
            elif value.dim() == like.dim() + 1:
                out[key] = value.sum(1)  # stages summed: [N, K, *R] -> [N, *R]
        return out

    def observables(
        self, graph: PopulationGraph, state: State, ctx: StepContext, features: Mapping[str, Tensor]
    ) -> dict[str, Tensor]:
        if self.read_observables is not None:
            return dict(self.read_observables(graph, state, ctx))
        out = {f"total_{k}": v.sum(0) for k, v in features.items()}
        out["new_infections"] = (state[self._before] - state["S"]).sum(0)
        out["agents"] = torch.tensor(float(state["S"].shape[0]))
        return out

    def susceptibility_factor(self, state: State, ctx: StepContext) -> Tensor | None:
        if self.susceptibility_effect == 0:
            return None
        return 1 - self.susceptibility_effect * state[self.name]

    def contact_factors(
        self, graph: PopulationGraph, rel: Relation, state: State, ctx: StepContext
    ) -> tuple[Tensor, Tensor] | None:
        if self.contact_effect == 0:
            return None
        factor = 1 - self.contact_effect * state[self.name]
        return factor, factor

    def observe(self, state: State) -> dict[str, Tensor]:
        action = state[self.name]
        out = {self.name: action.sum(0)}
        index = self._archetype_index
        if index is not None and self.archetype_keys is not None:
            shape = (self.archetype_keys.shape[0], *action.shape[1:])
            out[f"{self.name}_by_archetype"] = action.new_zeros(shape).index_add(
                0, index.to(action.device), action
            )
        return out

    def extra_repr(self) -> str:
        return (f"name={self.name!r}, susceptibility_effect={self.susceptibility_effect:g}, "
                f"contact_effect={self.contact_effect:g}")  # fmt: skip


class _Decide(Phase):
    """The policy's actions for this step, stored in the state (no flow)."""

    def __init__(self, owner: PolicyIntervention) -> None:
        super().__init__(owner)
        self.name = f"policy:{owner.name}"

    def forward(self, graph: PopulationGraph, state: State, ctx: StepContext) -> State:
        iv = self.owner
        features = iv.features(graph, state, ctx)
        observables = iv.observables(graph, state, ctx, features)
        actions = iv.policy(graph, features, ctx, observables)
        return {**state, iv.name: actions, iv._before: state["S"]}

    def extra_repr(self) -> str:
        return f"agents choose {self.owner.name!r} with {type(self.owner.policy).__name__}"
