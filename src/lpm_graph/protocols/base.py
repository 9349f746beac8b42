"""Protocol, Phase and StepContext: what one simulation step is made of."""

from __future__ import annotations

import math
import numbers
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor, nn

from .._checks import check_positive, check_probability, check_rate
from ..layers.samplers import RandomStreams, bernoulli_st, flow_st
from ..ops import fixed_order_sum

if TYPE_CHECKING:
    from ..graph import PopulationGraph

__all__ = [
    "CONSTRAINTS",
    "ESTIMATORS",
    "MODES",
    "CompartmentalProtocol",
    "Coupling",
    "ParameterSpec",
    "Phase",
    "Port",
    "Protocol",
    "StepContext",
    "declare_parameter",
]

Mode = Literal["stochastic", "expected"]
MODES: tuple[str, ...] = ("stochastic", "expected")
Estimator = Literal["straight_through", "conditional_mean", "stochastic_derivative"]
ESTIMATORS: tuple[str, ...] = ("straight_through", "conditional_mean", "stochastic_derivative")
"""Gradient estimators for stochastic runs; all keep the forward draws exact.

``"straight_through"`` and ``"conditional_mean"`` are surrogate backwards: cheap (one run, one
backward, any number of parameters) but biased through the network feedback of an epidemic.
Measured on G(n, m) graphs, n = 2,000 (mean of 50 seeds, d final size / d tau against a
central finite difference with common random numbers): straight-through overestimates (x2.5
at final size 0.85), conditional-mean underestimates (x0.3). ``"stochastic_derivative"`` is
unbiased: it runs coupled alternative paths beside the primal one (Arya et al., 2022; see
:class:`~lpm_graph.simulator.Simulator`) at about twice the cost of a forward run, and its
gradient is read through :meth:`~lpm_graph.simulator.Trajectory.expectation`."""
State = dict[str, Tensor]
Constraint = Literal["real", "nonnegative", "positive", "probability"]
CONSTRAINTS: tuple[str, ...] = ("real", "nonnegative", "positive", "probability")


@dataclass(frozen=True)
class ParameterSpec:
    """A declared parameter of a protocol or intervention (see :func:`declare_parameter`).

    Attributes:
        name: the attribute it is stored under.
        constraint: ``"real"`` (finite), ``"nonnegative"`` (a rate), ``"positive"`` or
            ``"probability"`` (in [0, 1]); checked when declared and before every run.
        unit: the unit, for people (``"1/day"``, ``"probability"``, ``""`` for none).
        learnable: an ``nn.Parameter`` (gradients, optimisers) or a buffer.
    """

    name: str
    constraint: Constraint = "nonnegative"
    unit: str = ""
    learnable: bool = True


def check_constraint(value: Tensor | float, name: str, constraint: Constraint) -> None:
    """Raise a ``ValueError`` naming ``name`` when ``value`` breaks ``constraint``."""
    if constraint == "nonnegative":
        check_rate(value, name)
    elif constraint == "probability":
        check_probability(value, name)
    elif constraint in ("real", "positive"):
        t = torch.as_tensor(value).detach()
        if t.is_complex() or not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
            raise ValueError(f"{name} must be a real number, got dtype {t.dtype}.")
        if t.numel() and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} contains NaN or infinite values; pass finite values.")
        if constraint == "positive" and t.numel() and bool((t <= 0).any()):
            raise ValueError(
                f"{name} must be positive, got a smallest value of {t.min().item():g}."
            )
    else:
        raise ValueError(f"constraint={constraint!r} is not known; choose one of {CONSTRAINTS}.")


