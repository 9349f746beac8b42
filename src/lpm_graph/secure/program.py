r"""Any protocol on secret shares: its unchanged phases executed on private values.

:func:`secure_simulate` runs ``state = protocol.step(graph, state, ctx)`` for every step with
the agents' state entries as :class:`~lpm_graph.secure.values.Private` values (additive shares
held by the parties) and ``ctx`` a :class:`SecureContext`. Nothing is written per protocol:
a phase may use the vocabulary of :mod:`lpm_graph.secure.values` (aggregations over public
relations, arithmetic, comparisons, ``torch.exp(-x)``, reshaping and indexing) and
``ctx.flow``; anything else fails when the run is built, on a dry session, before any input
is shared or anything opened.

Draws. In plaintext a flow moves an agent iff ``u >= survival`` for its uniform ``u``. With the
agent's private draw ``E = -log u`` (``Exp(1)``, shared by its data owner, one input per
stream and step) that is ``E <= -log(survival)``: with ``survival = exp(-x)`` of a private
``x`` (kept lazy by ``torch.exp``) the flow compares ``x > E`` and needs no secure exp; a
public survival gives the public threshold ``-log(survival)``. Each flow is then a product of
the decision with its source; the flows of a step are resolved together when a value first
needs them (one batch of comparisons and one round of products for SIR's two flows).

Owners. :class:`ProtocolInputs` is the generic data owner: the initial state of its agents from
the protocol's own plaintext ``initial_state`` (stochastic, float64) and ``-log u`` draws per
(stream, step, shape) from its :class:`~lpm_graph.secure.prg.OwnerRandomness`; seeded, the
uniforms of the plaintext :func:`lpm_graph.simulate` run of that seed, so that a secure run
equals it agent for agent (tests only: not private).

Openings. After every step the observables ``protocol.observe(state)`` and
``protocol.total_flows(ctx.flows)`` (sums over agents) are opened through the session's
leakage policy in one round (kind ``"aggregate"``, the private agents behind each value found
from the observables themselves), and with ``public=`` the public agents' state entries (kind
``"public_state"``); nothing else.

Gradients. ``tangents=`` names public parameters; they become dual numbers (value, tangent
per parameter column) through the same vocabulary, the state's tangents shared, the flows
differentiated with the plaintext straight-through estimator (``d flow = -d survival *
source + moved * d source``, ``d exp(-x) = -exp(-x) dx``); only one gradient of a loss of
the opened series is ever opened (:meth:`SecureTrajectory.gradient`).
"""

from __future__ import annotations

import logging
import math
import numbers
import os
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .._checks import check_int
from ..graph import PopulationGraph
from ..layers.samplers import RandomStreams
from ..protocols.base import Phase, Protocol, StepContext, seed_infected
from ..simulator import Trajectory
from .dual import Dual, dual_parameters, flow_tangent
from .policy import LeakageError
from .prg import OwnerRandomness, Randomness
from .session import Session
from .tensor import SharedTensor, _sign_bit, multiply
from .values import ExpNeg, Private, _Pending, private

__all__ = ["ProtocolInputs", "SecureContext", "SecureTrajectory", "secure_simulate"]

_log = logging.getLogger(__name__)
AGGREGATE_SENSITIVITY = 2.0
"""L2 sensitivity of one step's counts and flows to one agent's own indicators: its
compartment moves one unit between two counts (``sqrt 2``), its flow indicator likewise."""
_NEVER = 1.0e3  # a threshold no Exp(1) draw reaches (-log of the smallest double: 745)
_WEIGHT_BITS = 24  # fractional bits of the public loss weights d loss / d series (normalised)
_GRADIENT_BITS = 32  # fractional bits of the opened gradient


# ---------------------------------------------------------------------- the data owner
class _Agents:
    """The population as an owner knows it: its number of agents (its own, with several
    owners), enough for a compartmental protocol's ``initial_state``."""

    device = torch.device("cpu")

    def __init__(self, n: int) -> None:
        self.n = n

    def num_nodes(self, node_type: str | None = None) -> int:
        return self.n


