"""ArchetypePolicy: one decision per archetype per step, one draw per agent."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .base import RESERVED, Policy

if TYPE_CHECKING:
    from ..graph import PopulationGraph
    from ..protocols.base import StepContext

__all__ = ["Archetype", "ArchetypePolicy", "Archetypes"]

Decision = Callable[[Any], Any]
"""A decision function: ``Archetype -> probability`` (per archetype), or
``Archetypes -> probabilities [A, ...]`` (batched)."""


class Archetypes(Mapping[str, Tensor]):
    """The archetypes of one step and their summaries: the input of a batched decision.

    As a mapping it holds per-archetype columns ``[A]``: one per key attribute (its integer
    value), ``count`` (agents in the archetype) and the mean of every observed feature over the
    archetype's agents; and global values: the observables (scalars), ``t`` (step index) and
    ``time`` (``t * dt``). With ``R`` replicates every value that is not a scalar is 2-D so that
    they all broadcast: columns ``[A, R]`` (or ``[A, 1]`` when the same in every replicate, as
    keys and counts are), observables ``[1, R]``; a batched decision then returns ``[A, R]``,
    ``[A, 1]``, ``[1, R]`` or a scalar. Archetypes are the key combinations present among the
    agents, in lexicographic order of their key values.

    Attributes:
        key_names: the key attributes, e.g. ``("age_group", "area")``.
        keys: ``[A, K]`` key values per archetype.
        counts: ``[A]`` agents per archetype.
        agent_index: ``[N]`` each agent's archetype (row of ``keys``).
        t, time: the step index and its time.
        replicates: ``()`` or ``(R,)``.
    """

    def __init__(
        self,
        key_names: tuple[str, ...],
        keys: Tensor,
        counts: Tensor,
        agent_index: Tensor,
        means: dict[str, Tensor],
        globals_: dict[str, Tensor],
        t: int,
        time: float,
        replicates: tuple[int, ...],
    ) -> None:
        self.key_names = key_names
        self.keys = keys
        self.counts = counts
        self.agent_index = agent_index
        self.t = t
        self.time = time
        self.replicates = replicates
        dtype = globals_["t"].dtype
        self.columns: dict[str, Tensor] = {n: keys[:, k] for k, n in enumerate(key_names)}
        self.columns["count"] = counts.to(dtype)
        self.columns.update(means)
        self.globals = globals_

    @property
    def num_archetypes(self) -> int:
        return int(self.keys.shape[0])

    def __getitem__(self, name: str) -> Tensor:
        if name in self.columns:
            value = self.columns[name]
            return value.unsqueeze(1) if self.replicates and value.dim() == 1 else value
        if name in self.globals:
            value = self.globals[name]
            return value.unsqueeze(0) if self.replicates and value.dim() == 1 else value
        raise KeyError(f"{name!r}: archetype summaries have {sorted(self)}.")

    def __iter__(self) -> Iterator[str]:
        yield from self.columns
        yield from self.globals

    def __len__(self) -> int:
        return len(self.columns) + len(self.globals)

    def key(self, a: int) -> dict[str, int]:
        """The key values of archetype ``a``, e.g. ``{"age_group": 3, "area": 1}``."""
        return dict(zip(self.key_names, (int(v) for v in self.keys[a].tolist())))

    def label(self, a: int) -> str:
        """``"age_group=3, area=1"``."""
        return ", ".join(f"{k}={v}" for k, v in self.key(a).items())

    def row(self, a: int) -> Archetype:
        """Archetype ``a`` alone: the input of a per-archetype decision."""
        if not 0 <= a < self.num_archetypes:
            raise IndexError(f"archetype {a} out of range [0, {self.num_archetypes}).")
        return Archetype(self, a)

    def rows(self) -> list[Archetype]:
        return [Archetype(self, a) for a in range(self.num_archetypes)]

    def __repr__(self) -> str:
        return (f"Archetypes({self.num_archetypes} of {self.key_names} at t={self.t}; "
                f"columns {list(self.columns)}, globals {list(self.globals)})")  # fmt: skip


class Archetype(Mapping[str, Tensor]):
    """One archetype's summary: the same names as :class:`Archetypes`, each value a scalar
    tensor (``[R]`` with replicates).

    Attributes:
        index: its row in the step's :class:`Archetypes`.
        batch: the step's :class:`Archetypes`.
    """

    def __init__(self, batch: Archetypes, index: int) -> None:
        self.batch = batch
        self.index = index

    def __getitem__(self, name: str) -> Tensor:
        if name in self.batch.columns:
            return self.batch.columns[name][self.index]
        if name in self.batch.globals:
            return self.batch.globals[name]
        raise KeyError(f"{name!r}: archetype summaries have {sorted(self)}.")

    def __iter__(self) -> Iterator[str]:
        return iter(self.batch)

    def __len__(self) -> int:
        return len(self.batch)

    @property
    def key(self) -> dict[str, int]:
        return self.batch.key(self.index)

    @property
    def label(self) -> str:
        return self.batch.label(self.index)

    @property
    def count(self) -> int:
        return int(self.batch.counts[self.index])

    @property
    def t(self) -> int:
        return self.batch.t

    @property
    def time(self) -> float:
        return self.batch.time

    def numbers(self, replicate: int | None = None) -> dict[str, int | float]:
        """Every value as a Python number (keys, ``count`` and ``t`` as ints), e.g. to fill a
        prompt; with replicates, ``replicate`` picks the column."""
        out: dict[str, int | float] = {}
        ints = {*self.batch.key_names, "count", "t"}
        for name in self:
            value = self[name].detach()
            if value.dim() > 0:
                if replicate is None:
                    raise ValueError(
                        f"{name!r} has one value per replicate {list(value.shape)}; pick a "
                        "column with replicate=."
                    )
                value = value[replicate]
            out[name] = int(value) if name in ints else float(value)
        return out

    def __repr__(self) -> str:
        return f"Archetype({self.label}, count={self.count}, t={self.t})"


class ArchetypePolicy(Policy):
    r"""Agents grouped into archetypes by key attributes; one decision per archetype and step.

    Agents with the same values of the ``keys`` attributes (e.g. ``("age_group", "area")``)
    form an archetype ``a``. Each step the policy summarises every archetype (agent count,
    means of the observed features over its agents, the global observables, ``t`` and
    ``time``), asks the decision function for the archetype's probability once, and draws each
    agent's action from its archetype's probability:

    .. math::
        p_a = f\big(n_a,\ \bar x_a,\ o_t,\ t\big), \qquad
        \bar x_a = \frac{1}{n_a} \sum_{i \in a} x_i, \qquad
        b_i \sim \mathrm{Bernoulli}(p_{a(i)})

    with the straight-through gradient ``db_i / dp_{a(i)} = 1`` (see
    :mod:`lpm_graph.policies.base`), so gradients reach the parameters of a decision function
    that is an ``nn.Module`` (e.g. :class:`~lpm_graph.policies.Logistic`) and the features
    whose means it reads. The number of decisions per step is the number of archetypes present,
    whatever the number of agents: this is what makes a costly decision function (a language
    model, see :class:`~lpm_graph.policies.llm.OpenAIChatDecision`) affordable for millions of
    agents, at the price of identical probabilities within an archetype.

    The decision function is either per archetype (``Archetype -> probability``: a number or a
    tensor, ``[R]`` per replicate, ``[C]`` per category) or batched
    (``Archetypes -> [A]``, ``[A, R]``, ``[A, C]`` or ``[A, R, C]``; see :class:`Archetypes`
    for shapes with replicates): ``batched=None`` reads
    the function's ``batched`` attribute (True for :class:`~lpm_graph.policies.Logistic` and
    ``OpenAIChatDecision``). Either way :attr:`calls` counts one call per archetype and step.
    Returned probabilities outside [0, 1] (or not summing to 1 over categories) raise an error
    naming the archetype.

    Key attributes are integer (or bool) per-agent tensors ``[N]``, read from the observed
    features or else from the graph's node attributes; the grouping of node attributes is
    computed once and reused while the attribute tensors are unchanged. Inside a simulation
    with gradient checkpointing or the ``"stochastic_derivative"`` estimator a step runs more
    than once, and so do its decisions (a caching decision function then pays once).

    Args:
        decision: the decision function (an ``nn.Module`` is registered as a submodule).
        keys: the key attributes defining archetypes.
        batched: see above.
        name: the random stream of the draws.
        categories: ``None`` (binary actions) or the number of categories.
        node_type: the agents' node type (default: the graph's only one).

    Attributes:
        calls: ``Counter`` of decision calls per step index (one per archetype).

    Shapes:
        - features: ``{name: [N] or [N, R]}``; observables: ``{name: [] or [R]}``.
        - output: ``[N, *R]`` (binary) or ``[N, *R, C]`` (categorical).
    """

    def __init__(
        self,
        decision: Decision,
        keys: Sequence[str],
        *,
        batched: bool | None = None,
        name: str = "archetype_policy",
        categories: int | None = None,
        node_type: str | None = None,
    ) -> None:
        super().__init__(name, categories, node_type)
        if not callable(decision):
            raise ValueError(f"decision must be callable, got {decision!r}.")
        keys = (keys,) if isinstance(keys, str) else tuple(keys)
        if not keys or not all(isinstance(k, str) for k in keys) or len(set(keys)) < len(keys):
            raise ValueError(f"keys must be distinct attribute names, got {keys!r}.")
        clash = set(keys) & {"count", *RESERVED}
        if clash:
            raise ValueError(f"keys may not be named {sorted(clash)} (summary names).")
        self.decision = decision
        self.keys = keys
        self.batched = bool(getattr(decision, "batched", False)) if batched is None else batched
        self.calls: Counter[int] = Counter()
        self._grouping: tuple[list[Tensor], list[int], tuple[Tensor, Tensor, Tensor]] | None = None

    @property
    def total_calls(self) -> int:
        """Decision calls so far, over all steps."""
        return sum(self.calls.values())

    def reset_calls(self) -> None:
        self.calls.clear()

    def groups(
        self, graph: PopulationGraph, features: Mapping[str, Tensor] | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The archetypes: their key values ``[A, K]``, each agent's archetype ``[N]`` and the
        agents per archetype ``[A]``."""
        features = features or {}
        n = graph.num_nodes(self.node_type)
        attrs = graph.node_attrs(self.node_type)
        columns = []
        for key in self.keys:
            value = features[key] if key in features else attrs.get(key)
            if value is None:
                raise ValueError(
                    f"{self.name}: key {key!r} is neither an observed feature "
                    f"({sorted(features)}) nor a node attribute ({sorted(attrs)})."
                )
            if value.is_floating_point() or value.is_complex() or tuple(value.shape) != (n,):
                raise ValueError(
                    f"{self.name}: key {key!r} must be an integer tensor [N] with N = {n} "
                    f"(e.g. an age-group id), got {value.dtype} {list(value.shape)}."
                )
            columns.append(value)
        cached = self._grouping
        versions = [c._version for c in columns]
        if (
            cached is not None
            and len(cached[0]) == len(columns)
            and all(a is b for a, b in zip(cached[0], columns))
            and cached[1] == versions
        ):
            return cached[2]
        result = _group(columns)
        self._grouping = (columns, versions, result)
        return result

    def summarize(
        self,
        graph: PopulationGraph,
        features: Mapping[str, Tensor],
        ctx: StepContext,
        observables: Mapping[str, Tensor | float] | None = None,
    ) -> Archetypes:
        """This step's :class:`Archetypes` (differentiable in the features)."""
        self._agents(graph, features)
        reps = self._replicates(features)
        dtype = self._dtype(features)
        device = graph.device
        clash = set(features) & {"count", *RESERVED}
        if clash:
            raise ValueError(f"{self.name}: features may not be named {sorted(clash)}.")
        keys, index, counts = self.groups(graph, features)
        denominator = counts.to(dtype)
        means = {}
        for name, value in features.items():
            if name in self.keys:
                continue
            value = value.to(dtype)
            total = value.new_zeros((keys.shape[0], *value.shape[1:])).index_add(0, index, value)
            means[name] = total / denominator.reshape(-1, *([1] * (value.dim() - 1)))
        taken = set(features) | set(self.keys) | {"count"}
        globals_ = self._globals(observables, ctx, reps, dtype, device, taken)
        return Archetypes(
            self.keys, keys, counts, index, means, globals_, ctx.t, ctx.t * ctx.dt, reps
        )

    def decide(self, archetypes: Archetypes) -> Tensor:
        """Each archetype's probability, ``[A, *R]`` (binary) or ``[A, *R, C]``, validated."""
        a = archetypes.num_archetypes
        dtype = archetypes.globals["t"].dtype
        device = archetypes.keys.device
        cats = () if self.categories is None else (self.categories,)
        target = (a, *archetypes.replicates, *cats)
        if a == 0:
            return torch.zeros(target, dtype=dtype, device=device)

        def as_tensor(value: Any, who: str) -> Tensor:
            if torch.is_tensor(value):
                return value if value.is_floating_point() else value.to(dtype)
            try:
                return torch.as_tensor(value, dtype=dtype, device=device)
            except (TypeError, ValueError, RuntimeError) as err:
                raise ValueError(
                    f"{self.name}: the decision returned {value!r} for {who}; return a "
                    "probability (a number or a tensor)."
                ) from err

        if self.batched:
            self.calls[archetypes.t] += a
            p = as_tensor(self.decision(archetypes), f"the {a} archetypes at step {archetypes.t}")
        else:
            out = []
            for k in range(a):
                self.calls[archetypes.t] += 1
                value = as_tensor(self.decision(archetypes.row(k)), archetypes.label(k))
                try:  # a number, [R], [C] or [R, C] per archetype
                    out.append(value.expand(target[1:]))
                except RuntimeError as err:
                    raise ValueError(
                        f"{self.name}: the decision returned shape {list(value.shape)} for "
                        f"archetype {archetypes.label(k)}; expected a number or "
                        f"{list(target[1:])} (replicates, then categories)."
                    ) from err
            p = torch.stack(out)
        p = self._shape(p, target, "the decision's output")
        self._validate(p, lambda k: f"archetype {archetypes.label(k)} at step {archetypes.t}")
        return p

    def probabilities(
        self,
        graph: PopulationGraph,
        features: Mapping[str, Tensor],
        ctx: StepContext,
        observables: Mapping[str, Tensor | float] | None = None,
    ) -> Tensor:
        archetypes = self.summarize(graph, features, ctx, observables)
        p = self.decide(archetypes)
        return p.index_select(0, archetypes.agent_index)  # [N, *R(, C)]: gather by archetype

    def extra_repr(self) -> str:
        how = "batched" if self.batched else "per archetype"
        return f"keys={self.keys}, decision {how}, " + super().extra_repr()


def _group(columns: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """Distinct rows of the key columns (lexicographic), each agent's row and the counts.

    The columns are packed into one mixed-radix integer code per agent when their value
    ranges allow it: a 1-D ``unique`` is several times faster than ``unique(dim=0)``.
    """
    stacked = torch.stack([c.long() for c in columns], 1)  # [N, K]
    if stacked.shape[0] == 0:
        return torch.unique(stacked, dim=0, return_inverse=True, return_counts=True)
    low = stacked.min(0).values
    sizes = (stacked.max(0).values - low + 1).tolist()
    if math.prod(sizes) >= 2**62:
        return torch.unique(stacked, dim=0, return_inverse=True, return_counts=True)
    strides = [math.prod(sizes[k + 1 :]) for k in range(len(sizes))]
    radix = torch.tensor(strides, dtype=torch.long, device=stacked.device)
    code = ((stacked - low) * radix).sum(1)  # [N]: sorts like the rows
    codes, index, counts = torch.unique(code, return_inverse=True, return_counts=True)
    size = torch.tensor(sizes, dtype=torch.long, device=stacked.device)
    keys = torch.div(codes.unsqueeze(1), radix, rounding_mode="floor") % size
    return keys + low, index, counts