def declare_parameter(
    module: nn.Module,
    name: str,
    value: float | Tensor,
    *,
    constraint: Constraint = "nonnegative",
    unit: str = "",
    learnable: bool = True,
    keep_dtype: bool = False,
) -> ParameterSpec:
    """Declare and register parameter ``name`` of ``module`` (a protocol, a phase's owner or
    an intervention): the one mechanism every protocol uses.

    ``value`` is checked against ``constraint`` now (an error names it) and again by
    :meth:`Protocol.check` before every run (an optimiser may have moved it). It becomes an
    ``nn.Parameter`` (``learnable=True``) or a buffer, as a floating tensor of the default
    dtype (``keep_dtype=True``: a floating tensor keeps its own, e.g. float64 amounts); an
    ``nn.Parameter`` is registered as it is, and a tensor that already requires grad is kept
    as it is (functional use: gradients reach the caller's graph).
    """
    check_constraint(value, name, constraint)
    if isinstance(value, nn.Parameter):
        module.register_parameter(name, value)
    elif torch.is_tensor(value) and value.requires_grad:
        object.__setattr__(module, name, value)  # functional use: keep the caller's graph
    else:
        tensor = torch.as_tensor(value)
        if not (keep_dtype and tensor.is_floating_point()):
            tensor = tensor.to(torch.get_default_dtype())
        tensor = tensor.detach().clone()
        if learnable:
            module.register_parameter(name, nn.Parameter(tensor))
        else:
            module.register_buffer(name, tensor)
    spec = ParameterSpec(name, constraint, unit, learnable)
    module.__dict__.setdefault("_parameter_specs", {})[name] = spec
    return spec


def check_declared(module: nn.Module) -> None:
    """Check every parameter declared on ``module`` and its submodules against its
    constraint (an optimiser may have moved it since it was declared)."""
    for sub in module.modules():
        for name, spec in sub.__dict__.get("_parameter_specs", {}).items():
            check_constraint(getattr(sub, name), name, spec.constraint)


def parameter_specs(module: nn.Module) -> dict[str, ParameterSpec]:
    """Every parameter declared on ``module`` and its submodules, by dotted path
    (``"reproduction_number"``, ``"interventions.0.efficacy"``)."""
    out = {}
    for prefix, sub in module.named_modules():
        for name, spec in sub.__dict__.get("_parameter_specs", {}).items():
            out[f"{prefix}.{name}" if prefix else name] = spec
    return out


@dataclass(frozen=True)
class Port:
    """A per-agent input a protocol reads from another protocol of a
    :class:`~lpm_graph.protocols.compose.Compose` (see :attr:`Protocol.ports`).

    A phase reads it with :meth:`StepContext.port`: a ``[N, *R]`` tensor when the port is
    linked, ``None`` otherwise, and then the protocol uses ``default``, so that a protocol
    run alone behaves as it always did.

    Attributes:
        name: the port's name (``"sick"``), linked as ``"<child>.<name>"``.
        doc: what the value means, its range and unit.
        default: what the protocol does when the port is not linked.
    """

    name: str
    doc: str
    default: str


@dataclass
class Coupling:
    """What the stochastic-derivative estimator needs from one step (internal).

    Attributes:
        candidates: on the primal run, every :meth:`StepContext.flow` appends
            ``(name, mass, rate)``: ``rate = -log(survival)`` (differentiable) and ``mass``,
            the rate of the agents that could have moved but did not (detached). An increase
            ``d rate`` makes such an agent move with probability ``d rate``.
        force: on the alternative run, per flow name, agents forced to move this step.
        tile: the alternative run holds ``tile`` copies of the primal's columns, side by
            side, and shares the primal's uniforms.
        columns: the primal's replicate count (``None`` for an ``[N]`` state).
    """

    candidates: list[tuple[str, Tensor, Tensor]] | None = None
    force: Mapping[str, Tensor] | None = None
    tile: int = 1
    columns: int | None = None


@dataclass(frozen=True)
class _WeakCache:
    """Stands in for a per-graph cache in a pickled protocol: a weak dictionary (``"dict"``)
    or a weak reference (``"ref"``)."""

    kind: str


def _no_graph() -> None:
    """A dead weak reference: the graph a cache was built for is not known."""
    return None


