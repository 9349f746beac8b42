"""The losses between model series and observed ones, against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from lpm_graph.train import LOSSES, Trainer, log_mse, normalized_mse


def test_log_mse_by_hand():
    pred = torch.tensor([0.0, 1.0, 3.0, 9.0], dtype=torch.float64)
    target = torch.tensor([1.0, 1.0, 7.0, float("nan")], dtype=torch.float64)
    # days 0..2 observed: (log 1 - log 2)^2 + 0 + (log 4 - log 8)^2, over 3 days
    expected = (math.log(2) ** 2 + math.log(2) ** 2) / 3
    assert float(log_mse(pred, target)) == pytest.approx(expected, rel=1e-12)
    # per series, summed; days select the same window of every series
    both = log_mse({"a": pred, "b": 2 * pred + 1}, {"a": target, "b": 2 * pred + 1})
    assert float(both) == pytest.approx(expected, rel=1e-12)
    assert float(log_mse(pred, target, slice(2, 4))) == pytest.approx(math.log(2) ** 2)
    mask = torch.tensor([True, False, False, True])
    assert float(log_mse(pred, target, mask)) == pytest.approx(math.log(2) ** 2)


def test_log_mse_weighs_relative_errors_and_zero_is_not_cheap():
    target = torch.full((10,), 30.0)
    twice, half = log_mse(2 * target + 1, target), log_mse((target + 1) / 2 - 1, target)
    assert float(twice) == pytest.approx(float(half))  # a factor 2 either way, in 1 + y
    zero = log_mse(torch.zeros(10), target)
    assert float(zero) == pytest.approx(math.log(31) ** 2)
    assert float(normalized_mse(torch.zeros(10), target)) == 1.0  # the linear loss' basin
    assert float(normalized_mse(10 * target, target)) > 1.0 and float(zero) > float(twice)


def test_log_mse_skips_missing_days_and_has_finite_gradients_at_zero():
    target = torch.tensor([0.0, float("nan"), 4.0, float("nan")], dtype=torch.float64)
    pred = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    loss = log_mse({"deaths": pred}, {"deaths": target})
    assert float(loss.detach()) == pytest.approx(math.log(5) ** 2 / 2)
    (grad,) = torch.autograd.grad(loss, pred)
    assert bool(torch.isfinite(grad).all())
    # d/dp of (log1p p - log1p y)^2 / n at p = 0: 2 (0 - log1p y) / n; missing days: 0
    expected = torch.tensor([0.0, 0.0, -math.log(5), 0.0], dtype=torch.float64)
    torch.testing.assert_close(grad, expected)
    x = torch.rand(4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p: log_mse(p, target), (x,))


@pytest.mark.parametrize(
    ("prediction", "target", "match"),
    [
        (torch.ones(3), {"deaths": torch.ones(3)}, "both be"),
        ({"cases": torch.ones(3)}, {"deaths": torch.ones(3)}, r"\['deaths'\] are not among"),
        ({}, {}, "no series"),
        (torch.ones(3), torch.ones(4), "same length"),
        (torch.ones(3), torch.full((3,), float("nan")), "no observed"),
        (torch.tensor([0.0, -1.0, 2.0]), torch.ones(3), "prediction has -1"),
        (torch.ones(3), torch.tensor([0.0, -2.0, 2.0]), "target has -2"),
    ],
)
def test_log_mse_bad_input(prediction, target, match):
    with pytest.raises(ValueError, match=match):
        log_mse(prediction, target)


def test_log_mse_is_a_trainer_loss():
    assert LOSSES["log_mse"] is log_mse and LOSSES["mse"] is normalized_mse
    model = torch.nn.Linear(1, 1)
    assert Trainer(model, loss="log_mse").loss_fn is log_mse
    with pytest.raises(ValueError, match="log_mse"):
        Trainer(model, loss="log")