class ProtocolInputs:
    """A data owner's private inputs for any protocol run on shares.

    ``inputs(name, step)`` answers the parties' requests: ``"state:<entry>:<shape>"`` (the
    initial state of the owner's agents, from ``protocol.initial_state`` in stochastic mode,
    float64: 0/1 entries are shared exactly), ``"draw:<stream>:<shape>"`` (``-log u``,
    ``Exp(1)``, of the uniforms of stream ``(stream, step)`` for the owner's agents) and
    ``"initial_infected"`` (the 0/1 seed infections); ``shape`` is the trailing dimensions,
    comma-separated (empty for one value per agent). Picklable, so that an
    owner's process of a multi-process run can hold it.

    Args:
        protocol: the protocol (its ``initial_state`` makes the initial state).
        population: the owner's agents: a number, or a graph (``initial_state`` may read it).
        initial_infected: as in :func:`lpm_graph.simulate` (count, fraction, ids, mask).
        seed: ``None`` (default): the draws come from keystreams under a key the owner draws
            from OS entropy. An int: the uniforms of a plaintext :func:`lpm_graph.simulate`
            run with this seed, so the secure run equals it agent for agent: **not
            private**, tests only.
        draw_bits: fractional bits of the shared draws (default 24: a decision differs from
            the float one only when the two sides are closer than about ``2^-24``).
    """

    def __init__(
        self,
        protocol: Protocol,
        population: PopulationGraph | int,
        initial_infected: object,
        *,
        seed: int | Randomness | None = None,
        draw_bits: int = 24,
    ) -> None:
        if not 1 <= draw_bits <= 40:
            raise ValueError(f"draw_bits must be between 1 and 40, got {draw_bits}.")
        if isinstance(population, numbers.Integral):
            self.population: Any = _Agents(int(population))
            self.num_agents = int(population)
        else:
            self.population = population
            self.num_agents = population.num_nodes(getattr(protocol, "node_type", "agent"))
        self.protocol = protocol
        self.initial_infected = initial_infected
        self.draw_bits = int(draw_bits)
        self.randomness = OwnerRandomness(seed)
        self._state: dict[str, Tensor] | None = None

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "_state": None}

    def initial_state(self) -> dict[str, Tensor]:
        """The plaintext initial state of the owner's agents (computed once)."""
        if self._state is None:
            streams = self.randomness.streams()
            state = self.protocol.initial_state(
                self.population, self.initial_infected, streams, None, torch.float64,
                "stochastic",
            )  # fmt: skip
            self._state = {k: v.detach().cpu() for k, v in state.items()}
        return self._state

    def draw(self, stream: str, step: int, shape: Sequence[int] = ()) -> Tensor:
        """``-log u`` of stream ``(stream, step)``, ``[n, *shape]`` (plaintext: tests)."""
        u = self.randomness.streams().uniform(
            stream, int(step), (self.num_agents, *shape), torch.float64
        )
        return -torch.log(u.clamp(min=1e-300))  # u = 0 would be an infinite draw

    def __call__(self, name: str, step: int | None) -> tuple[Tensor, int | None]:
        if name == "initial_infected":
            infected = seed_infected(
                self.initial_infected, (self.num_agents,), self.randomness.streams(),
                torch.float64, torch.device("cpu"), "stochastic",
            )  # fmt: skip
            return infected.to(torch.int64), 0
        kind, _, rest = name.partition(":")
        key, _, shape = rest.rpartition(":")
        dims = tuple(int(d) for d in shape.split(",") if d)
        if kind == "state" and key in self.initial_state():
            value = self.initial_state()[key]
            if tuple(value.shape[1:]) == dims:
                if bool((value == value.round()).all()):
                    return value.to(torch.int64), 0
                return value, None
        if kind == "draw" and step is not None and key:
            return self.draw(key, step, dims), self.draw_bits
        raise KeyError(f"ProtocolInputs has no private input {name!r}.")


