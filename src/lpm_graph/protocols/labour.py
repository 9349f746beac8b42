r"""Labour market: employment, job loss, hiring and unemployment claims over a contact graph.

Agents carry an employment status (employed, unemployed, or outside the labour force), an
``area``, an ``occupation`` and an ``age_group``. In each step of length ``dt`` (a week when
the rates are weekly, as unemployment claims are):

1. **job loss** — an agent employed at the start of the step loses their job with probability
   :math:`1 - e^{-h^{\mathrm{loss}}_i \Delta t}`,

   .. math::
       h^{\mathrm{loss}}_i(t) = \delta_{o(i)}\, \rho_{a(i)}\,
           \exp\big(\beta^\top x_{t, g(i)}\big)\, \big(1 + \phi\, u_i(t)\big)\,
           \big(1 + \kappa_s\, s_i(t) + \kappa_q\, q_i(t)\big)

2. **hiring** — an agent unemployed at the start of the step finds a job with probability
   :math:`1 - e^{-h^{\mathrm{hire}}_i \Delta t}`,

   .. math::
       h^{\mathrm{hire}}_i(t) = \eta_{g(i)}\, \exp\big(\gamma^\top x_{t, g(i)}\big)\,
           \big(1 + \psi\, e_i(t)\big)

3. **claims** — each new job loser files an unemployment claim with probability
   :math:`c_{g(i)}` (the take-up rate); the claims of a step are the observable.

with :math:`o(i)`, :math:`g(i)` and :math:`a(i)` the agent's occupation, area and age group;
:math:`\delta_o` the baseline job-loss hazard of occupation ``o``, :math:`\rho_a` an optional
relative job-loss hazard of age group ``a``; :math:`x_t` the observed drivers of step ``t``
(``[D]`` for the whole population or ``[A, D]`` per area: case counts, a policy stringency
index, ...) with sensitivities :math:`\beta` (job loss) and :math:`\gamma` (hiring);
:math:`\eta_g` the baseline hiring hazard of area ``g``; and the peer terms, one message-passing
aggregation over the peer relations (work and household contacts, say) with edge weights
:math:`w_{ji}`:

.. math::
    u_i = \frac{\sum_{j \to i} w_{ji}\, U_j}{\sum_{j \to i} w_{ji}\, L_j}, \qquad
    e_i = \frac{\sum_{j \to i} w_{ji}\, E_j}{\sum_{j \to i} w_{ji}\, L_j} = 1 - u_i

the unemployed and employed shares of an agent's contacts in the labour force (``L_j = 1``);
both are 0 for an agent with no such contact. :math:`s_i` and :math:`q_i` in ``[0, 1]`` are
the agent's sickness and isolation, read through the ports ``sick`` and ``isolating`` from
an epidemic simulated beside the market (:class:`~lpm_graph.protocols.compose.Compose`), with
sensitivities :math:`\kappa_s` (``sick_job_loss``) and :math:`\kappa_q`
(``isolation_job_loss``); alone, the market has no epidemic and both are 0.

The job-loss and hiring phases both read the state at the start of the step, so their order
does not matter, an agent who loses a job cannot be hired in the same step, and
``employed + unemployed`` equals the (fixed) labour force after every step, in both modes. Rates
are hazards per unit time: halving ``dt`` halves the per-step hazard and the process tends to the
continuous-time two-state (E, U) Markov chain as ``dt -> 0``.

Sources. The two-state flow model with job-finding and separation hazards, converted to
per-period probabilities by :math:`1 - e^{-h \Delta t}`, follows Shimer (2012), *Reassessing
the ins and outs of unemployment*, Rev. Econ. Dyn. 15(2):127-148. Occupation-specific
separation rates and unemployment driven by an exogenous shock series are taken from the
labour-flow models of del Rio-Chanona, Mealy, Pichler, Lafond and Farmer (2020),
*Supply and demand shocks in the COVID-19 pandemic: an industry and occupation perspective*,
Oxford Rev. Econ. Policy 36(S1):S94-S137, and del Rio-Chanona, Mealy, Beguerisse-Díaz, Lafond
and Farmer (2021), *Occupational mobility and automation: a data-driven network model*,
J. R. Soc. Interface 18:20200898, without their occupational mobility network (an agent keeps
its occupation); here the shock enters as a proportional-hazards term
:math:`\exp(\beta^\top x_t)` (Cox 1972, *Regression models and life-tables*, J. R. Stat.
Soc. B 34(2):187-220) so that its size is calibrated rather than assumed.
Hiring through employed contacts (:math:`\psi`) is the referral mechanism of Calvó-Armengol
and Jackson (2004), *The effects of social networks on employment and inequality*, Am. Econ.
Rev. 94(3):426-454. The job-loss peer term (:math:`\phi`) is a reduced-form assumption of this
library: layoffs cluster within workplaces (a firm shedding workers) and households share
shocks; set ``peer_job_loss=0`` to remove it. Claims as a fraction of job losers follow the
insured-unemployment take-up of Blank and Card (1991), *Recent trends in insured and
uninsured unemployment: is there an explanation?*, Q. J. Econ. 106(4):1157-1189; a stringency
driver can be the index of the Oxford COVID-19 Government Response Tracker (Hale et al. 2021,
Nat. Hum. Behav. 5:529-538). The default rates are illustrative, not estimates: per week,
``delta = 0.004``, ``eta = 0.08`` and ``c = 0.4`` give a steady-state unemployment rate
``delta / (delta + eta)`` of 4.8 % and weekly claims of 0.15 % of the labour force, the order
of US figures before 2020.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .._checks import check_probability, check_rate
from ..layers.samplers import bernoulli_st
from ..ops import fixed_order_sum, propagate, resolve_backend
from .base import Mode, Phase, Port, Protocol, State, StepContext, seed_infected

if TYPE_CHECKING:
    from ..graph import PopulationGraph, Relation
    from ..layers.samplers import RandomStreams
    from ..ops import CSR

__all__ = [
    "LABOUR_FORCE_AGES",
    "LabourMarket",
    "add_labour_attributes",
    "labour_population",
]

LABOUR_FORCE_AGES: tuple[int, int] = (20, 64)
"""Ages (years, inclusive) from which :func:`add_labour_attributes` draws the labour force
(age groups 1-5, i.e. 20-69, when the graph has age groups only)."""

NUM_AGE_GROUPS = 8


@dataclass
class _Run:
    """Per-agent attributes of one run, read from the graph and validated once."""

    graph: weakref.ReferenceType[PopulationGraph]
    labour_force: Tensor  # [N] 0/1, float64
    num_areas: int
    area: Tensor  # [N] long
    occupation: Tensor | None  # [N] long, when job_loss_rate is per occupation
    age_group: Tensor | None  # [N] long, when relative_job_loss is given
    peers: list[tuple[CSR, Tensor | None]]  # the peer relations' CSRs and edge weights
    peer_total: Tensor  # [N] float64: sum_j w_ji L_j over the peer relations
    # (u, e) of the last state seen: job loss and hiring read the same start-of-step state
    shares: tuple[Tensor, tuple[Tensor, Tensor]] | None = None


class _JobLoss(Phase):
    """Employed -> unemployed with probability ``1 - exp(-h_loss dt)``; records
    ``"job_losses"``."""

    name = "job_loss"

    def __init__(self, protocol: LabourMarket) -> None:
        super().__init__(protocol)

    def forward(self, graph: PopulationGraph, state: State, ctx: StepContext) -> State:
        p = self.owner
        run = p.run_attributes(graph)
        hazard = p.job_loss_hazard(
            run, ctx.start, ctx.t, sick=ctx.port("sick"), isolating=ctx.port("isolating")
        )
        losses = ctx.flow(self.name, torch.exp(-hazard * ctx.dt), ctx.start["employed"])
        ctx.flows["job_losses"] = losses
        return {
            **state,
            "employed": state["employed"] - losses,
            "unemployed": state["unemployed"] + losses,
        }

    def extra_repr(self) -> str:
        return (
            "E -> U, h = delta[occupation] rho[age] exp(beta . x_t) (1 + phi u_i) "
            "(1 + kappa_s s_i + kappa_q q_i)"
        )


class _Hiring(Phase):
    """Unemployed (at the start of the step) -> employed with probability
    ``1 - exp(-h_hire dt)``; records ``"hires"``."""

    name = "hiring"

    def __init__(self, protocol: LabourMarket) -> None:
        super().__init__(protocol)

    def forward(self, graph: PopulationGraph, state: State, ctx: StepContext) -> State:
        p = self.owner
        run = p.run_attributes(graph)
        hazard = p.hiring_hazard(run, ctx.start, ctx.t)
        hires = ctx.flow(self.name, torch.exp(-hazard * ctx.dt), ctx.start["unemployed"])
        ctx.flows["hires"] = hires
        return {
            **state,
            "employed": state["employed"] + hires,
            "unemployed": state["unemployed"] - hires,
        }

    def extra_repr(self) -> str:
        return "U -> E, h = eta[area] exp(gamma . x_t) (1 + psi e_i)"


class _Claims(Phase):
    """Each job loser of this step files a claim with probability ``c[area]``; records
    ``"claims"`` (no state change)."""

    name = "claims"

    def __init__(self, protocol: LabourMarket) -> None:
        super().__init__(protocol)

    def forward(self, graph: PopulationGraph, state: State, ctx: StepContext) -> State:
        p = self.owner
        run = p.run_attributes(graph)
        losses = ctx.flows["job_losses"]
        take_up = p.claim_probability
        if take_up.dim() > 0:
            take_up = _per_agent(take_up[run.area], losses)
        ctx.flows["claims"] = ctx.flow(self.name, 1 - take_up, losses)
        return state

    def extra_repr(self) -> str:
        return "claims = job losses filed with probability c[area]"


class LabourMarket(Protocol):
    r"""Employment, job loss, hiring and unemployment claims (see the module docstring for
    the rules and their sources).

    State (agents first, replicates last): ``employed``, ``unemployed`` and
    ``not_in_labour_force``, 0/1 indicators ``[N]`` (``[N, R]``) in a stochastic run and
    probabilities in expected mode; ``employed + unemployed`` is the labour-force indicator.
    Counts per step: ``employed``, ``unemployed``, ``not_in_labour_force`` and, with
    ``by_area``, ``employed_by_area`` and ``unemployed_by_area`` (``[T + 1, A]``). Flows per
    step: ``job_losses``, ``hires``, ``claims`` and, with ``by_area``, ``claims_by_area``
    (``[T, A]``).

    Agent attributes read from the graph (ints ``[N]``): ``area`` (``0 .. A-1``; needed when
    ``A > 1``), ``occupation`` (``0 .. O-1``; needed when ``job_loss_rate`` is per occupation),
    ``age_group`` (``0 .. 7``; needed with ``relative_job_loss``) and the labour-force
    indicator (bool or 0/1). :func:`add_labour_attributes` adds them to a
    :class:`~lpm_graph.datasets.SyntheticPopulation` graph.

    The run starts from ``initial_unemployment``; ``simulate(..., initial_infected=...)``,
    when given, names the initially unemployed instead (a count, fraction, ids, mask or
    probabilities as in :func:`~lpm_graph.protocols.base.seed_infected`; agents outside the
    labour force are dropped). Inside a :class:`~lpm_graph.protocols.compose.Compose` the
    market starts from ``initial_unemployment`` (``initial_infected`` seeds the epidemic).

    Args:
        job_loss_rate: :math:`\delta`, baseline job-loss hazard per unit time (``>= 0``),
            scalar or ``[O]`` per occupation. Default 0.004 (per week).
        hiring_rate: :math:`\eta`, baseline hiring hazard per unit time (``>= 0``), scalar or
            ``[A]`` per area. Default 0.08 (per week).
        drivers: :math:`x`, observed driver series, ``[T, D]`` (whole population) or
            ``[T, A, D]`` (per area), one row per step; standardise them (the effect is
            ``exp(beta . x)``). A run of more than ``T`` steps raises. ``None``: no drivers.
        job_loss_sensitivity: :math:`\beta`, ``[D]`` (any sign; default zeros).
        hiring_sensitivity: :math:`\gamma`, ``[D]`` (any sign; default zeros).
        peer_job_loss: :math:`\phi \ge 0`, the relative increase of the job-loss hazard of
            an agent all of whose labour-force contacts are unemployed.
        peer_hiring: :math:`\psi \ge 0`, the relative increase of the hiring hazard of an
            agent all of whose labour-force contacts are employed (referrals).
        sick_job_loss: :math:`\kappa_s \ge 0`, the relative increase of the job-loss
            hazard of a sick agent (port ``sick``; default 0).
        isolation_job_loss: :math:`\kappa_q \ge 0`, the relative increase of the job-loss
            hazard of an isolating agent (port ``isolating``; default 0).
        claim_probability: :math:`c \in [0, 1]`, claim take-up, scalar or ``[A]`` per area.
        relative_job_loss: :math:`\rho`, optional ``[8]`` relative job-loss hazards per age
            group (not learnable; ``None``: 1 for everyone).
        initial_unemployment: the unemployed at ``t = 0``: a probability for every agent in
            the labour force, a ``[N]`` tensor of probabilities (or 0/1), or the name of a
            graph attribute holding them (default ``"unemployed"``). Drawn in a stochastic
            run (stream ``"initial_unemployment"``), used as they are in expected mode.
        num_areas: ``A``; when ``None``, inferred from the per-area arguments, else from the
            graph's area attribute (its largest value + 1), else 1.
        peer_edge_types: edge types whose contacts form the peer terms (e.g.
            ``("work", "household")``); default every agent -> agent relation.
        labour_force: the graph attribute marking the labour force, or ``None`` for every
            agent.
        area_attr: name of the agents' area attribute.
        occupation_attr: name of the agents' occupation attribute.
        age_attr: name of the agents' age-group attribute.
        node_type: the agents' node type.
        dt: step length (in the time unit of the rates; weeks by default).
        by_area: also record counts and claims per area.
        backend: aggregation backend of the peer terms.
        learnable: register the rates, sensitivities, peer effects and take-up as
            ``nn.Parameter`` (default) or buffers.

    Shapes:
        ``drivers: [T, D]`` or ``[T, A, D]`` ->
        ``counts[...]: [T + 1, *R]``, ``counts[..._by_area]: [T + 1, A, *R]``,
        ``flows[...]: [T, *R]``, ``flows["claims_by_area"]: [T, A, *R]``.
    """

    compartments = ("employed", "unemployed", "not_in_labour_force")
    state_names = compartments
    flow_names = ("job_losses", "hires", "claims")
    initial_condition = "initial_unemployment"
    ports = (
        Port(
            "sick",
            "per-agent sickness s_i in [0, 1] [N, *R] (e.g. an epidemic's 'I'); raises the "
            "job-loss hazard by the factor 1 + sick_job_loss * s_i",
            "0 (nobody sick): job loss follows the drivers and peers only",
        ),
        Port(
            "isolating",
            "per-agent isolation q_i in [0, 1] [N, *R]; raises the job-loss hazard by the "
            "factor 1 + isolation_job_loss * q_i",
            "0 (nobody isolating)",
        ),
    )

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state["_run"] = None  # read again from the graph (it holds a weak reference to it)
        return state

    def __init__(
        self,
        job_loss_rate: float | Tensor = 0.004,
        hiring_rate: float | Tensor = 0.08,
        *,
        drivers: Tensor | None = None,
        job_loss_sensitivity: Sequence[float] | Tensor | None = None,
        hiring_sensitivity: Sequence[float] | Tensor | None = None,
        peer_job_loss: float | Tensor = 0.0,
        peer_hiring: float | Tensor = 0.0,
        sick_job_loss: float | Tensor = 0.0,
        isolation_job_loss: float | Tensor = 0.0,
        claim_probability: float | Tensor = 0.4,
        relative_job_loss: Sequence[float] | Tensor | None = None,
        initial_unemployment: float | Tensor | str = "unemployed",
        num_areas: int | None = None,
        peer_edge_types: Sequence[str] | None = None,
        labour_force: str | None = "labour_force",
        area_attr: str = "area",
        occupation_attr: str = "occupation",
        age_attr: str = "age_group",
        node_type: str = "agent",
        dt: float = 1.0,
        by_area: bool = True,
        backend: str | None = None,
        learnable: bool = True,
    ) -> None:
        super().__init__([_JobLoss(self), _Hiring(self), _Claims(self)], dt)
        check_rate(job_loss_rate, "job_loss_rate")
        check_rate(hiring_rate, "hiring_rate")
        check_rate(peer_job_loss, "peer_job_loss")
        check_rate(peer_hiring, "peer_hiring")
        check_rate(sick_job_loss, "sick_job_loss")
        check_rate(isolation_job_loss, "isolation_job_loss")
        check_probability(claim_probability, "claim_probability")
        x = _check_drivers(drivers)
        d = 0 if x is None else x.shape[-1]
        beta = _sensitivity(job_loss_sensitivity, d, "job_loss_sensitivity")
        gamma = _sensitivity(hiring_sensitivity, d, "hiring_sensitivity")
        self.num_areas: int | None = _resolve_areas(num_areas, hiring_rate, claim_probability, x)
        if isinstance(initial_unemployment, str):
            self.initial_unemployment: float | Tensor | str = initial_unemployment
        elif torch.is_tensor(initial_unemployment):
            check_probability(initial_unemployment, "initial_unemployment")
            self.initial_unemployment = initial_unemployment.detach()
        else:
            check_probability(initial_unemployment, "initial_unemployment")
            self.initial_unemployment = float(initial_unemployment)
        if peer_edge_types is not None and (
            isinstance(peer_edge_types, str) or not all(isinstance(e, str) for e in peer_edge_types)
        ):
            raise ValueError(
                f"peer_edge_types must be a sequence of edge-type names such as "
                f"('work', 'household'), got {peer_edge_types!r}."
            )
        self.peer_edge_types = None if peer_edge_types is None else tuple(peer_edge_types)
        resolve_backend(backend)  # an unknown backend raises here, not in the first step
        self.labour_force = labour_force
        self.area_attr = area_attr
        self.occupation_attr = occupation_attr
        self.age_attr = age_attr
        self.node_type = node_type
        self.by_area = by_area
        self.backend = backend
        for name, value in (
            ("sick_job_loss", sick_job_loss),
            ("isolation_job_loss", isolation_job_loss),
        ):
            if torch.as_tensor(value).dim() != 0:
                raise ValueError(f"{name} must be a scalar, got {value!r}.")
        for name, value, constraint, unit in (
            ("job_loss_rate", job_loss_rate, "nonnegative", "1/day"),
            ("hiring_rate", hiring_rate, "nonnegative", "1/day"),
            ("job_loss_sensitivity", beta, "real", "per unit of driver"),
            ("hiring_sensitivity", gamma, "real", "per unit of driver"),
            ("peer_job_loss", peer_job_loss, "nonnegative", "1/day"),
            ("peer_hiring", peer_hiring, "nonnegative", "1/day"),
            ("sick_job_loss", sick_job_loss, "nonnegative", ""),
            ("isolation_job_loss", isolation_job_loss, "nonnegative", ""),
            ("claim_probability", claim_probability, "probability", "probability"),
        ):
            self.declare_parameter(
                name, value, constraint=constraint, unit=unit, learnable=learnable
            )
        self.register_buffer("drivers", (torch.zeros(0, 0) if x is None else x).detach().clone())
        if relative_job_loss is not None:
            rho = torch.as_tensor(relative_job_loss, dtype=torch.get_default_dtype())
            if rho.shape != (NUM_AGE_GROUPS,):
                raise ValueError(
                    f"relative_job_loss needs one value per age group ({NUM_AGE_GROUPS}), got "
                    f"shape {list(rho.shape)}."
                )
            check_rate(rho, "relative_job_loss")
            self.register_buffer("relative_job_loss", rho)
        else:
            self.relative_job_loss = None
        self._run: _Run | None = None

    # ------------------------------------------------------------------ validation

    def check(self, graph: PopulationGraph) -> None:
        """Validate the parameters against the graph and read the agents' attributes."""
        self._run = self._read(graph)

    def _check_parameters(self, a: int) -> None:
        check_rate(self.job_loss_rate, "job_loss_rate")
        check_rate(self.hiring_rate, "hiring_rate")
        check_rate(self.peer_job_loss, "peer_job_loss")
        check_rate(self.peer_hiring, "peer_hiring")
        check_rate(self.sick_job_loss, "sick_job_loss")
        check_rate(self.isolation_job_loss, "isolation_job_loss")
        check_probability(self.claim_probability, "claim_probability")
        for name in ("peer_job_loss", "peer_hiring", "sick_job_loss", "isolation_job_loss"):
            if getattr(self, name).dim() != 0:
                raise ValueError(
                    f"{name} must be a scalar, got shape {list(getattr(self, name).shape)}."
                )
        for name in ("hiring_rate", "claim_probability"):
            value = getattr(self, name)
            if value.dim() > 1 or (value.dim() == 1 and value.shape != (a,)):
                raise ValueError(
                    f"{name} must be a scalar or one value per area [{a}], got shape "
                    f"{list(value.shape)}."
                )
        if self.job_loss_rate.dim() > 1:
            raise ValueError(
                f"job_loss_rate must be a scalar or one rate per occupation [O], got shape "
                f"{list(self.job_loss_rate.shape)}."
            )
        x = self.drivers
        d = x.shape[-1] if x.numel() else 0
        if x.numel() and x.dim() == 3 and x.shape[1] != a:
            raise ValueError(
                f"drivers has shape {list(x.shape)}: per-area drivers [T, A, D] need A = {a} areas."
            )
        for name in ("job_loss_sensitivity", "hiring_sensitivity"):
            value = getattr(self, name)
            if value.shape != (d,):
                raise ValueError(
                    f"{name} must have one value per driver [{d}], got shape {list(value.shape)}."
                )
            _check_finite(value, name)

    def _read(self, graph: PopulationGraph) -> _Run:
        n = graph.num_nodes(self.node_type)
        attrs = graph.node_attrs(self.node_type)
        device = graph.device
        a = self.num_areas
        if a is None:  # from the graph: the largest area id + 1
            has = self.area_attr in attrs and attrs[self.area_attr].numel() > 0
            a = max(1, int(attrs[self.area_attr].max()) + 1) if has else 1
        self._check_parameters(a)
        if self.labour_force is None:
            lf = torch.ones(n, dtype=torch.float64, device=device)
        else:
            value = self._attribute(attrs, self.labour_force, "labour_force", "labour force")
            lf = value.to(torch.float64)
            if value.shape != (n,) or not bool(((lf == 0) | (lf == 1)).all()):
                raise ValueError(
                    f"{self.labour_force!r} must be a bool (or 0/1) tensor [{n}], got "
                    f"{value.dtype} {list(value.shape)}."
                )
        if a > 1 or self.area_attr in attrs:
            area = self._index(attrs, self.area_attr, "area_attr", a, n, "areas")
        else:
            area = torch.zeros(n, dtype=torch.long, device=device)
        occupation = None
        if self.job_loss_rate.dim() == 1:
            o = self.job_loss_rate.shape[0]
            occupation = self._index(
                attrs, self.occupation_attr, "occupation_attr", o, n, "occupations"
            )
        age = None
        if self.relative_job_loss is not None:
            age = self._index(attrs, self.age_attr, "age_attr", NUM_AGE_GROUPS, n, "age groups")
        peers = [(graph.csr(rel), graph.edge_weight(rel)) for rel in self._relations(graph)]
        total = torch.zeros(n, dtype=torch.float64, device=device)
        for csr, weight in peers:
            total = total + propagate(csr, lf, weight, "sum", self.backend)
        return _Run(weakref.ref(graph), lf, a, area, occupation, age, peers, total)

    def _attribute(self, attrs: Mapping[str, Tensor], name: str, arg: str, what: str) -> Tensor:
        if name not in attrs:
            raise ValueError(
                f"LabourMarket needs the agents' {what}: the graph has no {self.node_type!r} "
                f"attribute {name!r} (it has {sorted(attrs)}); add it with "
                f"graph.set_node_attrs({self.node_type!r}, {name}=...), use "
                f"add_labour_attributes(graph), or pass {arg}=... naming another attribute."
            )
        return attrs[name]

    def _index(
        self, attrs: Mapping[str, Tensor], name: str, arg: str, size: int, n: int, what: str
    ) -> Tensor:
        value = self._attribute(attrs, name, arg, what)
        if value.shape != (n,) or value.dtype not in (torch.int32, torch.int64):
            raise ValueError(
                f"{name!r} must be an integer tensor [{n}], got {value.dtype} {list(value.shape)}."
            )
        if n and (int(value.min()) < 0 or int(value.max()) >= size):
            raise ValueError(
                f"{name!r} has values in [{int(value.min())}, {int(value.max())}], outside the "
                f"{size} {what} 0..{size - 1} of the protocol's parameters."
            )
        return value.long()

    def _relations(self, graph: PopulationGraph) -> list[Relation]:
        t = self.node_type
        if self.peer_edge_types is None:
            return [r for r in graph.relations if r[0] == t and r[2] == t]
        known = [r[1] for r in graph.relations if r[0] == t and r[2] == t]
        unknown = [e for e in self.peer_edge_types if e not in known]
        if unknown:
            raise ValueError(
                f"peer_edge_types {unknown} are not {t!r} -> {t!r} relations of this graph; "
                f"it has {known}."
            )
        return [graph.relation((t, e, t)) for e in self.peer_edge_types]

    def run_attributes(self, graph: PopulationGraph) -> _Run:
        """The validated per-agent attributes of ``graph`` (read once per run by
        :meth:`check`; read again when the graph changes)."""
        if self._run is None or self._run.graph() is not graph:
            self._run = self._read(graph)
        return self._run

    # ------------------------------------------------------------------ the model

    def driver_rows(self, t: int) -> Tensor | None:
        """The drivers of step ``t`` (``[D]`` or ``[A, D]``), ``None`` without drivers."""
        x = self.drivers
        if not x.numel():
            return None
        if t >= x.shape[0]:
            raise ValueError(
                f"drivers cover {x.shape[0]} steps but step {t} needs row {t}; pass a driver "
                "series with one row per simulated step."
            )
        return x[t]

    def peer_shares(self, run: _Run, start: State) -> tuple[Tensor, Tensor] | None:
        """``(u, e)``: the unemployed and employed shares of each agent's labour-force
        contacts (``[N, *R]``), ``None`` without peer relations."""
        if not run.peers:
            return None
        unemployed = start["unemployed"]
        if run.shares is not None and run.shares[0] is unemployed:
            return run.shares[1]
        count = sum(
            propagate(csr, unemployed, weight, "sum", self.backend) for csr, weight in run.peers
        )
        assert isinstance(count, Tensor)
        total = run.peer_total.to(unemployed.dtype)
        has = (total > 0).to(unemployed.dtype)
        safe = torch.where(total > 0, total, torch.ones_like(total))
        u = count / _per_agent(safe, count)
        shares = (u, _per_agent(has, u) - u)
        run.shares = (unemployed, shares)
        return shares

    def job_loss_hazard(
        self,
        run: _Run,
        start: State,
        t: int,
        *,
        sick: Tensor | None = None,
        isolating: Tensor | None = None,
    ) -> Tensor:
        """:math:`h^{loss}_i(t)` per unit time, ``[N]`` or ``[N, *R]``; ``sick`` and
        ``isolating`` are the ports' values (``None``: 0)."""
        like = start["employed"]
        base = self.job_loss_rate
        hazard = base[run.occupation] if run.occupation is not None else base
        if run.age_group is not None:
            hazard = hazard * self.relative_job_loss[run.age_group]
        x = self.driver_rows(t)
        if x is not None:
            hazard = hazard * self._driver_factor(x, self.job_loss_sensitivity, run)
        hazard = _per_agent(hazard.to(like.dtype), like)
        shares = self.peer_shares(run, start)
        if shares is not None:
            hazard = hazard * (1 + self.peer_job_loss * shares[0])
        if sick is not None or isolating is not None:
            factor = 1
            if sick is not None:
                factor = factor + self.sick_job_loss * sick
            if isolating is not None:
                factor = factor + self.isolation_job_loss * isolating
            hazard = hazard * factor
        return hazard

    def hiring_hazard(self, run: _Run, start: State, t: int) -> Tensor:
        """:math:`h^{hire}_i(t)` per unit time, ``[N]`` or ``[N, *R]``."""
        like = start["unemployed"]
        base = self.hiring_rate
        hazard = base[run.area] if base.dim() == 1 else base
        x = self.driver_rows(t)
        if x is not None:
            hazard = hazard * self._driver_factor(x, self.hiring_sensitivity, run)
        hazard = _per_agent(hazard.to(like.dtype), like)
        shares = self.peer_shares(run, start)
        if shares is not None:
            hazard = hazard * (1 + self.peer_hiring * shares[1])
        return hazard

    @staticmethod
    def _driver_factor(x: Tensor, sensitivity: Tensor, run: _Run) -> Tensor:
        """``exp(sensitivity . x)`` per agent (``[N]``) or for everyone (scalar)."""
        effect = torch.exp(x.to(sensitivity.dtype) @ sensitivity)  # [] or [A]
        return effect[run.area] if effect.dim() == 1 else effect

    # ------------------------------------------------------------------ state and observables

    def initial_state(
        self,
        graph: PopulationGraph,
        initial_infected: object,
        streams: RandomStreams,
        replicates: int | None,
        dtype: torch.dtype,
        mode: Mode,
    ) -> State:
        run = self.run_attributes(graph)
        n = graph.num_nodes(self.node_type)
        cols = () if replicates is None else (replicates,)
        shape = (n, *cols)
        lf = _column(run.labour_force.to(dtype), len(shape))
        if initial_infected is not None:
            unemployed = seed_infected(initial_infected, shape, streams, dtype, graph.device, mode)
        else:
            p = self._initial_probability(graph, n, dtype)
            p = _column(p, len(shape)).expand(shape)
            if mode == "expected":
                unemployed = p
            else:
                u = streams.uniform("initial_unemployment", 0, tuple(p.shape), p.dtype)
                unemployed = bernoulli_st(p, uniform=u)
        unemployed = unemployed * lf
        return {
            "employed": lf - unemployed,
            "unemployed": unemployed,
            "not_in_labour_force": (1 - lf).expand(shape).contiguous(),
        }

    def _initial_probability(self, graph: PopulationGraph, n: int, dtype: torch.dtype) -> Tensor:
        value = self.initial_unemployment
        if isinstance(value, str):
            attrs = graph.node_attrs(self.node_type)
            value = self._attribute(attrs, value, "initial_unemployment", "initial unemployment")
        elif not torch.is_tensor(value):
            return torch.tensor(value, dtype=dtype, device=graph.device)
        if value.shape != (n,):
            raise ValueError(
                f"initial_unemployment has shape {list(value.shape)}; give one probability per "
                f"agent [{n}] or a single float."
            )
        value = value.to(device=graph.device, dtype=dtype)
        check_probability(value, "initial_unemployment")
        return value

    def observe(self, state: State) -> dict[str, Tensor]:
        out = {c: fixed_order_sum(state[c]) for c in self.compartments}
        if self.by_area:
            for c in ("employed", "unemployed"):
                out[f"{c}_by_area"] = self._tally_by_area(state[c])
        return out

    def total_flows(self, flows: Mapping[str, Tensor]) -> dict[str, Tensor]:
        out = {name: fixed_order_sum(value) for name, value in flows.items()}
        if self.by_area:
            out["claims_by_area"] = self._tally_by_area(flows["claims"])
        return out

    def _tally_by_area(self, value: Tensor) -> Tensor:
        """Sum over the agents of each area: ``[A]`` or ``[A, R]``."""
        assert self._run is not None, "check(graph) runs before the first step"
        out = value.new_zeros((self._run.num_areas, *value.shape[1:]))
        return out.index_add(0, self._run.area.to(value.device), value)

    def extra_repr(self) -> str:
        edges = "all" if self.peer_edge_types is None else list(self.peer_edge_types)
        return f"num_areas={self.num_areas}, peer_edge_types={edges}"


