"""SEIRM's unchanged phases on shares (secure_simulate) against the plaintext simulator on the
same realisation: force of infection, decisions, daily counts (total and by age), gradients
with respect to R, the mortality and the edge-type weights, random stays, mixed
public/private agents and the audit log."""

from __future__ import annotations

import pytest
import torch

from lpm_graph import simulate
from lpm_graph.datasets import SyntheticPopulation
from lpm_graph.layers.samplers import RandomStreams
from lpm_graph.protocols import SEIRM, EdgeTypeClosure, Schedule
from lpm_graph.protocols.base import StepContext
from lpm_graph.protocols.durations import Duration
from lpm_graph.secure import (
    AuditLog,
    ProtocolInputs,
    SecureContext,
    Session,
    encode,
    secure_simulate,
)
from lpm_graph.secure.tensor import decode_shares
from lpm_graph.secure.values import private, work_bits

TIE = 2.0**-12
WEIGHTS = {"household": 2.0, "school": 1.0, "work": 1.0, "community": 0.5}
MORTALITY = (0.0, 0.005, 0.01, 0.03, 0.06, 0.12, 0.25, 0.4)
PARAMETERS = ("reproduction_number", "mortality", "edge_type_weights")


def seirm(r=2.2, learnable=False, **kwargs) -> SEIRM:
    mortality = torch.tensor(MORTALITY, dtype=torch.float64)
    r = torch.as_tensor(r, dtype=torch.float64).clone()
    return SEIRM(r, mortality, edge_type_weights=WEIGHTS, learnable=learnable, **kwargs)


@pytest.fixture(scope="module")
def run_10k():
    """One 60-step run at N = 10,000 (synthetic population, four edge types, eight age
    groups): plaintext (float64, states kept) and secure."""
    n, steps = 10_000, 60
    graph = SyntheticPopulation(n, seed=2)[0]
    plain = simulate(
        seirm(by_age=True), graph, steps, initial_infected=25, seed=9, dtype=torch.float64,
        record_states=True,
    )  # fmt: skip
    session = Session(2, seed=1, owner=ProtocolInputs(seirm(), n, 25, seed=9))
    secure = secure_simulate(seirm(by_age=True), graph, steps, session)
    return graph, plain, secure, session


def test_daily_counts_equal_the_plaintext_run_at_10k_agents(run_10k):
    _, plain, secure, _ = run_10k
    assert float(plain.counts["R"][-1]) > 2000 and float(plain.counts["M"][-1]) > 20
    assert set(secure.counts) == set(plain.counts) and set(secure.flows) == set(plain.flows)
    for name in plain.counts:
        assert torch.equal(secure.counts[name], plain.counts[name]), name
    for name in plain.flows:
        assert torch.equal(secure.flows[name], plain.flows[name]), name
    assert secure.counts["M_by_age"].shape == (61, 8)


class Capture(SecureContext):
    """A step context that keeps the private ``lambda dt`` of the infection flow."""

    def flow(self, name, survival, source, stream=None):
        if name == "infection":
            self.hazard = survival.x  # survival = exp(-lambda dt), kept lazy
        return super().flow(name, survival, source, stream)


def test_force_of_infection_and_decisions_against_float_plaintext(run_10k):
    """On the plaintext states, the unchanged infection phase on shares: secure lambda dt
    within 1e-4 of the float64 one (read from the plaintext phase in expected mode with
    everyone susceptible), the linear part (the infectiousness) bit for bit equal to the int64
    fixed-point computation, and decisions identical except near ties."""
    graph, plain, _, _ = run_10k
    protocol = seirm()
    protocol.check(graph)
    inputs = ProtocolInputs(protocol, graph.num_nodes("agent"), 25, seed=9)
    session = Session(2, seed=3)
    w = work_bits(session)
    infection = protocol.phases[0]
    worst, differing, ties, infected = 0.0, 0, 0, 0
    for t in range(0, 60, 4):
        state = plain.states[t]
        shared = {k: private(session.share(state[k].long())) for k in ("S", "E", "I", "R", "M")}
        x = protocol.infectiousness(shared, "stochastic").shared()
        weights = {"E": protocol.slot_rate_E, "I": protocol.slot_rate_I}
        fixed = sum((state[k].long() * encode(weights[k].double(), w)).sum(1) for k in "EI")
        assert torch.equal(x.shares.sum(0), fixed)  # linear part: exact in the ring
        draws = {}

        def draw(stream, shape, t=t, draws=draws):
            draws[stream] = inputs.draw(stream, t, shape[1:])
            return session.share(draws[stream], inputs.draw_bits)

        ctx = Capture(t=t, dt=1.0, start=shared, streams=None, session=session, draw=draw)
        infection(graph, shared, ctx)
        secure = decode_shares(ctx.hazard.shared())
        everyone = {**state, "S": torch.ones_like(state["S"])}
        plain_ctx = StepContext(t, 1.0, everyone, RandomStreams(0), mode="expected")
        infection(graph, everyone, plain_ctx)
        p = plain_ctx.flows["infections"]  # 1 - exp(-lambda dt)
        exact = -torch.log1p(-p)
        readable = p < 1 - 1e-9  # beyond lambda dt ~ 20, 1 - exp(-lambda dt) rounds to 1
        worst = max(worst, float((secure - exact)[readable].abs().max()))
        assert bool((secure[~readable] > 19).all())
        draw_t = draws["infection"]
        bits = decode_shares((ctx.hazard > session.share(draw_t, inputs.draw_bits)).shared())
        differ = bits.bool() != (exact > draw_t)
        near = (exact - draw_t).abs() < TIE
        assert not bool((differ & ~near).any())
        differing, ties = differing + int(differ.sum()), ties + int(near.sum())
        infected += int((exact > draw_t).sum())
    assert worst < 1e-4 and infected > 1000
    print(f"max |lambda error| {worst:.2e}; differing decisions {differing}; near ties {ties}")


