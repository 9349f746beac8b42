"""Losses between a model's daily series and observed ones."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor

__all__ = ["Days", "log_mse", "normalized_mse"]

Days = slice | Tensor | None
"""The days a loss reads: a ``slice`` (e.g. the training window), a bool mask or an index
tensor over days, or ``None`` for every day."""


def normalized_mse(
    prediction: Mapping[str, Tensor] | Tensor,
    target: Mapping[str, Tensor] | Tensor,
    days: Days = None,
) -> Tensor:
    r"""Mean squared error over ``days`` normalised by the target's mean square, summed over
    the observed series.

    .. math::
        L = \sum_k \frac{\frac{1}{|D_k|} \sum_{t \in D_k} (\hat y_{k,t} - y_{k,t})^2}
            {\frac{1}{|D_k|} \sum_{t \in D_k} y_{k,t}^2}

    with ``k`` over the keys of ``target`` (every one must be in ``prediction``) and ``D_k``
    the selected days on which ``y_k`` is not NaN (missing observations are skipped). The
    normalisation makes series of different size (deaths and cases) weigh alike and the loss
    unitless: predicting zero gives ``L = 1`` per series. A series whose selected target is
    all zero is normalised by ``1`` instead (its plain MSE).

    Args:
        prediction: ``{name: [T]}`` (a model's output) or one ``[T]`` tensor.
        target: ``{name: [T]}`` observed series (NaN where missing), or one ``[T]`` tensor.
        days: the days compared (see :data:`Days`); the same for every series.

    Returns:
        A differentiable scalar in the predictions' dtype.
    """
    return _summed(_normalized, prediction, target, days)


def log_mse(
    prediction: Mapping[str, Tensor] | Tensor,
    target: Mapping[str, Tensor] | Tensor,
    days: Days = None,
) -> Tensor:
    r"""Mean squared error of the series' logarithms (of one plus each value) over ``days``,
    summed over the observed series.

    .. math::
        L = \sum_k \frac{1}{|D_k|} \sum_{t \in D_k}
            \left(\log(1 + \hat y_{k,t}) - \log(1 + y_{k,t})\right)^2

    with ``k`` and ``D_k`` as in :func:`normalized_mse` (NaN days of the target skipped).
    For counts (deaths, cases) that span orders of magnitude: errors are relative (for large
    counts a prediction twice too high costs about as much as one half too low), and
    predicting zero costs the mean of ``log(1 + y)^2`` (about 11 per series for ~30 deaths a
    day) instead of :func:`normalized_mse`'s flat 1, which is less than that of a wave of the
    right size at the wrong time, so linear-scale fits that overshoot tend to settle on
    "predict zero". The ``+1`` keeps the loss and its gradient
    (``2 (\log(1 + \hat y) - \log(1 + y)) / (1 + \hat y)``) finite at zero predictions and
    zero targets.

    Args:
        prediction: ``{name: [T]}`` (a model's output) or one ``[T]`` tensor; values must be
            greater than ``-1`` on the observed days (counts are ``>= 0``).
        target: ``{name: [T]}`` observed series (NaN where missing), or one ``[T]`` tensor;
            the same range.
        days: the days compared (see :data:`Days`); the same for every series.

    Returns:
        A differentiable scalar in the predictions' dtype.
    """
    return _summed(_log, prediction, target, days)


def _summed(
    one: Callable[[Tensor, Tensor, Tensor, str], Tensor],
    prediction: Mapping[str, Tensor] | Tensor,
    target: Mapping[str, Tensor] | Tensor,
    days: Days,
) -> Tensor:
    """``one(prediction, target, seen, name)`` of each series on its observed days, summed."""
    if isinstance(target, Mapping) != isinstance(prediction, Mapping):
        raise ValueError(
            "prediction and target must both be {name: series} mappings or both be tensors."
        )
    if not isinstance(target, Mapping):
        return one(*_selected(prediction, target, days, "series"), "series")  # type: ignore[arg-type]
    assert isinstance(prediction, Mapping)
    if not target:
        raise ValueError("target has no series to compare.")
    missing = sorted(set(target) - set(prediction))
    if missing:
        raise ValueError(
            f"target series {missing} are not among the model's outputs {sorted(prediction)}; "
            "build the model with those outputs."
        )
    return sum(  # type: ignore[return-value]
        one(*_selected(prediction[k], target[k], days, repr(k)), repr(k)) for k in target
    )


def _selected(
    prediction: Tensor, target: Tensor, days: Days, name: str
) -> tuple[Tensor, Tensor, Tensor]:
    """The prediction and target on ``days`` (target NaN replaced by 0) and the mask of the
    observed days, checked."""
    target = torch.as_tensor(target, device=prediction.device).to(prediction.dtype)
    if days is not None:
        prediction, target = prediction[days], target[days]
    if prediction.shape != target.shape:
        raise ValueError(
            f"{name}: the prediction has shape {list(prediction.shape)} and the target "
            f"{list(target.shape)} over the selected days; give series of the same length."
        )
    seen = ~torch.isnan(target)
    if not bool(seen.any()):
        raise ValueError(f"{name}: the target has no observed (non-NaN) value on these days.")
    return prediction, torch.where(seen, target, torch.zeros_like(target)), seen


def _normalized(prediction: Tensor, y: Tensor, seen: Tensor, name: str) -> Tensor:
    error = torch.where(seen, prediction - y, torch.zeros_like(prediction))
    count = seen.sum()
    scale = (y * y).sum() / count
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return (error * error).sum() / count / scale


def _log(prediction: Tensor, y: Tensor, seen: Tensor, name: str) -> Tensor:
    for what, values in (("prediction", prediction.detach()), ("target", y)):
        low = values[seen].min()
        if bool(low <= -1):
            raise ValueError(
                f"{name}: log_mse needs values above -1 (counts), but the {what} has "
                f"{float(low):.4g} on an observed day; use normalized_mse for signed series."
            )
    # the unobserved days compare 0 with 0 (a zero, not a NaN, gradient)
    error = torch.log1p(torch.where(seen, prediction, torch.zeros_like(prediction))) - torch.log1p(
        y
    )
    return (error * error).sum() / seen.sum()