# ---------------------------------------------------------------------------- input checks


def _check_finite(value: Tensor, name: str) -> None:
    if not bool(torch.isfinite(value.detach()).all()):
        raise ValueError(f"{name} contains NaN or infinite values; pass finite numbers.")


def _check_drivers(drivers: Tensor | None) -> Tensor | None:
    if drivers is None:
        return None
    if not torch.is_tensor(drivers):
        raise ValueError(
            f"drivers must be a tensor [T, D] or [T, A, D], got {type(drivers).__name__}; "
            "convert with torch.as_tensor(...)."
        )
    if drivers.dim() not in (2, 3) or drivers.shape[0] == 0 or drivers.shape[-1] == 0:
        raise ValueError(
            f"drivers must have shape [T, D] (one row of D drivers per step) or [T, A, D] "
            f"(per area), with T, D >= 1; got {list(drivers.shape)}"
            + (" (a single series: use drivers[:, None])" if drivers.dim() == 1 else "")
            + "."
        )
    if not drivers.is_floating_point():
        drivers = drivers.to(torch.get_default_dtype())
    _check_finite(drivers, "drivers")
    return drivers


def _sensitivity(value: Sequence[float] | Tensor | None, d: int, name: str) -> Tensor:
    if value is None:
        return torch.zeros(d)
    t = value if torch.is_tensor(value) else torch.as_tensor(value, dtype=torch.get_default_dtype())
    if t.shape != (d,):
        raise ValueError(
            f"{name} must have one value per driver [{d}], got shape {list(t.shape)}"
            + ("; pass drivers=... first." if d == 0 else ".")
        )
    _check_finite(t, name)
    return t


