"""The leakage policy (finding 5 of the security review) and the range checks (finding 6):
each attack first, then the defence that stops it."""

from __future__ import annotations

import math

import pytest
import torch

from lpm_graph.datasets.generators import erdos_renyi
from lpm_graph.protocols import SEIRM, SIR
from lpm_graph.secure import (
    AuditLog,
    DataOwner,
    GaussianDP,
    InsecureDebugWarning,
    LeakageError,
    LeakagePolicy,
    ProtocolInputs,
    Session,
    launch,
    secure_simulate,
)
from lpm_graph.secure.tensor import greater, multiply, truncate


def sir_inputs(n, initial_infected, **kwargs):
    """The private inputs of an SIR run (its initial state and draws)."""
    return ProtocolInputs(SIR(0.1, 0.1), n, initial_infected, **kwargs)


N = 60


@pytest.fixture(scope="module")
def graph():
    return erdos_renyi(N, 4.0, seed=1)


def _sir_session(policy=None, infected=3):
    return Session(2, owner=sir_inputs(N, infected), policy=policy)


# ---------------------------------------------------------------------- isolation by public=
def test_attack_public_all_but_one_isolates_an_agent(graph):
    """The attack: declare every agent but one public; the opened counts minus the public
    agents' opened states are the private agent's state, every day."""
    infected = torch.zeros(N, dtype=torch.bool)
    infected[7] = True  # the lone private agent is the index case
    public = torch.ones(N, dtype=torch.bool)
    public[7] = False
    session = Session(
        2, owner=sir_inputs(N, infected), policy=LeakagePolicy(min_group=0),
        audit=AuditLog(keep_values=True),
    )  # fmt: skip
    run = secure_simulate(SIR(0.3, 0.1), graph, 5, session, public=public)
    opened = [v for v, o in zip(session.audit.values, session.audit.openings)
              if o.kind == "public_state"]  # fmt: skip
    # per day, the public agents' S, I and R (one opening each)
    public_sums = torch.stack([o.sum(0) for o in opened]).reshape(-1, 3)
    counts = torch.stack([run.counts[k] for k in "SIR"], 1)
    lone = counts - public_sums  # [T + 1, 3]: the private agent's S, I, R each day
    assert lone[0].tolist() == [0.0, 1.0, 0.0]  # it is the index case
    assert torch.equal(lone.sum(1), torch.ones(6, dtype=torch.float64))  # one agent, every day


@pytest.mark.parametrize("model", ["sir", "seirm"])
def test_public_subsets_that_isolate_are_refused(graph, model):
    public = torch.ones(N, dtype=torch.bool)
    public[:9] = False  # 9 private agents < 10
    if model == "sir":
        session, run = _sir_session(), secure_simulate
        protocol = SIR(0.3, 0.1)
    else:
        protocol = SEIRM(2.0, torch.zeros(8), learnable=False)
        graph.set_node_attrs("agent", age_group=torch.arange(N) % 8)
        session = Session(2, owner=ProtocolInputs(protocol, N, 3))
        run = secure_simulate
    with pytest.raises(LeakageError, match="only 9 of the 60 agents are private.*min_group=10"):
        run(protocol, graph, 2, session, public=public)
    assert len(session.audit) == 0  # refused before anything was opened
    public[9] = False  # 10 private agents: allowed
    run(protocol, graph, 1, session, public=public)


def test_aggregates_need_enough_private_agents():
    small = erdos_renyi(8, 3.0, seed=0)
    session = Session(2, owner=sir_inputs(8, 1))
    with pytest.raises(LeakageError, match="only 8 of the 8 agents are private"):
        secure_simulate(SIR(0.3, 0.1), small, 2, session)
    session = Session(2)
    x = session.share(torch.ones(30))
    with pytest.raises(LeakageError, match="declares no group size"):
        x.sum().reveal("total", "aggregate")
    with pytest.raises(LeakageError, match="over 3 private agents"):
        x[:3].sum().reveal("three", "aggregate", group=3)
    assert float(x.sum().reveal("total", "aggregate", group=30)) == 30.0


def test_age_groups_with_few_private_agents_are_refused():
    protocol = SEIRM(2.0, torch.zeros(8), learnable=False, by_age=True)
    g = erdos_renyi(N, 4.0, seed=2)
    age = torch.zeros(N, dtype=torch.long)
    age[:4] = 7  # age group 7 has 4 agents
    g.set_node_attrs("agent", age_group=age)
    session = Session(2, owner=ProtocolInputs(protocol, N, 3))
    with pytest.raises(LeakageError, match="group 7 would have 4 private agents"):
        secure_simulate(protocol, g, 1, session)


def test_outputs_are_refused_unless_declared():
    session = Session(2)
    x = session.share(torch.arange(5.0))
    with pytest.raises(LeakageError, match="kind 'output'.*not allowed"):
        x.reveal("x")
    with pytest.raises(ValueError, match="unknown opening kind"):
        x.reveal("x", "secret")
    assert len(session.audit) == 0
    allowed = Session(2, policy=LeakagePolicy(outputs=True))
    assert allowed.share(torch.arange(5.0)).reveal("x").tolist() == [0, 1, 2, 3, 4]


