"""Pairwise keys, pseudo-random zero-sharings (no dealer) and openings to the output receiver
only."""

from __future__ import annotations

import pytest
import torch

from lpm_graph.protocols import SIR
from lpm_graph.secure import (
    DataOwner,
    LeakageError,
    OutputShares,
    ProtocolInputs,
    Session,
    launch,
    receive,
    secure_simulate,
)
from lpm_graph.secure.ring import decode


def sir_inputs(n, initial_infected, **kwargs):
    """The private inputs of an SIR run (its initial state and draws)."""
    return ProtocolInputs(SIR(0.1, 0.1), n, initial_infected, **kwargs)


N = 40


@pytest.mark.parametrize("parties", [2, 3, 5])
def test_zero_sharings_sum_to_zero_and_look_uniform(parties):
    session = Session(parties)
    dealt = session.transport.dealer_bytes()
    zero = session.zero_sharing((4000,))
    assert zero.shape == (parties, 4000)
    assert torch.equal(zero.sum(0), torch.zeros(4000, dtype=torch.int64))
    assert session.cost.rounds == 0 and session.transport.dealer_bytes() == dealt
    for row in zero[:-1]:  # any K - 1 rows: uniform words (each bit set half the time)
        bits = torch.stack([(row >> b) & 1 for b in range(64)]).double().mean(1)
        assert float((bits - 0.5).abs().max()) < 0.04
    assert not torch.equal(session.zero_sharing((4000,)), zero)  # fresh words every call


def test_reshare_keeps_the_value_and_changes_every_share():
    session = Session(3)
    x = session.share(torch.arange(6.0))
    y = session.reshare(x)
    assert torch.equal(y.shares.sum(0), x.shares.sum(0))
    assert not bool((y.shares == x.shares).any())


def test_an_output_reaches_the_receiver_only():
    session = Session(2, owner=sir_inputs(N, 5))
    infected = session.input("initial_infected")
    out = session.output(infected.sum(), "infected at the start", group=N)
    assert isinstance(out, OutputShares)
    assert float(receive(out)) == 5.0
    (opening,) = session.audit.openings
    assert opening.receiver and opening.kind == "aggregate"
    # what a party sends the receiver is not the share it holds
    assert not torch.equal(out.rows, infected.sum().shares)
    with pytest.raises(LeakageError, match="declares no group size"):
        session.output(infected.sum(), "no group")
    with pytest.raises(LeakageError, match="kind 'output'"):
        session.output(infected, "per agent", kind="output")


def test_receive_checks_the_parts():
    a, b = (OutputShares("x", torch.ones(1, 2, dtype=torch.int64), (k,), 2, 0) for k in (0, 1))
    assert receive([a, b]).tolist() == [2.0, 2.0]
    with pytest.raises(ValueError, match="every party's part once"):
        receive([a, a])
    other = OutputShares("y", torch.ones(1, 2, dtype=torch.int64), (1,), 2, 0)
    with pytest.raises(ValueError, match="different things"):
        receive([a, other])
    nested = receive([{"x": a, "n": 3, "t": (a, "s")}, {"x": b, "n": 3, "t": (b, "s")}])
    assert nested["n"] == 3 and nested["t"][1] == "s"
    assert nested["x"].tolist() == nested["t"][0].tolist() == [2.0, 2.0]


def _party(session):
    """A run whose counts go to the receiver only: the parties see masks and nothing else."""
    from lpm_graph.datasets.generators import erdos_renyi

    infected = session.input("initial_infected")
    graph = erdos_renyi(N, 4.0, seed=0)
    first = session.output(infected.sum(), "infected", group=N)
    run = secure_simulate(_sir(), graph, 2, session)
    informative = [o for o in session.audit.openings if "mask" not in o.kind]
    return {"infected": first, "counts": run.counts["I"].tolist(),
            "informative": [(o.name, o.receiver) for o in informative]}  # fmt: skip


def _sir():
    from lpm_graph.protocols import SIR

    return SIR(0.3, 0.1, learnable=False)


@pytest.mark.parametrize("parties", [2, 3])
def test_launch_hands_outputs_to_its_caller(parties):
    owner = DataOwner(sir_inputs(N, 4), serve_once=False)  # the party function reads it twice
    results = launch(_party, parties, owner=owner, timeout=120)
    got = receive(results)
    assert float(got["infected"]) == 4.0
    assert got["counts"][0] == 4.0
    assert results[0]["informative"][0] == ("infected", True)
    # no party's returned part decodes to the value on its own
    for r in results:
        assert float(decode(r["infected"].rows.sum(0), 0)) != 4.0