@pytest.mark.parametrize("weekly", [False, True], ids=["scalar R", "R per step"])
def test_gradients_match_plaintext_autograd_on_the_same_realisation(weekly):
    n, steps = 2000, 30
    graph = SyntheticPopulation(n, seed=1)[0]
    r = torch.tensor([1.5, 1.2, 1.8, 1.0, 1.1], dtype=torch.float64)
    r = torch.repeat_interleave(r, 7)[:steps] if weekly else torch.tensor(1.6)
    session = Session(2, seed=1, owner=ProtocolInputs(seirm(r), n, 20, seed=4))
    secure = secure_simulate(seirm(r), graph, steps, session, tangents=PARAMETERS)
    model = seirm(r, learnable=True)
    plain = simulate(model, graph, steps, initial_infected=20, seed=4, dtype=torch.float64)
    for name in plain.counts:
        assert torch.equal(secure.counts[name], plain.counts[name].detach()), name

    def loss(series):
        fit = ((series["deaths"] - 1.0) ** 2).mean()
        return fit + series["R"][-1] / n + series["infections"].sum() / n

    value, grad = secure.gradient(loss)
    reference = loss({**plain.counts, **plain.flows})
    reference.backward()
    want = torch.cat(
        [model.reproduction_number.grad.reshape(-1), model.mortality.grad,
         model.edge_type_weights.grad.double()]
    )  # fmt: skip
    assert grad.shape == want.shape == (len(secure.parameters),)
    assert float(value) == pytest.approx(float(reference.detach()))
    assert float(want.abs().min()) > 1e-3  # every parameter matters to this loss
    assert torch.allclose(grad, want, rtol=1e-3, atol=0), (grad - want) / want
    assert session.audit.kinds()["gradient"] == 1


def test_random_stays_and_counts_by_age():
    """Geometric stays in E and I (private exit draws per slot, the kernel read from the
    private time since infection); counts per age group; gradients through deaths by age."""
    n, steps = 500, 12
    graph = SyntheticPopulation(n, seed=1)[0]
    stays = dict(exposed=Duration.geometric(3), infectious=Duration.geometric(4), by_age=True)
    session = Session(3, seed=2, owner=ProtocolInputs(seirm(2.5, **stays), n, 20, seed=4))
    secure = secure_simulate(
        seirm(2.5, **stays), graph, steps, session, tangents=("reproduction_number", "mortality")
    )
    model = seirm(2.5, learnable=True, **stays)
    plain = simulate(model, graph, steps, initial_infected=20, seed=4, dtype=torch.float64)
    for name, value in {**plain.counts, **plain.flows}.items():
        assert torch.equal(secure.opened()[name], value.detach()), name
    assert float(plain.counts["I"][-1].detach()) > 20 and float(plain.counts["M"][-1].detach()) > 0

    def loss(series):
        return (series["deaths_by_age"][:, 6:] ** 2).sum() + series["I"].sum() / n

    value, grad = secure.gradient(loss)
    loss({**plain.counts, **plain.flows}).backward()
    want = torch.cat([model.reproduction_number.grad.reshape(1), model.mortality.grad]).double()
    used = want != 0  # age groups without deaths in the window have zero gradient
    assert int(used.sum()) >= 3
    assert torch.allclose(grad[used], want[used], rtol=1e-3)
    assert torch.allclose(grad[~used], want[~used], atol=1e-6)


