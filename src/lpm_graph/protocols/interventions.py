"""Interventions that compose with an epidemic step: closures of edge types, vaccination.

An intervention is a module handed to :class:`~lpm_graph.protocols.SEIRM` (``interventions=``).
It may scale contacts per edge type, scale susceptibility or mortality per agent, add its own
phase (run before infection in every step), its own state entries and its own observables.
Levels follow a :class:`Schedule` of days.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from .._checks import check_number
from ..ops import fixed_order_sum, propagate
from .base import Phase, State, StepContext

if TYPE_CHECKING:
    from ..graph import PopulationGraph, Relation
    from ..layers.samplers import RandomStreams
    from .base import Mode

__all__ = [
    "EdgeTypeClosure",
    "Intervention",
    "Isolation",
    "Schedule",
    "Testing",
    "Vaccination",
]


class Schedule:
    """A piecewise-constant level over time: ``windows`` of ``(start_day, end_day, level)``,
    half-open ``[start, end)``, level 0 outside every window. ``Schedule.always(level)`` is
    constant. Levels are plain numbers, so reading one inside the step loop costs nothing.
    """

    def __init__(self, windows: Sequence[tuple[float, float, float]]) -> None:
        if isinstance(windows, (str, bytes)) or not isinstance(windows, Sequence):
            raise ValueError(
                f"windows must be a list of (start_day, end_day, level) tuples, got {windows!r}."
            )
        checked = []
        for window in windows:
            if (
                not isinstance(window, Sequence)
                or len(window) != 3
                or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in window)
            ):
                raise ValueError(
                    f"a schedule window is (start_day, end_day, level) with three numbers, got "
                    f"{window!r}; windows is a list of them, e.g. [(10, 40, 1.0)]."
                )
            start, end, level = (float(x) for x in window)
            if not (math.isfinite(start) or start == -math.inf) or not end > start:
                raise ValueError(f"schedule window {window}: end must be after start.")
            if not 0 <= level <= 1:
                raise ValueError(f"schedule window {window}: level must be in [0, 1].")
            checked.append((start, end, level))
        self.windows = checked

    @classmethod
    def always(cls, level: float = 1.0) -> Schedule:
        return cls([(-math.inf, math.inf, level)])

    def at(self, day: float) -> float:
        """The level on ``day`` (the last window containing it wins)."""
        level = 0.0
        for start, end, value in self.windows:
            if start <= day < end:
                level = value
        return level

    def __repr__(self) -> str:
        return f"Schedule({self.windows})"


class Intervention(nn.Module):
    """Base class: every hook is optional and returns ``None`` when it has no effect."""

    name = "intervention"

    def contact_factors(
        self, graph: PopulationGraph, rel: Relation, state: State, ctx: StepContext
    ) -> tuple[Tensor, Tensor] | None:
        """Per-agent factors ``(source, destination)`` on contacts of relation ``rel``."""
        return None

    def susceptibility_factor(self, state: State, ctx: StepContext) -> Tensor | None:
        return None

    def mortality_factor(self, state: State, ctx: StepContext) -> Tensor | None:
        return None

    def phase(self) -> Phase | None:
        return None

    def initial_state(
        self, graph: PopulationGraph, state: State, streams: RandomStreams, mode: Mode, dt: float
    ) -> State:
        return {}

    def observe(self, state: State) -> dict[str, Tensor]:
        return {}


def _check_schedule(schedule: object) -> None:
    if not isinstance(schedule, Schedule):
        raise ValueError(
            f"schedule must be a Schedule, e.g. Schedule([(10, 40, 1.0)]) or "
            f"Schedule.always(), got {schedule!r}."
        )


class EdgeTypeClosure(Intervention):
    """Close the contacts of one edge type (e.g. ``"school"``) while ``schedule`` is on.

    Each agent complies with probability ``compliance`` (drawn once per run and replicate);
    a contact ``j -> i`` of that type is removed, at level ``L``, with factor
    ``(1 - L c_j)(1 - L c_i)``: closed if either end stays home. In expected mode ``c`` is the
    compliance itself, which gives the exact mean factor ``(1 - L c)^2`` of independent agents.
    """

    def __init__(self, edge_type: str, schedule: Schedule, compliance: float = 1.0) -> None:
        super().__init__()
        if not isinstance(edge_type, str) or not edge_type:
            raise ValueError(f"edge_type must be an edge-type name such as 'school', got "
                             f"{edge_type!r}.")  # fmt: skip
        _check_schedule(schedule)
        check_number(compliance, "compliance", 0, 1)
        self.edge_type = edge_type
        self.schedule = schedule
        self.compliance = float(compliance)
        self.name = f"closure:{edge_type}"

    def contact_factors(
        self, graph: PopulationGraph, rel: Relation, state: State, ctx: StepContext
    ) -> tuple[Tensor, Tensor] | None:
        level = self.schedule.at(ctx.t * ctx.dt)
        if rel[1] != self.edge_type or level == 0:
            return None
        comply = _once_per_run(ctx, self.name, state["S"], self.compliance)
        factor = 1 - level * comply
        return factor, factor

    def extra_repr(self) -> str:
        return f"edge_type={self.edge_type!r}, compliance={self.compliance:g}, {self.schedule}"


class Isolation(Intervention):
    """Symptomatic agents isolate, and their households quarantine, while ``schedule`` is on.

    An infectious agent (stage I, taken as symptomatic) who complies (probability
    ``compliance``, drawn once per run) isolates from ``delay`` days after onset: at level ``L``
    its contacts of every edge type except ``household_edge_type`` are scaled by ``1 - L``. With
    ``quarantine=True`` the members of its household (its ``household_edge_type`` neighbours) who
    comply quarantine too: their contacts outside the household are scaled by ``1 - L`` while
    someone in the household isolates. In expected mode compliance and isolation are the
    probabilities themselves (a mean-field factor).
    """

    def __init__(
        self,
        schedule: Schedule,
        *,
        compliance: float = 1.0,
        delay: float = 0.0,
        quarantine: bool = True,
        household_edge_type: str = "household",
    ) -> None:
        super().__init__()
        _check_schedule(schedule)
        check_number(compliance, "compliance", 0, 1)
        check_number(delay, "delay", 0, unit=" of days")
        self.schedule = schedule
        self.compliance = float(compliance)
        self.delay = float(delay)
        self.quarantine = quarantine
        self.household_edge_type = household_edge_type
        self.name = "isolation"

    def _complies(self, like: Tensor, ctx: StepContext) -> Tensor:
        """Per agent: 1 if it complies (drawn once per run), or the probability in expected
        mode."""
        return _once_per_run(ctx, "isolation:compliance", like, self.compliance)

    def _isolates(self, state: State, ctx: StepContext) -> Tensor:
        """Per agent: isolating now (infectious for at least ``delay`` and complying)."""
        first = min(round(self.delay / ctx.dt), state["I"].shape[1])
        return self._complies(state["S"], ctx) * state["I"][:, first:].sum(1)

    def _staying_home(
        self, graph: PopulationGraph, rel: Relation, state: State, ctx: StepContext
    ) -> Tensor:
        comply = self._complies(state["S"], ctx)
        isolating = self._isolates(state, ctx)
        home = isolating
        household = (rel[0], self.household_edge_type, rel[2])
        if self.quarantine and household in graph.relations:
            exposed_home = propagate(graph.csr(household), isolating).clamp_max(1)
            home = 1 - (1 - isolating) * (1 - comply * exposed_home)
        return home

    def contact_factors(
        self, graph: PopulationGraph, rel: Relation, state: State, ctx: StepContext
    ) -> tuple[Tensor, Tensor] | None:
        level = self.schedule.at(ctx.t * ctx.dt)
        if level == 0 or rel[1] == self.household_edge_type:
            return None
        factor = 1 - level * self._staying_home(graph, rel, state, ctx)
        return factor, factor

    def extra_repr(self) -> str:
        return (f"compliance={self.compliance:g}, delay={self.delay:g} days, "
                f"quarantine={self.quarantine}, {self.schedule}")  # fmt: skip


class Testing(Isolation):
    """Symptomatic agents are tested at onset; a positive result (probability ``sensitivity``,
    drawn once per agent and run, as agents are infected once) arrives after ``delay`` days,
    after which the agent isolates if it complies, and its household quarantines (see
    :class:`Isolation`). Tests are not rationed (no daily capacity).
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        schedule: Schedule,
        *,
        sensitivity: float = 0.85,
        delay: float = 2.0,
        compliance: float = 1.0,
        quarantine: bool = True,
        household_edge_type: str = "household",
    ) -> None:
        super().__init__(
            schedule,
            compliance=compliance,
            delay=delay,
            quarantine=quarantine,
            household_edge_type=household_edge_type,
        )
        check_number(sensitivity, "sensitivity", 0, 1)
        self.sensitivity = float(sensitivity)
        self.name = "testing"

    def _isolates(self, state: State, ctx: StepContext) -> Tensor:
        positive = _once_per_run(ctx, "testing:result", state["S"], self.sensitivity)
        return positive * super()._isolates(state, ctx)

    def extra_repr(self) -> str:
        return f"sensitivity={self.sensitivity:g}, " + super().extra_repr()


