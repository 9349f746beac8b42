"""One suite, three ways: the plaintext layers, the secure layers with all parties in one
process, and the secure layers with each party in its own process (torch.distributed, gloo).

``suite(session)`` computes every check's result; ``session=None`` is the plaintext run. The
expectations are hand computations and the plaintext simulator on the same realisation.
"""

from __future__ import annotations

import pytest
import torch

from lpm_graph import PopulationGraph, simulate
from lpm_graph.layers import ProtocolLayer
from lpm_graph.layers.transmission import Transmission
from lpm_graph.protocols import SEIRM, SIR
from lpm_graph.secure import (
    DataOwner,
    LeakagePolicy,
    ProtocolInputs,
    Session,
    launch,
    secure_simulate,
)

# the suite opens per-agent values and several gradients to compare them with plaintext
OPEN = LeakagePolicy.unrestricted()

EDGES = torch.tensor([[0, 1, 3, 2, 1], [2, 2, 2, 0, 0]])
WEIGHTS = torch.tensor([1.0, 2.0, 0.5, 1.0, 3.0], dtype=torch.float64)
INFECTIOUS = torch.tensor([1, 1, 0, 1])
X = torch.tensor([0.5, -1.0, 2.0, 4.0], dtype=torch.float64)
Y = torch.tensor([1.0, 0.0, -0.25, 3.0], dtype=torch.float64)
N, STEPS, SEED = 300, 30, 4
DOUBLE = torch.float64


class Mixed(ProtocolLayer):
    def message(self, x_j, y_i, edge_weight):
        return x_j * edge_weight + y_i


def ring_graph() -> PopulationGraph:
    """A ring with chords: every agent i meets i +- 1 and i +- 7 (mod N); age group i % 8."""
    src = torch.arange(N).repeat(4)
    dst = torch.cat([(torch.arange(N) + k) % N for k in (1, -1, 7, -7)])
    graph = PopulationGraph.from_edge_index(torch.stack([src, dst]), num_nodes=N)
    graph.set_node_attrs("agent", age_group=torch.arange(N) % 8)
    return graph


def seirm(learnable: bool = False) -> SEIRM:
    mortality = torch.linspace(0.05, 0.4, 8, dtype=torch.float64)
    return SEIRM(torch.tensor(3.0, dtype=torch.float64), mortality, learnable=learnable)


class Inputs:
    """The SIR and SEIRM runs' private inputs plus the small layer checks' values."""

    def __init__(self, *args, **kwargs):
        self.sir = ProtocolInputs(SIR(0.2, 0.1), *args, **kwargs)
        self.seirm = ProtocolInputs(seirm(), *args, **kwargs)  # the same initial infections
        self.randomness = self.sir.randomness  # what the launcher checks

    def __call__(self, name, step):
        small = {"infectious": INFECTIOUS, "x": X, "y": Y}
        if name in small:
            return small[name]
        try:  # SIR's state (S, I, R: one value per agent) and its draws
            return self.sir(name, step)
        except KeyError:  # SEIRM's E and I (slots per agent), M
            return self.seirm(name, step)


def seirm_loss(series):
    return ((series["deaths"] - 1.0) ** 2).sum() + series["E"].sum() / N


def loss(series):
    return ((series["infections"] - 5.0) ** 2).mean()