# ---------------------------------------------------------------------- the step context
class _Flows:
    """The pending flows of a step: one batch of comparisons ``[x > E]`` and one round of
    products with their sources, when a value first needs one of them."""

    def __init__(self) -> None:
        self.items: list[tuple[Any, SharedTensor, SharedTensor, _Pending]] = []

    def add(self, x: Any, draw: SharedTensor, source: SharedTensor) -> _Pending:
        pending = _Pending(source.shape, self.resolve)
        self.items.append((x, draw, source, pending))
        return pending

    def resolve(self) -> None:
        items, self.items = self.items, []
        if not items:
            return
        session = items[0][1].session
        gaps = []
        for x, draw, source, _ in items:  # moved iff x > E iff E - x < 0
            gap = private(draw) - x
            gaps.append(gap.shared().expand(*source.shape).reshape(-1))
        flat = SharedTensor.cat(gaps)
        session.check_range(flat.shares, "comparison input")  # debug mode only
        bits = _sign_bit(flat)
        sources = SharedTensor.cat([s.reshape(-1) for _, _, s, _ in items])
        moved = multiply(bits, sources, frac_bits=sources.frac_bits)
        start = 0
        for _, _, source, pending in items:
            size = source.numel()
            pending.value = moved[start : start + size].reshape(*source.shape)
            pending.bits = bits[start : start + size].reshape(*source.shape)
            start += size


@dataclass
class SecureContext(StepContext):
    """The :class:`~lpm_graph.protocols.base.StepContext` of a step on shares.

    ``flow`` draws from the agents' private ``-log u`` (see the module docstring);
    ``uniform`` has no secure implementation (a uniform used in arithmetic would be a private
    value the owner must supply): use ``flow``.
    """

    session: Session | None = None
    draw: Callable[[str, torch.Size], SharedTensor] | None = None
    pending: _Flows = field(default_factory=_Flows)

    def uniform(self, name: str, like: Tensor, step: int | None = None) -> Tensor:
        raise NotImplementedError(
            f"ctx.uniform({name!r}, ...) has no secure implementation: a uniform number used "
            "in arithmetic would be a private value; draw with ctx.flow(name, survival, "
            "source), which compares the agents' private -log u."
        )

    def flow(self, name: str, survival: Any, source: Any, stream: str | None = None) -> Any:
        if isinstance(survival, Dual) or isinstance(source, Dual):
            return flow_tangent(self, name, survival, source, stream)
        return self.hard_flow(name, survival, source, stream)[0]

    def hard_flow(
        self, name: str, survival: Any, source: Any, stream: str | None = None
    ) -> tuple[Private, _Pending]:
        """The flow and its pending value (whose ``bits`` are the decisions)."""
        assert self.session is not None and self.draw is not None
        session = self.session
        if isinstance(source, Private):
            src = source.shared()
        elif isinstance(source, SharedTensor):
            src = source
        else:  # a public source: the decisions are still private
            value = torch.as_tensor(source, dtype=torch.float64, device=session.device)
            src = session.public(value, 0 if bool((value == value.round()).all()) else None)
        draw = self.draw(stream or name, src.shape)
        if isinstance(survival, ExpNeg):
            x: Any = survival.x
            x = private(x.shared())
        elif isinstance(survival, (Private, SharedTensor)):
            raise NotImplementedError(
                f"ctx.flow({name!r}) with a private survival that is not torch.exp(-x) has no "
                "secure implementation (it would need a secure log); write the survival as "
                "torch.exp(-hazard)."
            )
        else:
            s = torch.as_tensor(survival, dtype=torch.float64, device=session.device)
            x = torch.where(
                s <= 0, torch.full_like(s, _NEVER), -torch.log(s.clamp(min=1e-300).clamp(max=1))
            )
        pending = self.pending.add(x, draw, src)
        return Private([(pending, None)], None, src.shape, session), pending


