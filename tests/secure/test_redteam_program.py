"""Red-team attacks on the generic secure program (``secure_simulate``): the openings are
derived from a protocol's own ``observe`` / ``total_flows``, so a public, agreed protocol
written carelessly or adversarially chooses what is opened. Each attack recovered a private
agent's state before its fix; each test now checks the refusal (before anything is shared or
opened) and that the honest observables of the same protocol still run."""

from __future__ import annotations

import pytest
import torch

from lpm_graph.datasets.generators import erdos_renyi
from lpm_graph.protocols import SIR
from lpm_graph.secure import LeakageError, ProtocolInputs, Session, secure_simulate

N = 60
VICTIM = 5


def _infected():
    mask = torch.zeros(N, dtype=torch.bool)
    mask[[VICTIM, 11, 23, 40]] = True
    return mask


class Spy(SIR):
    """SIR whose observables add ``extra(state)`` (a public, agreed protocol)."""

    def __init__(self, extra):
        super().__init__(0.1, 0.1)
        self.extra = extra

    def observe(self, state):
        return {**super().observe(state), **self.extra(state)}


@pytest.fixture(scope="module")
def graph():
    return erdos_renyi(N, 4.0, seed=1)


def _run(protocol, graph, steps=1):
    owner = ProtocolInputs(SIR(0.1, 0.1), N, _infected())
    session = Session(2, owner=owner)
    return secure_simulate(protocol, graph, steps, session), session


def test_honest_observables_still_run(graph):
    out, session = _run(Spy(lambda s: {"I_again": s["I"].sum() * 1.0}), graph)
    assert float(out.counts["I_again"][0]) == 4.0
    assert float(out.counts["I"][0]) == 4.0


# ------------------------------------------------- 1. the weights of a "sum over agents"
@pytest.mark.parametrize(
    "extra",
    [
        lambda s: {"spy": s["I"].sum() + 1000.0 * s["I"][VICTIM]},
        lambda s: {"spy": s["I"][VICTIM] + 1e-3 * s["S"].sum()},
        lambda s: {"spy": (s["I"] * (1.0 + 999.0 * (torch.arange(N) == VICTIM))).sum()},
    ],
    ids=["heavy-agent", "tiny-others", "public-weights"],
)
def test_1_a_weighted_sum_that_singles_out_an_agent_is_refused(graph, extra):
    with pytest.raises(LeakageError, match="same weight"):
        _run(Spy(extra), graph)


# ------------------------------------------------- 2. two large groups differing by one agent
@pytest.mark.parametrize(
    "extra",
    [
        lambda s: {"rest": s["I"][VICTIM + 1 :].sum() + s["I"][:VICTIM].sum()},
        lambda s: {
            "nested": torch.stack(
                [
                    s["I"][: VICTIM + 1].sum() + s["I"][20:].sum(),
                    s["I"][:VICTIM].sum() + s["I"][20:].sum(),
                ]
            )
        },
    ],
    ids=["all-minus-one", "nested"],
)
def test_2_groups_that_difference_to_one_agent_are_refused(graph, extra):
    with pytest.raises(LeakageError, match="min_group"):
        _run(Spy(extra), graph)


# ------------------------------------------------- 3. a row that the trace sees no agent behind
def test_3_a_comparison_inside_an_observable_is_refused(graph):
    def extra(s):  # the comparison has no gradient: the trace saw 0 agents behind row 0
        return {"spy": torch.stack([(s["I"][VICTIM] > 0.5) * 1.0 + 0 * s["I"].sum(),
                                    s["I"].sum()])}  # fmt: skip

    with pytest.raises(LeakageError, match="not a sum"):
        _run(Spy(extra), graph)


# ------------------------------------------------- 4. a trace fooled by autograd
@pytest.mark.parametrize(
    "extra",
    [
        lambda s: {"spy": s["I"][VICTIM].detach() + (s["I"] - s["I"].detach()).sum()},
        lambda s: {
            "spy": _no_grad(s["I"][VICTIM] * 1.0)
            + 0.0 * s["I"].sum()
            + (s["I"] - s["I"].detach()).sum()
        },  # fmt: skip
    ],
    ids=["detach", "no_grad"],
)
def test_4_an_observable_whose_gradient_lies_about_its_value_is_refused(graph, extra):
    with pytest.raises(LeakageError, match="not a sum"):
        _run(Spy(extra), graph)


def _no_grad(x):
    with torch.no_grad():
        return x * 1.0


# ------------------------------------------------- 5. a phase that opens through ctx.session
class Peeker(SIR):
    """SIR whose step opens one agent's state as an 'aggregate' over N agents."""

    def __init__(self, via):
        super().__init__(0.1, 0.1)
        self.via, self.peeked = via, []

    def step(self, graph, state, ctx):
        x = state["I"]
        session = ctx.session if self.via == "ctx" else x.session
        row = x.shared()[VICTIM : VICTIM + 1]
        self.peeked.append(session.reveal(row, "peek", "aggregate", group=N))
        return super().step(graph, state, ctx)


@pytest.mark.parametrize("via", ["ctx", "value"])
def test_5_a_phase_cannot_open_through_the_session(graph, via):
    protocol = Peeker(via)
    with pytest.raises(LeakageError, match="cannot open"):
        _run(protocol, graph)
    assert protocol.peeked == []  # refused on the dry session already
