"""Protocol layers on shares: the same layer, the same call, private inputs."""

from __future__ import annotations

import pytest
import torch

from lpm_graph.layers import ProtocolLayer
from lpm_graph.layers.transmission import Transmission
from lpm_graph.secure import SecureProtocolLayer, Session, SharedTensor, encode
from lpm_graph.secure.tensor import decode_shares

# a hand-made graph: 0 -> 2, 1 -> 2, 3 -> 2, 2 -> 0, 1 -> 0 (weights 1, 2, 0.5, 1, 3)
EDGES = torch.tensor([[0, 1, 3, 2, 1], [2, 2, 2, 0, 0]])
WEIGHTS = torch.tensor([1.0, 2.0, 0.5, 1.0, 3.0], dtype=torch.float64)


class Mixed(ProtocolLayer):
    """A message of a private source value, a public edge weight and a private destination
    value; summed: out_i = sum_j w_ji x_j + deg_i y_i."""

    def message(self, x_j, y_i, edge_weight):
        return x_j * edge_weight + y_i


def test_transmission_on_shares_is_the_hand_computation():
    session = Session(2, seed=0)
    infectious = torch.tensor([1, 1, 0, 1])
    lam = Transmission()(EDGES, session.share(infectious), torch.tensor(0.25), WEIGHTS)
    assert isinstance(lam, SharedTensor)
    # agent 2: 0.25 * (1 + 2 + 0.5) = 0.875; agent 0: 0.25 * (0 + 3) = 0.75
    assert torch.equal(
        decode_shares(lam), torch.tensor([0.75, 0.0, 0.875, 0.0], dtype=torch.float64)
    )
    plain = Transmission()(EDGES, infectious.double(), torch.tensor(0.25), WEIGHTS)
    assert torch.equal(decode_shares(lam), plain)


def test_private_and_public_inputs_mix_in_one_call():
    session = Session(3, seed=1)
    x = torch.tensor([0.5, -1.0, 2.0, 4.0], dtype=torch.float64)
    y = torch.tensor([1.0, 0.0, -0.25, 3.0], dtype=torch.float64)
    layer = Mixed()
    want = layer.propagate(EDGES, x=x, y=y, edge_weight=WEIGHTS)
    shared_x = session.share(x)
    got = layer.propagate(EDGES, x=shared_x, y=session.share(y), edge_weight=WEIGHTS)
    assert torch.allclose(decode_shares(got), want, atol=1e-4)
    # linear: the ring sum is the int64 fixed-point computation, bit for bit
    ex, ey, ew = encode(x), encode(y), encode(WEIGHTS)
    messages = ex[EDGES[0]] * ew + (ey[EDGES[1]] << 16)
    fixed = torch.zeros(4, dtype=torch.int64).index_add_(0, EDGES[1], messages)
    assert torch.equal(got.shares.sum(0), fixed)
    # a public destination value with a private source
    got = layer.propagate(EDGES, x=shared_x, y=y, edge_weight=WEIGHTS)
    assert torch.allclose(decode_shares(got), want, atol=1e-4)
    assert session.cost.rounds == 0


def test_mean_aggregation_divides_by_the_public_in_degree():
    session = Session(2, seed=2)
    x = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    layer = ProtocolLayer("mean")
    got = layer.propagate(EDGES, x=session.share(x))
    assert torch.allclose(decode_shares(got), layer.propagate(EDGES, x=x), atol=1e-4)


def test_twin_class_and_refused_aggregations():
    session = Session(2, seed=3)
    twin = SecureProtocolLayer.twin(Transmission)()
    assert isinstance(twin, Transmission) and isinstance(twin, SecureProtocolLayer)
    lam = twin(EDGES, session.share(torch.tensor([1, 0, 0, 0])), torch.tensor(1.0))
    assert torch.equal(decode_shares(lam), torch.tensor([0, 0, 1.0, 0], dtype=torch.float64))
    with pytest.raises(ValueError, match="only 'sum'"):
        ProtocolLayer("max").propagate(EDGES, x=session.share(torch.ones(4)))

    class Leaky(ProtocolLayer):
        def message(self, x_j):
            return torch.ones(x_j.shape[0])

    with pytest.raises(TypeError, match="public tensor from private inputs"):
        Leaky().propagate(EDGES, x=session.share(torch.ones(4)))


def test_a_layer_inside_a_model_switches_to_private_inputs_unchanged():
    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.spread = Transmission()
            self.rate = torch.nn.Parameter(torch.tensor(0.3, dtype=torch.float64))

        def forward(self, infectious):
            return self.spread(EDGES, infectious, self.rate.detach(), WEIGHTS)

    model = Model()
    session = Session(2, seed=4)
    infectious = torch.tensor([0, 1, 1, 0])
    plain = model(infectious.double())
    private = model(session.share(infectious))
    assert torch.allclose(decode_shares(private), plain, atol=1e-4)