def _resolve_areas(
    num_areas: int | None,
    hiring_rate: float | Tensor,
    claim_probability: float | Tensor,
    drivers: Tensor | None,
) -> int | None:
    """``A`` from every argument that has one (they must agree); ``None`` if none has."""
    sizes = {}
    if num_areas is not None:
        if isinstance(num_areas, bool) or not isinstance(num_areas, int) or num_areas < 1:
            raise ValueError(f"num_areas must be a positive int, got {num_areas!r}.")
        sizes["num_areas"] = num_areas
    for name, value in (("hiring_rate", hiring_rate), ("claim_probability", claim_probability)):
        t = torch.as_tensor(value)
        if t.dim() > 1:
            raise ValueError(
                f"{name} must be a scalar or one value per area [A], got shape {list(t.shape)}."
            )
        if t.dim() == 1:
            sizes[name] = t.shape[0]
    if drivers is not None and drivers.dim() == 3:
        sizes["drivers"] = drivers.shape[1]
    if len(set(sizes.values())) > 1:
        raise ValueError(f"the number of areas differs between arguments: {sizes}.")
    return next(iter(sizes.values()), None)


def _per_agent(values: Tensor, like: Tensor) -> Tensor:
    """A scalar or ``[N]`` tensor shaped to broadcast against ``[N, *R]``."""
    return _column(values, like.dim())