# ---------------------------------------------------------------------- gradients
def _loss(series):
    return series["I"].sum() / N


def test_a_gradient_is_opened_once_per_session(graph):
    """The attack: open the gradient of several losses (each weighting different days or,
    on a weighted graph, different contacts) and difference them. The policy opens one."""
    session = _sir_session()
    run = secure_simulate(SIR(0.3, 0.1), graph, 4, session, tangents=("transmission_rate",))
    _, grad = run.gradient(_loss)
    assert grad.shape == (1,)
    with pytest.raises(LeakageError, match="already opened 1 time.*gradient_openings=1"):
        run.gradient(lambda s: s["R"].sum() / N)
    assert session.audit.kinds()["gradient"] == 1


def test_policy_is_fixed_and_checked():
    session = Session(2)
    with pytest.raises(AttributeError):
        session.policy = LeakagePolicy.unrestricted()
    with pytest.raises(TypeError, match="policy must be a LeakagePolicy"):
        Session(2, policy={"min_group": 0})
    with pytest.raises(ValueError, match="min_group"):
        LeakagePolicy(min_group=-1)
    with pytest.raises(ValueError, match="epsilon"):
        GaussianDP(epsilon=0)
    with pytest.raises(ValueError, match="delta"):
        GaussianDP(epsilon=1.0, delta=1.5)


# ---------------------------------------------------------------------- differential privacy
def test_gaussian_noise_has_the_declared_scale_and_spends_the_budget():
    """Each of the K parties adds N(0, (z * sensitivity)^2) to its share: the opened value
    carries K times that variance; the zCDP cost composes per opening."""
    dp = GaussianDP(epsilon=1e6, delta=1e-6, noise_multiplier=3.0)
    session = Session(2, policy=LeakagePolicy(privacy=dp))
    x = session.share(torch.zeros(20000))
    opened = x.reveal("zeros", "aggregate", group=10, sensitivity=2.0)
    sigma = 3.0 * 2.0
    assert math.isclose(float(opened.std()), math.sqrt(2) * sigma, rel_tol=0.03)
    assert abs(float(opened.mean())) < 0.2
    rho = 1 / (2 * 3.0**2)
    assert math.isclose(session.audit.rho, rho)
    eps, delta = session.audit.privacy_spent()
    assert math.isclose(eps, rho + 2 * math.sqrt(rho * math.log(1e6)))
    assert delta == 1e-6
    assert "differential privacy spent: epsilon" in session.audit.summary()


def test_the_budget_runs_out(graph):
    dp = GaussianDP(epsilon=2.0, delta=1e-5, noise_multiplier=2.0)  # about 2 openings
    session = Session(2, owner=sir_inputs(N, 3), policy=LeakagePolicy(privacy=dp))
    with pytest.raises(LeakageError, match="beyond the budget 2"):
        secure_simulate(SIR(0.3, 0.1), graph, 5, session)
    assert session.audit.epsilon <= 2.0


def test_an_aggregate_under_dp_gets_at_least_the_policys_sensitivity():
    dp = GaussianDP(epsilon=1e6, noise_multiplier=3.0, aggregate_sensitivity=2.0)
    session = Session(2, policy=LeakagePolicy(privacy=dp))
    with pytest.raises(LeakageError, match="below the policy's aggregate_sensitivity=2"):
        session.share(torch.ones(20)).sum().reveal("total", "aggregate", group=20, sensitivity=1)
    opened = session.share(torch.zeros(20000)).reveal("zeros", "aggregate", group=20)
    assert math.isclose(float(opened.std()), math.sqrt(2) * 3.0 * 2.0, rel_tol=0.03)


def test_a_noisy_secure_run_stays_close_to_the_exact_one(graph):
    dp = GaussianDP(epsilon=500.0, delta=1e-6, noise_multiplier=0.5)
    exact = secure_simulate(SIR(0.3, 0.1), graph, 6, Session(2, owner=sir_inputs(N, 3, seed=2)))
    noisy_session = Session(2, owner=sir_inputs(N, 3, seed=2), policy=LeakagePolicy(privacy=dp))
    noisy = secure_simulate(SIR(0.3, 0.1), graph, 6, noisy_session)
    diff = (noisy.counts["I"] - exact.counts["I"]).abs()
    assert float(diff.max()) < 2 * 5 * math.sqrt(2) * 0.5 * 2  # 5 sigma of the summed noise
    assert float(diff.max()) > 0  # there is noise
    assert noisy_session.audit.epsilon > 0


