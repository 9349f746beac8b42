"""SIR's unchanged phases on shares (secure_simulate) against the plaintext simulator on the
same realisation: force of infection, infection decisions, daily counts, gradients, mixed
public/private graphs and the cost."""

from __future__ import annotations

import pytest
import torch

from lpm_graph import simulate
from lpm_graph.datasets.generators import erdos_renyi
from lpm_graph.layers.transmission import Transmission
from lpm_graph.protocols import SIR
from lpm_graph.protocols.sir import DRAWS
from lpm_graph.secure import DataOwner, ProtocolInputs, Session, decode, encode, secure_simulate
from lpm_graph.secure.tensor import decode_shares

TIE = 2.0**-12


def sir_owner(n, initial_infected, seed=None):  # the private inputs of an SIR run
    return ProtocolInputs(SIR(0.1, 0.1), n, initial_infected, seed=seed)


@pytest.fixture(scope="module")
def run_10k():
    """One 60-step run at N = 10,000: plaintext (float64, states kept) and secure."""
    n, steps, tau, gamma = 10_000, 60, 0.06, 0.1
    graph = erdos_renyi(n, 10, seed=2)
    inputs = sir_owner(n, 20, seed=9)
    plain = simulate(
        SIR(tau, gamma, learnable=False),
        graph,
        steps,
        initial_infected=20,
        seed=9,
        dtype=torch.float64,
        record_states=True,
    )
    session = Session(2, seed=1, owner=inputs)
    secure = secure_simulate(SIR(tau, gamma, learnable=False), graph, steps, session)
    return graph, inputs, plain, secure, session, (tau, gamma, steps)


def test_daily_counts_equal_the_plaintext_run_at_10k_agents(run_10k):
    _, _, plain, secure, _, _ = run_10k
    assert float(plain.counts["R"][-1]) > 1000  # a real epidemic, not a fizzle
    for name in ("S", "I", "R"):
        assert torch.equal(secure.counts[name], plain.counts[name]), name
    for name in ("infections", "recoveries"):
        assert torch.equal(secure.flows[name], plain.flows[name]), name


def test_force_of_infection_and_decisions_against_float_plaintext(run_10k):
    """Step by step on the plaintext states: secure lambda within 1e-4 of float64 and bit for
    bit equal to the int64 fixed-point computation; decisions identical except near ties."""
    graph, inputs, plain, _, _, (tau, _, steps) = run_10k
    session = Session(2, seed=3)
    layer = Transmission()
    csr = graph.csr(graph.relations[0])
    rate = encode(torch.tensor(tau, dtype=torch.float64))
    worst, differing, ties = 0.0, 0, 0
    for t in range(0, steps, 3):
        infectious = plain.states[t]["I"]
        shared = session.share(infectious.long())
        lam = layer(csr, shared, torch.tensor(tau, dtype=torch.float64))
        fixed = torch.zeros(graph.num_nodes(), dtype=torch.int64).index_add_(
            0, csr.row, rate * infectious.long()[csr.col]
        )
        assert torch.equal(lam.shares.sum(0), fixed)  # linear part: exact in the ring
        # the protocol's decisions: exact contact counts times the rate with 24 bits
        contacts = layer(csr, shared, torch.tensor(1))
        lam = contacts.mul_public(torch.tensor(tau, dtype=torch.float64), frac_bits=24)
        exact = layer(csr, infectious, torch.tensor(tau, dtype=torch.float64))
        worst = max(worst, float((decode_shares(lam) - exact).abs().max()))
        draw, draw_bits = inputs.draw(DRAWS, t), inputs.draw_bits
        infected = decode_shares(lam > session.share(draw, draw_bits)).bool()
        susceptible = plain.states[t]["S"].bool()
        want = (exact > draw) & susceptible
        got = infected & susceptible
        near = ((exact - draw).abs() < TIE) & susceptible
        differing += int((got != want).sum())
        ties += int(near.sum())
        assert not bool(((got != want) & ~near).any())  # every difference is a near tie
    assert worst < 1e-4
    print(f"max |lambda error| {worst:.2e}; differing decisions {differing}; near ties {ties}")


