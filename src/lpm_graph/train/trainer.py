"""Gradient-based calibration of a forecasting model: fit, early stopping, exact resume."""

from __future__ import annotations

import logging
import math
import random
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..graph.storage import atomic_save, load_checked
from .losses import log_mse, normalized_mse

__all__ = ["LOSSES", "History", "Trainer"]

logger = logging.getLogger(__name__)

LossFn = Callable[[Mapping[str, Tensor], Mapping[str, Tensor], slice], Tensor]

CHECKPOINT_FORMAT = "lpm-graph/trainer-checkpoint/1"


LOSSES: dict[str, LossFn] = {"mse": normalized_mse, "log_mse": log_mse}
"""The loss shortcuts ``Trainer(loss=...)`` accepts by name."""


@dataclass
class History:
    """What a :meth:`Trainer.fit` did, epoch by epoch (epochs counted from 0).

    Attributes:
        loss: training loss of the parameters at the *start* of each epoch (before its step).
        val_loss: validation loss of the same parameters (empty without a validation window).
        grad_norm: total gradient norm of each epoch, before clipping.
        lr: learning rate of the first parameter group used by each epoch's step.
        best_epoch: the epoch whose starting parameters had the lowest monitored loss (the
            validation loss, or the training loss without a validation window).
        best_loss: that loss.
        stopped_early: whether the run stopped on ``patience``.
        wall_time: seconds spent in ``fit`` (summed over resumed segments).
        evaluations: model evaluations (forward runs, each followed by one backward pass);
            a stochastic model with ``replicates`` counts one per call. This is the budget to
            compare with gradient-free calibration.
    """

    loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    best_epoch: int | None = None
    best_loss: float = math.inf
    stopped_early: bool = False
    wall_time: float = 0.0
    evaluations: int = 0

    @property
    def epochs(self) -> int:
        """Epochs completed."""
        return len(self.loss)


def _positive_int(value: object, name: str, allow_none: bool = False) -> None:
    if allow_none and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"{name} must be a positive int{' or None' if allow_none else ''}, got {value!r}."
        )


def _observed(name: str, series: object) -> Tensor:
    """A target series as a detached real tensor of finite values or NaN (missing days)."""
    try:
        y = torch.as_tensor(series).detach()
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(
            f"target[{name!r}] must be a series of numbers (a tensor, array or list), got "
            f"{type(series).__name__}."
        ) from None
    if y.dtype == torch.bool or y.is_complex() or y.device.type == "meta":
        raise ValueError(
            f"target[{name!r}] must hold real numbers, got {y.dtype} on {y.device}; convert "
            "it with torch.as_tensor(values, dtype=torch.float64)."
        )
    if bool(y.isinf().any()):
        day = int(y.isinf().reshape(-1).nonzero()[0])
        raise ValueError(
            f"target[{name!r}] is infinite at day {day}; mark unobserved days with NaN."
        )
    return y


def _window(days: slice, length: int, name: str) -> slice:
    """``days`` as a ``slice(start, stop)`` of ``0 <= start < stop <= length``."""
    if not isinstance(days, slice):
        raise ValueError(f"{name} must be a slice of days, e.g. slice(0, 28), got {days!r}.")
    if days.step not in (None, 1):
        raise ValueError(f"{name} must be a contiguous window (step 1), got {days}.")
    start = 0 if days.start is None else days.start
    stop = length if days.stop is None else days.stop
    for value in (start, stop):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} bounds must be non-negative ints (day indices), got {days}.")
    if stop > length:
        raise ValueError(f"{name} = {days} runs past the target's {length} days.")
    if stop <= start:
        raise ValueError(f"{name} = {days} is an empty window of days.")
    return slice(start, stop)


def _rng_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()  # type: ignore[misc]
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": (name, torch.from_numpy(np.asarray(keys, dtype=np.int64)), pos, has_gauss, cached),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _postfix(history: History) -> dict[str, str]:
    """The progress bar's last training (and validation) loss."""
    post = {"loss": f"{history.loss[-1]:.4g}"}
    if history.val_loss:
        post["val"] = f"{history.val_loss[-1]:.4g}"
    if history.stopped_early:
        post["stopped"] = "early"
    return post