# ---------------------------------------------------------------------- the trajectory
@dataclass
class SecureTrajectory(Trajectory):
    """A secure run's opened aggregates (as :class:`~lpm_graph.simulator.Trajectory`) and its
    session. With ``tangents=`` it also holds the shared tangents of the series, privately:
    :meth:`gradient` is the only way to open anything of them (opened as aggregates, they
    would give the whole Jacobian and any number of gradients)."""

    _tangents: dict[str, SharedTensor] = field(default_factory=dict, repr=False)
    parameters: tuple[str, ...] = ()
    session: Session | None = field(default=None, repr=False)

    def gradient(self, loss: Callable[[dict[str, Tensor]], Tensor]) -> tuple[Tensor, Tensor]:
        """``(loss, d loss / d parameters)`` for a differentiable ``loss(counts_and_flows)`` of
        the opened series; the weights ``d loss / d series`` are public, the tangents private,
        and only the gradient (one number per parameter column) is opened."""
        if not self._tangents or self.session is None:
            raise RuntimeError("run secure_simulate with tangents=(...) to get gradients.")
        series = {k: v.detach().clone().requires_grad_(True) for k, v in self.opened().items()}
        value = loss(series)
        if value.dim() != 0:
            raise ValueError("loss must return a scalar.")
        weights = torch.autograd.grad(value, list(series.values()), allow_unused=True)
        session, columns = self.session, len(self.parameters)
        terms = []
        for name, w in zip(series, weights):
            top = 0.0 if w is None else float(w.detach().abs().max())
            if top == 0 or name not in self._tangents:
                continue
            # the weights' own scale 2^-e is public: encode w 2^e (in (1/2, 1]) with 24 bits,
            # so that a small weight (1 / N) keeps its precision
            e = -math.ceil(math.log2(top))
            tangent = self._tangents[name].rescale()  # [T or T + 1, ..., P]
            scaled = w.detach().to(torch.float64).unsqueeze(-1) * 2.0**e
            term = tangent.mul_public(scaled.to(tangent.device), _WEIGHT_BITS)
            term = term.reshape(-1, columns).sum(0)
            if not 0 <= term.frac_bits + e <= 62:
                raise ValueError(f"d loss / d {name} (max {top:.3g}) is out of fixed-point range.")
            terms.append(SharedTensor(term.shares, term.frac_bits + e, session))
        scale = min([_GRADIENT_BITS, *(t.frac_bits for t in terms)])
        total = None
        for term in terms:
            term = term.rescale(scale)
            total = term if total is None else total + term
        if total is None:
            return value.detach(), torch.zeros(columns, dtype=torch.float64)
        session.audit.record("loss", "loss", value.detach())
        # under differential privacy the session clips it on shares first (sensitivity
        # 2 C sqrt(P) whatever the data) and opens it with the Gaussian mechanism
        return value.detach(), session.reveal(total, "gradient", "gradient")

    def opened(self) -> dict[str, Tensor]:
        return {**self.counts, **self.flows}


# ---------------------------------------------------------------------- the program
def secure_simulate(
    protocol: Protocol,
    graph: PopulationGraph,
    steps: int,
    session: Session,
    *,
    tangents: Sequence[str] = (),
    public: Tensor | None = None,
) -> SecureTrajectory:
    """Run ``protocol``'s unchanged phases on secret shares for ``steps`` steps.

    The agents' private inputs (initial state, draws) come from the session's data owners
    (:class:`ProtocolInputs`, or any owner answering the same requests). The graph, the
    protocol's parameters and ``dt`` are public.

    Args:
        protocol: any protocol written to the step contract whose phases use the vocabulary
            of :mod:`lpm_graph.secure.values`; checked on a dry session first (an operation
            with no secure implementation raises ``NotImplementedError`` or ``TypeError``
            naming it and the phase, before anything is shared or opened).
        graph: the population graph (public topology, edge weights and attributes).
        steps: number of steps.
        session: the parties.
        tangents: names of public parameters (``protocol.named_parameters()`` or buffers)
            to differentiate with forward-mode tangents on shares; one column per element.
        public: optional bool mask ``[N]`` of agents whose state is public: their state
            entries are opened after every step (kind ``"public_state"``); the others' never.

    Returns:
        A :class:`SecureTrajectory`: ``counts`` (``protocol.observe``, ``[T + 1, ...]``) and
        ``flows`` (``protocol.total_flows``, ``[T, ...]``), as opened aggregates.
    """
    steps = check_int(steps, "steps", 1)
    program = _Program(protocol, graph, session, tuple(tangents), public)
    with program.parameters():
        with session.step("setup"):
            state = program.initial()
            program.observe(state, None)
        for t in range(steps):
            with session.step(t):
                ctx = program.context(t, state)
                with session.sealed(f"{type(protocol).__name__}.step"):
                    state = _settled(protocol.step(graph, state, ctx))
                program.observe(state, ctx.flows)
    return program.trajectory()


