"""Trainer: exact resume from checkpoints, clipping, early stopping, argument checks."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

from lpm_graph.datasets import erdos_renyi
from lpm_graph.protocols.seirm import SEIRM
from lpm_graph.train import Bounded, ParameterSet, SimulatorModel, Trainer, Weekly

STEPS = 40
TRAIN, VAL = slice(0, 28), slice(28, 35)


def _graph(n: int):
    g = erdos_renyi(n, 8, seed=1)
    gen = torch.Generator().manual_seed(0)
    g.set_node_attrs(age_group=torch.randint(0, 8, (n,), generator=gen))
    return g


def _target(graph):
    with torch.no_grad():
        out = _seirm(graph, r=2.0, mortality=0.12)()
    deaths = out["deaths"].clone()
    deaths[[3, 17]] = float("nan")  # unreported days
    return {"deaths": deaths, "infections": out["infections"]}


@pytest.fixture(scope="module")
def graph():
    return _graph(2000)


def _seirm(graph, mode: str = "expected", r: float = 3.0, mortality: float = 0.05):
    params = ParameterSet(
        {
            "reproduction_number": Weekly(r, 6, 0.5, 8.0, steps=STEPS),
            "mortality": Bounded(mortality, 0.001, 0.5),
        }
    )
    return SimulatorModel(
        SEIRM(learnable=False),
        graph,
        STEPS,
        params,
        initial_infected=0.02,
        outputs=("deaths", "infections"),
        mode=mode,
    )


@pytest.fixture(scope="module")
def target(graph):
    return _target(graph)


def _noisy_loss(pred, target, days):
    """The default loss scaled by draws of the torch, numpy and python global generators, so
    that the run depends on all three random states."""
    jitter = float(torch.rand(())) + float(np.random.rand()) + random.random()
    return _mse(pred, target, days) * (1 + 0.1 * jitter)


def _mse(pred, target, days):
    from lpm_graph.train.trainer import LOSSES

    return LOSSES["mse"](pred, target, days)


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def _assert_same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_resume_after_stop_equals_uninterrupted_run_expected(graph, target, tmp_path):
    def trainer(model, path):
        return Trainer(
            model,
            checkpoint=path,
            checkpoint_every=1,
            scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, 3, gamma=0.5),
        )

    full = _seirm(graph)
    h_full = trainer(full, tmp_path / "full.pt").fit(target, TRAIN, VAL, epochs=10)

    part = _seirm(graph)
    h_part = trainer(part, tmp_path / "run.pt").fit(target, TRAIN, VAL, epochs=4)
    assert h_part.epochs == 4
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())  # atomic writes

    fresh = _seirm(graph)  # a new process: nothing but the checkpoint survives
    h = trainer(fresh, tmp_path / "run.pt").fit(target, TRAIN, VAL, epochs=10, resume=True)
    _assert_same_state(fresh, full)
    assert not torch.equal(fresh.params["mortality"].raw, part.params["mortality"].raw)
    assert h.loss == h_full.loss and h.val_loss == h_full.val_loss and h.lr == h_full.lr
    assert h.evaluations == h_full.evaluations == 10
    assert h.best_epoch == h_full.best_epoch


def test_resume_after_kill_equals_uninterrupted_run_stochastic(graph, target, tmp_path):
    """Straight-through stochastic model, per-epoch seeds, a loss drawing from the global
    generators; the run is killed inside epoch 6 and the last checkpoint is from epoch 4."""

    def trainer(model, path, loss=_noisy_loss):
        return Trainer(model, loss=loss, checkpoint=path, checkpoint_every=2, seeds=100)

    model = _seirm(graph, "stochastic")
    with torch.no_grad():  # epoch e runs model(seed=100 + e)
        first = _mse(model(seed=100), target, TRAIN)

    _seed_everything(0)
    full = _seirm(graph, "stochastic")
    h_full = trainer(full, tmp_path / "full.pt").fit(target, TRAIN, VAL, epochs=10)
    assert 1 <= h_full.loss[0] / float(first) < 1.3  # the jitter is in [0, 30%)
    assert len(set(h_full.loss)) == 10

    calls = 0

    def killed(pred, target, days):
        nonlocal calls
        calls += days == TRAIN  # (the validation loss calls it too)
        if calls == 7:  # the 7th training loss: inside epoch 6 (counted from 0)
            raise KeyboardInterrupt
        return _noisy_loss(pred, target, days)

    _seed_everything(0)
    with pytest.raises(KeyboardInterrupt):
        trainer(_seirm(graph, "stochastic"), tmp_path / "run.pt", loss=killed).fit(
            target, TRAIN, VAL, epochs=10
        )
    _seed_everything(123)  # the new process starts from other random states
    fresh = _seirm(graph, "stochastic")
    t = trainer(fresh, tmp_path / "run.pt")
    assert t.resume().epochs == 6
    h = t.fit(target, TRAIN, VAL, epochs=10)
    _assert_same_state(fresh, full)
    assert h.loss == h_full.loss


def test_loss_decreases_on_a_simple_fit():
    graph = _graph(500)
    target = _target(graph)
    model = _seirm(graph)
    history = Trainer(model, lr=0.1).fit({"deaths": target["deaths"]}, TRAIN, epochs=25)
    assert history.epochs == 25 and history.evaluations == 25
    assert history.loss[-1] < 0.2 * history.loss[0]
    assert history.val_loss == []
    assert 0.08 < float(model.params["mortality"]()) < 0.16  # the truth is 0.12


class Line(nn.Module):
    """``y_t = w0 + w1 * t / T`` (float64), a model with hand-computable gradients."""

    outputs = ("y",)

    def __init__(self, days: int = 10, w: tuple[float, ...] = (0.0, 0.0)) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w, dtype=torch.float64))
        self.register_buffer("t", torch.arange(days, dtype=torch.float64) / days)

    def forward(self) -> dict[str, torch.Tensor]:
        return {"y": self.w[0] + self.w[1] * self.t}


def _plain_mse(pred, target, days):
    return (pred["y"][days] - target["y"][days]).square().mean()


def _line_gradient(model: Line, y: torch.Tensor) -> torch.Tensor:
    w = model.w.detach().clone().requires_grad_()
    (grad,) = torch.autograd.grad(
        _plain_mse({"y": w[0] + w[1] * model.t}, {"y": y}, slice(None)), w
    )
    return grad


@pytest.mark.parametrize("clip", [0.5, None])
def test_gradient_clipping_caps_the_step(clip):
    y = 100 + 50 * torch.arange(10, dtype=torch.float64) / 10
    model = Line()
    grad = _line_gradient(model, y)
    assert grad.norm() > 100  # clipping has something to cut
    sgd = lambda params: torch.optim.SGD(params, lr=1.0)  # noqa: E731
    trainer = Trainer(model, loss=_plain_mse, optimizer=sgd, clip=clip)
    history = trainer.fit({"y": y}, slice(0, 10), epochs=1)
    step = model.w.detach()  # started at 0
    assert history.grad_norm[0] == pytest.approx(float(grad.norm()))
    if clip is None:
        torch.testing.assert_close(step, -grad)
    else:
        assert float(step.norm()) == pytest.approx(clip)
        torch.testing.assert_close(step, -grad * clip / grad.norm())


def test_early_stopping_restores_the_best_parameters():
    # y_hat = w0 (w1 stays 0 as the targets are flat); train target 10, validation target 5.
    # SGD with lr 5 on L = (w0 - 10)^2 / 100: w0_k = 10 (1 - 0.9^k), so the validation loss
    # (w0 - 5)^2 / 25 is least at k = 7 (w0 = 5.217) and grows from k = 8 on.
    y = torch.tensor([10.0] * 6 + [5.0] * 4, dtype=torch.float64)
    model = Line()
    model.t.zero_()
    sgd = lambda params: torch.optim.SGD(params, lr=5.0)  # noqa: E731
    trainer = Trainer(model, optimizer=sgd, clip=None, patience=3)
    history = trainer.fit({"y": y}, slice(0, 6), slice(6, 10), epochs=50)
    assert history.best_epoch == 7
    assert history.stopped_early and history.epochs == 7 + 1 + 3
    assert float(model.w[0]) == pytest.approx(10 * (1 - 0.9**7))
    assert history.best_loss == pytest.approx((10 * (1 - 0.9**7) - 5) ** 2 / 25)
    # without patience the last parameters are kept
    model = Line()
    model.t.zero_()
    Trainer(model, optimizer=sgd, clip=None).fit({"y": y}, slice(0, 6), slice(6, 10), epochs=11)
    assert float(model.w[0]) == pytest.approx(10 * (1 - 0.9**11))


class Seeded(Line):
    """Records the seed of every call."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[int | None] = []

    def forward(self, seed: int | None = None) -> dict[str, torch.Tensor]:
        self.seen.append(seed)
        return super().forward()


