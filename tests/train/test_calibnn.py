"""CalibNN, and calibration of known weekly R and mortality from a wrong start."""

from __future__ import annotations

import pytest
import torch

from lpm_graph.datasets import SyntheticPopulation
from lpm_graph.protocols import SEIRM
from lpm_graph.train import Bounded, CalibNN, ParameterSet, SimulatorModel, Weekly

BOUNDS = {"reproduction_number": (0.3, 6.0), "mortality": (0.001, 0.3)}


def features(days: int = 40, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(days, 3, generator=gen)
    x[:5, 2] = float("nan")  # a signal that starts late
    return x


def test_outputs_are_bounded_and_shaped():
    net = CalibNN(features(), weeks=6, bounds=BOUNDS, steps=40)
    out = net()
    assert out["reproduction_number"].shape == (40,)
    assert out["mortality"].shape == ()
    for name, (low, high) in BOUNDS.items():
        assert bool((out[name] > low).all() and (out[name] < high).all())
    # starts at the middle of every bound
    torch.testing.assert_close(out["mortality"], torch.tensor((0.001 + 0.3) / 2))
    weekly = net.weekly()["reproduction_number"]
    assert weekly.shape == (6,)
    assert torch.equal(out["reproduction_number"][35:], weekly[5].expand(5))  # held


def test_gradients_reach_every_weight_after_one_step():
    net = CalibNN(features(), weeks=4, bounds=BOUNDS)
    torch.optim.SGD(net.parameters(), lr=0.1)
    out = net()
    (out["reproduction_number"].sum() + out["mortality"]).backward()
    # the last layer starts at zero, so only it has a gradient at first
    assert net.decoder[-1].weight.grad.abs().sum() > 0
    net.decoder[-1].weight.data.normal_()
    net.zero_grad()
    out = net()
    (out["reproduction_number"].sum() + out["mortality"]).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_seeded_and_global_rng_untouched():
    state = torch.random.get_rng_state()
    a, b = CalibNN(features(), 4, BOUNDS, seed=3), CalibNN(features(), 4, BOUNDS, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"features": torch.rand(5)}, "days, signals"),
        ({"weeks": 0}, "weeks"),
        ({"time_varying": ("beta",)}, "no bounds"),
        ({"bounds": {"mortality": (0.5, 0.1)}, "time_varying": ()}, "low < high"),
        ({"features": torch.full((5, 2), float("nan"))}, "no observed value"),
    ],
)
def test_bad_inputs(kwargs, match):
    args = {"features": features(), "weeks": 4, "bounds": BOUNDS, **kwargs}
    with pytest.raises(ValueError, match=match):
        CalibNN(**args)


# ---------------------------------------------------------------------------- recovery

WEEKS = 6
TRUE_R = torch.tensor([3.0, 2.4, 1.8, 1.3, 1.0, 0.9])
TRUE_MORTALITY = 0.05


@pytest.fixture(scope="module")
def population():
    return SyntheticPopulation(5_000, seed=0)[0]


def seirm_model(graph, r, mortality) -> SimulatorModel:
    params = ParameterSet(
        {
            "reproduction_number": Weekly(r, WEEKS, 0.3, 6.0),
            "mortality": Bounded(mortality, 0.001, 0.3),
        }
    )
    return SimulatorModel(
        SEIRM(learnable=False),
        graph,
        WEEKS * 7,
        params,
        initial_infected=0.005,
        outputs=("onsets", "deaths"),
    )


def test_known_weekly_r_and_mortality_are_recovered_from_a_wrong_start(population):
    with torch.no_grad():
        target = seirm_model(population, TRUE_R, TRUE_MORTALITY)()
    model = seirm_model(population, 2.0, 0.02)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)

    def loss() -> torch.Tensor:
        out = model()
        return sum(((out[k] - target[k]) ** 2).mean() / (target[k] ** 2).mean() for k in target)

    first = float(loss().detach())
    for _ in range(200):
        optimizer.zero_grad()
        value = loss()
        value.backward()
        optimizer.step()
    final = float(loss().detach())
    assert final < 0.1 * first  # loss down by more than 90%
    r = model.params["reproduction_number"].weekly().detach()
    assert bool(((r / TRUE_R - 1).abs() < 0.10).all()), r
    assert abs(float(model.params["mortality"]().detach()) / TRUE_MORTALITY - 1) < 0.20