def _settled(values: Mapping[str, Any]) -> dict[str, Any]:
    """Every private value as its shares (a step's lazy sums and pending flows computed)."""
    out = {}
    for k, v in values.items():
        if isinstance(v, Dual):
            v = v.settled()
        elif isinstance(v, Private):
            v = private(v.shared())
        out[k] = v
    return out


class _Program:
    """The public pieces of a secure run, computed once: the dry run's check, the state's
    layout, the private agents behind each observable, the parameters' tangent columns."""

    def __init__(
        self,
        protocol: Protocol,
        graph: PopulationGraph,
        session: Session,
        tangents: tuple[str, ...],
        public: Tensor | None,
    ) -> None:
        if not isinstance(protocol, Protocol):
            raise TypeError(f"secure_simulate runs a Protocol, got {type(protocol).__name__}.")
        protocol.check(graph)
        self.protocol, self.graph, self.session = protocol, graph, session
        node_type = getattr(protocol, "node_type", "agent")
        self.n = n = graph.num_nodes(node_type)
        if public is not None:
            public = torch.as_tensor(public, dtype=torch.bool)
            if public.shape != (n,):
                raise ValueError(
                    f"public must be a bool mask of the {n} agents, got {list(public.shape)}."
                )
        self.public = None if public is None or not bool(public.any()) else public
        self.dual = dual_parameters(protocol, tangents)  # validates the names first
        self.columns = self.dual.columns if self.dual is not None else ()
        layout = protocol.initial_state(
            graph, 0, RandomStreams(0), None, torch.float64, "stochastic"
        )
        self.layout = {k: tuple(v.shape) for k, v in layout.items()}
        self.flow_layout = _dry_run(protocol, graph, layout, session, self.dual)
        self.members, self.flow_names, atoms = _members(protocol, graph, layout, self.flow_layout)
        session.declare_agents(n, public, _groups(self.members, atoms, n))
        self.series: dict[str, list[Tensor]] = {}
        self.d_series: dict[str, list[SharedTensor]] = {}

    # ------------------------------------------------------------------ the run
    def initial(self) -> dict[str, Any]:
        s = self.session
        state: dict[str, Any] = {
            k: private(s.input(f"state:{k}:{','.join(str(d) for d in shape[1:])}"))
            for k, shape in self.layout.items()
        }
        if self.dual is not None:
            state = {k: self.dual.state(v) for k, v in state.items()}
        return state

    def parameters(self) -> Any:
        """While entered, the differentiated parameters are public duals on the protocol."""
        return self.dual.swap() if self.dual is not None else nullcontext()

    def context(self, t: int, state: Mapping[str, Any]) -> SecureContext:
        draws: dict[tuple[str, tuple[int, ...]], SharedTensor] = {}

        def draw(stream: str, shape: torch.Size) -> SharedTensor:
            key = (stream, tuple(shape[1:]))
            if key not in draws:
                dims = ",".join(str(d) for d in key[1])
                draws[key] = self.session.input(f"draw:{stream}:{dims}", t)
            return draws[key]

        return SecureContext(
            t=t, dt=self.protocol.dt, start=state, streams=None,  # type: ignore[arg-type]
            session=self.session, draw=draw,
        )  # fmt: skip

    def observe(self, state: Mapping[str, Any], flows: Mapping[str, Any] | None) -> None:
        """Open the step's observables (one round) and keep their tangents on shares."""
        with self.session.sealed(f"{type(self.protocol).__name__}.observe / total_flows"):
            values = dict(self.protocol.observe(state))
            if flows is not None:
                values.update(self.protocol.total_flows(_settled(flows)))
        opened: dict[str, Tensor] = {}
        d_values: dict[str, Any] = {}
        rows: dict[tuple, list[str]] = {}
        private_agents = ~self.session.public_agents.to(torch.bool)
        groups: dict[str, Tensor] = {}
        for name, value in list(values.items()):
            if isinstance(value, Dual):
                d_values[name] = value.full_tangent()
                value = values[name] = value.value
            if not isinstance(value, (Private, SharedTensor)):
                opened[name] = torch.as_tensor(value).detach().to(torch.float64).cpu()
                continue
            member = self.members[name]  # [values, N]
            if value.numel() != member.shape[0]:
                raise RuntimeError(
                    f"observable {name!r} has {value.numel()} values on shares but had "
                    f"{member.shape[0]} when the run was built; nothing is opened."
                )
            size = (member & private_agents).sum(1)
            groups[name] = size
            rows.setdefault((tuple(value.shape), tuple(size.tolist())), []).append(name)
        tensors, labels, kinds, group, bits, agents, order = [], [], [], [], [], [], []
        for k, ((_, sizes), names) in enumerate(rows.items()):
            stacked = SharedTensor.stack([private(values[m]).shared() for m in names])
            size = torch.tensor(sizes, dtype=torch.int64)
            tensors.append(stacked.shares)
            labels.append("counts" if k == 0 else f"counts {k}")
            kinds.append("aggregate")
            group.append(size[size > 0] if bool((size > 0).any()) else size)
            bits.append(stacked.frac_bits)
            agents.append(None)
            order.append(names)
        if self.public is not None:
            idx = self.public.nonzero().squeeze(1)
            for name, value in state.items():
                value = value.value if isinstance(value, Dual) else value
                if not isinstance(value, Private):
                    continue
                row = value.shared().index_select(0, idx.to(self.session.device))
                tensors.append(row.shares)
                labels.append(f"public agents' {name}")
                kinds.append("public_state")
                group.append(None)
                bits.append(row.frac_bits)
                agents.append(idx)
        sensitivity = [AGGREGATE_SENSITIVITY if k == "aggregate" else None for k in kinds]
        if tensors:
            raw = self.session.open_raw(
                tensors, labels, kinds, group=group, sensitivity=sensitivity, frac_bits=bits,
                agents=agents,
            )  # fmt: skip
            for names, value, scale in zip(order, raw, bits):
                decoded = value.cpu().to(torch.float64) / 2.0**scale
                for m, v in zip(names, decoded):
                    opened[m] = v
        for name in values:
            self.series.setdefault(name, []).append(opened[name])
        for name, d in d_values.items():
            if torch.is_tensor(d):
                d = self.session.public(d.to(self.session.device), 0)
            self.d_series.setdefault(name, []).append(private(d).shared())

    def trajectory(self) -> SecureTrajectory:
        stacked = {k: torch.stack(v) for k, v in self.series.items()}
        flows = {k: v for k, v in stacked.items() if k in self.flow_names}
        counts = {k: v for k, v in stacked.items() if k not in flows}
        tangents = {k: SharedTensor.stack(v) for k, v in self.d_series.items()}
        return SecureTrajectory(
            counts=counts,
            flows=flows,
            final_state={},
            dt=self.protocol.dt,
            _tangents=tangents,
            parameters=self.columns,
            session=self.session,
        )