def suite(session: Session | None) -> dict[str, torch.Tensor]:
    """Every check's result; private values are opened only as declared outputs."""
    out = {}
    if session is None:
        out["transmission"] = Transmission()(
            EDGES, INFECTIOUS.double(), torch.tensor(0.25), WEIGHTS
        )
        out["mixed"] = Mixed().propagate(EDGES, x=X, y=Y, edge_weight=WEIGHTS)
        tau = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)
        run = simulate(
            SIR(tau, 0.1), ring_graph(), STEPS, initial_infected=3, seed=SEED, dtype=torch.float64
        )
        series = {**run.counts, **run.flows}
        value = loss(series)
        value.backward()
        out["counts"] = torch.stack([run.counts[k].detach() for k in ("S", "I", "R")])
        out["loss"], out["gradient"] = value.detach(), tau.grad.reshape(1)
        model = seirm(learnable=True)
        run = simulate(model, ring_graph(), STEPS, initial_infected=3, seed=SEED, dtype=DOUBLE)
        value = seirm_loss({**run.counts, **run.flows})
        value.backward()
        out["seirm counts"] = torch.stack([run.counts[k].detach() for k in "SEIRM"])
        grad = torch.cat([model.reproduction_number.grad.reshape(1), model.mortality.grad]).double()
        out["seirm loss"], out["seirm gradient"] = value.detach(), grad
        return out
    lam = Transmission()(EDGES, session.input("infectious"), torch.tensor(0.25), WEIGHTS)
    out["transmission"] = lam.reveal("transmission", "output")
    mixed = Mixed().propagate(
        EDGES, x=session.input("x"), y=session.input("y"), edge_weight=WEIGHTS
    )
    out["mixed"] = mixed.reveal("mixed", "output")
    run = secure_simulate(
        SIR(0.2, 0.1, learnable=False),
        ring_graph(),
        STEPS,
        session,
        tangents=("transmission_rate",),
    )
    out["counts"] = torch.stack([run.counts[k] for k in ("S", "I", "R")])
    out["loss"], out["gradient"] = run.gradient(loss)
    parameters = ("reproduction_number", "mortality")
    run = secure_simulate(seirm(), ring_graph(), STEPS, session, tangents=parameters)
    out["seirm counts"] = torch.stack([run.counts[k] for k in "SEIRM"])
    out["seirm loss"], out["seirm gradient"] = run.gradient(seirm_loss)
    out["kinds"] = sorted(session.audit.kinds())
    return out


def _party(session: Session) -> dict:
    result = suite(session)
    assert session.local == (torch.distributed.get_rank(),)  # this process: its own shares
    return result


@pytest.fixture(scope="module")
def plaintext():
    return suite(None)


@pytest.fixture(scope="module", params=["in-process", "processes"])
def secure(request):
    # SIR and SEIRM share the initial infections in one session: served more than once
    owner = DataOwner(Inputs(N, 3, seed=SEED), serve_once=False)
    if request.param == "in-process":
        return suite(Session(2, seed=0, owner=owner, policy=OPEN))
    results = launch(_party, parties=2, seed=0, owner=owner, policy=OPEN, force_insecure=True)
    assert all(torch.equal(results[0]["counts"], r["counts"]) for r in results)
    return results[0]


def test_plaintext_suite_is_the_hand_computation(plaintext):
    assert torch.equal(plaintext["transmission"], torch.tensor([0.75, 0, 0.875, 0]).double())
    # mixed: agent 2 gets 0.5 * 1 - 1 * 2 + 4 * 0.5 + 3 * (-0.25); agent 0: 2 * 1 - 3 + 2 * 1
    want = torch.tensor([1.0, 0.0, -0.25, 0.0], dtype=torch.float64)
    assert torch.allclose(plaintext["mixed"], want)
    assert float(plaintext["counts"][2, -1]) > 30  # the epidemic spreads on the ring
    assert float(plaintext["seirm counts"][4, -1]) >= 3  # SEIRM: deaths on the ring
    assert int((plaintext["seirm gradient"] != 0).sum()) >= 6


def test_secure_suite_equals_the_plaintext_suite(secure, plaintext):
    assert torch.allclose(secure["transmission"], plaintext["transmission"], atol=1e-4)
    assert torch.allclose(secure["mixed"], plaintext["mixed"], atol=1e-4)
    assert torch.equal(secure["counts"], plaintext["counts"])
    assert float(secure["loss"]) == pytest.approx(float(plaintext["loss"]))
    assert torch.allclose(secure["gradient"], plaintext["gradient"], rtol=1e-3)
    assert torch.equal(secure["seirm counts"], plaintext["seirm counts"])
    assert float(secure["seirm loss"]) == pytest.approx(float(plaintext["seirm loss"]))
    want = plaintext["seirm gradient"]
    assert torch.allclose(secure["seirm gradient"], want, rtol=1e-3, atol=1e-6 * want.abs().max())
    allowed = {"aggregate", "beaver_mask", "binary_mask", "comparison_mask"}
    allowed |= {"truncation_mask", "output", "loss", "gradient"}
    assert set(secure["kinds"]) <= allowed
