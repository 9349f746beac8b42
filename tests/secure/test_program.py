"""The generic secure program: a protocol defined only here (SIS with a custom message) runs on
shares unchanged and equals the plaintext run; a phase with an operation that has no secure
implementation is refused when the run is built, naming it, before anything is shared or
opened."""

from __future__ import annotations

import pytest
import torch

from lpm_graph import simulate
from lpm_graph.datasets.generators import erdos_renyi
from lpm_graph.layers import ProtocolLayer
from lpm_graph.protocols.base import CompartmentalProtocol, Phase
from lpm_graph.secure import DataOwner, ProtocolInputs, Session, secure_simulate


# ---------------------------------------------------------------- SIS, written for plaintext
class Contact(ProtocolLayer):
    def message(self, infectious_j, edge_weight):  # infectiousness times a per-edge weight
        return infectious_j * edge_weight


class Infect(Phase):
    name = "infection"

    def __init__(self, owner):
        super().__init__(owner)
        self.contact = Contact()

    def forward(self, graph, state, ctx):
        rel = graph.relations[0]
        weight = self.owner.beta * self.owner.closeness  # per edge
        pressure = self.contact.propagate(graph.csr(rel), infectious=state["I"], edge_weight=weight)
        new = ctx.flow(self.name, torch.exp(-pressure * ctx.dt), state["S"])
        ctx.flows["infections"] = new
        return {**state, "S": state["S"] - new, "I": state["I"] + new}


class Recover(Phase):
    name = "recovery"

    def forward(self, graph, state, ctx):
        back = ctx.flow(self.name, torch.exp(-self.owner.gamma * ctx.dt), ctx.start["I"])
        ctx.flows["recoveries"] = back
        return {**state, "S": state["S"] + back, "I": state["I"] - back}


class SIS(CompartmentalProtocol):
    compartments = ("S", "I")

    def __init__(self, beta, gamma, closeness, phases=None):
        super().__init__(phases or [Infect(self), Recover(self)], dt=1.0)
        self.beta = torch.nn.Parameter(torch.tensor(beta, dtype=torch.float64))
        self.gamma = torch.nn.Parameter(torch.tensor(gamma, dtype=torch.float64))
        self.register_buffer("closeness", closeness)


# ---------------------------------------------------------------- tests
N, STEPS = 2000, 30


@pytest.fixture(scope="module")
def graph():
    return erdos_renyi(N, 8.0, seed=3)


@pytest.fixture(scope="module")
def closeness(graph):
    g = torch.Generator().manual_seed(0)
    return 0.5 + torch.rand(graph.num_edges(graph.relations[0]), generator=g, dtype=torch.float64)


def test_sis_runs_on_shares_and_equals_the_plaintext_run(graph, closeness):
    plain = simulate(SIS(0.08, 0.2, closeness), graph, STEPS, initial_infected=20, seed=4,
                     dtype=torch.float64)  # fmt: skip
    session = Session(2, seed=1, owner=ProtocolInputs(SIS(0.08, 0.2, closeness), N, 20, seed=4))
    secure = secure_simulate(SIS(0.08, 0.2, closeness), graph, STEPS, session)
    assert float(plain.flows["recoveries"].sum().detach()) > 500  # an endemic run, not a fizzle
    for name, value in {**plain.counts, **plain.flows}.items():
        assert torch.equal(secure.opened()[name], value.detach()), name
    masks = {"beaver_mask", "binary_mask", "comparison_mask", "truncation_mask"}
    assert set(session.audit.kinds()) <= {"aggregate", *masks}
    assert session.audit.names("aggregate") == {"counts"}


def test_sis_gradients_match_plaintext_autograd(graph, closeness):
    session = Session(2, seed=2, owner=ProtocolInputs(SIS(0.08, 0.2, closeness), N, 20, seed=5))
    secure = secure_simulate(SIS(0.08, 0.2, closeness), graph, STEPS, session,
                             tangents=("beta", "gamma"))  # fmt: skip
    model = SIS(0.08, 0.2, closeness)
    plain = simulate(model, graph, STEPS, initial_infected=20, seed=5, dtype=torch.float64)

    def loss(series):
        return ((series["infections"] - 30.0) ** 2).mean() + series["I"][-1] / N

    value, grad = secure.gradient(loss)
    reference = loss({**plain.counts, **plain.flows})
    reference.backward()
    want = torch.stack([model.beta.grad, model.gamma.grad])
    assert secure.parameters == ("beta", "gamma")
    assert float(value) == pytest.approx(float(reference.detach()))
    assert torch.allclose(grad, want, rtol=1e-3), (grad, want)


