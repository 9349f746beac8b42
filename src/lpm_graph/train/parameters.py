"""Learnable parameters with constraints: stored unconstrained, read through a bijection."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["Bounded", "Positive", "Weekly"]


def _logit(p: Tensor) -> Tensor:
    return torch.log(p) - torch.log1p(-p)


class Bounded(nn.Module):
    """A parameter in ``(low, high)``: ``low + (high - low) * sigmoid(raw)``.

    ``raw`` is the ``nn.Parameter`` (unconstrained, so any optimiser step stays in bounds);
    ``module()`` returns the constrained value. ``value`` may be a scalar or any shape.

    Args:
        value: initial value(s), strictly inside ``(low, high)``.
        low: the lower bound (a scalar or broadcastable tensor).
        high: the upper bound (a scalar or broadcastable tensor).
    """

    def __init__(self, value: float | Tensor, low: float | Tensor, high: float | Tensor) -> None:
        super().__init__()
        try:
            value = torch.as_tensor(value, dtype=torch.get_default_dtype()).clone()
            low_t = torch.as_tensor(low, dtype=value.dtype)
            high_t = torch.as_tensor(high, dtype=value.dtype)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(
                f"Bounded needs numbers or tensors, got value={value!r}, low={low!r}, "
                f"high={high!r}."
            ) from None
        if not bool((high_t > low_t).all()):
            raise ValueError(f"Bounded needs low < high, got low={low!r}, high={high!r}.")
        if not bool(((value > low_t) & (value < high_t)).all()):
            raise ValueError(
                f"Bounded initial value {value.tolist()} must lie strictly inside "
                f"({low!r}, {high!r}); move it inside or widen the bounds."
            )
        self.register_buffer("low", low_t)
        self.register_buffer("high", high_t)
        self.raw = nn.Parameter(_logit((value - low_t) / (high_t - low_t)))

    def forward(self) -> Tensor:
        return self.low + (self.high - self.low) * torch.sigmoid(self.raw)

    @torch.no_grad()
    def set_(self, value: float | Tensor) -> Bounded:
        """Set the constrained value in place (e.g. to restart from a given point)."""
        value = torch.as_tensor(value, dtype=self.raw.dtype).expand_as(self.raw)
        self.raw.copy_(_logit((value - self.low) / (self.high - self.low)))
        return self

    def extra_repr(self) -> str:
        return f"shape={list(self.raw.shape)}, low={self.low.tolist()}, high={self.high.tolist()}"


class Positive(nn.Module):
    """A parameter in ``(0, inf)``: ``softplus(raw)`` (``raw`` is the ``nn.Parameter``)."""

    def __init__(self, value: float | Tensor) -> None:
        super().__init__()
        value = torch.as_tensor(value, dtype=torch.get_default_dtype()).clone()
        if not bool((value > 0).all()) or not bool(torch.isfinite(value).all()):
            raise ValueError(
                f"Positive initial value must be finite and > 0, got {value.tolist()}."
            )
        self.raw = nn.Parameter(value + torch.log(-torch.expm1(-value)))  # softplus inverse

    def forward(self) -> Tensor:
        return nn.functional.softplus(self.raw)


class Weekly(nn.Module):
    """A time-varying parameter: one bounded value per week, held for ``steps_per_week`` steps.

    ``module()`` returns the per-step values ``[steps]`` (the form protocols take for
    time-varying parameters, e.g. ``SEIRM(reproduction_number=...)``); ``module.weekly()``
    the ``[weeks]`` values. Weeks past the last are held at the last value.

    Args:
        value: initial value, a scalar (every week) or ``[weeks]``.
        weeks: number of weekly values.
        low: lower bound, as in :class:`Bounded`.
        high: upper bound, as in :class:`Bounded`.
        steps: number of steps to expand to (default ``weeks * steps_per_week``).
        steps_per_week: steps per week (7 for daily steps).
    """

    def __init__(
        self,
        value: float | Tensor,
        weeks: int,
        low: float,
        high: float,
        *,
        steps: int | None = None,
        steps_per_week: int = 7,
    ) -> None:
        super().__init__()
        if isinstance(weeks, bool) or not isinstance(weeks, int) or weeks < 1:
            raise ValueError(f"weeks must be a positive int, got {weeks!r}.")
        if not isinstance(steps_per_week, int) or steps_per_week < 1:
            raise ValueError(f"steps_per_week must be a positive int, got {steps_per_week!r}.")
        value = torch.as_tensor(value, dtype=torch.get_default_dtype())
        if value.dim() == 0:
            value = value.expand(weeks)
        if value.shape != (weeks,):
            raise ValueError(
                f"Weekly value must be a scalar or [{weeks}], got {list(value.shape)}."
            )
        self.values = Bounded(value, low, high)
        self.steps = steps if steps is not None else weeks * steps_per_week
        self.steps_per_week = steps_per_week
        index = torch.clamp(torch.arange(self.steps) // steps_per_week, max=weeks - 1)
        self.register_buffer("index", index, persistent=False)

    def weekly(self) -> Tensor:
        return self.values()

    def forward(self) -> Tensor:
        return self.values()[self.index]

    def extra_repr(self) -> str:
        weeks = self.values.raw.numel()
        return f"weeks={weeks}, steps={self.steps}, steps_per_week={self.steps_per_week}"