@dataclass
class StepContext:
    """What a phase may read besides the current state.

    Attributes:
        t: index of the step being taken (0 for the step from time 0 to ``dt``).
        dt: step length (time units).
        start: the state at the start of the step (before any phase of this step).
        flows: per-agent flows recorded by earlier phases of this step (e.g. ``"infections"``).
        streams: the run's random streams.
        mode: ``"stochastic"`` (exact draws, straight-through gradients) or ``"expected"``
            (per-agent probabilities, deterministic, exact gradients).
        estimator: gradient estimator of stochastic draws (see :data:`ESTIMATORS`).
        ports: this step's values of the protocol's linked ports (see :meth:`port`).
        between_phases: called with the state before every phase but the first (a
            partitioned run with ``refresh="phase"`` refreshes halo rows there).
    """

    t: int
    dt: float
    start: Mapping[str, Tensor]
    streams: RandomStreams
    mode: Mode = "stochastic"
    estimator: Estimator = "straight_through"
    flows: dict[str, Tensor] = field(default_factory=dict)
    coupling: Coupling | None = None
    ports: Mapping[str, Tensor] = field(default_factory=dict)
    between_phases: Callable[[State], State] | None = field(default=None, repr=False)
    _shared: dict[tuple[str, tuple[int, ...], torch.dtype], Tensor] = field(
        default_factory=dict, repr=False
    )

    @classmethod
    def begin(
        cls,
        t: int,
        dt: float,
        state: Mapping[str, Tensor],
        streams: RandomStreams,
        mode: Mode = "stochastic",
        estimator: Estimator = "straight_through",
        coupling: Coupling | None = None,
    ) -> StepContext:
        """The context of step ``t`` starting from ``state``."""
        return cls(
            t=t,
            dt=dt,
            start=state,
            streams=streams,
            mode=mode,
            estimator=estimator,
            coupling=coupling,
        )

    def port(self, name: str) -> Tensor | None:
        """The value ``[N, *R]`` of the protocol's port ``name`` in this step when a
        :class:`~lpm_graph.protocols.compose.Compose` links it, else ``None`` (the protocol
        then uses the port's default)."""
        return self.ports.get(name)

    def uniform(self, name: str, like: Tensor, step: int | None = None) -> Tensor:
        """``U[0, 1)`` numbers shaped and typed like ``like`` from stream ``(name, step)``
        (``step`` defaults to this step; a fixed ``step`` gives the same numbers every step,
        e.g. for an agent attribute drawn once per run).

        On an alternative run of the stochastic-derivative estimator these are the primal's
        numbers, repeated for every copy of its columns (common random numbers).
        """
        t = self.t if step is None else step
        c = self.coupling
        if c is None or c.candidates is not None:
            return self.streams.uniform(name, t, tuple(like.shape), like.dtype)
        base = (*like.shape[:-1], *(() if c.columns is None else (c.columns,)))
        u = self.streams.uniform(name, t, base, like.dtype)
        u = u if c.columns is not None else u.unsqueeze(-1)
        return u.repeat(*([1] * (u.dim() - 1)), c.tile)

    def flow(
        self, name: str, survival: Tensor, source: Tensor, stream: str | None = None
    ) -> Tensor:
        """The flow out of compartment ``source`` when each agent leaves it with probability
        ``1 - survival`` during this step (``survival`` may be a scalar).

        ``stream`` (default ``name``) names the random numbers. Flows of one step that name the
        same stream get the same numbers, drawn once: for phases whose sources are disjoint
        sets of agents, e.g. SIR's infection (agents in S) and recovery (agents in I at the
        start of the step), each agent uses its number at most once, so the draws stay
        independent and the step draws half the numbers.

        Stochastic mode: exact draws ``b = 1[u >= survival]`` from stream ``(name, t)`` and the
        flow ``b * source``, differentiated with ``estimator``: ``"straight_through"``
        (:func:`~lpm_graph.layers.samplers.bernoulli_st`, ``db/dp = 1``) or
        ``"conditional_mean"`` (:func:`~lpm_graph.layers.samplers.flow_st`, the gradient of
        ``(1 - survival) * source``); with ``"stochastic_derivative"`` the flow is hard and the
        step's :class:`Coupling` records what the estimator needs. Expected mode:
        ``(1 - survival) * source`` itself.
        """
        if self.mode == "expected":
            return (1 - survival) * source
        u = self.uniform(name, source) if stream is None else self._shared_uniform(stream, source)
        if self.coupling is not None:
            return self._coupled_flow(name, torch.as_tensor(survival), source, u)
        if self.estimator == "conditional_mean":
            return flow_st(source, survival=survival, uniform=u)
        return _straight_through_flow(torch.as_tensor(survival), source, u)

    def _shared_uniform(self, stream: str, like: Tensor) -> Tensor:
        key = (stream, tuple(like.shape), like.dtype)
        if key not in self._shared:
            self._shared[key] = self.uniform(stream, like)
        return self._shared[key]

    def _coupled_flow(self, name: str, survival: Tensor, source: Tensor, u: Tensor) -> Tensor:
        """Stochastic-derivative estimator: a hard flow; candidates or forced moves recorded."""
        c = self.coupling
        assert c is not None
        with torch.no_grad():
            moved = (u >= survival).to(source.dtype)
            if c.force is not None and name in c.force:
                moved = torch.maximum(moved, c.force[name].to(source.dtype))
            flow = moved * source
        if c.candidates is not None and survival.requires_grad:
            tiny = torch.finfo(source.dtype).tiny
            rate = -torch.log(torch.clamp(survival.to(source.dtype), min=tiny))
            with torch.no_grad():
                mass = (source - flow) * rate
            c.candidates.append((name, mass, rate))  # rate broadcasts to mass's shape
        return flow