class Vaccination(Intervention):
    """Vaccinate up to ``capacity`` agents per day (from ``start_day``, times the level of
    ``schedule`` if given) in order of age-group ``priority``.

    Agents susceptible or recovered (S or R: alive and not currently infected) are eligible.
    With ``doses=2``, agents become eligible for the second dose ``interval`` days after the
    first, and second doses are given before first doses from the same daily capacity. Efficacy
    per dose (first, second) scales susceptibility by ``1 - efficacy_infection[d]`` and the
    probability of death on leaving I by ``1 - efficacy_death[d]``. Within an age group the
    order is random (per run and replicate) and fixed; in expected mode doses are given to
    probability mass in the same order, so fractional agents are vaccinated fractionally.

    State: ``V1`` ``[N, K]`` (one dose, by days since it, ``K = interval / dt``) and ``V2``
    ``[N]``; observables ``V1`` and ``V2`` (agents with exactly one / two doses).
    """

    name = "vaccination"

    def __init__(
        self,
        capacity: float,
        *,
        start_day: float = 0.0,
        schedule: Schedule | None = None,
        doses: int = 1,
        interval: float = 21.0,
        efficacy_infection: Sequence[float] = (0.5, 0.9),
        efficacy_death: Sequence[float] = (0.7, 0.95),
        priority: Sequence[int] = (7, 6, 5, 4, 3, 2, 1, 0),
        age_attr: str = "age_group",
    ) -> None:
        super().__init__()
        if (
            isinstance(capacity, bool)
            or not isinstance(capacity, (int, float))
            or not (math.isfinite(capacity) and capacity >= 0)
        ):
            raise ValueError(f"capacity must be a finite non-negative number of doses per day, "
                             f"got {capacity!r}.")  # fmt: skip
        if doses not in (1, 2) or isinstance(doses, bool):
            raise ValueError(f"doses must be 1 or 2, got {doses!r}.")
        check_number(start_day, "start_day", unit=" (a day)")
        check_number(interval, "interval", 0, open_low=True, unit=" of days between doses")
        if schedule is not None:
            _check_schedule(schedule)
        for name, eff in (("efficacy_infection", efficacy_infection),
                          ("efficacy_death", efficacy_death)):  # fmt: skip
            if len(eff) != 2 or not all(
                isinstance(e, (int, float)) and 0 <= e <= 1 for e in eff
            ):  # NaN fails 0 <= e
                raise ValueError(
                    f"{name} needs two values in [0, 1] (after dose 1, dose 2), got {eff!r}."
                )
        try:
            ordered = sorted(operator.index(p) for p in priority) == list(range(8))
        except TypeError:  # not ints
            ordered = False
        if not ordered:
            raise ValueError(f"priority must order all 8 age groups 0..7, got {list(priority)}.")
        self.capacity = float(capacity)
        self.start_day = float(start_day)
        self.schedule = schedule or Schedule.always(1.0)
        self._cumulative: dict[tuple, list[float]] = {}  # running totals of doses_until
        self.doses = doses
        self.interval = float(interval)
        self.age_attr = age_attr
        self.register_buffer("efficacy_infection", torch.tensor(list(efficacy_infection)))
        self.register_buffer("efficacy_death", torch.tensor(list(efficacy_death)))
        rank = torch.empty(8)
        rank[torch.tensor(list(priority))] = torch.arange(8, dtype=torch.float32)
        self.register_buffer("rank", rank)
        self._phase = _Vaccinate(self)

    def doses_until(self, step: int, dt: float) -> float:
        """Doses available over steps ``0 .. step - 1``: ``capacity`` per day from ``start_day``,
        times the schedule's level (read at each step's start); whole doses per step are the
        differences of its integer parts, so the total is exact."""
        # totals[s]: doses over steps < s, for these settings (which a user may change)
        key = (dt, self.capacity, self.start_day, tuple(self.schedule.windows))
        totals = self._cumulative.setdefault(key, [0.0])
        while len(totals) <= step:
            s = len(totals) - 1
            lo, hi = s * dt, (s + 1) * dt
            open_days = max(0.0, hi - max(lo, self.start_day))
            totals.append(totals[-1] + self.capacity * open_days * self.schedule.at(lo))
        return totals[step]

    def steps_between_doses(self, dt: float) -> int:
        return max(1, round(self.interval / dt))

    def initial_state(
        self, graph: PopulationGraph, state: State, streams: RandomStreams, mode: Mode, dt: float
    ) -> State:
        like = state["S"]
        n = like.shape[0]
        k = self.steps_between_doses(dt) if self.doses == 2 else 1
        age = graph.node_attrs()[self.age_attr]
        rank = self.rank.to(like.device)[age].to(torch.float64)
        rank = rank.reshape(n, *([1] * (like.dim() - 1))).expand(like.shape)
        if mode == "stochastic":
            ties = streams.uniform("vaccination:order", 0, tuple(like.shape), torch.float64)
        else:
            ties = (
                (torch.arange(n, dtype=torch.float64, device=like.device) / n)
                .reshape(n, *([1] * (like.dim() - 1)))
                .expand(like.shape)
            )
        order = torch.argsort(rank + ties, dim=0)
        v1 = torch.zeros((n, k, *like.shape[1:]), dtype=like.dtype, device=like.device)
        return {"V1": v1, "V2": torch.zeros_like(like), "vaccination_order": order}

    def phase(self) -> Phase:
        return self._phase

    def _protection(self, state: State, efficacy: Tensor) -> Tensor:
        e = efficacy.to(state["V2"].dtype)
        return 1 - e[0] * state["V1"].sum(1) - e[1] * state["V2"]

    def susceptibility_factor(self, state: State, ctx: StepContext) -> Tensor:
        return self._protection(state, self.efficacy_infection)

    def mortality_factor(self, state: State, ctx: StepContext) -> Tensor:
        return self._protection(state, self.efficacy_death)

    def observe(self, state: State) -> dict[str, Tensor]:
        return {"V1": fixed_order_sum(state["V1"].sum(1)), "V2": fixed_order_sum(state["V2"])}

    def extra_repr(self) -> str:
        return (f"capacity={self.capacity:g}/day from day {self.start_day:g} x {self.schedule}, "
                f"doses={self.doses}, "
                f"interval={self.interval:g}")  # fmt: skip


