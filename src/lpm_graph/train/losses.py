"""Losses between a model's daily series and observed ones."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

__all__ = ["Days", "normalized_mse"]

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
    if isinstance(target, Mapping) != isinstance(prediction, Mapping):
        raise ValueError(
            "prediction and target must both be {name: series} mappings or both be tensors."
        )
    if not isinstance(target, Mapping):
        return _one(prediction, target, days, "series")  # type: ignore[arg-type]
    assert isinstance(prediction, Mapping)
    if not target:
        raise ValueError("target has no series to compare.")
    missing = sorted(set(target) - set(prediction))
    if missing:
        raise ValueError(
            f"target series {missing} are not among the model's outputs {sorted(prediction)}; "
            "build the model with those outputs."
        )
    return sum(_one(prediction[k], target[k], days, repr(k)) for k in target)  # type: ignore[return-value]


def _one(prediction: Tensor, target: Tensor, days: Days, name: str) -> Tensor:
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
    y = torch.where(seen, target, torch.zeros_like(target))
    error = torch.where(seen, prediction - y, torch.zeros_like(prediction))
    count = seen.sum()
    scale = (y * y).sum() / count
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return (error * error).sum() / count / scale