class Phase(nn.Module):
    """A named phase of a step: ``(graph, state, ctx) -> state`` with additive updates.

    A phase returns a new state dict (it never mutates its input) and records the per-agent
    flows it caused in ``ctx.flows``; its random moves go through ``ctx.flow(name, ...)`` (and
    other draws through ``ctx.uniform(name, ...)``), so each named flow has its own stream.

    Args:
        owner: the module that holds the phase's parameters (its protocol or intervention),
            kept as a plain reference: registering it as a child would register its
            parameters twice and make a module cycle.
    """

    name: str = "phase"

    def __init__(self, owner: nn.Module | None = None) -> None:
        super().__init__()
        self.__dict__["owner"] = owner

    def forward(self, graph: PopulationGraph, state: State, ctx: StepContext) -> State:
        raise NotImplementedError


class Protocol(nn.Module):
    """An ordered plan of phases over a population graph, plus its observables.

    Concrete protocols set the phases and say which state they start from. ``print(protocol)``
    shows the plan, numbered in execution order.

    Args:
        phases: the phases, in the order they run inside one step.
        dt: step length in time units (days for the epidemic protocols).

    Declarations read by :class:`~lpm_graph.protocols.compose.Compose` (class attributes):
    :attr:`ports` (per-agent inputs from other protocols), :attr:`initial_condition` (the
    keyword whose value seeds the initial state), :attr:`state_names` and :attr:`flow_names`
    (what other protocols may link to).
    """

    ports: tuple[Port, ...] = ()
    """The per-agent inputs this protocol reads from other protocols (see :class:`Port`)."""
    initial_condition: str = "initial_infected"
    """What the ``initial_infected`` argument of :meth:`initial_state` means for this protocol
    (``"initial_infected"``: infections; another name, e.g. ``"initial_unemployment"``: the
    protocol's own start, which a :class:`~lpm_graph.protocols.compose.Compose` does not
    seed from ``simulate(..., initial_infected=...)``)."""
    state_names: tuple[str, ...] = ()
    """The per-agent state entries other protocols may link to (default: the compartments)."""
    flow_names: tuple[str, ...] = ()
    """The per-agent flows of a step other protocols may link to."""

    def __init__(self, phases: Sequence[Phase], dt: float) -> None:
        super().__init__()
        check_positive(dt, "dt")
        names = [p.name for p in phases]
        if len(set(names)) != len(names):
            raise ValueError(f"phase names must be unique (they key random streams), got {names}.")
        self.phases = nn.ModuleList(phases)
        self.dt = float(dt)

    def __getstate__(self) -> dict:
        """Pickling (Ray tasks, spawned processes, ``torch.save``): the per-graph caches, which
        hold weak references to graphs, are left out; a copy rebuilds them on first use."""
        state = dict(self.__dict__)
        for key, value in state.items():
            if isinstance(value, weakref.WeakKeyDictionary):
                state[key] = _WeakCache("dict")
            elif isinstance(value, weakref.ref):
                state[key] = _WeakCache("ref")
        return state

    def __setstate__(self, state: dict) -> None:
        state = dict(state)
        for key, value in state.items():
            if isinstance(value, _WeakCache):
                state[key] = weakref.WeakKeyDictionary() if value.kind == "dict" else _no_graph
        super().__setstate__(state)

    def step(self, graph: PopulationGraph, state: State, ctx: StepContext) -> State:
        """One step: ``state = protocol.step(graph, state, ctx)``, the same shape as a phase.

        Runs the phases in order; each records its flows in ``ctx.flows``. The caller (the
        simulator, a partitioned or a secure run, a :class:`Compose`) makes the context with
        :meth:`StepContext.begin` and reads the step's flows from it."""
        for k, phase in enumerate(self.phases):
            if k and ctx.between_phases is not None:
                state = ctx.between_phases(state)
            state = phase(graph, state, ctx)
        return state

    def signal(self, state: State, name: str) -> Tensor:
        """The per-agent value ``[N, *R]`` of state entry ``name``: what a port linked to it
        reads (a protocol whose entry has another layout reduces it here)."""
        return state[name]

    def prepare(self, graph: PopulationGraph, whole_graph: PopulationGraph) -> None:
        """Called once before a run on ``graph`` when it is a part of ``whole_graph`` (a
        partitioned run: the rank's own agents plus their halo). A protocol that computes
        statistics over the whole population (SEIRM's mean contacts per age group) takes
        them from ``whole_graph`` here; per-agent values must come from the state, not from
        module buffers sized for the whole population."""

    def declare_parameter(
        self,
        name: str,
        value: float | Tensor,
        *,
        constraint: Constraint = "nonnegative",
        unit: str = "",
        learnable: bool = True,
        keep_dtype: bool = False,
    ) -> ParameterSpec:
        """Declare parameter ``name`` (see :func:`declare_parameter`)."""
        return declare_parameter(
            self,
            name,
            value,
            constraint=constraint,
            unit=unit,
            learnable=learnable,
            keep_dtype=keep_dtype,
        )

    def parameter_specs(self) -> dict[str, ParameterSpec]:
        """The declared parameters of this protocol and its parts, by dotted path."""
        return parameter_specs(self)

    def check(self, graph: PopulationGraph) -> None:
        """Validate parameters against the graph once per run (outside the step loop): the
        base checks every declared parameter against its constraint; a protocol adds its
        shape checks after ``super().check(graph)``."""
        check_declared(self)

    def initial_state(
        self,
        graph: PopulationGraph,
        initial_infected: object,
        streams: RandomStreams,
        replicates: int | None,
        dtype: torch.dtype,
        mode: Mode,
    ) -> State:
        raise NotImplementedError

    def observe(self, state: State) -> dict[str, Tensor]:
        """Per-step observables: the total over agents of every state entry (in an order that
        does not depend on the number of threads, :func:`~lpm_graph.ops.fixed_order_sum`)."""
        return {name: fixed_order_sum(value) for name, value in state.items()}

    def total_flows(self, flows: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Per-step flow totals over agents (per replicate), as :meth:`observe` adds them."""
        return {name: fixed_order_sum(value) for name, value in flows.items()}

    def plan(self) -> str:
        lines = [f"{type(self).__name__} step (dt = {self.dt:g}):"]
        lines += [f"  {k}. {p.name}: {p!r}" for k, p in enumerate(self.phases, start=1)]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.plan()


class CompartmentalProtocol(Protocol):
    """A protocol whose agents sit in named compartments, one indicator tensor each.

    In a stochastic run each compartment is a 0/1 tensor ``[N]`` (or ``[N, R]`` with ``R``
    replicates); in expected-value mode it is the probability of being in that compartment.
    The first compartment is the susceptible one and the second the infectious one.
    """

    compartments: tuple[str, ...] = ()
    node_type: str = "agent"

    def initial_state(
        self,
        graph: PopulationGraph,
        initial_infected: object,
        streams: RandomStreams,
        replicates: int | None,
        dtype: torch.dtype,
        mode: Mode,
    ) -> State:
        n, cols, infected = self._seed(graph, initial_infected, streams, replicates, dtype, mode)
        shape = (n, *cols)
        susceptible, infectious = self.compartments[0], self.compartments[1]
        state = {c: torch.zeros(shape, dtype=dtype, device=graph.device) for c in self.compartments}
        state[susceptible] = 1 - infected
        state[infectious] = infected
        return state

    @property
    def state_names(self) -> tuple[str, ...]:  # type: ignore[override]
        return self.compartments

    def signal(self, state: State, name: str) -> Tensor:
        """State entry ``name`` summed over its stage slots (``E [N, K, *R] -> [N, *R]``)."""
        value = state[name]
        extra = tuple(range(1, 1 + value.dim() - state[self.compartments[0]].dim()))
        return value.sum(extra) if extra else value

    def occupancy(self, state: State) -> Tensor:
        """Per agent (and replicate), the sum of its compartments, stage slots included,
        ``[N, *R]``: 1 for every agent of a valid state (a state given to
        :func:`~lpm_graph.simulate` is checked with it)."""
        return self._sum_slots(state, [c for c in self.compartments if c in state])

    @staticmethod
    def _sum_slots(state: State, keys: Sequence[str]) -> Tensor:
        """``sum(state[k])`` over ``keys``, each summed over its stage slots (the dimensions
        between the agents and the replicates, as in ``E [N, K, *R]``)."""
        base = state[keys[0]].dim()
        total = torch.zeros_like(state[keys[0]])
        for key in keys:
            value = state[key]
            extra = tuple(range(1, 1 + value.dim() - base))
            total = total + (value.sum(extra) if extra else value)
        return total

    def _seed(
        self,
        graph: PopulationGraph,
        initial_infected: object,
        streams: RandomStreams,
        replicates: int | None,
        dtype: torch.dtype,
        mode: Mode,
    ) -> tuple[int, tuple[int, ...], Tensor]:
        """Agent count, replicate columns and the initial infections ``[N, *R]``."""
        n = graph.num_nodes(self.node_type)
        cols = () if replicates is None else (replicates,)
        infected = seed_infected(initial_infected, (n, *cols), streams, dtype, graph.device, mode)
        return n, cols, infected


def _straight_through_flow(survival: Tensor, source: Tensor, uniform: Tensor) -> Tensor:
    """``bernoulli_st(survival=survival, uniform=uniform) * source``, fused.

    The same values and gradients (``d / d survival = -source``, ``d / d source`` = the
    draw), but the draw is kept for backward as a bool mask (1 byte per agent instead of a
    float), only when ``source`` needs a gradient, and the forward is two passes over the
    agents (compare, multiply) instead of five.
    """
    if not (survival.requires_grad or source.requires_grad) or not torch.is_grad_enabled():
        return _moved(uniform, survival, source.dtype) * source
    return _StraightThroughFlow.apply(survival, source, uniform)


def _moved(uniform: Tensor, survival: Tensor, source_dtype: torch.dtype) -> Tensor:
    """The draw ``1[uniform >= survival]`` as 0.0 / 1.0 in the dtype of ``hard * source``.

    The comparison writes floats directly: one vectorised pass, where a bool mask and then
    ``torch.where`` over it took twice as long at 1e6 agents on 2 cores (0.38 + 0.66 ms
    against 0.24 + 0.24 ms for the product with the source that follows)."""
    dtype = torch.promote_types(survival.dtype, source_dtype)
    shape = torch.broadcast_shapes(uniform.shape, survival.shape)
    out = torch.empty(shape, dtype=dtype, device=uniform.device)  # a reused block at scale
    return torch.ge(uniform, survival, out=out)


class _StraightThroughFlow(torch.autograd.Function):
    @staticmethod
    def forward(ctx, survival: Tensor, source: Tensor, uniform: Tensor) -> Tensor:  # type: ignore[override]
        moved = _moved(uniform, survival, source.dtype)
        ctx.shapes = (survival.shape, source.shape)
        ctx.dtypes = (survival.dtype, source.dtype)
        ctx.save_for_backward(
            source if ctx.needs_input_grad[0] else None,
            moved.bool() if ctx.needs_input_grad[1] else None,
        )
        return moved * source

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        source, moved = ctx.saved_tensors
        (q_shape, s_shape), (q_dtype, s_dtype) = ctx.shapes, ctx.dtypes
        grad_q = grad_source = None
        # in the order (and dtypes) of the autograd of (hard + (q.detach() - q)) * source
        if ctx.needs_input_grad[0]:
            grad_q = -(grad * source).to(q_dtype).sum_to_size(q_shape)
        if ctx.needs_input_grad[1]:
            grad_source = (grad * moved.to(q_dtype)).to(s_dtype).sum_to_size(s_shape)
        return grad_q, grad_source, None


def seed_infected(
    initial_infected: object,
    shape: tuple[int, ...],
    streams: RandomStreams,
    dtype: torch.dtype,
    device: torch.device,
    mode: Mode,
) -> Tensor:
    """The initial infectious indicator (or probability) tensor.

    ``initial_infected`` may be: an int ``k`` (``k`` agents chosen uniformly without replacement,
    independently per replicate); a float in (0, 1) (that fraction of agents, rounded); a bool
    mask or a long tensor of agent ids; or a float tensor of per-agent probabilities (drawn in a
    stochastic run with a straight-through gradient, used as they are in expected mode, so
    gradients reach the initial infections).
    """
    n = shape[0]
    if isinstance(initial_infected, bool) or initial_infected is None:
        raise ValueError(
            "initial_infected is required: a count (int), a fraction (float in (0, 1)), agent "
            "ids, a bool mask or per-agent probabilities."
        )
    if isinstance(initial_infected, numbers.Integral):  # NumPy ints too
        initial_infected = int(initial_infected)
    elif isinstance(initial_infected, numbers.Real):
        initial_infected = float(initial_infected)
    if isinstance(initial_infected, float):
        if not 0 < initial_infected < 1:
            raise ValueError(
                f"initial_infected={initial_infected!r} as a float is a fraction of agents and "
                "must be in (0, 1); pass an int for a count."
            )
        initial_infected = round(initial_infected * n)
    if isinstance(initial_infected, int):
        k = initial_infected
        if not 0 <= k <= n:
            raise ValueError(f"initial_infected={k} must be between 0 and the {n} agents.")
        columns = 1 if len(shape) == 1 else int(math.prod(shape[1:]))
        # the k agents of smallest key per replicate: k distinct agents, uniformly
        keys = streams.uniform("initial_infected", 0, shape, torch.get_default_dtype())
        keys = keys.reshape(n, columns)
        if k <= n // 16:  # a partial selection, O(n): 50x faster than sorting 1e6 keys, and
            # the same agents unless the k-th smallest key is tied
            chosen = keys.topk(k, dim=0, largest=False, sorted=False).indices
        else:
            chosen = keys.argsort(dim=0)[:k]  # [k, columns]
        out = torch.zeros((n, columns), dtype=dtype, device=device)
        out.scatter_(0, chosen, 1.0)
        return out.reshape(shape)
    if not torch.is_tensor(initial_infected):
        raise ValueError(
            f"initial_infected must be an int, a float, or a tensor, got "
            f"{type(initial_infected).__name__}; pass agent ids as torch.tensor(ids)."
        )
    if initial_infected.dim() == 0:
        raise ValueError(
            f"initial_infected is a 0-d tensor ({initial_infected!r}): pass a count as an int "
            "(int(x)), or agent ids, a mask or probabilities as a 1-D tensor."
        )
    if initial_infected.is_complex() or initial_infected.device.type == "meta":
        raise ValueError(
            f"initial_infected must hold real values on a real device, got "
            f"{initial_infected.dtype} on {initial_infected.device}."
        )
    value = initial_infected.to(device)
    if value.dtype == torch.bool:
        if value.shape[0] != n:
            raise ValueError(f"initial_infected mask has {value.shape[0]} entries for {n} agents.")
        return _broadcast(value.to(dtype), shape)
    if not value.is_floating_point():
        if value.dim() != 1:
            raise ValueError(
                f"initial_infected as agent ids must be 1-D, got shape {list(value.shape)}; "
                "pass the ids of the agents infected in every replicate, or a bool mask "
                f"[{n}, R] for different agents per replicate."
            )
        ids = value.long()
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= n):
            raise ValueError(
                f"initial_infected has agent ids outside [0, {n}); pass ids of existing agents."
            )
        out = torch.zeros(n, dtype=dtype, device=device)
        out[ids] = 1.0
        return _broadcast(out, shape)
    if value.shape[0] != n:
        raise ValueError(
            f"initial_infected probabilities have {value.shape[0]} entries for {n} agents."
        )
    check_probability(value, "initial_infected")
    value = _broadcast(value.to(dtype), shape)
    if mode == "expected":
        return value
    return bernoulli_st(value, uniform=streams.uniform("initial_infected", 0, shape, value.dtype))


def _broadcast(value: Tensor, shape: tuple[int, ...]) -> Tensor:
    if value.shape == shape:
        return value
    if value.dim() == 1 and len(shape) == 2:
        return value[:, None].expand(shape)
    raise ValueError(f"initial_infected has shape {list(value.shape)}; expected {list(shape)}.")