# ---------------------------------------------------------------------- building a run
def _dry_run(
    protocol: Protocol,
    graph: PopulationGraph,
    layout: Mapping[str, Tensor],
    session: Session,
    dual: Any,
) -> dict[str, tuple[int, ...]]:
    """One step and its observables on a dry in-process session (public zeros, no owner):
    an operation with no secure implementation raises here, naming itself and the phase,
    before the real session shares or opens anything. Returns the flows' shapes."""
    dry = Session(2, frac_bits=session.frac_bits, device=session.device)
    dry._sealed = f"{type(protocol).__name__} (on the dry session)"  # for its whole life
    where = ["the step"]

    def enter(module: Any, args: Any) -> None:
        where.append(f"phase {module.name!r} ({type(module).__name__})")

    def leave(module: Any, args: Any, out: Any) -> None:
        where.pop()

    phases = [m for m in protocol.modules() if isinstance(m, Phase)]
    handles = [m.register_forward_pre_hook(enter) for m in phases]
    handles += [m.register_forward_hook(leave) for m in phases]

    def draw(stream: str, shape: torch.Size) -> SharedTensor:
        return dry.public(torch.ones(tuple(shape), dtype=torch.float64, device=dry.device), 24)

    try:
        state: dict[str, Any] = {
            k: private(dry.public(v.to(dry.device), 0)) for k, v in layout.items()
        }
        swap = None
        if dual is not None:
            state = {k: dual.state(v) for k, v in state.items()}
            swap = dual.swap()
            swap.__enter__()
        try:
            ctx = SecureContext(
                t=0, dt=protocol.dt, start=state, streams=None,  # type: ignore[arg-type]
                session=dry, draw=draw,
            )  # fmt: skip
            out = _settled(protocol.step(graph, state, ctx))
            flows = _settled(ctx.flows)
            where[:] = [f"{type(protocol).__name__}.observe / total_flows"]
            before = len(dry.audit)
            _settled(protocol.observe(out))
            _settled(protocol.total_flows(flows))
            _check_linear(protocol, dry.audit.openings[before:])
        finally:
            if swap is not None:
                swap.__exit__(None, None, None)
    except (NotImplementedError, TypeError) as err:
        raise type(err)(
            f"{type(protocol).__name__} cannot run on secret shares: {where[-1]} uses an "
            f"operation with no secure implementation: {err}"
        ) from err
    finally:
        for h in handles:
            h.remove()
    return {k: tuple(_value(v).shape) for k, v in flows.items()}


