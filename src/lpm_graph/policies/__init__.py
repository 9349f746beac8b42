"""Behaviour policies: agents' decisions each step, drawn with straight-through gradients.

- :class:`HeuristicPolicy`: each agent's probability is a function of its own features
  (any callable, or a learnable :class:`Logistic`).
- :class:`ArchetypePolicy`: agents grouped by key attributes; one decision per archetype and
  step (a Python callable, an ``nn.Module``, or a language model through
  :class:`~lpm_graph.policies.llm.OpenAIChatDecision`), one draw per agent.
- :class:`PolicyIntervention`: a policy's actions inside :class:`~lpm_graph.protocols.SEIRM`.

``OpenAIChatDecision`` and its :class:`~lpm_graph.policies.llm.ReplyCache` (standard library
only) are imported on first use.
"""

from __future__ import annotations

from typing import Any

from .archetype import Archetype, ArchetypePolicy, Archetypes
from .base import Policy, sample_actions, step_context
from .heuristic import HeuristicPolicy, Logistic
from .intervention import PolicyIntervention

__all__ = [
    "Archetype",
    "ArchetypePolicy",
    "Archetypes",
    "PolicyIntervention",
    "DecisionParseError",
    "DecisionRequestError",
    "HeuristicPolicy",
    "Logistic",
    "OpenAIChatDecision",
    "Policy",
    "ReplyCache",
    "sample_actions",
    "step_context",
]

_LAZY = ("OpenAIChatDecision", "DecisionParseError", "DecisionRequestError", "ReplyCache")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import llm

        return getattr(llm, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
