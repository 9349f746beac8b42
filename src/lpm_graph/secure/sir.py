r"""Network SIR on secret shares: the private twin of :class:`lpm_graph.protocols.SIR`.

One step, on shares (topology, rates and ``dt`` public; every agent's state private):

1. force of infection ``lambda_i dt = sum_j tau w_ji dt I_j``: the plaintext
   :class:`~lpm_graph.layers.Transmission` layer run on the shares of ``I`` (a public rate
   times 0/1 indicators, summed over in-edges: local and exact in the ring);
2. infection draw: agent ``i`` holds a private ``E_i ~ Exp(1)`` and is infected iff
   ``lambda_i dt > E_i``, exactly Bernoulli(``1 - exp(-lambda_i dt)``): one secure comparison;
   ``new_i = [lambda_i dt > E_i] S_i`` is one Beaver product;
3. recovery draw: ``[gamma dt > F_i]`` against a private ``F_i ~ Exp(1)``, times ``I_i`` at the
   start of the step;
4. additive update ``S -= new``, ``I += new - rec``, ``R += rec`` on each party's shares;
5. the declared aggregates (counts of S, I, R and the day's infections and recoveries) are
   the only values opened.

With ``E_i = -log u_i`` for the plaintext run's uniform ``u_i`` (same seed), the plaintext
decision ``u_i >= exp(-lambda_i dt)`` is the same event, so a secure run reproduces
:func:`lpm_graph.simulate` agent for agent, except where ``|lambda_i dt - E_i|`` is below the
fixed-point resolution (these near ties are counted by the tests).

Gradients with respect to the public rates: forward-mode tangents carried on shares, of the
same straight-through estimator as the plaintext ``estimator="straight_through"`` run
(``d new = exp(-lambda dt) d(lambda dt) S + b dS``, with a secure ``exp``); at the end only the
gradient of a loss of the opened counts is opened.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .._checks import check_int
from ..graph import PopulationGraph
from ..protocols.base import seed_infected
from ..protocols.sir import DRAWS, SIR
from ..simulator import Trajectory
from .prg import OwnerRandomness, Randomness
from .session import Session
from .tensor import SharedTensor, exp_neg, greater, multiply

__all__ = ["SIRInputs", "SecureTrajectory", "secure_sir"]

COUNTS = ("S", "I", "R", "infections", "recoveries")
_WEIGHT_BITS = 24  # fractional bits of the public loss weights d loss / d series (normalised)
# fractional bits of lambda dt, gamma dt and the draws in the decisions: a decision differs
# from the float one only when |lambda dt - E| is below about 2^-24 (times the contacts)
_DECISION_BITS = 24
_GRADIENT_BITS = 32  # fractional bits of the opened gradient


class SIRInputs:
    """The agents' private inputs of a secure SIR run, as each agent knows them.

    ``initial_infected`` (0/1 per agent), and per step ``draw`` (``Exp(1)`` per agent, used
    by the infection of agents in S and the recovery of agents in I: ``-log u`` of the uniforms
    a plaintext
    :func:`lpm_graph.simulate` run with the same ``seed`` draws for the same flows: one number
    per agent and step, which the plaintext SIR's two flows share, as they move disjoint
    agents). Picklable, so that a data owner's process of a multi-process run can hold it.

    Args:
        num_agents: agents of the population.
        initial_infected: as in :func:`lpm_graph.simulate` (count, fraction, ids, mask).
        seed: ``None`` (default): the owner's draws come from keystreams under a key it
            draws from OS entropy (:class:`~lpm_graph.secure.prg.OwnerRandomness`). An int:
            the uniforms of a plaintext :func:`lpm_graph.simulate` run with this seed, so
            the secure run equals it agent for agent: **not private**, tests only.
        draw_bits: fractional bits of the shared draws (default 24: with a scalar rate the
            decisions compare ``lambda dt`` and ``E`` with 24 bits, so a decision differs
            from the float one only when they are closer than about ``2^-24`` per contact).
    """

    def __init__(
        self,
        num_agents: int,
        initial_infected: object,
        *,
        seed: int | Randomness | None = None,
        draw_bits: int = _DECISION_BITS,
    ) -> None:
        if not 1 <= draw_bits <= 40:
            raise ValueError(f"draw_bits must be between 1 and 40, got {draw_bits}.")
        self.draw_bits = int(draw_bits)
        self.num_agents = int(num_agents)
        self.initial_infected = initial_infected
        self.randomness = OwnerRandomness(seed)

    def __call__(self, name: str, step: int | None) -> tuple[Tensor, int] | Tensor:
        streams = self.randomness.streams()
        n = self.num_agents
        if name == "initial_infected":
            infected = seed_infected(
                self.initial_infected,
                (n,),
                streams,
                torch.float64,
                torch.device("cpu"),
                "stochastic",
            )
            return infected.to(torch.int64), 0
        if name != "draw":
            raise KeyError(f"SIRInputs has no private input {name!r}.")
        u = streams.uniform(DRAWS, int(step), (n,), torch.float64)
        # Exp(1) (u = 0 would be an infinite draw), shared with draw_bits fractional bits
        return -torch.log(u.clamp(min=1e-300)), self.draw_bits

    def draws(self, steps: int) -> dict[str, Tensor]:
        """Plaintext draws (tests): ``{"draw": [T, N]}``."""
        return {"draw": torch.stack([self("draw", t)[0] for t in range(steps)])}


from .program import SecureTrajectory  # noqa: E402


@dataclass
class _OldSecureTrajectory(Trajectory):
    """A secure run's opened aggregates (as :class:`~lpm_graph.simulator.Trajectory`) and its
    session. With ``tangents=`` it also holds the shared tangents of the counts, privately:
    :meth:`gradient` is the only way to open anything of them (opened as aggregates, they
    would give the whole Jacobian and any number of gradients)."""

    _tangents: dict[str, SharedTensor] = field(default_factory=dict, repr=False)
    parameters: tuple[str, ...] = ()
    session: Session | None = field(default=None, repr=False)

    def gradient(self, loss: Callable[[dict[str, Tensor]], Tensor]) -> tuple[Tensor, Tensor]:
        """``(loss, d loss / d parameters)`` for a differentiable ``loss(counts_and_flows)`` of
        the opened series; the weights ``d loss / d series`` are public, the tangents private,
        and only the gradient (one number per parameter) is opened."""
        if not self._tangents or self.session is None:
            raise RuntimeError("run secure_sir with tangents=(...) to get gradients.")
        series = {k: v.detach().clone().requires_grad_(True) for k, v in self.opened().items()}
        value = loss(series)
        if value.dim() != 0:
            raise ValueError("loss must return a scalar.")
        weights = torch.autograd.grad(value, list(series.values()), allow_unused=True)
        session, columns = self.session, len(self.parameters)
        terms = []
        for (name, _), w in zip(series.items(), weights):
            top = 0.0 if w is None else float(w.detach().abs().max())
            if top == 0:
                continue
            # the weights' own scale 2^-e is public: encode w 2^e (in (1/2, 1]) with 24 bits,
            # so that a small weight (1 / N) keeps its precision
            e = -math.ceil(math.log2(top))
            tangent = self._tangents[name].rescale()  # [T or T + 1, ..., P]
            scaled = w.detach().to(torch.float64).unsqueeze(-1) * 2.0**e
            term = tangent.mul_public(scaled, _WEIGHT_BITS).reshape(-1, columns).sum(0)
            if not 0 <= term.frac_bits + e <= 62:
                raise ValueError(f"d loss / d {name} (max {top:.3g}) is out of fixed-point range.")
            terms.append(SharedTensor(term.shares, term.frac_bits + e, session))
        scale = min([_GRADIENT_BITS, *(t.frac_bits for t in terms)])
        total = None
        for term in terms:
            term = term.rescale(scale)
            total = term if total is None else total + term
        if total is None:
            return value.detach(), torch.zeros(len(self.parameters), dtype=torch.float64)
        self.session.audit.record("loss", "loss", value.detach())
        # under differential privacy the session clips it on shares first (sensitivity
        # 2 C sqrt(P) whatever the data) and opens it with the Gaussian mechanism
        return value.detach(), self.session.reveal(total, "gradient", "gradient")

    def opened(self) -> dict[str, Tensor]:
        return {**self.counts, **self.flows}


def secure_sir(
    protocol: SIR,
    graph: PopulationGraph,
    steps: int,
    session: Session,
    *,
    tangents: Sequence[str] = (),
    public: Tensor | None = None,
) -> SecureTrajectory:
    """Run ``protocol`` (a plaintext :class:`~lpm_graph.protocols.SIR`) on secret shares.

    The agents' private inputs come from the session's owner (:class:`SIRInputs`): an
    in-process ``Session(parties, owner=SIRInputs(...))`` or the multi-process launcher.

    Args:
        protocol: the SIR protocol; its rates, ``dt``, ``order`` and relations are public.
        graph: the population graph (public topology and edge weights).
        steps: number of steps.
        session: the parties.
        tangents: public parameters to differentiate (``"transmission_rate"``,
            ``"recovery_rate"``; scalar rates): forward-mode tangents on shares.
        public: optional bool mask ``[N]`` of agents whose state is public (mixed graphs):
            their state is opened after every step (kind ``"public_state"``); the others'
            never is.

    Returns:
        A :class:`SecureTrajectory` with ``counts`` (``S``, ``I``, ``R``: ``[T + 1]``) and
        ``flows`` (``infections``, ``recoveries``: ``[T]``), as opened aggregates.
    """
    if not isinstance(protocol, SIR):
        raise TypeError(f"secure_sir runs an SIR protocol, got {type(protocol).__name__}.")
    protocol.check(graph)
    n = graph.num_nodes(protocol.node_type)
    params = tuple(tangents)
    for name in params:
        if name not in ("transmission_rate", "recovery_rate"):
            raise ValueError(
                f"unknown parameter {name!r}; tangents are for 'transmission_rate' and "
                "'recovery_rate'."
            )
        if getattr(protocol, name).dim() != 0:
            raise ValueError(f"tangents need a scalar {name}; per-edge rates are not supported.")
    if public is not None:
        public = torch.as_tensor(public, dtype=torch.bool)
        if public.shape != (n,):
            raise ValueError(
                f"public must be a bool mask of the {n} agents, got {list(public.shape)}."
            )
    steps = check_int(steps, "steps", 1)
    session.declare_agents(n, public)
    dt = protocol.dt
    tau_dt = protocol.transmission_rate.detach().to(torch.float64) * dt
    gamma_dt = float(protocol.recovery_rate.detach()) * dt
    d_tau = torch.tensor(
        [dt if p == "transmission_rate" else 0.0 for p in params], dtype=torch.float64
    )
    d_gamma = torch.tensor(
        [dt * math.exp(-gamma_dt) if p == "recovery_rate" else 0.0 for p in params],
        dtype=torch.float64,
    )
    infection = protocol.phases[0 if protocol.order == "infect_first" else 1]
    relations = infection.relations(graph)
    layer = infection.transmission
    one = torch.tensor(1)

    def force(infectious: SharedTensor, rate: Tensor) -> SharedTensor:
        """``sum_j rate w_ji x_j`` over the infection relations (local on shares)."""
        total = None
        for rel in relations:
            lam = layer(graph.csr(rel), infectious, rate, edge_weight=_weight(graph, rel))
            total = lam if total is None else total + lam
        return total if total is not None else infectious * 0

    def pressure(infectious: SharedTensor) -> tuple[SharedTensor, SharedTensor | None]:
        """``lambda dt`` for the decisions, with ``_DECISION_BITS`` fractional bits, and the
        contact sum ``sum_j w_ji I_j`` it came from (``None`` for per-edge rates): with a
        scalar rate, the contact sum (exact for unit weights) times the rate encoded with as
        many bits, so that the rate's encoding error does not grow with the contacts."""
        if tau_dt.dim() != 0:
            return force(infectious, tau_dt), None
        contacts = force(infectious, one)
        lam = contacts.mul_public(tau_dt, frac_bits=_DECISION_BITS)
        return (lam.rescale(_DECISION_BITS) if lam.frac_bits > _DECISION_BITS else lam), contacts

    def infection_tangent(inf, lam, contacts, state, tangent):
        """``d new = exp(-lambda dt) d(lambda dt) S + b dS`` (straight-through), ``[N, P]``;
        ``contacts``: ``sum_j w_ji I_j`` (tangents need a scalar rate, so it is known)."""
        d_lam = contacts.unsqueeze(1).mul_public(d_tau) + force(tangent["I"], tau_dt)
        d_lam = d_lam.rescale()
        d_p = multiply(exp_neg(lam).unsqueeze(1), d_lam, frac_bits=session.frac_bits)
        size = (n, len(params))
        pieces = multiply(
            SharedTensor.cat([d_p, tangent["S"]], dim=1),
            SharedTensor.cat(
                [state["S"].unsqueeze(1).expand(*size), inf.unsqueeze(1).expand(*size)], dim=1
            ),
        )
        return pieces[:, : len(params)] + pieces[:, len(params) :]

    def recovery_tangent(rec_b, start_i, d_start_i):
        """``d rec = d r I + b dI`` with ``d r = exp(-gamma dt) dt d gamma`` public."""
        return start_i.unsqueeze(1).mul_public(d_gamma) + multiply(rec_b.unsqueeze(1), d_start_i)

    with session.step("setup"):
        infected = session.input("initial_infected")
        state = {"S": 1 - infected, "I": infected, "R": infected * 0}
        tangent: dict[str, SharedTensor] = {}
        if params:
            zero = session.public(torch.zeros((n, len(params)), dtype=torch.float64))
            tangent = {"S": zero, "I": zero, "R": zero}
        series: dict[str, list[Tensor]] = {name: [] for name in COUNTS}
        d_series: dict[str, list[SharedTensor]] = {name: [] for name in COUNTS}
        _observe(session, state, tangent, series, d_series, public, None)

    threshold = session.public(torch.full((n,), gamma_dt, dtype=torch.float64), _DECISION_BITS)
    for t in range(steps):
        with session.step(t):
            # one draw per agent: infection for agents in S, recovery for agents in I
            e_draw = f_draw = session.input("draw", t)
            start_i, d_start_i = state["I"], tangent.get("I")
            d_new = d_rec = None
            if protocol.order == "infect_first":
                lam, contacts = pressure(state["I"])
                bits = greater(
                    SharedTensor.cat([lam, threshold]), SharedTensor.cat([e_draw, f_draw])
                )
                inf, rec_b = bits[:n], bits[n:]
                moved = multiply(bits, SharedTensor.cat([state["S"], start_i]))
                new, rec = moved[:n], moved[n:]
                if params:
                    d_new = infection_tangent(inf, lam, contacts, state, tangent)
                    d_rec = recovery_tangent(rec_b, start_i, d_start_i)
                state, tangent = _apply(state, tangent, "S", "I", new, d_new)
                state, tangent = _apply(state, tangent, "I", "R", rec, d_rec)
            else:
                rec_b = greater(threshold, f_draw)
                rec = multiply(rec_b, start_i)
                if params:
                    d_rec = recovery_tangent(rec_b, start_i, d_start_i)
                state, tangent = _apply(state, tangent, "I", "R", rec, d_rec)
                lam, contacts = pressure(state["I"])
                inf = greater(lam, e_draw)
                new = multiply(inf, state["S"])
                if params:
                    d_new = infection_tangent(inf, lam, contacts, state, tangent)
                state, tangent = _apply(state, tangent, "S", "I", new, d_new)
            flows = {"infections": new, "recoveries": rec}
            d_flows = {"infections": d_new, "recoveries": d_rec}
            _observe(session, state, tangent, series, d_series, public, (flows, d_flows))

    counts = {k: torch.stack(series[k]) for k in ("S", "I", "R")}
    flows = {k: torch.stack(series[k]) for k in ("infections", "recoveries")}
    out_tangents = {}
    if params:
        out_tangents = {k: SharedTensor.stack(v) for k, v in d_series.items() if v}
    return SecureTrajectory(
        counts=counts,
        flows=flows,
        final_state={},
        dt=dt,
        _tangents=out_tangents,
        parameters=params,
        session=session,
    )


