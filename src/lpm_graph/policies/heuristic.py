"""HeuristicPolicy: each agent's probability is a function of its own observed features."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from .base import RESERVED, Policy

if TYPE_CHECKING:
    from ..graph import PopulationGraph
    from ..protocols.base import StepContext

__all__ = ["HeuristicPolicy", "Logistic"]


class Logistic(nn.Module):
    r"""A logistic function of named inputs with learnable coefficients.

    .. math::
        p = \sigma\Big(b + \sum_k w_k\, x_k\Big), \qquad \sigma(z) = \frac{1}{1 + e^{-z}}

    The inputs ``x_k`` are looked up by name in the mapping it is called with, so the same
    module serves as the probability function of a :class:`HeuristicPolicy` (per-agent features
    ``[N]``, observables such as daily cases, ``t``) and as the batched decision function of an
    :class:`~lpm_graph.policies.ArchetypePolicy` (per-archetype means ``[A]``, ``count``,
    observables); tensors broadcast as usual.

    Args:
        weights: coefficient per input name (units: 1 / the input's unit).
        bias: the intercept ``b`` (logit of the probability when every input is 0).
        learnable: register ``w`` and ``b`` as ``nn.Parameter`` s (default) or as buffers.

    Shapes:
        - input: a mapping of broadcastable tensors (``[N]``, ``[A]``, ``[R]``, scalars).
        - output: their broadcast shape.
    """

    batched = True
    """Called once with every archetype by :class:`~lpm_graph.policies.ArchetypePolicy`."""

    def __init__(
        self, weights: Mapping[str, float], bias: float = 0.0, *, learnable: bool = True
    ) -> None:
        super().__init__()
        if not isinstance(weights, Mapping) or not weights:
            raise ValueError(
                f"weights must name at least one input, mapping it to its weight, e.g. "
                f"{{'daily_cases': 0.1}}, got {weights!r}."
            )
        self.names = tuple(weights)
        values = [*weights.values(), bias]
        if not all(_is_number(v) for v in values):
            raise ValueError(f"weights and bias must be numbers, got {dict(weights)}, {bias!r}.")
        w = torch.tensor([float(v) for v in weights.values()])
        b = torch.tensor(float(bias))
        if not bool(torch.isfinite(w).all()) or not bool(torch.isfinite(b)):
            raise ValueError(f"weights and bias must be finite, got {dict(weights)}, {bias!r}.")
        if learnable:
            self.weight = nn.Parameter(w)
            self.bias = nn.Parameter(b)
        else:
            self.register_buffer("weight", w)
            self.register_buffer("bias", b)

    def forward(self, inputs: Mapping[str, Tensor]) -> Tensor:
        missing = [name for name in self.names if name not in inputs]
        if missing:
            raise ValueError(
                f"Logistic needs inputs {missing}, which are not among {sorted(inputs)}."
            )
        z = self.bias
        for k, name in enumerate(self.names):
            z = z + self.weight[k] * inputs[name]
        return torch.sigmoid(z)

    def extra_repr(self) -> str:
        terms = " + ".join(f"{w:.4g} * {n}" for w, n in zip(self.weight.tolist(), self.names))
        return f"p = sigmoid({float(self.bias.detach()):.4g} + {terms})"


def _is_number(value: object) -> bool:
    """A real number: a Python or NumPy scalar (not a bool) or a 0-d real tensor."""
    if torch.is_tensor(value):
        return value.dim() == 0 and not (value.is_complex() or value.dtype == torch.bool)
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


class HeuristicPolicy(Policy):
    """Each agent acts with a probability computed from its own observed features.

    ``fn`` receives one mapping with the step's per-agent features ``[N]``, the global
    observables (scalars), ``t`` (step index) and ``time`` (``t * dt``), and returns the
    per-agent probabilities ``[N]`` (``[N, C]`` for ``categories=C``; a scalar, or a ``[C]``
    vector, is the same for every agent). With ``R`` replicate columns every value that is not
    a scalar is 2-D so that they broadcast: features ``[N, R]`` (or ``[N, 1]``), observables
    ``[1, R]``, and ``fn`` returns ``[N, R]`` or ``[N, 1]`` (``[N, R, C]``, ``[N, 1, C]``).
    A :class:`Logistic` gives a learnable heuristic::

        policy = HeuristicPolicy(Logistic({"age": 0.03, "daily_cases": 0.01}, bias=-2.0))
        actions = policy(graph, {"age": age}, ctx, {"daily_cases": 120.0})

    Actions are drawn as described in :mod:`lpm_graph.policies.base`.

    Args:
        fn: the probability function (an ``nn.Module`` is registered, so its parameters
            are the policy's).
        name: the random stream of the draws.
        categories: ``None`` (binary) or the number of categories.
        node_type: the agents' node type (default: the graph's only one).

    Shapes:
        - features: ``{name: [N] or [N, R]}``; observables: ``{name: [] or [R]}``.
        - output: ``[N, *R]`` (binary) or ``[N, *R, C]`` (categorical).
    """

    def __init__(
        self,
        fn: Callable[[Mapping[str, Tensor]], Tensor | float],
        *,
        name: str = "heuristic_policy",
        categories: int | None = None,
        node_type: str | None = None,
    ) -> None:
        super().__init__(name, categories, node_type)
        if not callable(fn):
            raise ValueError(f"fn must be callable (features -> probabilities), got {fn!r}.")
        self.fn = fn

    def probabilities(
        self,
        graph: PopulationGraph,
        features: Mapping[str, Tensor],
        ctx: StepContext,
        observables: Mapping[str, Tensor | float] | None = None,
    ) -> Tensor:
        n = self._agents(graph, features)
        reps = self._replicates(features)
        dtype = self._dtype(features)
        device = graph.device
        clash = set(features) & set(RESERVED)
        if clash:
            raise ValueError(f"{self.name}: features may not be named {sorted(clash)}.")
        inputs = {k: v.unsqueeze(1) if reps and v.dim() == 1 else v for k, v in features.items()}
        for name, value in self._globals(
            observables, ctx, reps, dtype, device, set(features)
        ).items():
            inputs[name] = value.unsqueeze(0) if reps and value.dim() == 1 else value  # [1, R]
        out = self.fn(inputs)
        p = out if torch.is_tensor(out) else torch.as_tensor(out, dtype=dtype, device=device)
        if not p.is_floating_point():
            p = p.to(dtype)
        cats = () if self.categories is None else (self.categories,)
        p = self._shape(p, (n, *reps, *cats), "the probability function's output")
        self._validate(p, lambda k: f"agent {k}")
        return p