class Squash(Phase):
    name = "squash"

    def forward(self, graph, state, ctx):
        return {**state, "I": torch.sigmoid(state["I"])}


class Branch(Phase):
    name = "branch"

    def forward(self, graph, state, ctx):
        return state if float(state["I"].sum()) > 0 else state


class Uniform(Phase):
    name = "uniform"

    def forward(self, graph, state, ctx):
        u = ctx.uniform("noise", state["I"])
        return {**state, "I": state["I"] * u}


class Equal(Phase):
    name = "equal"

    def forward(self, graph, state, ctx):
        return {**state, "I": state["I"] * (state["S"] == 0)}


@pytest.mark.parametrize(
    ("phase", "error", "names"),
    [
        (Squash, NotImplementedError, "torch.sigmoid"),
        (Branch, TypeError, r"float\(x\)"),
        (Uniform, NotImplementedError, r"ctx.uniform"),
        (Equal, NotImplementedError, r"x == y"),
    ],
    ids=["torch.sigmoid", "float(x)", "ctx.uniform", "=="],
)
def test_an_operation_with_no_secure_implementation_fails_when_the_run_is_built(
    graph, closeness, phase, error, names
):
    def protocol():
        sis = SIS(0.08, 0.2, closeness)
        return SIS(0.08, 0.2, closeness, phases=[Infect(sis), phase(sis)])

    owner = ProtocolInputs(protocol(), N, 20)
    session = Session(2, owner=owner)
    with pytest.raises(error, match=names) as info:
        secure_simulate(protocol(), graph, STEPS, session)
    assert f"phase {phase.name!r}" in str(info.value)
    # refused before any input was shared or anything opened
    assert session.cost.rounds == 0 and session.audit.openings == []
    assert session.transport.owners[0]._served == set()
    assert session.transport.owner_bytes() == 0


def test_layers_do_not_import_secure():
    """ProtocolLayer.propagate finds the shares' propagation through a hook on the values'
    type (__lpm_propagate__): the layers package imports nothing of lpm_graph.secure."""
    from pathlib import Path

    import lpm_graph.layers

    for path in Path(lpm_graph.layers.__file__).parent.glob("*.py"):
        imports = [line for line in path.read_text().splitlines() if "import" in line]
        assert not [line for line in imports if "secure" in line], path


def test_a_step_of_flows_is_one_batch(graph, closeness):
    """Infection and recovery are resolved together: one comparison and one product round
    per step (2 parties: 8 comparison rounds, 1 product, 1 opening of the counts)."""
    session = Session(2, owner=ProtocolInputs(SIS(0.08, 0.2, closeness), N, 20))
    secure_simulate(SIS(0.08, 0.2, closeness), graph, 3, session)
    assert [s.rounds for s in session.cost.steps if isinstance(s.step, int)] == [10, 10, 10]


def test_two_owners_partitioning_the_agents(graph, closeness):
    """Each owner shares its own agents' initial state and draws (ProtocolInputs of its
    agents only); the parties place them; the counts add up."""
    even, odd = torch.arange(0, N, 2), torch.arange(1, N, 2)
    sick = torch.zeros(N // 2, dtype=torch.bool)
    sick[:15] = True  # 15 of each owner's agents start infectious
    owners = [
        DataOwner(
            ProtocolInputs(SIS(0.08, 0.2, closeness), N // 2, sick), agents=ids, num_agents=N
        )  # fmt: skip
        for ids in (even, odd)
    ]
    session = Session(2, owners=owners)
    run = secure_simulate(SIS(0.08, 0.2, closeness), graph, 10, session)
    assert float(run.counts["I"][0]) == 30
    assert torch.equal(run.counts["S"] + run.counts["I"], torch.full((11,), float(N)).double())
    assert float(run.flows["infections"].sum()) > 0
    assert session.transport.owner_bytes() > 0
