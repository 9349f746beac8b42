"""A party's view (finding 1 of the security review): replaying the dealer or an owner gives
it nothing, and its view of runs with different private inputs cannot be told apart."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from lpm_graph.datasets.generators import erdos_renyi
from lpm_graph.protocols import SIR
from lpm_graph.secure import AuditLog, DataOwner, ProtocolInputs, Session, secure_simulate
from lpm_graph.secure.owner import OwnerRole
from lpm_graph.secure.prg import Randomness


def sir_inputs(n, initial_infected, **kwargs):
    """The private inputs of an SIR run (its initial state and draws)."""
    return ProtocolInputs(SIR(0.1, 0.1), n, initial_infected, **kwargs)


N = 400
INFECTED = torch.arange(40, 80)


def _replay_other_share(guess: int, parties: int = 2) -> torch.Tensor:
    """Party 0's attack: rebuild the owner's keystream from a guessed seed and compute the
    share it made for itself, then subtract... here: the owner's first share row (party 0's),
    from which the last party's row follows as value - row 0."""
    inputs = sir_inputs(N, INFECTED)  # what the owner computes is unknown: only its stream matters
    replayed = OwnerRole(DataOwner(inputs), parties, 16, Randomness.reproducible(guess))
    return replayed._stream.words((N,))  # the first words the owner drew: party 0's share


def test_replaying_a_seeded_owner_recovers_every_input_and_a_default_one_nothing():
    with pytest.warns(RuntimeWarning):
        seeded = Session(2, seed=0, owner=sir_inputs(N, INFECTED))
    mine = seeded.input("initial_infected").shares[1]  # party 1's share of the input
    with pytest.warns(RuntimeWarning):
        guess = _replay_other_share(0)  # the attack: the old default seed
    assert torch.equal(guess + mine, (torch.isin(torch.arange(N), INFECTED)).long())

    private = Session(2, owner=sir_inputs(N, INFECTED))  # the default: keys from OS entropy
    mine = private.input("initial_infected").shares[1]
    for seed in range(3):
        with pytest.warns(RuntimeWarning):
            recovered = _replay_other_share(seed) + mine
        assert int(((recovered == 0) | (recovered == 1)).sum()) == 0  # not even 0/1 values


def _view(infected: torch.Tensor) -> np.ndarray:
    """Party 0's view of a 3-step secure SIR run: its shares of the inputs and every mask
    opened to it (the declared aggregates left out), as top bytes of the words."""
    graph = erdos_renyi(N, 6.0, seed=0)
    audit = AuditLog(keep_values=True)
    owner = DataOwner(sir_inputs(N, infected), serve_once=False)  # the view takes them twice
    session = Session(2, owner=owner, audit=audit)
    words = [session.input("initial_infected").shares[0], session.input("draw:sir:", 0).shares[0]]
    secure_simulate(SIR(0.3, 0.1, learnable=False), graph, 3, session)
    for value, opening in zip(audit.values, audit.openings):
        # masks of words (a comparison's opened mask is one uniform bit, not a word)
        if "mask" in opening.kind and opening.kind != "comparison_mask":
            words.append(value.reshape(-1).to(torch.int64))
    flat = torch.cat([w.reshape(-1) for w in words])
    return ((flat >> 56) & 0xFF).numpy()


def test_views_of_different_inputs_cannot_be_told_apart():
    a = _view(torch.arange(0, 10))
    b = _view(torch.arange(200, 400))  # other agents, twenty times as many
    assert a.size == b.size > 50_000  # the same openings, whatever the inputs
    table = np.stack([np.bincount(a, minlength=256), np.bincount(b, minlength=256)])
    p = stats.chi2_contingency(table)[1]
    assert p > 1e-4, p  # the same distribution (a mask left unmasked gives p ~ 0)
    for sample in (a, b):  # and each uniform
        assert stats.chisquare(np.bincount(sample, minlength=256)).pvalue > 1e-4


def _search(counts: torch.Tensor, graph, seeds: range) -> list[int]:
    """The outsider's attack: the seeds whose plaintext run gives the published counts."""
    from lpm_graph import simulate

    return [
        s
        for s in seeds
        if torch.equal(
            simulate(
                SIR(0.3, 0.1, learnable=False),
                graph,
                15,
                initial_infected=INFECTED,
                seed=s,
                dtype=torch.float64,
            ).counts["I"],
            counts,
        )  # fmt: skip
    ]


def test_an_outsider_cannot_find_the_draws_from_the_published_counts():
    """Finding 3: the owners' draws were the plaintext stream of a small seed, so the daily
    counts alone gave the seed by search, and then every agent's trajectory. A seeded owner
    (the reproducible mode) still falls to it; a default owner's draws have no seed."""
    graph = erdos_renyi(N, 6.0, seed=0)
    with pytest.warns(RuntimeWarning):
        seeded = Session(2, owner=sir_inputs(N, INFECTED, seed=7))
    published = secure_simulate(SIR(0.3, 0.1, learnable=False), graph, 15, seeded).counts["I"]
    assert _search(published, graph, range(12)) == [7]
    private = Session(2, owner=sir_inputs(N, INFECTED))
    published = secure_simulate(SIR(0.3, 0.1, learnable=False), graph, 15, private).counts["I"]
    assert _search(published, graph, range(12)) == []