class _Vaccinate(Phase):
    """Daily doses in priority order; records ``"doses"``."""

    name = "vaccination"

    def __init__(self, vaccination: Vaccination) -> None:
        super().__init__(vaccination)

    def forward(self, graph: PopulationGraph, state: State, ctx: StepContext) -> State:
        v = self.owner
        day = ctx.t * ctx.dt
        # doses available in this step, so that the total over steps is exact
        available = math.floor(v.doses_until(ctx.t + 1, ctx.dt) + 1e-9) - math.floor(
            v.doses_until(ctx.t, ctx.dt) + 1e-9
        )
        v1, v2 = state["V1"], state["V2"]
        if day + ctx.dt <= v.start_day or available <= 0:
            ctx.flows["doses"] = torch.zeros_like(v2)
            return {**state, "V1": _age(v1, None)}
        # alive and not currently infected: S or R
        open_ = state["S"] + state["R"]
        order = state["vaccination_order"]
        second = torch.zeros_like(v2)
        if v.doses == 2:
            second, available_left = _in_order(v1[:, -1] * open_, order, float(available))
        else:
            available_left = torch.full_like(v2[:1], float(available))
        unvaccinated = (1 - v1.sum(1) - v2).clamp_min(0)
        first, _ = _in_order(unvaccinated * open_, order, available_left)
        ctx.flows["doses"] = first + second
        v1_last = v1[:, -1] - second
        v1 = torch.cat([v1[:, :-1], v1_last.unsqueeze(1)], 1)
        return {**state, "V1": _age(v1, first), "V2": v2 + second}