def _check_linear(protocol: Protocol, openings: Sequence[Any]) -> None:
    """Refuse observables that multiply or compare private values (a Beaver product, a
    comparison or ``exp`` on shares): a sum over agents is local on shares, and a
    comparison's value has no gradient, so the trace of the agents behind it would see none
    (``(I[k] > 0.5) + 0 * I.sum()`` would open ``I[k]``)."""
    used = sorted({o.kind for o in openings} & {"beaver_mask", "binary_mask", "comparison_mask"})
    if used:
        raise LeakageError(
            f"{type(protocol).__name__}.observe / total_flows is not a sum over agents: it "
            f"multiplies or compares private values ({', '.join(used)} on shares), so the "
            "private agents behind its values cannot be known and it is not opened. "
            "Observables must add up agents' state entries and flows, with public weights."
        )


def _value(v: Any) -> Any:
    return v.value if isinstance(v, Dual) else v


def _members(
    protocol: Protocol,
    graph: PopulationGraph,
    layout: Mapping[str, Tensor],
    flows: Mapping[str, tuple[int, ...]],
) -> tuple[dict[str, Tensor], set[str], Tensor]:
    """Per observable, which agents each of its values sums over (``[values, N]`` bool), the
    flow observables' names, and the agents' atoms (``[N]`` ints: agents in the same values
    of every observable), so that the policy knows the private agents behind every opened
    value and behind every difference of opened values.

    Read from the observables' gradient with respect to the state and the flows on public
    probes, and checked: every value must be a sum over agents, i.e. affine in the state and
    the flows (its change between two random probes is what the gradient says: a gradient
    cut with ``detach`` or ``no_grad`` does not hide an agent) and giving each of its agents
    the same weight (``1000 * I[k] + I.sum()`` would open ``I[k]``). Differences of values
    reveal sums over atoms, so each atom must hold none or ``min_group`` private agents
    (checked by :meth:`Session.declare_agents` with the atoms as groups).
    """
    n = graph.num_nodes(getattr(protocol, "node_type", "agent"))
    shapes = {f"state {k}": tuple(v.shape) for k, v in layout.items()}
    shapes.update({f"flow {k}": tuple(shape) for k, shape in flows.items()})
    gen = torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "little"))  # not guessable

    def evaluate(fill: Callable[[tuple[int, ...]], Tensor], grad: bool) -> tuple[list, dict]:
        inputs = [fill(shape).requires_grad_(grad) for shape in shapes.values()]
        named = dict(zip(shapes, inputs))
        state = {k[6:]: v for k, v in named.items() if k.startswith("state ")}
        step_flows = {k[5:]: v for k, v in named.items() if k.startswith("flow ")}
        values = {**protocol.observe(state)}
        totals = {**protocol.total_flows(step_flows)} if step_flows else {}
        flow_names.update(totals)
        return inputs, {**values, **totals}

    flow_names: set[str] = set()

    def uniform(shape: tuple[int, ...]) -> Tensor:
        return torch.rand(shape, generator=gen, dtype=torch.float64).to(graph.device)

    with torch.no_grad():
        p_in, p_out = evaluate(uniform, False)
        q_in, q_out = evaluate(uniform, False)
    delta = [(p - q) for p, q in zip(p_in, q_in)]
    inputs, observed = evaluate(
        lambda shape: torch.ones(shape, dtype=torch.float64, device=graph.device), True
    )
    out: dict[str, Tensor] = {}
    for name, value in observed.items():
        flat = value.reshape(-1)
        at_p = torch.as_tensor(p_out[name], dtype=torch.float64).reshape(-1)
        at_q = torch.as_tensor(q_out[name], dtype=torch.float64).reshape(-1)
        rows = []
        for k in range(flat.numel()):
            grads = torch.autograd.grad(flat[k], inputs, retain_graph=True, allow_unused=True)
            weights = torch.zeros((n, 0), dtype=torch.float64)
            predicted, scale = 0.0, 0.0
            for g, d in zip(grads, delta):
                if g is None:
                    continue
                predicted += float((g * d).sum())
                scale += float((g.abs() * d.abs()).sum())
                if g.dim() and g.shape[0] == n:
                    weights = torch.cat([weights, g.reshape(n, -1).cpu()], 1)
            scale += float(at_p[k].abs() + at_q[k].abs())
            if abs(float(at_p[k] - at_q[k]) - predicted) > 1e-9 * scale + 1e-12:
                raise LeakageError(
                    f"{type(protocol).__name__}'s observable {name!r} is not a sum over agents "
                    "(not affine in the state and flows, or its gradient does not describe its "
                    "value): the private agents behind it cannot be known, so it is not opened. "
                    "Observables must add up agents' state entries and flows, with public "
                    "weights the same for every agent they count."
                )
            used = weights.ne(0).any(1)
            if bool(used.any()) and not torch.allclose(
                weights[used], weights[used][:1].expand_as(weights[used]), rtol=1e-9, atol=0
            ):
                raise LeakageError(
                    f"{type(protocol).__name__}'s observable {name!r} does not give every agent "
                    "it counts the same weight: a weighted sum can single out one agent "
                    "(1000 * I[k] + I.sum() opens I[k]), so it is not opened. Observables must "
                    "add up agents' state entries and flows, with public weights the same for "
                    "every agent they count."
                )
            rows.append(used)
        out[name] = torch.stack(rows) if rows else torch.zeros((0, n), dtype=torch.bool)
    every = [m for m in out.values() if m.shape[0]]
    if every:
        _, atoms = torch.unique(torch.cat(every).T, dim=0, return_inverse=True)
    else:
        atoms = torch.zeros(n, dtype=torch.int64)
    return out, flow_names, atoms.to(torch.int64)