AGGREGATE_SENSITIVITY = 2.0
"""L2 sensitivity of one step's counts and flows to one agent's own indicators: its
compartment moves one unit between two counts (``sqrt 2``), its flow indicator likewise."""


# ---------------------------------------------------------------------- step pieces
def _weight(graph: PopulationGraph, rel) -> Tensor | None:
    w = graph.edge_weight(rel)
    return None if w is None else w.to(torch.float64)


def _apply(state, tangent, source, target, flow, d_flow):
    """Move ``flow`` from compartment ``source`` to ``target`` (additive, on shares)."""
    state = {**state, source: state[source] - flow, target: state[target] + flow}
    if d_flow is not None:
        tangent = {**tangent, source: tangent[source] - d_flow, target: tangent[target] + d_flow}
    return state, tangent


def _observe(session, state, tangent, series, d_series, public, step_flows):
    """Open the declared aggregates (one round) and keep the tangents' sums on shares."""
    names = ["S", "I", "R"]
    values = [state[k] for k in names]
    if step_flows is not None:
        flows, d_flows = step_flows
        names += ["infections", "recoveries"]
        values += [flows["infections"], flows["recoveries"]]
    sums = SharedTensor.stack([v.sum() for v in values])
    rows = [sums.shares]
    idx = None
    if public is not None and bool(public.any()):
        idx = public.nonzero().squeeze(1)
        rows.append(  # [P, public agents, 3]: one row per public agent
            SharedTensor.stack([state[k].index_select(0, idx) for k in ("S", "I", "R")], 1).shares
        )
    # private: every agent not declared public in the session so far (not only this run)
    private = int((~session.public_agents).sum())
    opened = session.open_raw(
        rows,
        ["counts", "public agents' S, I, R"][: len(rows)],
        ["aggregate", "public_state"][: len(rows)],
        group=[private, None][: len(rows)],
        sensitivity=[AGGREGATE_SENSITIVITY, None][: len(rows)],
        frac_bits=[sums.frac_bits, 0][: len(rows)],
        agents=[None, idx if len(rows) > 1 else None][: len(rows)],
    )
    scale = sums.frac_bits
    counts = opened[0].to(torch.float64) / 2.0**scale
    for name, value in zip(names, counts):
        series[name].append(value)
    if tangent:
        for name in ("S", "I", "R"):
            d_series[name].append(tangent[name].sum(0))
        if step_flows is not None:
            for name in ("infections", "recoveries"):
                d_series[name].append(step_flows[1][name].sum(0))
