r"""Compose: several protocols as one, each running its own phases, linked through ports.

``Compose(epi=seirm, behaviour=adoption, labour=market, links={...})`` is a
:class:`~lpm_graph.protocols.base.Protocol` whose step runs every child's unchanged phases, in
the order given, within one step of a common ``dt``:

1. Its state, counts and flows are namespaced by child (``"epi.S"``, ``"labour.unemployed"``,
   ``"epi.infections"``); each child sees its own entries under their own names.
2. Each child draws from its own random streams, ``"<child>/<stream>"``, so two children
   that name a stream alike (``"initial_infected"``) never share numbers, and adding a child
   does not change another's draws.
3. A child reads other children through its declared
   :attr:`~lpm_graph.protocols.base.Protocol.ports`: ``links`` maps each port
   ``"<child>.<port>"`` to another child's state entry (``"epi.I"``, summed over its stage
   slots to ``[N, *R]`` by :meth:`~lpm_graph.protocols.base.Protocol.signal`), to one of this
   step's flows (``"epi.flows.infections"``), to a :class:`Link` that transforms one (e.g.
   ``Link("behaviour.adopted", Protection(0.5))``) or to ``None`` (the port's default). A
   link reads the value as it is when the reading child starts: the state after the children
   before it, the flows of those children in this step.
4. ``simulate(compose, ..., initial_infected=x)`` seeds only the children whose
   :attr:`~lpm_graph.protocols.base.Protocol.initial_condition` is ``"initial_infected"``
   (the epidemics); the others start from their own initial condition (the labour market
   from ``initial_unemployment``, a behaviour from nobody adopting). A dict
   ``{"epi": 10, "behaviour": 0.05}`` gives each child its own.

Every declared port must appear in ``links`` (``None`` keeps its default), and every link
must name an existing child, port, state entry or earlier child's flow: mistakes raise when
the model is built, naming what exists.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ..layers.samplers import RandomStreams
from .base import (
    Coupling,
    Mode,
    Protocol,
    State,
    StepContext,
    check_declared,
    declare_parameter,
)

if TYPE_CHECKING:
    from ..graph import PopulationGraph

__all__ = [
    "Compose",
    "Link",
    "NamespacedStreams",
    "Protection",
    "SlotSum",
    "epidemic_economy",
]


class NamespacedStreams(RandomStreams):
    """The streams of ``parent`` under ``prefix``: stream ``name`` here is stream
    ``prefix + name`` there (same seed, or seeds of an ensemble, and device). Nested prefixes
    add up."""

    def __init__(self, parent: RandomStreams, prefix: str) -> None:  # no super(): shares seed
        self.parent = parent
        self.prefix = prefix
        self.seed = parent.seed
        self.device = parent.device

    def key(self, name: str, step: int, seed: int | None = None, chunk: int = 0) -> int:
        return self.parent.key(self.prefix + name, step, seed, chunk)

    # drawing goes through the parent, so that a parent that draws differently (a
    # partitioned run's streams draw for the whole population and keep the local rows) does
    # so for the namespaced streams too
    def uniform(self, name: str, step: int, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        return self.parent.uniform(self.prefix + name, step, shape, dtype)

    def generator(self, name: str, step: int = 0) -> torch.Generator:
        return self.parent.generator(self.prefix + name, step)

    def __repr__(self) -> str:
        return f"NamespacedStreams({self.prefix!r}, {self.parent!r})"


@dataclass(frozen=True)
class Link:
    """A port's value: ``fn(value of source)``, with ``source`` ``"<child>.<entry>"`` or
    ``"<child>.flows.<flow>"``; ``fn`` gets the entry as stored (e.g. SEIRM's ``I`` as
    ``[N, K_I, *R]``) and returns ``[N, *R]``. An ``nn.Module`` ``fn`` (e.g.
    :class:`Protection`) is registered in the :class:`Compose`: its parameters are the
    model's. ``fn`` must pickle (a module or a top-level function, not a lambda) for the
    model to pickle."""

    source: str
    fn: Callable[[Tensor], Tensor] | None = None


class SlotSum:
    """``x[:, first:last].sum(1)``: a stage entry ``[N, K, *R]`` summed over its slots
    ``first .. last - 1`` (steps spent in the stage), ``[N, *R]``. For example the agents in
    SEIRM's ``I`` for at least ``first`` steps (symptomatic, isolating)."""

    def __init__(self, first: int = 0, last: int | None = None) -> None:
        if isinstance(first, bool) or not isinstance(first, int) or first < 0:
            raise ValueError(f"first must be an int >= 0 (a stage slot), got {first!r}.")
        if last is not None and (isinstance(last, bool) or not isinstance(last, int)):
            raise ValueError(f"last must be None or an int (a stage slot), got {last!r}.")
        self.first, self.last = first, last

    def __call__(self, x: Tensor) -> Tensor:
        if x.dim() < 2:
            raise ValueError(
                f"SlotSum needs a stage entry [N, K, *R], got shape {list(x.shape)}; link the "
                "entry itself (no Link) for a per-agent [N, *R] value."
            )
        return x[:, self.first : self.last].sum(1)

    def __repr__(self) -> str:
        return f"SlotSum({self.first}, {self.last})"


