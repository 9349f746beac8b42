"""Policy: what every behaviour policy does with its per-agent probabilities.

A policy maps the graph, the step's observed per-agent features (named tensors) and global
observables to per-agent probabilities of an action, then draws the actions:

* binary actions (``categories=None``): probabilities ``[N]`` (``[N, R]`` with ``R``
  replicates), actions 0.0 / 1.0 of the same shape, drawn exactly with
  :func:`~lpm_graph.layers.samplers.bernoulli_st` (``b = 1[u >= 1 - p]``, straight-through
  gradient ``db/dp = 1``);
* categorical actions (``categories=C``): probabilities ``[N, *R, C]`` summing to 1, one-hot
  actions of that shape, drawn exactly by inverse CDF with one uniform per agent, with the
  straight-through gradient ``d onehot / dp = I`` (Bengio et al., 2013).

The uniforms come from the run's stream ``(policy.name, t)`` (see
:class:`~lpm_graph.layers.samplers.RandomStreams`), so a policy's draws are reproducible and do
not move when other layers are added. In expected mode (``ctx.mode == "expected"``) a policy
returns its probabilities instead of draws: deterministic, with exact gradients.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from .._checks import check_int, check_positive
from ..layers.samplers import RandomStreams, bernoulli_st
from ..protocols.base import StepContext

if TYPE_CHECKING:
    from ..graph import PopulationGraph

__all__ = ["Policy", "sample_actions", "step_context"]

RESERVED = ("t", "time")
"""Input names every policy provides itself: the step index and the time ``t * dt``."""


def step_context(streams: RandomStreams | int, t: int, dt: float = 1.0) -> StepContext:
    """A :class:`~lpm_graph.protocols.base.StepContext` for calling a policy outside a
    simulation (stochastic mode; ``streams`` may be a seed)."""
    if isinstance(streams, int) and not isinstance(streams, bool):
        streams = RandomStreams(streams)
    if not isinstance(streams, RandomStreams):
        raise ValueError(f"streams must be a RandomStreams or an int seed, got {streams!r}.")
    t = check_int(t, "t")
    check_positive(dt, "dt")
    return StepContext(t=t, dt=float(dt), start={}, streams=streams)


def sample_actions(p: Tensor, ctx: StepContext, name: str, categorical: bool = False) -> Tensor:
    """Per-agent actions drawn from probabilities ``p`` with straight-through gradients.

    Args:
        p: binary: ``P(action = 1)``, ``[N, *R]``; categorical: ``[N, *R, C]`` over the last
            dimension.
        ctx: the step (its ``t``, ``mode`` and random streams).
        name: the random stream's name (one per policy).
        categorical: whether ``p``'s last dimension lists categories.

    Returns:
        0.0 / 1.0 actions shaped like ``p`` (one-hot over the last dimension when
        categorical); ``p`` itself in expected mode.
    """
    if ctx.mode == "expected":
        return p
    if not categorical:
        return bernoulli_st(p, uniform=ctx.uniform(name, p))
    u = ctx.uniform(name, p[..., 0]).unsqueeze(-1)  # one uniform per agent (and replicate)
    cdf = p.detach().cumsum(-1)
    k = (u >= cdf).sum(-1, keepdim=True).clamp_max(p.shape[-1] - 1)  # P(k = j) = p_j
    hard = torch.zeros_like(p).scatter_(-1, k, 1.0)
    if p.requires_grad:
        return hard + (p - p.detach())
    return hard


class Policy(nn.Module):
    """Base class of behaviour policies: ``(graph, features, ctx) -> per-agent actions``.

    Subclasses implement :meth:`probabilities`; :meth:`forward` draws the actions (see the
    module docstring). A policy is an ``nn.Module``, so learnable decision functions
    (``nn.Module`` s with ``nn.Parameter`` s) are found by ``policy.parameters()``, and it can
    be called inside a :class:`~lpm_graph.protocols.base.Phase` or an intervention (see
    :class:`~lpm_graph.policies.PolicyIntervention`), once per step.

    Args:
        name: the random stream of the policy's draws; give two policies in one run
            different names.
        categories: ``None`` for binary actions, or the number ``C >= 2`` of categories.
        node_type: the agents' node type (default: the graph's only node type).

    Shapes:
        - features: per-agent tensors ``[N]`` or ``[N, R]`` (all with the same ``R``).
        - observables: global values, scalars or ``[R]``.
        - output: ``[N, *R]`` (binary) or ``[N, *R, C]`` (categorical).
    """

    def __init__(
        self, name: str, categories: int | None = None, node_type: str | None = None
    ) -> None:
        super().__init__()
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string (it keys a stream), got {name!r}.")
        if categories is not None and (
            isinstance(categories, bool) or not isinstance(categories, int) or categories < 2
        ):
            raise ValueError(
                f"categories must be None (binary) or an int >= 2, got {categories!r}."
            )
        self.name = name
        self.categories = categories
        self.node_type = node_type

    def probabilities(
        self,
        graph: PopulationGraph,
        features: Mapping[str, Tensor],
        ctx: StepContext,
        observables: Mapping[str, Tensor | float] | None = None,
    ) -> Tensor:
        """Per-agent probabilities ``[N, *R]`` (binary) or ``[N, *R, C]`` (categorical)."""
        raise NotImplementedError

    def forward(
        self,
        graph: PopulationGraph,
        features: Mapping[str, Tensor],
        ctx: StepContext | RandomStreams,
        observables: Mapping[str, Tensor | float] | None = None,
        *,
        t: int | None = None,
    ) -> Tensor:
        """This step's actions.

        Args:
            graph: the population graph.
            features: the step's observed per-agent features.
            ctx: the step (inside a phase), or the run's :class:`RandomStreams` together
                with ``t``.
            observables: global observables (e.g. daily cases).
            t: the step index when ``ctx`` is a :class:`RandomStreams`.
        """
        if isinstance(ctx, RandomStreams):
            if t is None:
                raise ValueError("give the step t when ctx is a RandomStreams.")
            ctx = step_context(ctx, t)
        elif t is not None and t != ctx.t:
            raise ValueError(f"t={t} disagrees with the step context's t={ctx.t}.")
        p = self.probabilities(graph, features, ctx, observables)
        return sample_actions(p, ctx, self.name, categorical=self.categories is not None)

    # ---------------------------------------------------------------- helpers for subclasses

    def _agents(self, graph: PopulationGraph, features: Mapping[str, Tensor]) -> int:
        n = graph.num_nodes(self.node_type)
        for name, value in features.items():
            if not torch.is_tensor(value) or value.dim() == 0 or value.shape[0] != n:
                shape = list(value.shape) if torch.is_tensor(value) else type(value).__name__
                raise ValueError(
                    f"{self.name}: feature {name!r} must be a per-agent tensor [N] or [N, R] "
                    f"with N = {n} agents, got {shape}."
                )
        return n

    def _replicates(self, features: Mapping[str, Tensor]) -> tuple[int, ...]:
        """The replicate shape ``R`` (``()`` or ``(R,)``) shared by the features."""
        shapes = {tuple(v.shape[1:]) for v in features.values() if v.dim() > 1}
        if any(len(s) > 1 for s in shapes) or len(shapes) > 1:
            raise ValueError(
                f"{self.name}: features must be [N] or [N, R] with one R; got trailing shapes "
                f"{sorted(shapes)} (reduce stage dimensions first, e.g. state['I'].sum(1))."
            )
        return shapes.pop() if shapes else ()

    @staticmethod
    def _dtype(features: Mapping[str, Tensor]) -> torch.dtype:
        for value in features.values():
            if value.is_floating_point():
                return value.dtype
        return torch.get_default_dtype()

    def _globals(
        self,
        observables: Mapping[str, Tensor | float] | None,
        ctx: StepContext,
        replicates: tuple[int, ...],
        dtype: torch.dtype,
        device: torch.device,
        taken: set[str],
    ) -> dict[str, Tensor]:
        """Observables as tensors (scalars or ``[R]``), plus ``t`` and ``time``."""
        out = {
            "t": torch.tensor(float(ctx.t), dtype=dtype, device=device),
            "time": torch.tensor(ctx.t * ctx.dt, dtype=dtype, device=device),
        }
        for name, value in (observables or {}).items():
            if name in RESERVED or name in taken:
                raise ValueError(
                    f"{self.name}: observable {name!r} clashes with a feature or a reserved "
                    f"name {RESERVED}; rename it."
                )
            v = torch.as_tensor(value, device=device).to(dtype)
            if v.dim() > 0 and tuple(v.shape) != replicates:
                raise ValueError(
                    f"{self.name}: observable {name!r} must be a scalar or one value per "
                    f"replicate {list(replicates)}, got shape {list(v.shape)}."
                )
            out[name] = v
        return out

    def _shape(self, p: Tensor, target: tuple[int, ...], what: str) -> Tensor:
        """``p`` broadcast to ``target``: of the same number of dimensions (size-1 ones
        expand), or a scalar, or for categories a ``[C]`` vector, the same for every row."""
        hint = (f"{self.name}: {what} has shape {list(p.shape)}, which does not fit "
                f"{list(target)} (agents or archetypes first, then replicates"
                f"{', then categories' if self.categories else ''}; size-1 dimensions "
                "broadcast).")  # fmt: skip
        if p.dim() == 0 or (self.categories is not None and p.dim() == 1):
            p = p.reshape(*([1] * (len(target) - max(p.dim(), 1))), -1)  # the same for all
        if p.dim() != len(target):
            raise ValueError(hint)
        try:
            return p.expand(target)
        except RuntimeError as err:
            raise ValueError(hint) from err

    def _validate(self, p: Tensor, row: Callable[[int], str]) -> None:
        """Probabilities in [0, 1] (summing to 1 over categories), or an error naming the first
        offending row (``row(k)`` describes row ``k``: an agent or an archetype)."""
        d = p.detach()
        bad = ~torch.isfinite(d) | (d < 0) | (d > 1)
        if self.categories is not None and not bool(bad.any()):
            bad = ((d.sum(-1, keepdim=True) - 1).abs() > 1e-4).expand_as(d)
            kind = f"a probability vector over {self.categories} categories (summing to 1)"
        else:
            kind = "a probability in [0, 1]"
        if bool(bad.any()):
            k = int(bad.reshape(bad.shape[0], -1).any(1).nonzero()[0])
            value = d[k].tolist()
            raise ValueError(f"{self.name}: {row(k)} got {value}, which is not {kind}.")

    def extra_repr(self) -> str:
        kind = "binary" if self.categories is None else f"categories={self.categories}"
        return f"name={self.name!r}, {kind}"
