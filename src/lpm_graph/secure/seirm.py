r"""SEIRM on secret shares: the private twin of :class:`lpm_graph.protocols.SEIRM`.

Public: the contact graph with its edge types and weights, the agents' age groups, and every
parameter (``R``, mortality, ``B_n``, susceptibility, stage infectiousness, the kernel, the
stay durations). Private: every agent's stage (``S``, the slots of ``E`` and ``I``, ``R``,
``M``, the time since infection) and its random draws. One step, on shares:

1. infectiousness ``x_j = sum_k E_jk A_E kappa_k + sum_k I_jk A_I kappa_(K_E + k)`` (public
   weights times 0/1 slots: local and exact); with a random stay in E the kernel reads the
   private time since infection instead and ``x_j = (sum_k h_jk kappa_k)(A_E E_j + A_I I_j)``
   (one Beaver product); ``kappa_k`` is the kernel's density per day over step ``k``
   (:meth:`~lpm_graph.protocols.SEIRM.kernel_rate`), so ``dt`` enters only in step 2;
2. per edge type ``n``, ``g_n = sum_{j -> i} w_ji x_j`` (sum aggregation: local, no
   communication), then ``lambda_i dt = R_t dt S_a(i) sum_n B_n / Ibar_(a(i), n) g_n`` (public
   per-agent factors);
3. one batch of secure comparisons: the infection draw ``[lambda_i dt > E_i]`` against the
   agent's private ``E_i ~ Exp(1)``, the death draw ``[-log(1 - m_a(i)) > D_i]``, and (for
   random stays) the exit draws: the agent's own slot's threshold ``-log(1 - h_k)`` against its
   draw, selected by one product with the private slot indicators (with tangents, every slot's
   decision, which the straight-through estimator uses: ``K`` comparisons per agent);
4. Beaver products of the decisions with the private stages (``new = [..] S``,
   ``deaths = [..] exits``) and the additive, slot-shifting updates of the plaintext protocol;
5. only the declared aggregates (counts of S, E, I, R, M and the day's infections, onsets,
   recoveries and deaths; per age group with ``by_age=True``) are opened.

With the same seed the private draws are ``-log u`` of the plaintext run's uniforms, so a
secure run reproduces :func:`lpm_graph.simulate` agent for agent, except where a comparison is
closer than the fixed-point resolution. Gradients with respect to ``R`` (scalar or per step),
the mortality (scalar or per age) and the edge-type weights are forward-mode tangents on
shares of the plaintext straight-through estimator; only a loss and its gradient are opened.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .._checks import check_int
from ..graph import PopulationGraph
from ..protocols.base import seed_infected
from ..protocols.seirm import AGE_GROUPS, SEIRM
from .prg import OwnerRandomness, Randomness
from .session import Session
from .sir import AGGREGATE_SENSITIVITY, SecureTrajectory
from .tensor import SharedTensor, exp_neg, greater, multiply

__all__ = ["SEIRMInputs", "secure_seirm"]

PARAMETERS = ("reproduction_number", "mortality", "edge_type_weights")
_STAGES = {"E": "exposed_exit", "I": "infectious_exit"}
_BY_AGE = ("S", "E", "I", "R", "M", "infections", "deaths")  # as the plaintext by_age
_NEVER = 1.0e3  # a threshold no Exp(1) draw reaches (-log of the smallest double: 745)


class SEIRMInputs:
    """The agents' private inputs of a secure SEIRM run, as each agent knows them.

    ``initial_infected`` (0/1 per agent) and per step the ``Exp(1)`` draws ``-log u`` of the
    uniforms a plaintext :func:`lpm_graph.simulate` run with the same ``seed`` uses:
    ``infection_draw`` and ``death_draw`` ``[N]``, and for random stays
    ``exposed_exit_draw`` ``[N, K_E]`` and ``infectious_exit_draw`` ``[N, K_I]``. Picklable,
    so that a data owner's process of a multi-process run can hold it.

    Args:
        protocol: the SEIRM protocol (its stage slot counts shape the exit draws).
        num_agents: agents of the population.
        initial_infected: as in :func:`lpm_graph.simulate` (count, fraction, ids, mask).
        seed: ``None`` (default): the owner's draws come from keystreams under a key it
            draws from OS entropy (:class:`~lpm_graph.secure.prg.OwnerRandomness`). An int:
            the uniforms of a plaintext :func:`lpm_graph.simulate` run with this seed, so
            the secure run equals it agent for agent: **not private**, tests only.
        draw_bits: fractional bits of the shared draws (default 24: a decision differs from
            the float one only when ``|lambda dt - E|`` is below about ``2^-24``, not
            ``2^-16``; the comparisons run at the step's working precision anyway).
    """

    def __init__(
        self,
        protocol: SEIRM,
        num_agents: int,
        initial_infected: object,
        *,
        seed: int | Randomness | None = None,
        draw_bits: int = 24,
    ) -> None:
        if not 1 <= draw_bits <= 40:
            raise ValueError(f"draw_bits must be between 1 and 40, got {draw_bits}.")
        self.draw_bits = int(draw_bits)
        self.num_agents = int(num_agents)
        self.initial_infected = initial_infected
        self.randomness = OwnerRandomness(seed)
        self.slots = {
            _STAGES["E"]: protocol.exposed_hazard.numel(),
            _STAGES["I"]: protocol.infectious_hazard.numel(),
        }

    def __call__(self, name: str, step: int | None) -> tuple[Tensor, int] | Tensor:
        streams = self.randomness.streams()
        n = self.num_agents
        if name == "initial_infected":
            infected = seed_infected(
                self.initial_infected, (n,), streams, torch.float64, torch.device("cpu"),
                "stochastic",
            )  # fmt: skip
            return infected.to(torch.int64), 0
        flow = name.removesuffix("_draw")
        if not name.endswith("_draw") or flow not in ("infection", "death", *self.slots):
            raise KeyError(f"SEIRMInputs has no private input {name!r}.")
        shape = (n, self.slots[flow]) if flow in self.slots else (n,)
        u = streams.uniform(flow, int(step), shape, torch.float64)
        return -torch.log(u.clamp(min=1e-300)), self.draw_bits


def secure_seirm(
    protocol: SEIRM,
    graph: PopulationGraph,
    steps: int,
    session: Session,
    *,
    tangents: Sequence[str] = (),
    public: Tensor | None = None,
) -> SecureTrajectory:
    """Run ``protocol`` (a plaintext :class:`~lpm_graph.protocols.SEIRM`) on secret shares.

    The agents' private inputs come from the session's owner (:class:`SEIRMInputs`).

    Args:
        protocol: the SEIRM protocol; its parameters, durations, kernel and relations are
            public. Interventions are not supported on shares.
        graph: the population graph (public topology, edge weights and age groups).
        steps: number of steps.
        session: the parties.
        tangents: public parameters to differentiate: ``"reproduction_number"`` (scalar or
            ``[T]``), ``"mortality"`` (scalar or ``[8]``), ``"edge_type_weights"``.
        public: optional bool mask ``[N]`` of agents whose state is public; their stages are
            opened after every step (kind ``"public_state"``), the others' never are.

    Returns:
        A :class:`~lpm_graph.secure.SecureTrajectory` with the opened ``counts`` (``S``, ``E``,
        ``I``, ``R``, ``M``: ``[T + 1]``) and ``flows`` (``infections``, ``onsets``,
        ``recoveries``, ``deaths``: ``[T]``), plus ``*_by_age`` (``[., 8]``) with
        ``protocol.by_age``; the gradient of a loss of them with :meth:`~lpm_graph.secure.
        SecureTrajectory.gradient`.
    """
    steps = check_int(steps, "steps", 1)
    step = _SecureStep(protocol, graph, session, tangents, public)
    with session.step("setup"):
        state, tangent = step.initial()
        step.observe(state, tangent, None)
    for t in range(steps):
        with session.step(t):
            state, tangent, flows = step(state, tangent, t)
            step.observe(state, tangent, flows)
    return step.trajectory()


class _SecureStep:
    """The public pieces of one secure SEIRM step, computed once, and the step itself."""

    def __init__(
        self,
        protocol: SEIRM,
        graph: PopulationGraph,
        session: Session,
        tangents: Sequence[str],
        public: Tensor | None,
    ) -> None:
        if not isinstance(protocol, SEIRM):
            raise TypeError(f"secure_seirm runs an SEIRM protocol, got {type(protocol).__name__}.")
        if len(protocol.interventions):
            raise ValueError(
                "secure_seirm does not run interventions on shares; run the protocol without "
                "them (or in plaintext)."
            )
        protocol.check(graph)
        self.protocol, self.graph, self.session = protocol, graph, session
        self.n = n = graph.num_nodes(protocol.node_type)
        self.age = protocol.age_groups(graph).long()  # on the graph's device
        age = self.age.cpu()  # the public per-agent factors are built on the CPU, then moved
        # fractional bits of intermediate values; products of two of them stay below 2^52
        self.work = min(session.frac_bits + 8, 26)
        if public is not None:
            public = torch.as_tensor(public, dtype=torch.bool)
            if public.shape != (n,):
                raise ValueError(
                    f"public must be a bool mask of the {n} agents, got {list(public.shape)}."
                )
        session.declare_agents(n, public, age if protocol.by_age else None)
        self.public = None if public is None or not bool(public.any()) else public
        f64 = torch.float64
        dt = protocol.dt
        self.relations = protocol.relations(graph)
        b = [w.detach().to(f64) for w in protocol.edge_weights_per_relation(graph)]
        susceptibility = protocol.susceptibility.detach().to("cpu", f64)[age] * dt
        # lambda dt = R_t sum_n coef_n g_n, coef_n = dt S_a B_n / Ibar_(a, n) per agent
        device = session.device
        contact = [
            susceptibility * protocol.contact_scale(graph, rel).to("cpu", f64)[age]
            for rel in self.relations
        ]
        self.contact = [c.to(device) for c in contact]
        self.coef = [(c * bn.cpu()).to(device) for c, bn in zip(contact, b)]
        self.r = protocol.reproduction_number.detach().to("cpu", f64)
        m = protocol.mortality.detach().to("cpu", f64)
        self.death_threshold = _threshold(m if m.dim() == 0 else m[age], n).to(device)
        # stages: per-slot exit hazards; fixed stays leave from their last slot, no draw
        durations = {"E": protocol.exposed, "I": protocol.infectious}
        self.fixed = {st: d.kind == "fixed" for st, d in durations.items()}
        hazards = {"E": protocol.exposed_hazard, "I": protocol.infectious_hazard}
        self.hazard = {s: h.detach().to(f64) for s, h in hazards.items()}
        self.exit_threshold = {s: _threshold(h, None) for s, h in self.hazard.items()}
        self.history = not self.fixed["E"]
        if self.history:  # per day: lambda dt multiplies by dt
            self.kernel = protocol.kernel_rate().detach().to(f64)
            a_e, a_i = protocol.stage_infectiousness.detach().to(f64)
            self.stage_weight = (float(a_e), float(a_i))
        else:  # the infection age follows from the slot
            self.slot_weight = {
                st: getattr(protocol, f"slot_rate_{st}").detach().to(f64) for st in ("E", "I")
            }
        self._parameters(tangents)
        self.series: dict[str, list[Tensor]] = {}
        self.d_series: dict[str, list[SharedTensor]] = {}

    # ------------------------------------------------------------------ parameters
    def _parameters(self, tangents: Sequence[str]) -> None:
        """Columns of the tangents: one per scalar parameter value (``R_t``, ``m_a``, ``B_n``)."""
        p, n = self.protocol, self.n
        names = tuple(dict.fromkeys(tangents))
        for name in names:
            if name not in PARAMETERS:
                raise ValueError(
                    f"unknown parameter {name!r}; tangents are for {', '.join(PARAMETERS)}."
                )
        columns: list[str] = []
        self.r_column: dict[int, int] = {}  # entry of R -> column
        self.b_column: dict[int, int] = {}  # edge-type weight -> column
        self.m_columns: Tensor | None = None  # [N, P] d m_agent / d column
        for name in names:
            if name == "reproduction_number":
                values = max(1, p.reproduction_number.numel())
                self.r_column = {k: len(columns) + k for k in range(values)}
                columns += [f"reproduction_number[{k}]" for k in range(values)]
            elif name == "mortality":
                start = len(columns)
                if p.mortality.dim() == 0:
                    columns.append("mortality")
                    which = torch.full((n,), start)
                else:
                    columns += [f"mortality[{a}]" for a in range(len(AGE_GROUPS))]
                    which = start + self.age.cpu()
                self.m_columns = which
            else:
                weights = p.edge_type_weights.numel()
                self.b_column = {k: len(columns) + k for k in range(weights)}
                columns += [f"edge_type_weights[{k}]" for k in range(weights)]
        self.columns = tuple(columns)
        self.p = len(columns)
        if self.m_columns is not None:
            onehot = torch.zeros((n, self.p), dtype=torch.int64)
            onehot[torch.arange(n), self.m_columns] = 1
            self.m_columns = onehot.to(self.session.device)
        # which B_n each relation uses (one shared weight without named edge types)
        shared = p._edge_types is None
        self.relation_weight = [0 if shared else k for k in range(len(self.relations))]

    # ------------------------------------------------------------------ the run
    def initial(self) -> tuple[dict[str, SharedTensor], dict[str, SharedTensor]]:
        s, n = self.session, self.n
        infected = s.input("initial_infected")
        zero = infected * 0
        k_e, k_i = self.hazard["E"].numel(), self.hazard["I"].numel()
        e = SharedTensor.cat([infected.unsqueeze(1), zero.unsqueeze(1).expand(n, k_e - 1)], 1)
        state = {
            "S": 1 - infected,
            "E": e,
            "I": zero.unsqueeze(1).expand(n, k_i).clone(),
            "R": zero,
            "M": zero.clone(),
        }
        if self.history:
            k_w = self.kernel.numel()
            state["h"] = SharedTensor.cat(
                [infected.unsqueeze(1), zero.unsqueeze(1).expand(n, k_w - 1)], 1
            )
        tangent: dict[str, SharedTensor] = {}
        if self.p:
            for name, value in state.items():
                shape = (*value.shape, self.p)
                tangent[name] = s.public(torch.zeros(shape, dtype=torch.float64), self.work)
        return state, tangent

    def __call__(self, state, tangent, t):
        s, n, w = self.session, self.n, self.work
        e_draw = s.input("infection_draw", t)
        d_draw = s.input("death_draw", t)
        # 1-2. infectiousness and the force of infection (local)
        x = self.infectiousness(state)  # [N], scale w
        g = self.aggregate(x)  # [n_rel, N], scale w
        r_t = self.r if self.r.dim() == 0 else self.r[min(t, self.r.numel() - 1)]
        lam = _combine(g, [r_t * c for c in self.coef]).rescale(w)  # [N], scale w
        # 3. comparisons (one batch): infection, death, exits of random stays
        left, right = [lam, s.public(self.death_threshold, w)], [e_draw, d_draw]
        sizes = {}
        for stage in ("E", "I"):
            if self.fixed[stage]:
                continue
            draw = s.input(f"{_STAGES[stage]}_draw", t)  # [N, K]
            gap = -draw + self.exit_threshold[stage]  # [N, K]: leave slot k iff gap > 0
            # without tangents only the agent's own slot's decision (0 outside the stage): N
            # comparisons; the tangents use every slot's decision, as the plaintext
            # straight-through estimator does (d leave = b d stage also where the agent is not)
            gap = gap.reshape(-1) if self.p else multiply(state[stage], gap).sum(1)
            sizes[stage] = gap.shape[0]
            left.append(gap)
            right.append(s.public(torch.zeros(gap.shape[0], dtype=torch.float64)))
        bits = greater(SharedTensor.cat(left), SharedTensor.cat(right))
        infect, dies = bits[:n], bits[n : 2 * n]
        leaves, start = {}, 2 * n
        for stage, size in sizes.items():
            leaves[stage] = bits[start : start + size].reshape(n, -1)  # [N, K] or [N, 1]
            start += size
        # 4. products with the private stages, then the additive updates
        leave = {
            st: state[st].mul_public(self.hazard[st].round().long())
            for st, fixed in self.fixed.items()
            if fixed
        }
        pairs = [(infect, state["S"])]
        pairs += [(leaves[st], state[st]) for st in leaves]
        out = _products(pairs)
        new = out[0]
        for st, value in zip(leaves, out[1:]):
            leave[st] = value
        exits = leave["I"].sum(1)
        deaths = multiply(dies, exits)
        onsets = leave["E"].sum(1)
        flows = {"infections": new, "onsets": onsets, "recoveries": exits - deaths}
        flows["deaths"] = deaths
        d_flows = {}
        if self.p:
            d_flows, tangent = self.tangent_step(
                state, tangent, t, x, g, lam, infect, dies, leaves, leave, exits
            )
        state = self.advance(state, new, leave, onsets, exits, deaths)
        return state, tangent, (flows, d_flows)

    @staticmethod
    def advance(state, new, leave, onsets, exits, deaths):
        out = {
            "S": state["S"] - new,
            "E": _shift(state["E"] - leave["E"], new),
            "I": _shift(state["I"] - leave["I"], onsets),
            "R": state["R"] + exits - deaths,
            "M": state["M"] + deaths,
        }
        if "h" in state:
            out["h"] = _shift(state["h"], new)
        return out

    # ------------------------------------------------------------------ pieces
    def infectiousness(self, state: dict[str, SharedTensor]) -> SharedTensor:
        """``A_stage kappa(infection age)`` per agent, scale ``work`` (local, or one product
        with a random stay in E)."""
        w = self.work
        if not self.history:
            return sum(
                (state[st].mul_public(self.slot_weight[st], w).sum(1) for st in ("E", "I")),
                start=state["S"].mul_public(0.0, w),
            )
        a_e, a_i = self.stage_weight
        age_weight = state["h"].mul_public(self.kernel, w).sum(1)
        stage = state["E"].sum(1).mul_public(a_e, w) + state["I"].sum(1).mul_public(a_i, w)
        return multiply(age_weight, stage, frac_bits=w)

    def d_infectiousness(self, state, tangent) -> SharedTensor:
        """The tangent of :meth:`infectiousness`, ``[N, P]``, scale ``work``."""
        w = self.work
        if not self.history:
            terms = [
                tangent[st].mul_public(self.slot_weight[st].view(1, -1, 1), w).sum(1)
                for st in ("E", "I")
            ]
            return (terms[0] + terms[1]).rescale(w)
        a_e, a_i = self.stage_weight
        age_weight = state["h"].mul_public(self.kernel, w).sum(1)
        stage = state["E"].sum(1).mul_public(a_e, w) + state["I"].sum(1).mul_public(a_i, w)
        d_age = tangent["h"].mul_public(self.kernel.view(1, -1, 1), w).sum(1)
        d_stage = tangent["E"].sum(1).mul_public(a_e, w) + tangent["I"].sum(1).mul_public(a_i, w)
        both = SharedTensor.stack([d_age, d_stage]).rescale(w)  # [2, N, P]
        left = SharedTensor.stack([both[0], age_weight.unsqueeze(1).expand(self.n, self.p)])
        right = SharedTensor.stack([stage.unsqueeze(1).expand(self.n, self.p), both[1]])
        prod = multiply(left, right, frac_bits=w)
        return prod[0] + prod[1]

    def aggregate(self, x: SharedTensor) -> SharedTensor:
        """``g_n = sum_{j ->_n i} w_ji x_j`` per relation ``[n_rel, N, ...]``, scale ``work``:
        local (one truncation when the edges carry weights)."""
        one = torch.tensor(1)
        layer = self.protocol.phases[-2].transmission
        parts = [
            layer(self.graph.csr(rel), x, one, edge_weight=_weight(self.graph, rel))
            for rel in self.relations
        ]
        if not parts:
            return x.mul_public(0).unsqueeze(0)
        return SharedTensor.stack(parts).rescale(self.work)

    def tangent_step(self, state, tangent, t, x, g, lam, infect, dies, leaves, leave, exits):
        """Forward-mode tangents of the step's flows (straight-through, as in plaintext) and
        the updated state tangents."""
        n, p, w = self.n, self.p, self.work
        r_t = self.r if self.r.dim() == 0 else self.r[min(t, self.r.numel() - 1)]
        # d(lambda dt) = R_t sum_n coef_n dg_n + sum_n g_n dcoef_n / d theta
        dg = self.aggregate(self.d_infectiousness(state, tangent))  # [n_rel, N, P]
        direct = []
        for k, (coef, contact) in enumerate(zip(self.coef, self.contact)):
            d = torch.zeros((n, p), dtype=torch.float64, device=coef.device)
            if self.r_column:
                d[:, self.r_column[min(t, len(self.r_column) - 1)]] = coef
            if self.b_column:
                d[:, self.b_column[self.relation_weight[k]]] += r_t * contact
            direct.append(d)
        d_lam = _combine(dg, [r_t * c.unsqueeze(1) for c in self.coef])
        d_lam = d_lam + _combine(g.unsqueeze(2), direct)
        d_lam = d_lam.rescale(w)
        d_p = multiply(exp_neg(lam).unsqueeze(1), d_lam, frac_bits=w)  # d(1 - exp(-lambda dt))
        # d new = d_p S + b dS; d leave = b d stage (random stays) or h d stage (fixed)
        size = (n, p)
        left = [d_p, tangent["S"]]
        right = [state["S"].unsqueeze(1).expand(*size), infect.unsqueeze(1).expand(*size)]
        shapes = [size, size]
        for st in leaves:
            shape = (*tangent[st].shape,)
            left.append(tangent[st])
            right.append(leaves[st].unsqueeze(2).expand(*shape))
            shapes.append(shape)
        out = _products(list(zip(left, right)), frac_bits=w)
        d_new = out[0] + out[1]
        d_leave = {
            st: tangent[st].mul_public(self.hazard[st].round().long().view(1, -1, 1))
            for st, fixed in self.fixed.items()
            if fixed
        }
        for st, value in zip(leaves, out[2:]):
            d_leave[st] = value
        d_exits = d_leave["I"].sum(1)
        d_onsets = d_leave["E"].sum(1)
        # d deaths = d m exits + b d exits
        d_deaths = multiply(dies.unsqueeze(1).expand(*size), d_exits, frac_bits=w)
        if self.m_columns is not None:
            d_deaths = d_deaths + exits.unsqueeze(1).mul_public(self.m_columns)
        d_flows = {
            "infections": d_new,
            "onsets": d_onsets,
            "recoveries": d_exits - d_deaths,
            "deaths": d_deaths,
        }
        tangent = self.advance(tangent, d_new, d_leave, d_onsets, d_exits, d_deaths)
        return d_flows, tangent

    # ------------------------------------------------------------------ opening
    def observe(self, state, tangent, step_flows) -> None:
        """Open the declared aggregates (one round); keep the tangents' sums on shares."""
        values = {st: state[st].sum(1) if st in ("E", "I") else state[st] for st in "SEIRM"}
        d_values = {}
        if tangent:
            d_values = {
                st: tangent[st].sum(1) if st in ("E", "I") else tangent[st] for st in "SEIRM"
            }
        if step_flows is not None:
            values.update(step_flows[0])
            d_values.update(step_flows[1])
        names = list(values)
        totals = [values[k].sum() for k in names]
        stacked = SharedTensor.stack(totals)
        rows = [stacked.shares]
        labels, kinds = ["counts"], ["aggregate"]
        # private: every agent not declared public in the session so far (not only this run)
        private = (~self.session.public_agents).to(self.age.device, torch.int64)
        groups, bits = [int(private.sum())], [stacked.frac_bits]
        by_age = self.protocol.by_age
        aged = [k for k in names if k in _BY_AGE] if by_age else []
        if aged:
            n_groups = len(AGE_GROUPS)
            per_age = SharedTensor.stack([values[k].scatter_sum(self.age, n_groups) for k in aged])
            rows.append(per_age.shares)
            labels.append("counts by age group")
            kinds.append("aggregate")
            # private agents behind each age group's count (the groups present in the graph)
            sizes = torch.zeros(n_groups, dtype=torch.int64, device=private.device)
            sizes.index_add_(0, self.age.long(), private)
            groups.append(sizes[sizes > 0] if bool((sizes > 0).any()) else sizes)
            bits.append(per_age.frac_bits)
        agents: list[Tensor | None] = [None] * len(rows)
        if self.public is not None:
            idx = self.public.nonzero().squeeze(1)
            for st in "SEIRM":
                rows.append(state[st].index_select(0, idx).shares)
                labels.append(f"public agents' {st}")
                kinds.append("public_state")
                groups.append(None)
                bits.append(0)
                agents.append(idx)
        sensitivity = [AGGREGATE_SENSITIVITY if k == "aggregate" else None for k in kinds]
        opened = self.session.open_raw(
            rows, labels, kinds, group=groups, sensitivity=sensitivity, frac_bits=bits,
            agents=agents,
        )  # fmt: skip
        counts = opened[0].to(torch.float64)  # every count is a sum of 0/1 indicators
        for k, name in enumerate(names):
            self.series.setdefault(name, []).append(counts[k])
        for k, name in enumerate(aged):
            self.series.setdefault(f"{name}_by_age", []).append(opened[1][k].double())
        for name, d in d_values.items():
            self.d_series.setdefault(name, []).append(d.sum(0))
            if name in aged:
                self.d_series.setdefault(f"{name}_by_age", []).append(
                    d.scatter_sum(self.age, len(AGE_GROUPS))
                )

    def trajectory(self) -> SecureTrajectory:
        stacked = {k: torch.stack(v) for k, v in self.series.items()}
        flow_names = ("infections", "onsets", "recoveries", "deaths")
        flows = {k: v for k, v in stacked.items() if k.split("_by_age")[0] in flow_names}
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


# ---------------------------------------------------------------------- helpers
def _threshold(probability: Tensor, n: int | None) -> Tensor:
    """``-log(1 - p)``: an event of probability ``p`` happens iff an ``Exp(1)`` draw is below
    it (``p = 1`` never fails: a threshold no draw reaches)."""
    p = probability.to(torch.float64)
    out = torch.where(p >= 1, torch.full_like(p, _NEVER), -torch.log1p(-p.clamp(max=1 - 1e-16)))
    return out if n is None or out.dim() else out.expand(n).clone()


def _combine(values: SharedTensor, factors: list[Tensor]) -> SharedTensor:
    """``sum_n factors[n] * values[n]`` with public float factors (local; the scale doubles)."""
    w = values.frac_bits
    total = None
    for k, factor in enumerate(factors):
        term = values[k].mul_public(factor, w)
        total = term if total is None else total + term
    assert total is not None
    return total


def _products(pairs, frac_bits: int | None = None) -> list[SharedTensor]:
    """Beaver products of several pairs (broadcast per pair) in one round."""
    shapes = [torch.broadcast_shapes(a.shape, b.shape) for a, b in pairs]
    left = SharedTensor.cat([a.expand(*sh).reshape(-1) for (a, _), sh in zip(pairs, shapes)])
    right = SharedTensor.cat([b.expand(*sh).reshape(-1) for (_, b), sh in zip(pairs, shapes)])
    flat = multiply(left, right, frac_bits=frac_bits)
    out, start = [], 0
    for sh in shapes:
        size = math.prod(sh)
        out.append(flat[start : start + size].reshape(*sh))
        start += size
    return out


def _shift(stage: SharedTensor, entering: SharedTensor) -> SharedTensor:
    """Slots one step on: ``entering`` fills slot 0, the last slot drops out (as plaintext)."""
    return SharedTensor.cat([entering.unsqueeze(1), stage[:, :-1]], 1)


def _pad(x: Tensor, k: int) -> Tensor:
    out = torch.zeros(k, dtype=torch.float64)
    m = min(k, x.numel())
    out[:m] = x[:m]
    return out


def _weight(graph: PopulationGraph, rel) -> Tensor | None:
    w = graph.edge_weight(rel)
    return None if w is None else w.to(torch.float64)