class Protection(nn.Module):
    r"""A behaviour's protection of contacts, :math:`1 - e\, c_i`, for SEIRM's
    ``infectiousness_factor`` / ``susceptibility_factor`` ports, with :math:`c_i \in [0, 1]`
    the agent's compliance (``"behaviour.adopted"``) and :math:`e` the efficacy (learnable,
    a probability), as in :class:`~lpm_graph.protocols.behaviour.BehaviourCoupling`."""

    def __init__(self, efficacy: float | Tensor = 0.5, *, learnable: bool = True) -> None:
        super().__init__()
        if torch.as_tensor(efficacy).dim() > 0:
            raise ValueError(f"efficacy must be a scalar, got {efficacy!r}.")
        declare_parameter(
            self, "efficacy", efficacy, constraint="probability", unit="probability",
            learnable=learnable,
        )  # fmt: skip

    def forward(self, compliance: Tensor) -> Tensor:
        return 1 - self.efficacy * compliance

    def extra_repr(self) -> str:
        return f"efficacy={float(self.efficacy.detach()):g}"


LinkSpec = str | Link | tuple[str, Callable[[Tensor], Tensor]] | None


@dataclass(frozen=True)
class _Source:
    """A resolved link: which child, whether a flow, which entry, and the transform key."""

    child: str
    flow: bool
    entry: str
    fn: str | None  # key in Compose.transforms, or of a plain callable in _functions

    def text(self) -> str:
        return f"{self.child}.{'flows.' if self.flow else ''}{self.entry}"