def test_gradients_are_clipped_on_shares_before_the_noise():
    dp = GaussianDP(epsilon=1e9, noise_multiplier=1e-4, gradient_clip=0.5)
    session = Session(2, policy=LeakagePolicy(privacy=dp))
    g = session.share(torch.tensor([3.0, -0.25, -7.0, 0.1]), frac_bits=32)
    opened = session.reveal(g, "gradient", "gradient")  # clipped on shares, then noised
    assert torch.allclose(opened, torch.tensor([0.5, -0.25, -0.5, 0.1], dtype=torch.float64),
                          atol=2e-3)  # fmt: skip


# ---------------------------------------------------------------------- range checks
def test_attack_truncation_beyond_its_range_is_silently_wrong():
    """Finding 6: a product whose value leaves |x| < 2^62 (scale included) comes back wrong
    with no error."""
    session = Session(2, policy=LeakagePolicy(outputs=True))
    big = session.share(torch.tensor([2.0**24]), frac_bits=16)
    wrong = multiply(big, big, frac_bits=16).reveal("square")  # 2^48 at 32 bits: 2^80 wraps
    assert float(wrong) != 2.0**48


def test_the_range_check_fires():
    with pytest.warns(InsecureDebugWarning, match="NOT private"):
        session = Session(2, policy=LeakagePolicy(outputs=True), check_ranges=True)
    big = session.share(torch.tensor([40000.0]), frac_bits=16)
    with pytest.raises(ValueError, match="product: a value reaches 2\\^62"):
        multiply(big, big, frac_bits=16)
    wraps = session.share(torch.tensor([2.0**24]), frac_bits=16)  # the product wraps the ring
    with pytest.raises(ValueError, match="product: a value reaches 2\\^62"):
        multiply(wraps, wraps, frac_bits=16)
    beyond = session.share(torch.tensor([2.0**45.5]), frac_bits=16) * 2  # 2^62.5 in the ring
    with pytest.raises(ValueError, match="truncation input: a value reaches 2\\^62"):
        truncate(beyond, 16)
    small = session.share(torch.tensor([3.0]), frac_bits=16)
    assert float(multiply(small, small).reveal("nine")) == pytest.approx(9.0, abs=1e-3)
    huge = session.share(torch.tensor([2.0**45.5]), frac_bits=16)  # 2^61.5 in the ring
    assert float(greater(huge, 0.0).reveal("positive")) == 1.0
    with pytest.raises(ValueError, match="comparison input"):
        greater(huge + huge, 0.0)
    assert session.audit.kinds()["range_check"] >= 1


def _never_runs(session):  # pragma: no cover - launch refuses before starting processes
    return None


def test_launch_refuses_the_range_check_unless_forced():
    with pytest.raises(ValueError, match="check_ranges=True opens"):
        launch(_never_runs, 2, check_ranges=True)


def test_an_owner_with_few_agents_of_an_age_group_is_refused():
    """Other owners could subtract their own agents from a by-age count: an owner must speak
    for none or at least min_group private agents of every age group."""
    protocol = SEIRM(2.0, torch.zeros(8), learnable=False, by_age=True)
    g = erdos_renyi(N, 4.0, seed=2)
    age = torch.zeros(N, dtype=torch.long)
    age[:30] = 1
    g.set_node_attrs("agent", age_group=age)
    first = torch.cat([torch.arange(0, 27), torch.arange(30, 33)])  # 3 agents of age group 0
    rest = torch.tensor([i for i in range(N) if i not in set(first.tolist())])
    owners = [
        DataOwner(ProtocolInputs(protocol, len(first), 1), agents=first, num_agents=N),
        DataOwner(ProtocolInputs(protocol, len(rest), 1), agents=rest, num_agents=N),
    ]
    with pytest.raises(LeakageError, match="data owner 0 speaks for 3 private agents of group 0"):
        secure_simulate(protocol, g, 1, Session(2, owners=owners))


def test_public_masks_accumulate_per_age_group_too():
    """Second red-team pass: two runs on one realisation with public agents 0-8, then 9-17,
    each leave 10 private agents of a 19-agent age group, together one: refused."""
    protocol = SEIRM(2.0, torch.zeros(8), learnable=False, by_age=True)
    g = erdos_renyi(N, 4.0, seed=2)
    age = torch.zeros(N, dtype=torch.long)
    age[:19] = 3
    g.set_node_attrs("agent", age_group=age)
    session = Session(2, owner=DataOwner(ProtocolInputs(protocol, N, 3), serve_once=False))
    first = torch.zeros(N, dtype=torch.bool)
    first[:9] = True
    secure_simulate(protocol, g, 1, session, public=first)
    second = torch.zeros(N, dtype=torch.bool)
    second[9:18] = True
    with pytest.raises(LeakageError, match="group 3 would have 1 private agents"):
        secure_simulate(protocol, g, 1, session, public=second)


def test_tangents_are_opened_only_as_one_gradient(graph):
    """Second red-team pass: public tangents, opened as aggregates over all agents, gave the
    whole Jacobian and any number of gradients. They are private to the trajectory."""
    run = secure_simulate(SIR(0.3, 0.1), graph, 3, _sir_session(), tangents=("transmission_rate",))
    assert not hasattr(run, "tangents")
    run.gradient(_loss)
