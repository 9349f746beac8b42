"""Finer disease progression driven by transition tables: asymptomatic, presymptomatic, mild,
severe (hospitalised), ICU, recovered, dead.

A :class:`Progression` lists, for every stage after infection, its outgoing transitions: the
target stage, the probability per age group and the time it takes. An agent entering a stage
draws its transition at once (so each branch has its own duration, as in Covasim), waits that
long, then enters the target. Targets that are not stages are outcomes (``"R"``, ``"M"``).

:class:`StagedSEIRM` is :class:`~lpm_graph.protocols.SEIRM` with such a progression instead of
E -> I -> R | M: the same force of infection (contacts, edge types, age susceptibility,
interventions), with the infectiousness of each stage, and deaths from the table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..ops import fixed_order_sum
from .base import Mode, Phase, State, StepContext
from .durations import Duration
from .seirm import AGE_GROUPS, SEIRM, _advance, _leave, _per_agent

if TYPE_CHECKING:
    from ..graph import PopulationGraph
    from ..layers.samplers import RandomStreams

__all__ = ["COVASIM_PROGNOSES", "Progression", "StagedSEIRM", "Transition"]

OUTCOMES = ("R", "M")

# Covasim 3.1's default prognoses by age decade 0-9, ..., 80-89, 90+ (absolute probabilities per
# infection: symptomatic from Poletti et al.; severe and critical from Verity et al. / Imperial
# Report 9; death from O'Driscoll et al. and Brazeau et al.), averaged into our eight groups
# (0-19 = mean of 0-9 and 10-19; 80+ = mean of 80-89 and 90+).
_DECADES = {
    "symptomatic": (0.50, 0.55, 0.60, 0.65, 0.70, 0.75, 0.80, 0.85, 0.90, 0.90),
    "severe": (0.00050, 0.00165, 0.00720, 0.02080, 0.03430, 0.07650, 0.13280, 0.20655, 0.24570,
               0.24570),
    "critical": (0.00003, 0.00008, 0.00036, 0.00104, 0.00216, 0.00933, 0.03639, 0.08923,
                 0.17420, 0.17420),
    "death": (0.00002, 0.00002, 0.00010, 0.00032, 0.00098, 0.00265, 0.00766, 0.02439, 0.08292,
              0.16190),
}  # fmt: skip


def _by_age_group(decades: Sequence[float]) -> tuple[float, ...]:
    d = list(decades)
    return ((d[0] + d[1]) / 2, *d[2:8], (d[8] + d[9]) / 2)


COVASIM_PROGNOSES: dict[str, tuple[float, ...]] = {k: _by_age_group(v) for k, v in _DECADES.items()}
"""Absolute probabilities per infection by age group (8 groups): symptomatic, severe,
critical and death (the infection fatality ratio)."""


@dataclass(frozen=True)
class Transition:
    """One way out of a stage: ``target`` with ``probability`` (a scalar or one value per age
    group) after ``duration``."""

    target: str
    probability: float | Sequence[float] | Tensor
    duration: Duration


class Progression:
    """Stages after infection with their transitions and infectiousness.

    Args:
        stages: per stage, its transitions; the probabilities of a stage's transitions sum to 1
            in every age group. The first stage is the one infection leads to.
        infectiousness: per stage, its relative infectiousness (default 0 for the entry stage
            and 1 for the others).
    """

    def __init__(
        self,
        stages: Mapping[str, Sequence[Transition]],
        infectiousness: Mapping[str, float] | None = None,
    ) -> None:
        if not isinstance(stages, Mapping):
            raise ValueError(
                f"stages must map each stage name to its transitions, e.g. "
                f"{{'E': [Transition('R', 1.0, Duration.fixed(3))]}}, got {type(stages).__name__}."
            )
        if not stages:
            raise ValueError("a progression needs at least one stage.")
        names = list(stages)
        groups = len(AGE_GROUPS)
        for name in names:
            if name in ("S", *OUTCOMES) or "->" in name:
                raise ValueError(f"stage name {name!r} is reserved; use another name.")
            if not stages[name]:
                raise ValueError(f"stage {name!r} has no transitions.")
            total = torch.zeros(groups, dtype=torch.float64)
            for tr in stages[name]:
                if not isinstance(tr, Transition) or not isinstance(tr.duration, Duration):
                    raise ValueError(
                        f"stage {name!r}: each transition must be a Transition(target, "
                        f"probability, Duration), got {tr!r}."
                    )
                if tr.target not in names and tr.target not in OUTCOMES:
                    raise ValueError(
                        f"stage {name!r} leads to {tr.target!r}, which is neither a stage "
                        f"({names}) nor an outcome {OUTCOMES}."
                    )
                p = torch.as_tensor(tr.probability, dtype=torch.float64)
                if p.shape not in ((), (1,), (groups,)):
                    raise ValueError(
                        f"stage {name!r} -> {tr.target!r}: the probability is a scalar or one "
                        f"value per age group ({groups}), got shape {list(p.shape)}."
                    )
                p = p.expand(groups)
                if bool(((p < 0) | (p > 1) | p.isnan()).any()):
                    raise ValueError(f"stage {name!r} -> {tr.target!r}: probabilities in [0, 1].")
                total += p
            if not torch.allclose(total, torch.ones(groups, dtype=torch.float64), atol=1e-9):
                raise ValueError(
                    f"the transitions out of stage {name!r} have probabilities summing to "
                    f"{total.tolist()} by age group; they must sum to 1."
                )
        self.stages = {k: list(v) for k, v in stages.items()}
        self.entry = names[0]
        a = {n: (0.0 if n == self.entry else 1.0) for n in names}
        a.update(infectiousness or {})
        unknown = set(a) - set(names)
        if unknown:
            raise ValueError(f"infectiousness names unknown stages {sorted(unknown)}.")
        self.infectiousness = a

    @classmethod
    def covid(cls) -> Progression:
        """Covasim's default COVID-19 natural history, by age group.

        ========================  ================================================  ============
        transition                probability (by age group)                        time (days)
        ========================  ================================================  ============
        E -> asymptomatic         1 - symptomatic                                   Gamma(4.5, 1.5)
        E -> presymptomatic       symptomatic                                       Gamma(4.5, 1.5)
        asymptomatic -> R         1                                                 Gamma(8.0, 2.0)
        presymptomatic -> mild    1                                                 Gamma(1.1, 0.9)
        mild -> severe            severe / symptomatic                              Gamma(6.6, 4.9)
        mild -> R                 1 - severe / symptomatic                          Gamma(8.0, 2.0)
        severe -> icu             critical / severe                                 Gamma(1.5, 2.0)
        severe -> R               1 - critical / severe                             Gamma(18.1, 6.3)
        icu -> M                  death / critical                                  Gamma(10.7, 4.8)
        icu -> R                  1 - death / critical                              Gamma(18.1, 6.3)
        ========================  ================================================  ============

        Probabilities from :data:`COVASIM_PROGNOSES`; times are Covasim's (mean, sd), there
        lognormal, here Gamma, rounded to whole steps. "severe" agents are the ones needing
        hospital care, "icu" the critical ones. Every stage but E is infectious (factor 1).
        """
        p = {k: torch.tensor(v, dtype=torch.float64) for k, v in COVASIM_PROGNOSES.items()}
        severe = p["severe"] / p["symptomatic"]
        critical = p["critical"] / p["severe"]
        death = p["death"] / p["critical"]
        g = Duration.gamma
        return cls(
            {
                "E": [
                    Transition("asymptomatic", 1 - p["symptomatic"], g(4.5, 1.5)),
                    Transition("presymptomatic", p["symptomatic"], g(4.5, 1.5)),
                ],
                "asymptomatic": [Transition("R", 1.0, g(8.0, 2.0))],
                "presymptomatic": [Transition("mild", 1.0, g(1.1, 0.9))],
                "mild": [
                    Transition("severe", severe, g(6.6, 4.9)),
                    Transition("R", 1 - severe, g(8.0, 2.0)),
                ],
                "severe": [
                    Transition("icu", critical, g(1.5, 2.0)),
                    Transition("R", 1 - critical, g(18.1, 6.3)),
                ],
                "icu": [
                    Transition("M", death, g(10.7, 4.8)),
                    Transition("R", 1 - death, g(18.1, 6.3)),
                ],
            }
        )

    def branches(self) -> list[tuple[str, str]]:
        return [(s, tr.target) for s, trs in self.stages.items() for tr in trs]


class _StagedProgression(Phase):
    """Every stage's agents wait out their branch, then enter the branch's target, where they
    draw their next branch. Records ``"deaths"``, ``"recoveries"`` and ``"entered_<stage>"``."""

    name = "progression"

    def __init__(self, protocol: StagedSEIRM) -> None:
        super().__init__(protocol)

    def forward(self, graph: PopulationGraph, state: State, ctx: StepContext) -> State:
        p = self.owner
        age = p.age_groups(graph)
        leaving: dict[str, Tensor] = {}
        arriving: dict[str, Tensor] = {p.progression.entry: ctx.flows["infections"]}
        for k, (stage, target) in enumerate(p.progression.branches()):
            key = f"{stage}->{target}"
            fixed = p._fixed[k]
            leaving[key] = _leave(ctx, f"exit:{key}", getattr(p, f"_hazard_{k}"), state[key], fixed)
            done = leaving[key].sum(1)
            arriving[target] = done if target not in arriving else arriving[target] + done
        mortality_scale = p.intervention_factor("mortality_factor", state, ctx)

        def move(key: str, cond: Tensor, left: Tensor) -> Tensor:
            return ctx.flow(f"branch:{key}", 1 - cond, left)

        # arrivals draw their branch now
        entering: dict[str, Tensor] = {}
        for stage in p.progression.stages:
            coming = arriving.get(stage)
            if coming is not None:
                ctx.flows[f"entered_{stage}"] = coming
                entering.update(p.branch(stage, coming, age, move, mortality_scale))
        out = dict(state)
        zeros = torch.zeros_like(state["S"])
        for key, leave in leaving.items():
            out[key] = _advance(state[key], leave, entering.get(key, zeros))
        deaths, recoveries = arriving.get("M", zeros), arriving.get("R", zeros)
        ctx.flows.update(deaths=deaths, recoveries=recoveries)
        out["R"] = state["R"] + recoveries
        out["M"] = state["M"] + deaths
        return out


class StagedSEIRM(SEIRM):
    """SEIRM's force of infection with a :class:`Progression` (default
    :meth:`Progression.covid`) after infection.

    State: ``S``, ``R``, ``M`` ``[N]`` and, per branch ``"stage->target"``, ``[N, K]`` agents
    waiting to take it, by steps waited. Counts per step: ``S``, every stage (summed over its
    branches), ``R``, ``M``; flows: ``infections``, ``deaths``, ``recoveries`` and
    ``entered_<stage>`` (e.g. ``entered_severe``, new hospitalisations). The force of infection
    uses each stage's infectiousness (no time-since-infection kernel: the stage times shape it).

    Args:
        reproduction_number: ``R`` (scalar or ``[T]``).
        progression: the stages (default Covasim's COVID-19 natural history).
        **kwargs: as for :class:`~lpm_graph.protocols.SEIRM` (edge-type weights,
            susceptibility, interventions, dt, ...), except the E / I durations and mortality,
            which the progression replaces.
    """

    def __init__(
        self,
        reproduction_number: float | Tensor = 2.5,
        progression: Progression | None = None,
        **kwargs: object,
    ) -> None:
        for key in ("exposed", "infectious", "mortality", "infectiousness"):
            if key in kwargs:
                raise ValueError(f"{key}= is set by the progression table in StagedSEIRM.")
        if progression is not None and not isinstance(progression, Progression):
            raise ValueError(
                f"progression must be a Progression (e.g. Progression.covid()) or None, got "
                f"{type(progression).__name__}."
            )
        super().__init__(reproduction_number, 0.0, learnable=bool(kwargs.pop("learnable", True)),
                         **kwargs)  # type: ignore[arg-type]  # fmt: skip
        self.progression = progression or Progression.covid()
        self.compartments = ("S", *self.progression.stages, *OUTCOMES)
        self.phases[-1] = _StagedProgression(self)
        self._fixed = []
        groups = len(AGE_GROUPS)
        for k, (stage, target) in enumerate(self.progression.branches()):
            tr = next(t for t in self.progression.stages[stage] if t.target == target)
            self.register_buffer(f"_hazard_{k}", tr.duration.hazard(self.dt).float())
            self._fixed.append(tr.duration.kind == "fixed")
            prob = torch.as_tensor(tr.probability, dtype=torch.float64).expand(groups)
            self.register_buffer(f"_prob_{stage}->{target}", prob.float().clone())
        a = self.progression.infectiousness
        self._stage_weights = {s: float(a[s]) for s in self.progression.stages}

    def branch(
        self,
        stage: str,
        coming: Tensor,
        age: Tensor,
        move: Callable[[str, Tensor, Tensor], Tensor],
        mortality_scale: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Split the agents ``coming`` into ``stage`` among its branches (``"stage->target"``
        -> ``[N, *R]``), by their age group's probabilities, as sequential binary choices:
        ``move(key, p_key / p_left, left)`` moves agents of ``left`` with that conditional
        probability (an exact categorical draw when each move is a Bernoulli draw). The last
        branch takes the rest. ``mortality_scale`` scales the probability of death."""
        out = {}
        left, share = coming, torch.ones_like(coming)
        transitions = self.progression.stages[stage]
        for j, tr in enumerate(transitions):
            key = f"{stage}->{tr.target}"
            if j == len(transitions) - 1:
                out[key] = left
                break
            prob = _per_agent(getattr(self, f"_prob_{key}")[age].to(coming.dtype), coming)
            if tr.target == "M" and mortality_scale is not None:
                prob = prob * mortality_scale
            cond = (prob / share.clamp_min(1e-12)).clamp(0, 1)
            out[key] = move(key, cond, left)
            left, share = left - out[key], share - prob
        return out

    def infectiousness(self, state: State, mode: Mode) -> Tensor:
        total = torch.zeros_like(state["S"])
        for stage, target in self.progression.branches():
            a = self._stage_weights[stage]
            if a:
                total = total + a * state[f"{stage}->{target}"].sum(1)
        return total

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
        state = {"S": 1 - infected, "R": torch.zeros(shape, dtype=dtype, device=graph.device)}
        state["M"] = torch.zeros_like(state["R"])
        for k, (stage, target) in enumerate(self.progression.branches()):
            steps = getattr(self, f"_hazard_{k}").numel()
            state[f"{stage}->{target}"] = torch.zeros((n, steps, *cols), dtype=dtype,
                                                       device=graph.device)  # fmt: skip

        # the seeds enter the first stage and take its branches in expectation / by draw
        def move(key: str, cond: Tensor, left: Tensor) -> Tensor:
            if mode == "expected":
                return cond * left
            u = streams.uniform(f"seed_branch:{key}", 0, tuple(shape), dtype)
            return left * (u < cond).to(dtype)

        seeded = self.branch(self.progression.entry, infected, self.age_groups(graph), move)
        for key, taken in seeded.items():
            state[key] = _advance(state[key], None, taken)  # all slots start empty
        return self._with_interventions(graph, state, streams, mode)

    def occupancy(self, state: State) -> Tensor:
        branches = [f"{stage}->{target}" for stage, target in self.progression.branches()]
        return self._sum_slots(state, ["S", *branches, *OUTCOMES])

    def observe(self, state: State) -> dict[str, Tensor]:
        per_agent = {"S": state["S"]}
        for stage, transitions in self.progression.stages.items():
            per_agent[stage] = sum(state[f"{stage}->{tr.target}"].sum(1) for tr in transitions)
        per_agent["R"], per_agent["M"] = state["R"], state["M"]
        out = {c: fixed_order_sum(v) for c, v in per_agent.items()}
        if self.by_age:
            out.update({f"{c}_by_age": self._tally_by_age(v) for c, v in per_agent.items()})
        for iv in self.interventions:
            out.update(iv.observe(state))
        return out

    def extra_repr(self) -> str:
        return "stages: " + ", ".join(
            f"{s} -> {'/'.join(t.target for t in trs)}"
            for s, trs in self.progression.stages.items()
        )