class Compose(Protocol):
    """Several protocols as one model (see the module docstring).

    Args:
        children: the protocols by name, in the order their phases run in a step (keyword
            arguments, or a mapping as the first argument when a name would clash with
            ``links``). Names are identifiers without ``"."``.
        links: ``{"<child>.<port>": source}`` for every port of every child, with ``source``
            a string ``"<child>.<entry>"`` or ``"<child>.flows.<flow>"``, a :class:`Link`
            (or a ``(source, fn)`` pair) or ``None`` (the port's default).

    Example (``graph`` has ``age_group`` and the labour attributes,
    :func:`~lpm_graph.protocols.labour.labour_population`)::

        model = Compose(
            epi=SEIRM(2.5, 0.01),
            labour=LabourMarket(0.004 / 7, 0.08 / 7, sick_job_loss=2.0),
            links={
                "epi.infectiousness_factor": None,
                "epi.susceptibility_factor": None,
                "labour.sick": "epi.I",  # [N, K_I] summed over slots: [N]
                "labour.isolating": None,
            },
        )
        traj = simulate(model, graph, 60, initial_infected=10)  # seeds epi only
        traj.counts["labour.unemployed"], traj.flows["epi.infections"]

    :func:`epidemic_economy` builds SEIRM, threshold adoption and the labour market linked.
    """

    def __init__(
        self,
        children: Mapping[str, Protocol] | None = None,
        /,
        *,
        links: Mapping[str, LinkSpec] | None = None,
        **named: Protocol,
    ) -> None:
        given = dict(children or {})
        clash = set(given) & set(named)
        if clash:
            raise ValueError(f"children {sorted(clash)} are given twice (mapping and keyword).")
        given.update(named)
        if not given:
            raise ValueError("Compose needs at least one protocol, e.g. Compose(epi=SEIRM()).")
        for name, child in given.items():
            if not isinstance(child, Protocol):
                raise ValueError(
                    f"child {name!r} must be a lpm_graph Protocol (SEIRM, LabourMarket, ...), "
                    f"got {type(child).__name__}."
                )
            if not name.isidentifier():
                raise ValueError(
                    f"child name {name!r} must be an identifier without '.' (it prefixes "
                    "state, counts, flows and streams), e.g. 'epi' or 'labour'."
                )
        steps = {name: child.dt for name, child in given.items()}
        if len(set(steps.values())) > 1:
            raise ValueError(
                f"the children's dt differ: {steps}; build every protocol with the same dt "
                "(and rates in the same time unit)."
            )
        super().__init__([], next(iter(steps.values())))
        self.protocols = nn.ModuleDict(given)
        self.transforms = nn.ModuleDict()
        self._functions: dict[str, Callable[[Tensor], Tensor]] = {}
        self._prefix = {name: name + "." for name in given}
        self._streams = {name: name + "/" for name in given}
        self._ports = self._resolve(dict(links or {}))

    # ------------------------------------------------------------------ construction

    def _resolve(self, links: dict[str, LinkSpec]) -> dict[str, dict[str, _Source]]:
        """Check ``links`` against the children's ports, entries and flows; per child, its
        linked ports."""
        children = self.protocols
        order = list(children)
        declared = {f"{n}.{port.name}": port for n, c in children.items() for port in c.ports}
        missing = [k for k in declared if k not in links]
        if missing:
            raise ValueError(
                f"ports {missing} are not linked; link each to a state entry or flow "
                f"({self._sources_text()}), or to None to keep its default ("
                + "; ".join(f"{k}: {declared[k].default}" for k in missing)
                + ")."
            )
        out: dict[str, dict[str, _Source]] = {n: {} for n in order}
        for key, spec in links.items():
            if key not in declared:
                raise ValueError(
                    f"links names {key!r}, which is no port; the ports are "
                    f"{sorted(declared) or 'none'}."
                )
            if spec is None:
                continue
            reader, port = key.split(".", 1)
            if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str):
                spec = Link(spec[0], spec[1])
            if isinstance(spec, str):
                spec = Link(spec)
            if not isinstance(spec, Link) or not isinstance(spec.source, str):
                raise ValueError(
                    f"links[{key!r}] must be a source string ('epi.I', 'epi.flows.infections'), "
                    f"a Link(source, fn), a (source, fn) pair or None, got {spec!r}."
                )
            if spec.fn is not None and not callable(spec.fn):
                raise ValueError(f"links[{key!r}]: fn must be callable, got {spec.fn!r}.")
            source = self._source(key, spec.source, reader, order)
            fn = None
            if spec.fn is not None:
                fn = f"{reader}:{port}"
                if isinstance(spec.fn, nn.Module):
                    self.transforms[fn] = spec.fn
                else:
                    self._functions[fn] = spec.fn
            out[reader][port] = _Source(source.child, source.flow, source.entry, fn)
        return out

    def _source(self, key: str, text: str, reader: str, order: list[str]) -> _Source:
        child, _, rest = text.partition(".")
        if child not in self.protocols or not rest:
            raise ValueError(
                f"links[{key!r}] = {text!r} names no child's entry; give '<child>.<entry>' or "
                f"'<child>.flows.<flow>' with a child among {order}: {self._sources_text()}."
            )
        protocol = self.protocols[child]
        if rest.startswith("flows."):
            flow = rest[len("flows.") :]
            if flow not in protocol.flow_names:
                raise ValueError(
                    f"links[{key!r}] = {text!r}: {child} ({type(protocol).__name__}) has no flow "
                    f"{flow!r}; its flows are {list(protocol.flow_names) or 'not declared'}."
                )
            if order.index(child) >= order.index(reader):
                raise ValueError(
                    f"links[{key!r}] = {text!r}: {child!r} runs "
                    + ("as" if child == reader else "after")
                    + f" {reader!r} in a step (order {order}), so this step's flow is not "
                    f"known yet; put {child!r} first or link a state entry of it instead."
                )
            return _Source(child, True, flow, None)
        if rest not in protocol.state_names:
            raise ValueError(
                f"links[{key!r}] = {text!r}: {child} ({type(protocol).__name__}) has no state "
                f"entry {rest!r}; its entries are {list(protocol.state_names) or 'not declared'}"
                f" and its flows {list(protocol.flow_names) or 'not declared'} (as "
                f"'{child}.flows.<flow>')."
            )
        return _Source(child, False, rest, None)

    def _sources_text(self) -> str:
        parts = []
        for name, child in self.protocols.items():
            entries = [f"{name}.{e}" for e in child.state_names]
            entries += [f"{name}.flows.{f}" for f in child.flow_names]
            parts.append(", ".join(entries) or f"{name}: none declared")
        return "; ".join(parts)

    # ------------------------------------------------------------------ the step

    @property
    def phases(self) -> nn.ModuleList:  # type: ignore[override]
        """Not a flat list: a Compose's step is its children's steps, each with its own view
        of the state, streams and ports, which a caller running phases one by one would
        bypass (work between phases goes in ``StepContext.between_phases``)."""
        raise TypeError(
            "a Compose has no flat list of phases: run it through compose.step(...) (work "
            "between phases: StepContext.between_phases); each child's phases are in "
            "compose.protocols[name].phases and print(compose) shows the plan."
        )

    @property
    def compartments(self) -> tuple[str, ...]:
        """Every child's compartments, namespaced (``"epi.S"``, ...)."""
        return tuple(
            p + c
            for name, p in self._prefix.items()
            for c in getattr(self.protocols[name], "compartments", ())
        )

    @property
    def state_names(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(p + s for n, p in self._prefix.items() for s in self.protocols[n].state_names)

    @property
    def flow_names(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(p + f for n, p in self._prefix.items() for f in self.protocols[n].flow_names)

    def view(self, state: State, name: str) -> State:
        """Child ``name``'s entries of a composed state, under their own names."""
        p = self._prefix[name]
        k = len(p)
        return {key[k:]: value for key, value in state.items() if key.startswith(p)}

    def _port_values(self, name: str, state: State, flows: Mapping[str, Tensor]) -> State:
        out = {}
        for port, src in self._ports[name].items():
            if src.flow:
                value = flows[self._prefix[src.child] + src.entry]
            elif src.fn is not None:
                value = state[self._prefix[src.child] + src.entry]
            else:
                child = self.protocols[src.child]
                value = child.signal(self.view(state, src.child), src.entry)
            if src.fn is not None:
                value = self._transform(src.fn)(value)
            out[port] = value
        return out

    def step(self, graph: PopulationGraph, state: State, ctx: StepContext) -> State:
        """Every child's phases in order, each on its own view of the state with its own
        streams, ports and flows (namespaced into ``ctx.flows``)."""
        parent = ctx.coupling
        for k, (name, child) in enumerate(self.protocols.items()):
            p = self._prefix[name]
            if k and ctx.between_phases is not None:  # a child's first phase: a new phase
                state = ctx.between_phases(state)
            coupling = None
            if parent is not None:
                force = None
                if parent.force is not None:
                    k = len(p)
                    force = {f[k:]: v for f, v in parent.force.items() if f.startswith(p)}
                candidates = [] if parent.candidates is not None else None
                coupling = Coupling(candidates, force, parent.tile, parent.columns)
            sub = StepContext(
                t=ctx.t,
                dt=ctx.dt,
                start=self.view(ctx.start, name),
                streams=NamespacedStreams(ctx.streams, self._streams[name]),
                mode=ctx.mode,
                estimator=ctx.estimator,
                coupling=coupling,
                ports=self._port_values(name, state, ctx.flows) if self._ports[name] else {},
                between_phases=ctx.between_phases,
            )
            view = child.step(graph, self.view(state, name), sub)
            state = {k: v for k, v in state.items() if not k.startswith(p)}
            state.update({p + k: v for k, v in view.items()})
            ctx.flows.update({p + k: v for k, v in sub.flows.items()})
            if coupling is not None and coupling.candidates and parent is not None:
                assert parent.candidates is not None
                parent.candidates.extend((p + f, m, r) for f, m, r in coupling.candidates)
        return self._ordered(state)

    def _ordered(self, state: State) -> State:
        """Entries grouped by child in the children's order (a checkpointed run keys its
        blocks by the order of the state's entries)."""
        return {
            key: value
            for p in self._prefix.values()
            for key, value in state.items()
            if key.startswith(p)
        }

    def _transform(self, key: str) -> Callable[[Tensor], Tensor]:
        return self.transforms[key] if key in self.transforms else self._functions[key]

    # ------------------------------------------------------------------ delegation

    def initial_state(
        self,
        graph: PopulationGraph,
        initial_infected: object,
        streams: RandomStreams,
        replicates: int | None,
        dtype: torch.dtype,
        mode: Mode,
    ) -> State:
        """Every child's initial state, namespaced; ``initial_infected`` goes to the children
        whose ``initial_condition`` is ``"initial_infected"`` (a dict by child name: to each
        child its own), the others get ``None`` (their own start)."""
        values = self._route(initial_infected)
        state: State = {}
        for name, child in self.protocols.items():
            try:
                own = child.initial_state(
                    graph, values[name], NamespacedStreams(streams, self._streams[name]),
                    replicates, dtype, mode,
                )  # fmt: skip
            except ValueError as err:
                raise ValueError(f"Compose child {name!r}: {err}") from None
            state.update({self._prefix[name] + k: v for k, v in own.items()})
        return state

    def _route(self, initial_infected: object) -> dict[str, object]:
        names = list(self.protocols)
        if isinstance(initial_infected, Mapping):
            unknown = [k for k in initial_infected if k not in self.protocols]
            if unknown:
                raise ValueError(
                    f"initial_infected names {unknown}, which are no children; a dict gives "
                    f"each child its initial condition by name, among {names}."
                )
            return {name: initial_infected.get(name) for name in names}
        return {
            name: initial_infected if child.initial_condition == "initial_infected" else None
            for name, child in self.protocols.items()
        }

    def check(self, graph: PopulationGraph) -> None:
        check_declared(self.transforms)  # the links' own parameters; each child its own
        for child in self.protocols.values():
            child.check(graph)

    def prepare(self, graph: PopulationGraph, whole_graph: PopulationGraph) -> None:
        for child in self.protocols.values():
            child.prepare(graph, whole_graph)

    def signal(self, state: State, name: str) -> Tensor:
        child, _, entry = name.partition(".")
        return self.protocols[child].signal(self.view(state, child), entry)

    def observe(self, state: State) -> dict[str, Tensor]:
        out = {}
        for name, child in self.protocols.items():
            p = self._prefix[name]
            out.update({p + k: v for k, v in child.observe(self.view(state, name)).items()})
        return out

    def total_flows(self, flows: Mapping[str, Tensor]) -> dict[str, Tensor]:
        out = {}
        for name, child in self.protocols.items():
            p = self._prefix[name]
            own = self.view(dict(flows), name)
            out.update({p + k: v for k, v in child.total_flows(own).items()})
        return out

    def occupancy(self, state: State) -> Tensor:
        """Per agent, the sum of its compartments in the compartmental child (one with an
        ``occupancy``) where it is farthest from 1, ``[N, *R]``: 1 for every agent of a
        valid state."""
        worst = None
        for name, child in self.protocols.items():
            occupancy = getattr(child, "occupancy", None)
            if occupancy is None:
                continue
            total = occupancy(self.view(state, name))
            if worst is None:
                worst = total
            else:
                worst = torch.where((total - 1).abs() > (worst - 1).abs(), total, worst)
        if worst is None:
            raise AttributeError("no child of this Compose has compartments with an occupancy.")
        return worst

    # ------------------------------------------------------------------ printing

    def plan(self) -> str:
        lines = [f"Compose step (dt = {self.dt:g}), children in order:"]
        k = 1
        for name, child in self.protocols.items():
            lines.append(
                f"  [{name}] {type(child).__name__} (initial condition: {child.initial_condition})"
            )
            for phase in child.phases:
                lines.append(f"    {k}. {name}.{phase.name}: {phase!r}")
                k += 1
            for port in child.ports:
                src = self._ports[name].get(port.name)
                if src is None:
                    where = f"unlinked: {port.default}"
                else:
                    where = src.text()
                    if src.fn is not None:
                        where = f"{_name(self._transform(src.fn))}({where})"
                lines.append(f"    port {port.name} <- {where}")
        return "\n".join(lines)


def _name(fn: Any) -> str:
    if isinstance(fn, nn.Module):
        return repr(fn).replace("\n", " ")
    return getattr(fn, "__name__", None) or repr(fn)


def epidemic_economy(
    epidemic: Protocol | None = None,
    behaviour: Protocol | None = None,
    labour: Protocol | None = None,
    *,
    efficacy: float | Tensor = 0.5,
    isolation_delay: int = 2,
) -> Compose:
    r"""SEIRM, protective behaviour and a labour market as one :class:`Compose` model.

    Children, in the order they run in a step: ``behaviour`` (default
    :class:`~lpm_graph.protocols.opinion.ThresholdAdoption` with ``threshold=0.3``,
    ``risk_weight=4``: adoption driven by the share of infectious contacts), ``epi`` (default
    :class:`~lpm_graph.protocols.seirm.SEIRM`, rates per day) and ``labour`` (default
    :class:`~lpm_graph.protocols.labour.LabourMarket` with the weekly defaults per day,
    ``sick_job_loss=2``, ``isolation_job_loss=4``). Links:

    * ``behaviour.infectious <- epi.I`` (summed over stage slots);
    * ``epi.infectiousness_factor`` and ``epi.susceptibility_factor`` ``<-``
      :class:`Protection` ``(behaviour.adopted)``, :math:`1 - e\, c`: each contact is scaled
      by :math:`(1 - e c_j)(1 - e c_i)`, as
      :class:`~lpm_graph.protocols.behaviour.BehaviourCoupling` does;
    * ``labour.sick <- epi.I`` and ``labour.isolating <-`` the agents in ``I`` for at least
      ``isolation_delay`` steps (:class:`SlotSum`): job loss rises with sickness and
      isolation.

    ``simulate(model, graph, T, initial_infected=10)`` seeds the epidemic only (the adopters
    start at none, the unemployed from the labour market's ``initial_unemployment``);
    ``initial_infected={"epi": 10, "behaviour": 0.05}`` seeds both. The graph needs
    ``age_group`` and the labour attributes (:func:`~lpm_graph.protocols.labour.
    labour_population`). Gradients of the unemployment reach ``R``, the adoption's
    threshold, sharpness and risk weight and the efficacy through the links.

    Args:
        epidemic: the epidemic (needs ``I`` and SEIRM's two ports).
        behaviour: the behaviour (needs an ``infectious`` port and an ``adopted`` entry).
        labour: the labour market (needs ``sick`` and ``isolating`` ports).
        efficacy: :math:`e`, the protection of a contact at full compliance.
        isolation_delay: steps in ``I`` after which an agent isolates.
    """
    from .labour import LabourMarket
    from .opinion import ThresholdAdoption
    from .seirm import SEIRM

    if isinstance(isolation_delay, bool) or not isinstance(isolation_delay, int):
        raise ValueError(
            f"isolation_delay must be an int number of steps, got {isolation_delay!r}."
        )
    epidemic = SEIRM(2.5, 0.01) if epidemic is None else epidemic
    behaviour = ThresholdAdoption(0.3, 20.0, risk_weight=4.0) if behaviour is None else behaviour
    if labour is None:
        labour = LabourMarket(
            0.004 / 7, 0.08 / 7, sick_job_loss=2.0, isolation_job_loss=4.0,
            initial_unemployment=0.05,
        )  # fmt: skip
    protection = Protection(efficacy)
    return Compose(
        behaviour=behaviour,
        epi=epidemic,
        labour=labour,
        links={
            "behaviour.infectious": "epi.I",
            "epi.infectiousness_factor": Link("behaviour.adopted", protection),
            "epi.susceptibility_factor": Link("behaviour.adopted", protection),
            "labour.sick": "epi.I",
            "labour.isolating": Link("epi.I", SlotSum(isolation_delay)),
        },
    )