def _column(values: Tensor, ndim: int) -> Tensor:
    """A scalar or ``[N]`` tensor shaped to broadcast against an ``ndim``-dimensional state."""
    if values.dim() == 0:
        return values
    return values.reshape(-1, *([1] * (ndim - 1)))


# ---------------------------------------------------------------------------- populations


def add_labour_attributes(
    graph: PopulationGraph,
    *,
    num_areas: int = 4,
    num_occupations: int = 4,
    unemployment: float = 0.04,
    node_type: str = "agent",
    seed: int = 0,
) -> PopulationGraph:
    """A copy of ``graph`` whose agents carry the attributes :class:`LabourMarket` reads.

    Adds ``labour_force`` and ``unemployed`` (bool), ``area`` and ``occupation`` (int64):

    * **labour force**: on a :class:`~lpm_graph.datasets.SyntheticPopulation` graph (with a
      ``workplace`` attribute) the workers (``workplace >= 0``, employed) plus, as the
      unemployed, non-working agents of working age (:data:`LABOUR_FORCE_AGES`, by ``age``
      or else ``age_group``) drawn at random so that the unemployed are a share
      ``unemployment`` of the labour force. Without workplaces: every agent of working age
      (every agent without age attributes), a share ``unemployment`` of them unemployed.
    * **area**: uniform over ``num_areas``, one per household when the graph has a
      ``household`` attribute (members live together), else one per agent.
    * **occupation**: uniform over ``num_occupations``, one per workplace when the graph has
      a ``workplace`` attribute (co-workers share it), else one per agent.

    The input graph is left unchanged (tensors are shared, the attribute stores copied).
    """
    for name, value in (("num_areas", num_areas), ("num_occupations", num_occupations)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}.")
    if not (isinstance(unemployment, (int, float)) and 0 <= unemployment < 1):
        raise ValueError(f"unemployment must be a share in [0, 1), got {unemployment!r}.")
    out = copy.copy(graph)
    n = out.num_nodes(node_type)
    attrs = out.node_attrs(node_type)
    gen = torch.Generator().manual_seed(seed)
    if "age" in attrs:
        working_age = (attrs["age"] >= LABOUR_FORCE_AGES[0]) & (
            attrs["age"] <= LABOUR_FORCE_AGES[1]
        )
    elif "age_group" in attrs:
        working_age = (attrs["age_group"] >= 1) & (attrs["age_group"] <= 5)
    else:
        working_age = torch.ones(n, dtype=torch.bool)
    working_age = working_age.cpu()
    if "workplace" in attrs:
        workplace = attrs["workplace"].cpu()
        employed = workplace >= 0
        pool = torch.nonzero(working_age & ~employed).flatten()
        wanted = round(unemployment / (1 - unemployment) * int(employed.sum()))
        if wanted > pool.numel():
            raise ValueError(
                f"unemployment={unemployment} needs {wanted} unemployed agents but only "
                f"{pool.numel()} non-working agents are of working age; lower it."
            )
        unemployed = torch.zeros(n, dtype=torch.bool)
        unemployed[pool[torch.randperm(pool.numel(), generator=gen)[:wanted]]] = True
        labour_force = employed | unemployed
        per_place = torch.randint(num_occupations, (int(workplace.max()) + 2,), generator=gen)
        occupation = torch.randint(num_occupations, (n,), generator=gen)
        occupation = torch.where(employed, per_place[workplace.clamp_min(0)], occupation)
    else:
        labour_force = working_age
        members = torch.nonzero(labour_force).flatten()
        wanted = round(unemployment * members.numel())
        unemployed = torch.zeros(n, dtype=torch.bool)
        unemployed[members[torch.randperm(members.numel(), generator=gen)[:wanted]]] = True
        occupation = torch.randint(num_occupations, (n,), generator=gen)
    if "household" in attrs:
        household = attrs["household"].cpu()
        area = torch.randint(num_areas, (int(household.max()) + 1,), generator=gen)[household]
    else:
        area = torch.randint(num_areas, (n,), generator=gen)
    device = out.device
    out.set_node_attrs(
        node_type,
        labour_force=labour_force.to(device),
        unemployed=unemployed.to(device),
        area=area.to(device),
        occupation=occupation.to(device),
    )
    return out


def labour_population(
    num_agents: int,
    *,
    num_areas: int = 4,
    num_occupations: int = 4,
    unemployment: float = 0.04,
    seed: int = 0,
) -> PopulationGraph:
    """A :class:`~lpm_graph.datasets.SyntheticPopulation` (households, schools, workplaces,
    community contacts) with the labour attributes of :func:`add_labour_attributes`."""
    from ..datasets.synthetic import SyntheticPopulation

    graph = SyntheticPopulation(num_agents, seed)[0]
    return add_labour_attributes(
        graph,
        num_areas=num_areas,
        num_occupations=num_occupations,
        unemployment=unemployment,
        seed=seed,
    )