def _once_per_run(ctx: StepContext, stream: str, like: Tensor, probability: float) -> Tensor:
    """A per-agent 0/1 attribute with ``P(1) = probability``, drawn once per run and replicate
    (the same numbers every step); in expected mode the probability itself."""
    if ctx.mode == "expected":
        return torch.full_like(like, probability)
    return (ctx.uniform(stream, like, step=0) < probability).to(like.dtype)


def _in_order(eligible: Tensor, order: Tensor, capacity: float | Tensor) -> tuple[Tensor, Tensor]:
    """Give ``capacity`` doses to ``eligible`` mass in ``order`` (per replicate column);
    return the doses per agent and the capacity left."""
    ranked = eligible.gather(0, order)
    before = torch.cumsum(ranked, 0) - ranked
    given = torch.minimum((capacity - before).clamp_min(0), ranked)
    doses = torch.zeros_like(eligible).scatter(0, order, given)
    left = (capacity - given.sum(0, keepdim=True)).clamp_min(0)
    return doses, left


def _age(v1: Tensor, new: Tensor | None) -> Tensor:
    """One more step since the first dose; agents at the last index stay there."""
    if v1.shape[1] == 1:
        return v1 if new is None else v1 + new.unsqueeze(1)
    head = torch.zeros_like(v1[:, :1]) if new is None else new.unsqueeze(1)
    tail = v1[:, -1:] + v1[:, -2:-1]
    return torch.cat([head, v1[:, :-2], tail], 1)
