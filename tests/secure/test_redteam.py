"""Attacks from a red-team review of the roles, the leakage policy and the outputs (each
passed on the code it reviewed): API paths around the policy (A), several runs in one
session (B), an owner below min_group (C), differential privacy declarations (D)."""

from __future__ import annotations

import pytest
import torch

from lpm_graph.datasets.generators import erdos_renyi
from lpm_graph.graph.population import PopulationGraph
from lpm_graph.protocols import SIR
from lpm_graph.secure import (
    DataOwner,
    GaussianDP,
    LeakageError,
    LeakagePolicy,
    ProtocolInputs,
    Session,
    secure_simulate,
)


def sir_inputs(n, initial_infected, **kwargs):
    """The private inputs of an SIR run (its initial state and draws)."""
    return ProtocolInputs(SIR(0.1, 0.1), n, initial_infected, **kwargs)


N = 40


def _session(**kw):
    mask = torch.zeros(N, dtype=torch.bool)
    mask[[3, 17]] = True
    s = Session(2, owner=sir_inputs(N, mask), **kw)
    return s, s.input("initial_infected")


# ---------------------------------------------------------------- A: API paths around _admit
@pytest.mark.parametrize(
    "how",
    [
        dict(kind="loss"),
        dict(kind="public_state"),
        dict(kind="beaver_mask"),
        dict(kind="output", group=[]),
        dict(kind="aggregate", group=torch.tensor([], dtype=torch.long)),
    ],
    ids=lambda d: ",".join(f"{k}={v!r}" for k, v in d.items()),
)
def test_a_reveal_of_a_per_agent_vector_is_refused(how):
    s, x = _session()
    kind = how.pop("kind")
    with pytest.raises((LeakageError, ValueError)):
        s.reveal(x, "per-agent secret", kind, **how)


def test_a_xor_open_of_arithmetic_shares_is_refused():
    s, x = _session()
    with pytest.raises(TypeError):  # XOR openings are the protocols' own (_open_masks)
        s.open_raw([x.shares], "b", "binary_mask", xor=True)
    with pytest.raises(LeakageError, match="not opened by callers"):
        s.open_raw([x.shares], "b", "binary_mask")


def test_a_exchange_is_not_a_public_opening():
    s, _ = _session()
    assert not hasattr(s, "exchange")


def test_a_check_ranges_cannot_be_switched_on_later():
    s, x = _session()
    with pytest.raises((AttributeError, LeakageError)):
        s.check_ranges = True
        s.check_range(x.shares, "x")


def test_a_gradient_counter_is_not_skipped_by_a_short_group_list():
    s, _ = _session()
    g = s.share(torch.tensor([0.1]), frac_bits=32)
    with pytest.raises(ValueError, match="lists 0 values for 1 tensors"):
        s.open_raw([g.shares], "gradient", "gradient", group=[])
    s.reveal(g, "gradient", "gradient")
    with pytest.raises(LeakageError, match="already opened 1 time"):
        s.reveal(g, "gradient", "gradient")


def test_a_a_second_session_on_the_same_transport_is_refused():
    s, _ = _session()
    with pytest.raises((LeakageError, ValueError, RuntimeError)):
        s2 = Session(transport=s.transport, policy=LeakagePolicy.unrestricted())
        s2.input("initial_infected")


# ---------------------------------------------------------------- B: several runs, one session
def test_b1_complementary_public_masks_in_one_session_are_refused():
    graph = erdos_renyi(N, 4.0, seed=1)
    s = Session(2, owner=DataOwner(sir_inputs(N, 2), serve_once=False))  # B1 alone
    half = torch.zeros(N, dtype=torch.bool)
    half[: N // 2] = True
    secure_simulate(SIR(0.3, 0.1), graph, 2, s, public=half)
    with pytest.raises(LeakageError):  # together the two runs open every agent
        secure_simulate(SIR(0.3, 0.1), graph, 2, s, public=~half)


def test_b2_a_second_run_on_other_public_inputs_is_refused():
    s = Session(2, owner=sir_inputs(N, 2))
    star = PopulationGraph.from_edge_index(
        torch.stack([torch.zeros(N - 1, dtype=torch.long), torch.arange(1, N)]), N
    )
    secure_simulate(SIR(40.0, 0.0), star, 1, s)  # infections on day 0 > 0 iff agent 0 infected
    other = PopulationGraph.from_edge_index(
        torch.stack([torch.ones(N - 1, dtype=torch.long), torch.tensor([0, *range(2, N)])]), N
    )
    with pytest.raises(LeakageError):  # the owner must not re-serve its draws to a new run
        secure_simulate(SIR(40.0, 0.0), other, 1, s)


# ---------------------------------------------------------------- C: an owner below min_group
def test_c_an_owner_with_fewer_than_min_group_agents_is_refused():
    owners = [
        DataOwner(sir_inputs(1, torch.tensor([True])), agents=torch.tensor([0]), num_agents=N),
        DataOwner(sir_inputs(N - 1, 2), agents=torch.arange(1, N), num_agents=N),
    ]
    s = Session(2, owners=owners)
    with pytest.raises(LeakageError):  # owner 1 minus its own count = owner 0's agent
        secure_simulate(SIR(0.3, 0.1), erdos_renyi(N, 4.0, seed=1), 1, s)


# ---------------------------------------------------------------- D: DP declarations
def test_d_a_declared_sensitivity_below_the_kinds_bound_is_refused():
    s = Session(2, policy=LeakagePolicy(privacy=GaussianDP(epsilon=10.0)))
    x = s.share(torch.tensor([5.0, 1.0]), frac_bits=0)
    with pytest.raises(LeakageError):
        s.reveal(x, "agg", "aggregate", group=10, sensitivity=1e-9)


def test_d_open_raw_under_dp_needs_the_rows_scale():
    s = Session(2, policy=LeakagePolicy(privacy=GaussianDP(epsilon=10.0)))
    y = s.share(torch.tensor([12.0]))  # 16 fractional bits
    with pytest.raises((LeakageError, ValueError, TypeError)):
        s.open_raw([y.shares], "agg", "aggregate", group=10, sensitivity=2.0)  # no frac_bits