def test_per_epoch_seeds_survive_resume(tmp_path):
    y = {"y": torch.ones(10, dtype=torch.float64)}
    model = Seeded()
    Trainer(model, seeds=100, checkpoint=tmp_path / "c.pt").fit(y, slice(0, 5), epochs=2)
    fresh = Seeded()
    Trainer(fresh, seeds=100, checkpoint=tmp_path / "c.pt").fit(
        y, slice(0, 5), epochs=4, resume=True
    )
    assert model.seen + fresh.seen == [100, 101, 102, 103]
    listed = Seeded()
    Trainer(listed, seeds=[7, 3, 5]).fit(y, slice(0, 5), epochs=3)
    assert listed.seen == [7, 3, 5]
    with pytest.raises(ValueError, match="seeds has 3 values for 4 epochs"):
        Trainer(Seeded(), seeds=[7, 3, 5]).fit(y, slice(0, 5), epochs=4)
    unseeded = Seeded()
    Trainer(unseeded).fit(y, slice(0, 5), epochs=2)
    assert unseeded.seen == [None, None]


def test_nan_target_days_are_ignored():
    y = torch.full((10,), 3.0, dtype=torch.float64)
    y[[2, 5]] = float("nan")
    model = Line(w=(1.0, 0.0))
    history = Trainer(model, log_every=None).fit({"y": y}, slice(0, 10), epochs=1)
    assert history.loss[0] == pytest.approx(4 / 9)  # (1 - 3)^2 / 3^2 on the observed days