def test_gradients_match_plaintext_autograd_on_the_same_realisation():
    n, steps = 2000, 40
    graph = erdos_renyi(n, 10, seed=1)
    for order in ("infect_first", "recover_first"):
        session = Session(2, seed=5, owner=sir_owner(n, 10, seed=3))
        secure = secure_simulate(
            SIR(0.13, 0.1, order=order, learnable=False),
            graph,
            steps,
            session,
            tangents=("transmission_rate", "recovery_rate"),
        )
        tau = torch.tensor(0.13, dtype=torch.float64, requires_grad=True)
        gamma = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
        plain = simulate(
            SIR(tau, gamma, order=order), graph, steps, initial_infected=10, seed=3,
            dtype=torch.float64,
        )  # fmt: skip
        assert torch.equal(secure.counts["R"], plain.counts["R"].detach())

        def loss(series):
            return ((series["infections"] - 20.0) ** 2).mean() + series["R"][-1] / n

        value, grad = secure.gradient(loss)
        reference = loss({**plain.counts, **plain.flows})
        reference.backward()
        want = torch.stack([tau.grad, gamma.grad])
        assert float(value) == pytest.approx(float(reference.detach()))
        assert torch.allclose(grad, want, rtol=1e-3), (order, grad, want)
        kinds = session.audit.kinds()
        assert kinds["gradient"] == 1 and kinds["loss"] == 1


def test_mixed_graph_opens_public_agents_only():
    n, steps = 1500, 25
    graph = erdos_renyi(n, 8, seed=4)
    public = torch.zeros(n, dtype=torch.bool)
    public[::3] = True  # a third of the agents are public
    session = Session(3, seed=2, owner=sir_owner(n, 15, seed=6))
    from lpm_graph.secure import AuditLog

    session.audit = AuditLog(keep_values=True)
    secure = secure_simulate(SIR(0.1, 0.1, learnable=False), graph, steps, session, public=public)
    plain = simulate(
        SIR(0.1, 0.1, learnable=False), graph, steps, initial_infected=15, seed=6,
        dtype=torch.float64, record_states=True,
    )  # fmt: skip
    assert torch.equal(secure.counts["I"], plain.counts["I"])
    opened = [
        (o, v) for o, v in zip(session.audit.openings, session.audit.values)
        if o.kind == "public_state"
    ]  # fmt: skip
    assert len(opened) == 3 * (steps + 1)  # S, I and R of the public agents, every step
    for k, (o, value) in enumerate(opened):
        t, name = divmod(k, 3)
        assert o.name == f"public agents' {'SIR'[name]}"
        assert torch.equal(value, plain.states[t]["SIR"[name]][public].long())  # scale 0
    assert all(o.shape == (int(public.sum()),) for o, _ in opened)
    assert session.audit.names("aggregate") == {"counts"}


def test_aggregation_is_free_and_step_bytes_grow_with_agents_not_edges():
    def step_bytes(n, degree):
        graph = erdos_renyi(n, degree, seed=0)
        owner = DataOwner(sir_owner(n, 5, seed=0), serve_once=False)  # two uses of one input
        session = Session(2, seed=0, owner=owner)
        layer = Transmission()
        infected = session.input("initial_infected")
        before = (session.cost.rounds, session.cost.bytes_per_party)
        layer(graph.csr(graph.relations[0]), infected, torch.tensor(0.2, dtype=torch.float64))
        assert (session.cost.rounds, session.cost.bytes_per_party) == before  # 0 bytes
        secure_simulate(SIR(0.2, 0.1, learnable=False), graph, 2, session)
        return session.cost.steps[-1].bytes_per_party

    small, dense, double = step_bytes(1000, 4), step_bytes(1000, 40), step_bytes(2000, 4)
    assert small == dense  # ten times the edges, the same bytes
    per_agent = (double - small) / 1000
    assert small == pytest.approx(per_agent * 1000, rel=0.01)  # linear in N
    assert 300 < per_agent < 1000  # two comparisons and two products per agent


def test_bad_input_is_refused():
    graph = erdos_renyi(100, 4, seed=0)
    session = Session(2, owner=sir_owner(100, 2))
    with pytest.raises(ValueError, match="unknown parameter"):
        secure_simulate(SIR(0.1, 0.1), graph, 2, session, tangents=("beta",))
    with pytest.raises(ValueError, match="bool mask"):
        secure_simulate(SIR(0.1, 0.1), graph, 2, session, public=torch.ones(5, dtype=torch.bool))
    with pytest.raises(TypeError, match="runs a Protocol"):
        secure_simulate(object(), graph, 2, session)  # type: ignore[arg-type]
    assert decode(encode(torch.tensor(0.5))) == 0.5
