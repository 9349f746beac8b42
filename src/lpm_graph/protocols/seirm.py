r"""SEIRM: the age- and stage-structured COVID protocol of the differentiable ABMs (GradABM,
AgentTorch's COVID model), written as phases over a typed contact graph.

Force of infection on agent ``i`` (``n`` runs over the edge types):

.. math::
    \lambda_i = R_t\, S_{a(i)} \sum_n \frac{B_n}{\bar I_{a(i), n}}
        \sum_{j \to_n i} w_{ji}\, A_{s(j)}\, \kappa(t - \tau_j)

with ``S_a`` the susceptibility of age group ``a``, ``A_s`` the infectiousness of stage ``s``
(E or I), ``B_n`` the weight of edge type ``n``, ``\bar I_{a, n}`` the mean number of type-``n``
contacts of agents of age group ``a`` (computed from the graph), ``w_{ji}`` the edge weight and
``\kappa`` the Gamma infectiousness density per day at the time since ``j`` was infected. On a
grid of step ``dt`` the density over step ``k`` of an infection is the kernel's mass in that
step divided by the step, ``kappa_k = W_k / dt`` with ``W_k`` from
:func:`~lpm_graph.protocols.durations.infectiousness_kernel`, so ``lambda_i`` is a rate per day
whatever ``dt``. A susceptible agent is infected during a step with probability
``1 - exp(-lambda_i dt)``: ``dt`` multiplies the rate in this one place, so an infected agent's
total infectiousness, ``R S A sum_k W_k``, does not depend on the step length.

Stages: S -> E -> I -> R or M. Stays in E and I follow :class:`~lpm_graph.protocols.durations.
Duration` (fixed, geometric or Gamma); on leaving I an agent of age group ``a`` dies (M) with
probability ``mortality[a]``. Every state update is additive (``S - new``, ``E + new - onsets``,
...), so gradients from deaths reach ``R``, the mortality and the initial infections.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from .._checks import check_positive, check_probability, check_rate
from ..layers.transmission import Transmission
from ..ops import fixed_order_sum
from .base import CompartmentalProtocol, Mode, Phase, Port, State, StepContext
from .durations import Duration, infectiousness_kernel, kernel_share_before
from .interventions import Intervention

if TYPE_CHECKING:
    from ..graph import PopulationGraph, Relation
    from ..layers.samplers import RandomStreams

__all__ = ["AGE_GROUPS", "GRADABM_SUSCEPTIBILITY", "SEIRM"]

AGE_GROUPS: tuple[str, ...] = (
    "0-19",
    "20-29",
    "30-39",
    "40-49",
    "50-59",
    "60-69",
    "70-79",
    "80+",
)
"""The eight age groups of the GradABM populations (attribute ``age_group`` = 0 .. 7)."""

GRADABM_SUSCEPTIBILITY: tuple[float, ...] = (0.35, 0.69, 1.03, 1.03, 1.03, 1.03, 1.27, 1.52)
"""Relative susceptibility per age group as used by GradABM (OpenABM-Covid19's values)."""


class _Infection(Phase):
    """S -> E with probability ``1 - exp(-lambda dt)``; records ``"infections"``."""

    name = "infection"

    def __init__(self, protocol: SEIRM, backend: str | None) -> None:
        super().__init__(protocol)
        self.transmission = Transmission(backend=backend)

    def forward(self, graph: PopulationGraph, state: State, ctx: StepContext) -> State:
        p = self.owner
        source = p.infectiousness(state, ctx.mode)
        source_factor = ctx.port("infectiousness_factor")
        if source_factor is not None:
            source = source * source_factor
        hazard = None
        for rel, weight in zip(p.relations(graph), p.edge_weights_per_relation(graph)):
            src, dst = source, None
            for iv in p.interventions:
                factors = iv.contact_factors(graph, rel, state, ctx)
                if factors is not None:
                    src = src * factors[0]
                    dst = factors[1] if dst is None else dst * factors[1]
            push = self.transmission(graph.csr(rel), src, weight, graph.edge_weight(rel))
            scale = p.per_agent(graph, rel, p.contact_scale(graph, rel))  # 1 / Ibar[age_i]
            push = push * _per_agent(scale, push)
            if dst is not None:
                push = push * dst
            hazard = push if hazard is None else hazard + push
        if hazard is None:
            new = torch.zeros_like(state["S"])
        else:
            susceptibility = p.per_agent(graph, "susceptibility", p.susceptibility)
            factor = p.reproduction_number_at(ctx.t) * susceptibility * ctx.dt
            hazard = hazard * _per_agent(factor, hazard)
            scale = p.intervention_factor("susceptibility_factor", state, ctx)
            if scale is not None:
                hazard = hazard * scale
            scale = ctx.port("susceptibility_factor")
            if scale is not None:
                hazard = hazard * scale
            escape = torch.exp(-hazard)
            new = ctx.flow(self.name, escape, state["S"])
        ctx.flows["infections"] = new
        return {**state, "S": state["S"] - new}

    def extra_repr(self) -> str:
        return "S -> E, p = 1 - exp(-dt * R S_age sum_n B_n / Ibar sum_j A_stage kappa(t - tau_j))"


class _Progression(Phase):
    """E -> I -> R or M for the agents in E and I at the start of the step; records
    ``"onsets"`` (E -> I), ``"recoveries"`` and ``"deaths"``."""

    name = "progression"

    def __init__(self, protocol: SEIRM) -> None:
        super().__init__(protocol)

    def forward(self, graph: PopulationGraph, state: State, ctx: StepContext) -> State:
        p = self.owner
        e, i = state["E"], state["I"]
        leave_e, onsets = _exits(ctx, "exposed_exit", p.exposed_hazard, e, p.exposed.kind)
        leave_i, exits = _exits(ctx, "infectious_exit", p.infectious_hazard, i, p.infectious.kind)
        m = p.mortality if p.mortality.dim() == 0 else p.mortality[p.age_groups(graph)]
        mortality = _per_agent(m, exits)
        scale = p.intervention_factor("mortality_factor", state, ctx)
        if scale is not None:
            mortality = mortality * scale
        deaths = ctx.flow("death", 1 - mortality, exits)
        new = ctx.flows["infections"]  # this step's, from the infection phase
        ctx.flows.update(onsets=onsets, recoveries=exits - deaths, deaths=deaths)
        out = dict(state)
        out.update(
            E=_advance(e, leave_e, new),
            I=_advance(i, leave_i, onsets),
            R=state["R"] + exits - deaths,
            M=state["M"] + deaths,
        )
        if "infected_since" in state:
            h = state["infected_since"]
            out["infected_since"] = _advance(h, None, new)
        return out

    def extra_repr(self) -> str:
        p = self.owner
        return f"E -> I ({p.exposed}), I -> R or M ({p.infectious}), M with P = mortality[age]"


class SEIRM(CompartmentalProtocol):
    r"""Age- and stage-structured SEIRM over a typed contact graph (see the module docstring).

    State (agents first, replicates last): ``S``, ``R``, ``M`` are ``[N]`` indicators (or
    probabilities in expected mode); ``E`` is ``[N, K_E]`` and ``I`` is ``[N, K_I]``, split by
    the number of whole steps already spent in the stage; when the stay in E is not fixed,
    ``infected_since`` ``[N, K_w]`` holds the time since infection for the kernel. Counts per
    step: ``S, E, I, R, M``; flows: ``infections``, ``onsets``, ``recoveries``, ``deaths``.
    With ``by_age=True`` also ``S_by_age`` ... ``M_by_age`` (``[T + 1, 8]``) and
    ``infections_by_age``, ``deaths_by_age`` (``[T, 8]``), ``[..., R]`` with replicates.
    Ports (:class:`~lpm_graph.protocols.compose.Compose`): ``infectiousness_factor`` and
    ``susceptibility_factor``, per-agent factors ``[N, *R]`` on ``A_stage kappa`` of the
    sources and on ``lambda_i``; 1 when not linked.

    In expected-value mode the stage of an agent of a given infection age is taken in
    expectation (exact for fixed E durations, whose stage follows from the infection age), so
    the mean-field force of infection has no product of correlated marginals.

    Args:
        reproduction_number: ``R``, scalar or ``[T]`` (one value per step; the last one is
            used after ``T``). Learnable by default.
        mortality: probability of death on leaving I, scalar or ``[8]`` per age group.
        edge_type_weights: ``B_n`` per relation, a mapping from edge-type name (e.g.
            ``"household"``) to weight; relations not named carry no infection. Default: every
            agent -> agent relation with weight 1.
        susceptibility: ``S_a`` per age group (default :data:`GRADABM_SUSCEPTIBILITY`).
        infectiousness: ``A_s`` for ``"E"`` and ``"I"`` (default 1 and 1, so that the kernel
            alone shapes infectiousness over time).
        exposed: stay duration in E (default ``Duration.fixed(3)`` days).
        infectious: stay duration in I (default ``Duration.fixed(5)`` days).
        kernel_mean: mean of the Gamma infectiousness kernel (days; default 5.5).
        kernel_sd: standard deviation of the Gamma infectiousness kernel (days; default 2.14).
        dt: step length in days. The kernel is discretised for infections at a uniform time
            within their step (:func:`~lpm_graph.protocols.durations.infectiousness_kernel`),
            so the mean generation time is ``kernel_mean`` whatever ``dt``; the stays in E and
            I count whole steps from the end of the infection step.
        normalize: divide by the mean contacts ``Ibar`` per age group and edge type (default).
        age_attr: the agents' age-group attribute on the graph (ints 0 .. 7).
        node_type: the agents' node type.
        backend: aggregation backend.
        interventions: :mod:`~lpm_graph.protocols.interventions` composed with the step
            (closures, vaccination); their phases run first in every step.
        by_age: also record counts and flows per age group.
        learnable: register ``R``, ``mortality`` and ``B`` as parameters (default) or buffers.
    """

    compartments = ("S", "E", "I", "R", "M")
    flow_names = ("infections", "onsets", "recoveries", "deaths")
    ports = (
        Port(
            "infectiousness_factor",
            "per-agent factor in [0, 1] on the infectiousness of a source j (e.g. 1 - e c_j "
            "for a protective behaviour of compliance c and efficacy e)",
            "1 (no change)",
        ),
        Port(
            "susceptibility_factor",
            "per-agent factor in [0, 1] on the force of infection on a destination i",
            "1 (no change)",
        ),
    )

    def __init__(
        self,
        reproduction_number: float | Tensor = 2.5,
        mortality: float | Tensor = 0.01,
        *,
        edge_type_weights: Mapping[str, float] | None = None,
        susceptibility: Sequence[float] | Tensor = GRADABM_SUSCEPTIBILITY,
        infectiousness: Mapping[str, float] | None = None,
        exposed: Duration | None = None,
        infectious: Duration | None = None,
        kernel_mean: float = 5.5,
        kernel_sd: float = 2.14,
        dt: float = 1.0,
        normalize: bool = True,
        age_attr: str = "age_group",
        node_type: str = "agent",
        interventions: Sequence[Intervention] = (),
        by_age: bool = False,
        backend: str | None = None,
        learnable: bool = True,
    ) -> None:
        check_rate(reproduction_number, "reproduction_number")
        check_probability(mortality, "mortality")
        if isinstance(interventions, Intervention) or not isinstance(
            interventions, Sequence | nn.ModuleList
        ):
            raise ValueError(
                f"interventions must be a list of Intervention modules, got "
                f"{type(interventions).__name__}; wrap a single one: interventions=[...]."
            )
        if edge_type_weights is not None and not isinstance(edge_type_weights, Mapping):
            raise ValueError(
                f"edge_type_weights must map edge-type names to weights, e.g. "
                f"{{'household': 1.0, 'school': 0.5}}, got {edge_type_weights!r}."
            )
        for name, stay in (("exposed", exposed), ("infectious", infectious)):
            if stay is not None and not isinstance(stay, Duration):
                raise ValueError(
                    f"{name} must be a Duration (e.g. Duration.fixed(3), Duration.gamma(5, 2)) "
                    f"or None, got {stay!r}."
                )
        check_positive(kernel_mean, "kernel_mean")
        check_positive(kernel_sd, "kernel_sd")
        for iv in interventions:
            if not isinstance(iv, Intervention):
                raise ValueError(
                    f"interventions must be lpm_graph Intervention modules (EdgeTypeClosure, "
                    f"Vaccination, ...), got {type(iv).__name__}."
                )
        extra = [ph for ph in (iv.phase() for iv in interventions) if ph is not None]
        super().__init__([*extra, _Infection(self, backend), _Progression(self)], dt)
        self.interventions = nn.ModuleList(interventions)
        self.by_age = by_age
        self._observed_age: Tensor | None = None
        self.node_type = node_type
        self.age_attr = age_attr
        self.normalize = normalize
        self.exposed = exposed or Duration.fixed(3)
        self.infectious = infectious or Duration.fixed(5)
        self._edge_types = None if edge_type_weights is None else list(edge_type_weights)
        weights = [1.0] if edge_type_weights is None else list(edge_type_weights.values())
        check_rate(torch.as_tensor(weights, dtype=torch.float64), "edge_type_weights")
        s = torch.as_tensor(susceptibility, dtype=torch.get_default_dtype())
        if s.shape != (len(AGE_GROUPS),):
            raise ValueError(
                f"susceptibility needs one value per age group ({len(AGE_GROUPS)}), got shape "
                f"{list(s.shape)}."
            )
        check_rate(s, "susceptibility")
        a = dict(infectiousness or {"E": 1.0, "I": 1.0})
        unknown = set(a) - {"E", "I"}
        if unknown or len(a) != 2:
            raise ValueError(
                f"infectiousness needs exactly the stages 'E' and 'I', got {sorted(a)}."
            )
        check_rate(torch.tensor([a["E"], a["I"]], dtype=torch.float64), "infectiousness")
        self.declare_parameter(
            "reproduction_number",
            reproduction_number,
            constraint="nonnegative",
            unit="",
            learnable=learnable,
        )
        self.declare_parameter(
            "mortality",
            mortality,
            constraint="probability",
            unit="probability",
            learnable=learnable,
        )
        self.declare_parameter(
            "edge_type_weights",
            torch.as_tensor(weights),
            constraint="nonnegative",
            unit="",
            learnable=learnable,
        )
        self.register_buffer("susceptibility", s)
        self.register_buffer("stage_infectiousness", torch.tensor([a["E"], a["I"]]))
        for name in ("exposed", "infectious"):
            try:
                self.register_buffer(f"{name}_hazard", getattr(self, name).hazard(dt).float())
            except ValueError as err:
                raise ValueError(f"{name}={getattr(self, name)!r}: {err}") from None
        try:
            kernel = infectiousness_kernel(kernel_mean, kernel_sd, dt)
        except ValueError as err:
            raise ValueError(
                f"kernel_mean={kernel_mean!r}, kernel_sd={kernel_sd!r}: {err}"
            ) from None
        self.register_buffer("kernel", kernel.float())
        if self.exposed.kind == "fixed":
            w_e, w_i = self._slot_rates(kernel, kernel_mean, kernel_sd)
            self.register_buffer("slot_rate_E", w_e.float())
            self.register_buffer("slot_rate_I", w_i.float())
        self._scales: weakref.WeakKeyDictionary[PopulationGraph, dict[Relation, Tensor]] = (
            weakref.WeakKeyDictionary()
        )
        self._per_agent: weakref.WeakKeyDictionary[PopulationGraph, dict] = (
            weakref.WeakKeyDictionary()
        )

    # ------------------------------------------------------------------ graph-derived pieces

    def relations(self, graph: PopulationGraph) -> list[Relation]:
        if self._edge_types is not None:
            return [graph.relation(name) for name in self._edge_types]
        t = self.node_type
        return [r for r in graph.relations if r[0] == t and r[2] == t]

    def edge_weights_per_relation(self, graph: PopulationGraph) -> list[Tensor]:
        """``B_n`` for each relation of :meth:`relations` (one shared weight by default)."""
        b = self.edge_type_weights
        if self._edge_types is None:
            return [b[0]] * len(self.relations(graph))
        return list(b.unbind(0))

    def age_groups(self, graph: PopulationGraph) -> Tensor:
        attrs = graph.node_attrs(self.node_type)
        if self.age_attr not in attrs:
            raise ValueError(
                f"SEIRM needs the agents' age groups: the graph has no {self.node_type!r} "
                f"attribute {self.age_attr!r} (ints 0..7); add it with graph.set_node_attrs("
                f"{self.node_type!r}, {self.age_attr}=...)."
            )
        return attrs[self.age_attr]

    def contact_scale(self, graph: PopulationGraph, rel: Relation) -> Tensor:
        """``1 / Ibar[a]`` per age group for relation ``rel`` (``1`` without normalisation)."""
        cache = self._scales.setdefault(graph, {})
        if rel not in cache:
            age = self.age_groups(graph)
            groups = len(AGE_GROUPS)
            if not self.normalize:
                scale = torch.ones(groups, device=age.device)
            else:
                degree = graph.csr(rel).degree.to(torch.float64)
                total = torch.zeros(groups, dtype=torch.float64, device=age.device)
                total.index_add_(0, age, degree)
                count = torch.bincount(age, minlength=groups).to(torch.float64)
                mean = total / count.clamp_min(1)
                scale = torch.where(mean > 0, 1 / mean.clamp_min(1e-300), torch.zeros_like(mean))
            cache[rel] = scale.to(self.kernel.dtype)
        return cache[rel]

    def per_agent(self, graph: PopulationGraph, key: object, values: Tensor) -> Tensor:
        """``values[age_group]``, ``[N]``: a per-age-group constant for every agent, cached
        per graph (while ``values`` is unchanged), so that a step neither gathers it again nor
        keeps a copy for backward."""
        age = self.age_groups(graph)
        if values.requires_grad:  # part of this run's autograd graph: never reused
            return values[age]
        cache = self._per_agent.setdefault(graph, {})
        stamp = tuple((v.data_ptr(), v._version, v.dtype, v.device) for v in (values, age))
        hit = cache.get(key)
        # the same objects, unchanged since: a new tensor at a freed one's address (version 0
        # both) is another tensor; holding the pair keeps their ids from being reused
        if hit is None or hit[0] != stamp or hit[2][0] is not values or hit[2][1] is not age:
            hit = cache[key] = (stamp, values[age], (values, age))
        return hit[1]

    def prepare(self, graph: PopulationGraph, whole_graph: PopulationGraph) -> None:
        """``1 / Ibar`` averages contacts over all agents of an age group: a part of the
        population (a rank of a partitioned run) takes it from the whole graph."""
        self._scales[graph] = {
            rel: self.contact_scale(whole_graph, rel) for rel in self.relations(graph)
        }

    def check(self, graph: PopulationGraph) -> None:
        check_rate(self.reproduction_number, "reproduction_number")
        check_probability(self.mortality, "mortality")
        check_rate(self.edge_type_weights, "edge_type_weights")
        if self.mortality.dim() > 0 and self.mortality.shape != (len(AGE_GROUPS),):
            raise ValueError(
                f"mortality must be a scalar or one probability per age group "
                f"({len(AGE_GROUPS)}), got shape {list(self.mortality.shape)}."
            )
        if self.reproduction_number.dim() > 1:
            raise ValueError("reproduction_number must be a scalar or [T] (one per step).")
        relations = self.relations(graph)
        if self._edge_types is not None and self.edge_type_weights.shape != (len(relations),):
            raise ValueError(
                f"edge_type_weights has {self.edge_type_weights.numel()} values for "
                f"{len(relations)} relations {relations}; name one weight per edge type."
            )
        age = self.age_groups(graph)
        n = graph.num_nodes(self.node_type)
        if age.shape != (n,) or age.dtype not in (torch.int32, torch.int64):
            raise ValueError(
                f"{self.age_attr!r} must be an integer tensor [{n}], got {age.dtype} "
                f"{list(age.shape)}."
            )
        if age.numel() and (int(age.min()) < 0 or int(age.max()) >= len(AGE_GROUPS)):
            raise ValueError(
                f"{self.age_attr!r} has values in [{int(age.min())}, {int(age.max())}]; age "
                f"groups are 0..{len(AGE_GROUPS) - 1} ({', '.join(AGE_GROUPS)})."
            )
        self._observed_age = age  # for the per-age observables of this run

    # ------------------------------------------------------------------ the model

    def reproduction_number_at(self, t: int) -> Tensor:
        r = self.reproduction_number
        return r if r.dim() == 0 else r[min(t, r.shape[0] - 1)]

    def _slot_rates(self, w: Tensor, mean: float, sd: float) -> tuple[Tensor, Tensor]:
        """``A_stage kappa`` per slot of E and I (rates per day, float64) when the stay in E is
        fixed, so that the infection age follows from the slot.

        An agent is infected at a uniform time within its step, and a stay that ends in a step
        ends at that same point within it (a fixed stay exactly, a random one on average): the
        step's kernel share is split there, ``A_E`` before the E -> I moment and ``A_I`` after,
        nothing after I ends. A slot of I whose exit hazard is ``h`` weighs
        ``(1 - h) w + h w_before``. So the infectiousness over a whole infection with fixed
        stays is ``A_E F(d_E) + A_I (F(d_E + d_I) - F(d_E))`` whatever ``dt``, and with a
        random stay in I its error is second order in ``dt``."""
        dt = self.dt
        k_e, k_i = self.exposed_hazard.numel(), self.infectious_hazard.numel()
        a_e, a_i = self.stage_infectiousness.to(torch.float64)
        w_e, w_i = a_e * _pad(w, k_e), a_i * _pad(w[k_e:], k_i)
        if k_e <= w.numel():
            before = kernel_share_before(k_e * dt, mean, sd, dt)
            w_e[-1] = a_e * before + a_i * (w[k_e - 1] - before)
        # slots of I within the kernel's support: ages k_e + k + 1 steps at their ends
        m = max(0, min(k_i, w.numel() - k_e))
        if m:
            h = self.infectious.hazard(dt)[:m]
            ends = (torch.arange(m, dtype=torch.float64) + k_e + 1) * dt
            before = kernel_share_before(ends, mean, sd, dt)
            w_i[:m] = a_i * ((1 - h) * w[k_e : k_e + m] + h * before)
        return w_e / dt, w_i / dt

    def kernel_rate(self) -> Tensor:
        """``kappa_k = W_k / dt``: the infectiousness density per day over step ``k`` since
        infection (the kernel's mass in the step divided by the step length), float32 ``[K]``.
        Summed over an infection, ``kappa_k dt`` adds up to one whatever ``dt``."""
        return self.kernel / self.dt

    def infectiousness(self, state: State, mode: Mode) -> Tensor:
        """Per-agent infectiousness rate per day, ``A_stage * kappa(age of infection)``,
        ``[N, *R]`` (see :meth:`kernel_rate`; the infection phase multiplies by ``dt``)."""
        dtype = state["E"].dtype
        if self.exposed.kind == "fixed":
            # Infection age follows from the stage: k steps in E, or K_E + k in I.
            w_e, w_i = self.slot_rate_E.to(dtype), self.slot_rate_I.to(dtype)
            return _slot_sum(state["E"], w_e) + _slot_sum(state["I"], w_i)
        w = self.kernel_rate().to(dtype)
        a_e, a_i = self.stage_infectiousness.to(w.dtype)
        h = state["infected_since"]
        if mode == "expected":
            return _slot_sum(h, _pad(self.stage_profile(w), h.shape[1]))
        age_weight = _slot_sum(h, _pad(w, h.shape[1]))
        return age_weight * (a_e * _slot_sum(state["E"]) + a_i * _slot_sum(state["I"]))

    def stage_profile(self, w: Tensor) -> Tensor:
        """``w[k] * (A_E P(in E | infected k steps ago) + A_I P(in I | ...))``."""
        pe, pi = self.exposed.pmf(self.dt), self.infectious.pmf(self.dt)
        k = w.shape[0]
        # P(D_E + D_I = m + 2) for m = 0, 1, ...: the convolution of the two pmfs
        total = torch.nn.functional.conv1d(
            pe.view(1, 1, -1), pi.flip(0).view(1, 1, -1), padding=pi.numel() - 1
        ).view(-1)
        cdf_e = torch.cumsum(_pad(pe, k, shift=1), 0)  # P(D_E <= k)
        cdf_both = torch.cumsum(_pad(total, k, shift=2), 0)  # P(D_E + D_I <= k)
        a_e, a_i = self.stage_infectiousness.to(torch.float64)
        profile = a_e * (1 - cdf_e) + a_i * (cdf_e - cdf_both)
        return (w.to(torch.float64) * profile).to(w.dtype)

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
        k_e, k_i = self.exposed_hazard.numel(), self.infectious_hazard.numel()
        zeros = torch.zeros(shape, dtype=dtype, device=graph.device)
        e = torch.zeros((n, k_e, *cols), dtype=dtype, device=graph.device)
        e = torch.cat([infected.unsqueeze(1), e[:, 1:]], 1)
        state = {
            "S": 1 - infected,
            "E": e,
            "I": torch.zeros((n, k_i, *cols), dtype=dtype, device=graph.device),
            "R": zeros,
            "M": zeros.clone(),
        }
        if self.exposed.kind != "fixed":
            k_w = self.kernel.numel()
            h = torch.zeros((n, k_w, *cols), dtype=dtype, device=graph.device)
            state["infected_since"] = torch.cat([infected.unsqueeze(1), h[:, 1:]], 1)
        return self._with_interventions(graph, state, streams, mode)

    def intervention_factor(self, hook: str, state: State, ctx: StepContext) -> Tensor | None:
        """The product over the interventions of a per-agent factor (``"susceptibility_factor"``
        or ``"mortality_factor"``); ``None`` when none applies."""
        out = None
        for iv in self.interventions:
            factor = getattr(iv, hook)(state, ctx)
            if factor is not None:
                out = factor if out is None else out * factor
        return out

    def _with_interventions(
        self, graph: PopulationGraph, state: State, streams: RandomStreams, mode: Mode
    ) -> State:
        for iv in self.interventions:
            state.update(iv.initial_state(graph, state, streams, mode, self.dt))
        return state

    def observe(self, state: State) -> dict[str, Tensor]:
        out = {
            c: fixed_order_sum(state[c].sum(1) if c in ("E", "I") else state[c])
            for c in self.compartments
        }
        if self.by_age:
            for c in self.compartments:
                v = state[c].sum(1) if c in ("E", "I") else state[c]
                out[f"{c}_by_age"] = self._tally_by_age(v)
        for iv in self.interventions:
            out.update(iv.observe(state))
        return out

    def total_flows(self, flows: Mapping[str, Tensor]) -> dict[str, Tensor]:
        out = {name: fixed_order_sum(value) for name, value in flows.items()}
        if self.by_age:
            for name in ("infections", "deaths"):
                out[f"{name}_by_age"] = self._tally_by_age(flows[name])
        return out

    def _tally_by_age(self, value: Tensor) -> Tensor:
        """Sum over the agents of each age group: ``[8]`` or ``[8, R]``."""
        age = self._observed_age
        assert age is not None, "check(graph) runs before the first step"
        out = value.new_zeros((len(AGE_GROUPS), *value.shape[1:]))
        return out.index_add(0, age.to(value.device), value)

    def extra_repr(self) -> str:
        return f"exposed={self.exposed}, infectious={self.infectious}, normalize={self.normalize}"


def _advance(stage: Tensor, leave: Tensor | None, entering: Tensor) -> Tensor:
    """A stage split by steps spent (``[N, K, *R]``) one step on: who stayed (all but
    ``leave``) moves up one slot and ``entering`` (``[N, *R]``) fills the first."""
    stayed = stage if leave is None else stage - leave
    return torch.cat([entering.unsqueeze(1), stayed[:, :-1]], 1)


def _exits(
    ctx: StepContext, name: str, hazard: Tensor, stage: Tensor, kind: str
) -> tuple[Tensor | None, Tensor]:
    """Who leaves a stage, by slot (``None`` for a fixed stay: the last slot, whose hazard is
    the only non-zero one, 1), and their number per agent ``[N, *R]``."""
    if kind == "fixed":  # hazards 0, ..., 0, 1: the same values without the products
        return None, stage[:, -1].contiguous()
    leave = _leave(ctx, name, hazard, stage, False)
    return leave, _slot_sum(leave)


def _leave(ctx: StepContext, name: str, hazard: Tensor, stage: Tensor, fixed: bool) -> Tensor:
    """Agents leaving a stage, by steps spent (``[N, K, *R]``): for a fixed duration (hazards
    0 then 1) no draws, else one draw per agent."""
    h = _stage_column(hazard.to(stage.dtype), stage)
    if fixed:
        return stage * h
    return ctx.flow(name, 1 - h, stage)


def _pad(x: Tensor, k: int, shift: int = 0) -> Tensor:
    """``x`` shifted right by ``shift`` and cut or zero-padded to length ``k``."""
    out = torch.zeros(k, dtype=x.dtype, device=x.device)
    m = max(0, min(k - shift, x.numel()))
    out[shift : shift + m] = x[:m]
    return out


def _slot_sum(stage: Tensor, values: Tensor | None = None) -> Tensor:
    """``sum_k values[k] * stage[:, k]`` (``values`` default 1): ``[N, K, *R] -> [N, *R]``.

    One matrix-vector product for ``[N, K]`` below float64: summing a short inner dimension
    with ``(stage * values).sum(1)`` is 2-4x slower on CPU (two passes, and a reduction kernel
    per agent). The BLAS product's order of summation can depend on where a row sits in
    memory, so a partitioned run (whose rows sit elsewhere) could differ from the whole run
    in the last bit; float64, the dtype that checks runs against each other, sums in the
    same order for every row."""
    if values is None:
        values = stage.new_ones(stage.shape[1])
    if stage.dim() == 2 and stage.dtype != torch.float64:
        return stage @ values.to(stage.dtype)
    return (stage * _stage_column(values.to(stage.dtype), stage)).sum(1)


def _stage_column(values: Tensor, like: Tensor) -> Tensor:
    """``[K]`` per-stage values shaped to broadcast against ``[N, K, *R]``."""
    return values.reshape(1, -1, *([1] * (like.dim() - 2)))


def _per_agent(values: Tensor, like: Tensor) -> Tensor:
    """A scalar or ``[N]`` per-agent tensor shaped to broadcast against ``[N, *R]``."""
    if values.dim() == 0:
        return values
    return values.reshape(-1, *([1] * (like.dim() - 1)))