def test_bad_arguments_name_the_problem(tmp_path):
    y = {"y": torch.ones(10, dtype=torch.float64)}
    with pytest.raises(ValueError, match="unknown loss 'mae'"):
        Trainer(Line(), loss="mae")
    with pytest.raises(ValueError, match="clip must be"):
        Trainer(Line(), clip=0)
    with pytest.raises(ValueError, match="patience must be a positive int"):
        Trainer(Line(), patience=0)
    trainer = Trainer(Line())
    with pytest.raises(ValueError, match="target 'cases' is not an output of the model"):
        trainer.fit({"cases": torch.ones(10)}, slice(0, 5))
    with pytest.raises(ValueError, match=r"train = slice\(0, 11, None\) runs past the target's 10"):
        trainer.fit(y, slice(0, 11))
    with pytest.raises(ValueError, match="val = .* runs past"):
        trainer.fit(y, slice(0, 5), slice(5, 12))
    with pytest.raises(ValueError, match="train = .* is an empty window"):
        trainer.fit(y, slice(4, 4))
    with pytest.raises(ValueError, match="non-negative"):
        trainer.fit(y, slice(-3, None))
    with pytest.raises(ValueError, match="no observed"):
        trainer.fit({"y": torch.tensor([float("nan")] * 3 + [1.0] * 7)}, slice(0, 3))
    with pytest.raises(ValueError, match=r"fit\(resume=True\) needs Trainer\(checkpoint=path\)"):
        trainer.fit(y, slice(0, 5), resume=True)

    class Anonymous(Line):  # no `outputs` attribute: checked on the first run
        outputs = None

    with pytest.raises(ValueError, match="target 'cases' is not an output of the model"):
        Trainer(Anonymous()).fit({"cases": torch.ones(10)}, slice(0, 5))
    with pytest.raises(ValueError, match="at least 12 days"):
        Trainer(Anonymous()).fit({"y": torch.ones(12)}, slice(0, 12))

    path = tmp_path / "ckpt.pt"
    Trainer(Line(), checkpoint=path).fit(y, slice(0, 5), epochs=2)
    with pytest.raises(ValueError, match="Resume with the same windows"):
        Trainer(Line(), checkpoint=path).fit(y, slice(0, 6), epochs=4, resume=True)
    history = Trainer(Line(), checkpoint=path).fit(y, slice(0, 5), epochs=2, resume=True)
    assert history.epochs == 2  # already done: nothing more to run


def test_progress_bar_and_logging(caplog, capsys):
    y = {"y": torch.ones(10, dtype=torch.float64)}
    with caplog.at_level("INFO", logger="lpm_graph.train.trainer"):
        Trainer(Line(), progress=True, log_every=2).fit(y, slice(0, 5), slice(5, 10), epochs=4)
    assert [r.getMessage()[:14] for r in caplog.records] == ["fit: epoch 2/4", "fit: epoch 4/4"]
    assert "val" in caplog.records[0].getMessage()
    captured = capsys.readouterr()
    assert captured.out == ""  # the bar goes to stderr, nothing is printed
    assert "fit: 100%" in captured.err and "4/4" in captured.err
    assert "loss=" in captured.err and "val=" in captured.err


def test_progress_per_fit_named_and_resumed(tmp_path, capsys):
    y = {"y": torch.ones(10, dtype=torch.float64)}
    path = tmp_path / "c.pt"
    Trainer(Line(), progress=True).fit(y, slice(0, 5), epochs=2, progress=False)
    assert capsys.readouterr().err == ""  # fit(progress=False) overrides the Trainer's
    Trainer(Line(), checkpoint=path, name="line").fit(y, slice(0, 5), epochs=2, progress=True)
    err = capsys.readouterr().err
    assert "line: 100%" in err and "2/2" in err and "loss=" in err and "val=" not in err
    Trainer(Line(), checkpoint=path, name="line").fit(
        y, slice(0, 5), epochs=4, resume=True, progress=True
    )
    err = capsys.readouterr().err
    assert "line:  50%" in err and "4/4" in err  # the bar starts at the resumed epoch
    Trainer(Line(), checkpoint=path, name="line").fit(
        y, slice(0, 5), epochs=4, resume=True, progress=True
    )
    err = capsys.readouterr().err  # finished already: its full bar and last loss
    assert "line: 100%" in err and "4/4" in err and "loss=" in err