def _same_file(a: Path | None, b: Path | None) -> bool:
    return a is not None and b is not None and a.resolve() == b.resolve()


class Trainer:
    """Fits a forecasting model of :mod:`lpm_graph.train` to observed daily series.

    The model is any ``nn.Module`` whose call returns ``{output: [T] daily series}`` (a
    :class:`~lpm_graph.train.SimulatorModel`, a baseline, a CalibNN-driven simulator). Each
    epoch runs the model once, scores it on the training window, backpropagates, clips the
    gradient and steps the optimiser (and the scheduler). The validation loss is read from the
    same run, so an epoch costs one model evaluation either way.

    Checkpoints hold everything the run depends on (model and optimiser state, scheduler,
    early-stopping state, history and the torch / numpy / python random states), and epoch
    ``e`` of a stochastic model runs with seed ``seeds + e``: a run killed after a checkpoint
    and resumed with :meth:`resume` (or ``fit(..., resume=True)``) ends with parameters
    bitwise equal to those of an uninterrupted run.

    Args:
        model: the model to fit (its parameters that require grad are trained).
        loss: ``"mse"`` (:func:`~lpm_graph.train.losses.normalized_mse`, the default),
            ``"log_mse"`` (:func:`~lpm_graph.train.losses.log_mse`) or a callable
            ``loss(prediction, target, days) -> scalar`` with ``prediction`` and ``target``
            dicts of daily series and ``days`` the slice of days scored.
        optimizer: ``None`` for ``Adam(lr=lr)``, a callable ``params -> optimizer``, or an
            optimiser already built over the model's parameters.
        lr: learning rate of the default optimiser.
        clip: maximum total gradient norm (``None``: no clipping).
        scheduler: ``None`` or a callable ``optimizer -> LR scheduler``, stepped once per epoch
            (``ReduceLROnPlateau`` is given the monitored loss).
        patience: stop after this many epochs without improvement of the monitored loss (the
            validation loss, or the training loss when ``fit`` has no validation window) and
            restore the best parameters at the end. ``None``: run every epoch and keep the
            last parameters (``History.best_epoch`` is still reported).
        checkpoint: path of the checkpoint file (``None``: no checkpoints). Each write is
            all-or-nothing (a kill leaves the previous checkpoint intact). A file already there
            is continued by ``fit(..., resume=True)`` and otherwise never replaced, unless
            ``overwrite=True``.
        checkpoint_every: write the checkpoint every this many epochs (and after the last).
        overwrite: let a :meth:`fit` that starts afresh replace an existing checkpoint file
            (default ``False``: such a fit refuses before any work).
        progress: show a tqdm bar on stderr: epochs done of ``epochs``, and the last
            training and validation losses (``fit(progress=...)`` overrides it per fit).
        name: what the bar and the log lines call the model (default ``"fit"``).
        seeds: per-epoch seeds of a stochastic model: an int ``base`` (epoch ``e`` calls
            ``model(seed=base + e)``) or one seed per epoch; ``None`` calls ``model()``.
        log_every: log the losses (``logging.INFO``) every this many epochs (``None``: never).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        loss: str | LossFn = "mse",
        optimizer: torch.optim.Optimizer | Callable[..., torch.optim.Optimizer] | None = None,
        lr: float = 0.05,
        clip: float | None = 1.0,
        scheduler: Callable[[torch.optim.Optimizer], Any] | None = None,
        patience: int | None = None,
        checkpoint: str | Path | None = None,
        checkpoint_every: int = 1,
        progress: bool = False,
        seeds: int | Sequence[int] | None = None,
        log_every: int | None = 10,
        overwrite: bool = False,
        name: str = "fit",
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be an nn.Module, got {type(model).__name__}.")
        if isinstance(loss, str):
            if loss not in LOSSES:
                raise ValueError(
                    f"unknown loss {loss!r}; choose from {sorted(LOSSES)} or pass a callable."
                )
            loss = LOSSES[loss]
        elif not callable(loss):
            raise ValueError(
                f"loss must be a name in {sorted(LOSSES)} or a callable, got {loss!r}."
            )
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {lr!r}.")
        if clip is not None and not (isinstance(clip, (int, float)) and clip > 0):
            raise ValueError(
                f"clip must be a number > 0 (max gradient norm) or None, got {clip!r}."
            )
        _positive_int(patience, "patience", allow_none=True)
        _positive_int(checkpoint_every, "checkpoint_every")
        _positive_int(log_every, "log_every", allow_none=True)
        if isinstance(seeds, np.integer):
            seeds = int(seeds)
        if seeds is not None and not isinstance(seeds, int):
            integral = (int, np.integer)
            if isinstance(seeds, (str, bytes)) or not all(isinstance(s, integral) for s in seeds):
                raise ValueError(
                    f"seeds must be an int, a sequence of ints or None, got {seeds!r}."
                )
            seeds = [int(s) for s in seeds]
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError(f"{type(model).__name__} has no parameter that requires grad.")
        if optimizer is None:
            optimizer = torch.optim.Adam(self.params, lr=lr)
        elif not isinstance(optimizer, torch.optim.Optimizer):
            if not callable(optimizer):
                raise ValueError(
                    f"optimizer must be None, an Optimizer or a callable, got {optimizer!r}."
                )
            optimizer = optimizer(self.params)
            if not isinstance(optimizer, torch.optim.Optimizer):
                raise ValueError(
                    f"the optimizer callable must return a torch.optim.Optimizer, got "
                    f"{type(optimizer).__name__}."
                )
        self.model = model
        self.loss_fn: LossFn = loss
        self.optimizer = optimizer
        self.scheduler = scheduler(optimizer) if scheduler is not None else None
        self.clip = clip
        self.patience = patience
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.checkpoint_every = checkpoint_every
        self.overwrite = bool(overwrite)
        self.progress = bool(progress)
        self.name = str(name)
        self.seeds = seeds
        self.log_every = log_every
        self._pending: dict[str, Any] | None = None  # a checkpoint loaded by resume()
        self._pending_path: Path | None = None  # ... and its file

    # ------------------------------------------------------------------ helpers

    def _seed(self, epoch: int) -> int | None:
        if self.seeds is None:
            return None
        if isinstance(self.seeds, int):
            return self.seeds + epoch
        return self.seeds[epoch]

    def _evaluate(self, epoch: int) -> Mapping[str, Tensor]:
        seed = self._seed(epoch)
        return self.model() if seed is None else self.model(seed=seed)

    @staticmethod
    def _check_prediction(pred: object, target: Mapping[str, Tensor], stop: int) -> None:
        if not isinstance(pred, Mapping):
            raise ValueError(
                f"the model must return {{output: [T] series}}, got {type(pred).__name__}."
            )
        for name in target:
            if name not in pred:
                raise ValueError(
                    f"target {name!r} is not an output of the model; outputs: {sorted(pred)}."
                )
            if pred[name].dim() != 1 or pred[name].shape[0] < stop:
                raise ValueError(
                    f"the model's {name!r} is {list(pred[name].shape)}; the fit needs a [T] series "
                    f"of at least {stop} days."
                )

    def _save(self, state: dict[str, Any]) -> None:
        assert self.checkpoint is not None
        atomic_save(
            {
                **state,
                "format": CHECKPOINT_FORMAT,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
                "rng": _rng_state(),
            },
            self.checkpoint,
        )

    def _check_overwrite(self, continued: bool) -> None:
        """Refuse a fit that would replace a checkpoint it does not continue."""
        path = self.checkpoint
        if path is None or continued or self.overwrite or not path.exists():
            return
        if path.is_dir():
            raise ValueError(f"checkpoint {str(path)!r} is a folder; give the path of a file.")
        raise ValueError(
            f"checkpoint {str(path)!r} already exists and this fit would replace it; pass "
            "fit(..., resume=True) to continue it, or Trainer(..., overwrite=True) to start "
            "afresh and replace it (or choose another checkpoint path)."
        )

    # ------------------------------------------------------------------ public

    def resume(self, path: str | Path | None = None) -> History:
        """Load a checkpoint (default: ``self.checkpoint``); the next :meth:`fit` continues it.

        The model, optimiser and scheduler states are loaded now; the random states, the
        history and the early-stopping state when ``fit`` starts. Returns the history so far.
        """
        path = Path(path) if path is not None else self.checkpoint
        if path is None:
            raise ValueError("resume needs a path (or Trainer(checkpoint=path)).")
        state = load_checked(
            path,
            CHECKPOINT_FORMAT,
            what="a checkpoint written by lpm_graph.train.Trainer",
            fix="resume from another copy, or delete it (or pass Trainer(overwrite=True)) and "
            "fit without resume=True to start afresh",
        )
        if (state["scheduler"] is None) != (self.scheduler is None):
            raise ValueError(
                f"{path} was written {'with' if self.scheduler is None else 'without'} a "
                f"scheduler; build the Trainer the same way to resume it."
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self._pending, self._pending_path = state, path
        return History(**state["history"])

    def fit(
        self,
        target: Mapping[str, Tensor],
        train: slice,
        val: slice | None = None,
        epochs: int = 100,
        *,
        resume: bool = False,
        progress: bool | None = None,
    ) -> History:
        """Fit the model to ``target`` on the days ``train``, validating on ``val``.

        Args:
            target: ``{output: [T]}`` observed daily series (NaN on unreported days), from the
                first day the model predicts; every key must be a model output.
            train: the training days, e.g. ``slice(0, 28)``.
            val: the validation days (``None``: no validation).
            epochs: the total number of epochs (a resumed run continues up to it).
            resume: continue from ``self.checkpoint`` if that file exists (start afresh
                otherwise). A checkpoint loaded by :meth:`resume` is continued either way.
                Without it, an existing checkpoint file is an error unless
                ``Trainer(overwrite=True)``.
            progress: show the progress bar (``None``: as ``Trainer(progress=...)``). It
                goes to stderr and starts at the epoch a resumed fit continues from.

        Returns:
            The :class:`History` of the whole run (resumed epochs included).
        """
        if not isinstance(target, Mapping) or not target:
            raise ValueError("target must be a non-empty {output: [T] series} mapping.")
        # observed data: no gradient flows into it (a target made by a simulator, e.g. for a
        # synthetic-data check, would otherwise be backpropagated through twice)
        target = {name: _observed(name, y) for name, y in target.items()}
        lengths = {name: tuple(y.shape) for name, y in target.items()}
        length = next(iter(target.values())).shape[-1] if target else 0
        if any(len(s) != 1 or s[0] != length for s in lengths.values()):
            raise ValueError(f"target series must all be [T] of one length, got {lengths}.")
        outputs = getattr(self.model, "outputs", None)
        if outputs is not None:
            for name in target:
                if name not in outputs:
                    raise ValueError(
                        f"target {name!r} is not an output of the model; outputs: {list(outputs)}."
                    )
        train = _window(train, length, "train")
        if val is not None:
            val = _window(val, length, "val")
        for window in (train, val):
            for name, y in target.items():
                if window is not None and bool(torch.isnan(y[window]).all()):
                    raise ValueError(f"target {name!r} has no observed (non-NaN) day in {window}.")
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
            raise ValueError(f"epochs must be a non-negative int, got {epochs!r}.")
        if isinstance(self.seeds, list) and len(self.seeds) < epochs:
            raise ValueError(f"seeds has {len(self.seeds)} values for {epochs} epochs.")
        stop = max(train.stop, val.stop if val is not None else 0)
        signature = {
            "train": [train.start, train.stop],
            "val": None if val is None else [val.start, val.stop],
            "outputs": sorted(target),
            "seeds": self.seeds,
        }

        if resume and self._pending is None:
            if self.checkpoint is None:
                raise ValueError("fit(resume=True) needs Trainer(checkpoint=path).")
            if self.checkpoint.exists():
                self.resume()
            else:
                logger.info("no checkpoint at %s: starting from epoch 0", self.checkpoint)
        pending, self._pending = self._pending, None
        source, self._pending_path = self._pending_path, None
        self._check_overwrite(pending is not None and _same_file(source, self.checkpoint))
        if pending is not None:
            if pending["signature"] != signature:
                raise ValueError(
                    f"the checkpoint was written by a fit with {pending['signature']}; this fit "
                    f"has {signature}. Resume with the same windows, outputs and seeds."
                )
            history = History(**pending["history"])
            best_state, bad_epochs = pending["best_state"], pending["bad_epochs"]
            _set_rng_state(pending["rng"])
        else:
            history, best_state, bad_epochs = History(), None, 0

        start, began = history.epochs, time.perf_counter()
        end = start if history.stopped_early else epochs
        elapsed = history.wall_time
        bar = None
        if (self.progress if progress is None else progress) and (start < end or start > 0):
            from tqdm.auto import tqdm

            # a fit resumed at its end shows its finished bar and last losses
            bar = tqdm(total=epochs, initial=start, unit="epoch", desc=self.name, file=sys.stderr)
            if start > 0:
                bar.set_postfix(_postfix(history), refresh=start == end)
        try:
            for epoch in range(start, end):
                self.model.train()
                self.optimizer.zero_grad(set_to_none=True)
                pred = self._evaluate(epoch)
                history.evaluations += 1
                self._check_prediction(pred, target, stop)
                loss = self.loss_fn(pred, target, train)
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise FloatingPointError(f"the training loss is {value} at epoch {epoch}.")
                monitored = value
                if val is not None:
                    with torch.no_grad():
                        detached = {k: v.detach() for k, v in pred.items()}
                        monitored = float(self.loss_fn(detached, target, val))
                    history.val_loss.append(monitored)
                if monitored < history.best_loss:  # the parameters that gave it: before the step
                    history.best_loss, history.best_epoch, bad_epochs = monitored, epoch, 0
                    best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
                else:
                    bad_epochs += 1
                loss.backward()
                norm = nn.utils.clip_grad_norm_(
                    self.params, self.clip if self.clip is not None else math.inf
                )
                if not bool(torch.isfinite(norm)):
                    raise FloatingPointError(
                        f"the gradient norm is {float(norm)} at epoch {epoch}."
                    )
                history.lr.append(float(self.optimizer.param_groups[0]["lr"]))
                self.optimizer.step()
                if self.scheduler is not None:
                    if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                        self.scheduler.step(monitored)
                    else:
                        self.scheduler.step()
                history.loss.append(value)
                history.grad_norm.append(float(norm))
                history.stopped_early = self.patience is not None and bad_epochs >= self.patience
                history.wall_time = elapsed + time.perf_counter() - began
                done = epoch + 1 == epochs or history.stopped_early
                if self.checkpoint is not None and (
                    done or (epoch + 1) % self.checkpoint_every == 0
                ):
                    self._save(
                        {
                            "signature": signature,
                            "history": asdict(history),
                            "best_state": best_state,
                            "bad_epochs": bad_epochs,
                        }
                    )
                if bar is not None:
                    bar.set_postfix(_postfix(history), refresh=False)
                    bar.update(1)
                if self.log_every is not None and (epoch + 1) % self.log_every == 0:
                    logger.info(
                        "%s: epoch %d/%d: loss %.6g%s",
                        self.name,
                        epoch + 1,
                        epochs,
                        history.loss[-1],
                        f", val {history.val_loss[-1]:.6g}" if val is not None else "",
                    )
                if history.stopped_early:
                    break
        finally:
            if bar is not None:
                bar.close()
        if history.stopped_early:
            logger.info(
                "%s: stopped after %d epochs without improvement; best epoch %d (loss %.6g)",
                self.name,
                self.patience,
                history.best_epoch,
                history.best_loss,
            )
        if self.patience is not None and best_state is not None:
            self.model.load_state_dict(best_state)
        return history