def _labels(members: Mapping[str, Tensor], n: int) -> Tensor | None:
    """Each agent's group for the policy's per-group checks: the value it counts towards in
    every observable that splits the agents into several values (e.g. counts by age group),
    combined; ``None`` when no observable does."""
    labels, radix = torch.zeros(n, dtype=torch.int64), 1
    seen = set()
    for m in members.values():
        if m.shape[0] < 2 or not bool((m.sum(0) == 1).all()):
            continue
        key = m.numpy().tobytes()
        if key in seen:
            continue
        seen.add(key)
        labels += radix * m.to(torch.int64).argmax(0)
        radix *= m.shape[0]
    return labels if radix > 1 else None


def _groups(members: Mapping[str, Tensor], atoms: Tensor, n: int) -> Tensor | None:
    """The groups the policy checks (:meth:`Session.declare_agents`): the atoms, named by the
    by-group observables' own groups (e.g. age groups) where those are the same partition;
    ``None`` when every agent is in one atom (the overall checks suffice)."""
    count = int(atoms.max()) + 1 if atoms.numel() else 0
    if count <= 1:
        return None
    labels = _labels(members, n)
    if labels is not None and int(torch.unique(labels).numel()) == count:
        pairs = torch.unique(torch.stack([labels, atoms]), dim=1).shape[1]
        if pairs == count:
            return labels
    return atoms