def test_mixed_graph_opens_public_agents_only():
    n, steps = 1200, 15
    graph = SyntheticPopulation(n, seed=5)[0]
    public = torch.zeros(n, dtype=torch.bool)
    public[::4] = True
    session = Session(2, seed=2, owner=ProtocolInputs(seirm(), n, 15, seed=6))
    session.audit = AuditLog(keep_values=True)
    secure = secure_simulate(seirm(), graph, steps, session, public=public)
    plain = simulate(
        seirm(), graph, steps, initial_infected=15, seed=6, dtype=torch.float64,
        record_states=True,
    )  # fmt: skip
    assert torch.equal(secure.counts["E"], plain.counts["E"])
    opened = [
        (o, v) for o, v in zip(session.audit.openings, session.audit.values)
        if o.kind == "public_state"
    ]  # fmt: skip
    assert len(opened) == 5 * (steps + 1)
    for k, (o, value) in enumerate(opened):
        t, name = divmod(k, 5)
        stage = "SEIRM"[name]
        assert o.name == f"public agents' {stage}"
        assert torch.equal(value, plain.states[t][stage][public].long())
    assert session.audit.names("aggregate") == {"counts"}


def test_audit_log_has_only_declared_openings_and_no_private_value():
    n, steps = 600, 10
    graph = SyntheticPopulation(n, seed=3)[0]
    inputs = ProtocolInputs(seirm(), n, 12, seed=1)
    session = Session(2, seed=4, owner=inputs)
    session.audit = AuditLog(keep_values=True)
    run = secure_simulate(seirm(), graph, steps, session, tangents=("reproduction_number",))
    run.gradient(lambda s: s["deaths"].sum() + s["infections"].sum())
    allowed = {"aggregate", "beaver_mask", "binary_mask", "comparison_mask"}
    allowed |= {"truncation_mask", "loss", "gradient"}
    assert set(session.audit.kinds()) <= allowed
    assert session.audit.names("aggregate") == {"counts"}
    # the private per-agent vectors of the run: stages (0/1) and the draws (fixed point)
    plain = simulate(
        seirm(), graph, steps, initial_infected=12, seed=1, dtype=torch.float64,
        record_states=True,
    )  # fmt: skip
    secrets = set()
    for t in range(steps):
        state = plain.states[t]
        columns = [state["S"], *state["E"].T, *state["I"].T, state["R"], state["M"]]
        for v in columns:
            if bool(v.any()):
                secrets.add(v.long().numpy().tobytes())
        for stream in ("infection", "death"):
            secrets.add(encode(inputs.draw(stream, t), inputs.draw_bits).numpy().tobytes())
    checked = 0
    for o, value in zip(session.audit.openings, session.audit.values):
        if o.kind in ("aggregate", "loss", "gradient"):
            continue
        flat = value.reshape(-1)
        for start in range(0, flat.numel() - n + 1, n):
            checked += 1
            assert flat[start : start + n].numpy().tobytes() not in secrets, o
    assert checked > 100


def test_bad_input_is_refused():
    graph = SyntheticPopulation(200, seed=0)[0]
    session = Session(2, owner=ProtocolInputs(seirm(), 200, 2))
    with pytest.raises(ValueError, match="unknown parameter"):
        secure_simulate(seirm(), graph, 2, session, tangents=("beta",))
    with pytest.raises(ValueError, match="bool mask"):
        secure_simulate(seirm(), graph, 2, session, public=torch.ones(5, dtype=torch.bool))
    with pytest.raises(TypeError, match="runs a Protocol"):
        secure_simulate(object(), graph, 2, session)  # type: ignore[arg-type]
    closure = EdgeTypeClosure("school", Schedule.always(1.0))  # draws compliance: ctx.uniform
    with pytest.raises(NotImplementedError, match=r"phase 'infection'.*ctx.uniform"):
        secure_simulate(seirm(interventions=[closure]), graph, 2, session)
    with pytest.raises(ValueError, match="steps"):
        secure_simulate(seirm(), graph, 0, session)
    with pytest.raises(KeyError, match="no private input"):
        ProtocolInputs(seirm(), 200, 2)("recovery_draw", 0)
    with pytest.raises(KeyError, match="no private input"):
        ProtocolInputs(seirm(), 200, 2)("state:E:", None)  # E has K_E slots per agent
