"""CalibNN: a network mapping a region's observed signals to simulator parameters per week."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

__all__ = ["CalibNN"]


class CalibNN(nn.Module):
    r"""Maps the history of a region's public-health signals to bounded simulator parameters.

    An encoder (a GRU over the daily feature history, standardised per column, with a
    missing-value indicator per column) summarises the region; a decoder (an MLP over the
    summary and a learned embedding of the week) gives every parameter for every week,
    squashed into its bounds:

    .. math::
        h = \mathrm{GRU}(x_{1..D}), \qquad
        \theta_{p, w} = l_p + (u_p - l_p)\, \sigma(\mathrm{MLP}_p([h, e_w]))

    Time-varying parameters (``time_varying``, e.g. the reproduction number) are returned per
    step (``[steps]``, each week's value held for ``steps_per_week`` steps); the others are
    the mean of their weekly values, one scalar for the whole run. This is the calibration network
    of GradABM (Chopra et al., AAMAS 2023), trained end to end through the simulator: the
    features are inputs, not targets, so the network learns how signals map to parameters.

    Args:
        features: ``[D, F]`` daily signals available to the model (e.g. ``doctor_visits``,
            ``wili``, ``wcli`` of :class:`~lpm_graph.datasets.CountySeries` up to the end of
            training); NaN marks a missing value.
        weeks: number of weekly values of the time-varying parameters.
        bounds: ``{parameter: (low, high)}``; these are the protocol attributes set.
        time_varying: the parameters that get one value per week.
        steps: steps to expand time-varying parameters to (default ``weeks * 7``).
        steps_per_week: steps per week.
        hidden: width of the GRU state, the week embedding and the MLPs.
        start: optional ``{name: value}`` inside the bounds that the untrained network gives
            (default: the middle of each bound).
        seed: seed of the initial weights (the global RNG is left untouched).

    Shapes:
        ``features: [D, F]`` -> ``{name: [steps] or []}``.
    """

    def __init__(
        self,
        features: Tensor,
        weeks: int,
        bounds: Mapping[str, tuple[float, float]],
        *,
        time_varying: Sequence[str] = ("reproduction_number",),
        steps: int | None = None,
        steps_per_week: int = 7,
        hidden: int = 32,
        start: Mapping[str, float] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        features = torch.as_tensor(features, dtype=torch.get_default_dtype())
        if features.dim() != 2 or features.shape[0] < 1:
            raise ValueError(
                "features must be [days, signals] with at least one day, got "
                f"{list(features.shape)}."
            )
        if isinstance(weeks, bool) or not isinstance(weeks, int) or weeks < 1:
            raise ValueError(f"weeks must be a positive int, got {weeks!r}.")
        unknown = sorted(set(time_varying) - set(bounds))
        if unknown:
            raise ValueError(f"time_varying names {unknown}, which have no bounds; add them.")
        for name, (low, high) in bounds.items():
            if not low < high:
                raise ValueError(f"bounds of {name!r} need low < high, got {(low, high)}.")
        observed = torch.isfinite(features)
        if not bool(observed.any(0).all()):
            empty = [int(i) for i in (~observed.any(0)).nonzero().view(-1)]
            raise ValueError(f"feature columns {empty} have no observed value; drop them.")
        mean = torch.nanmean(features, 0)
        std = torch.sqrt(torch.nanmean((features - mean) ** 2, 0)).clamp_min(1e-8)
        x = torch.where(observed, (features - mean) / std, torch.zeros_like(features))
        self.register_buffer("x", torch.cat([x, observed.to(x.dtype)], dim=1))  # [D, 2F]
        self.names = list(bounds)
        self.time_varying = [n for n in self.names if n in set(time_varying)]
        self.register_buffer("low", torch.tensor([bounds[n][0] for n in self.names], dtype=x.dtype))
        self.register_buffer(
            "high", torch.tensor([bounds[n][1] for n in self.names], dtype=x.dtype)
        )
        self.steps = steps if steps is not None else weeks * steps_per_week
        index = torch.clamp(torch.arange(self.steps) // steps_per_week, max=weeks - 1)
        self.register_buffer("index", index, persistent=False)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.encoder = nn.GRU(x.shape[1] * 2, hidden, batch_first=True)
            self.week = nn.Embedding(weeks, hidden)
            self.decoder = nn.Sequential(
                nn.Linear(2 * hidden, hidden), nn.Tanh(), nn.Linear(hidden, len(self.names))
            )
            nn.init.zeros_(self.decoder[-1].weight)  # start at the middle of every bound
            nn.init.zeros_(self.decoder[-1].bias)
        _start_at(self.decoder[-1].bias, self.names, bounds, start)
        self.to(x.dtype)

    def weekly(self) -> dict[str, Tensor]:
        """Every parameter per week, ``{name: [weeks]}``."""
        _, h = self.encoder(self.x.unsqueeze(0))  # h: [1, 1, H]
        h = h.reshape(1, -1).expand(self.week.num_embeddings, -1)  # [W, H]
        z = self.decoder(torch.cat([h, self.week.weight], dim=1))  # [W, P]
        values = self.low + (self.high - self.low) * torch.sigmoid(z)
        return {name: values[:, k] for k, name in enumerate(self.names)}

    def forward(self) -> dict[str, Tensor]:
        weekly = self.weekly()
        return {
            name: value[self.index] if name in self.time_varying else value.mean()
            for name, value in weekly.items()
        }


def _start_at(
    bias: Tensor,
    names: Sequence[str],
    bounds: Mapping[str, tuple[float, float]],
    start: Mapping[str, float] | None,
) -> None:
    """Set a zero-weight output layer's ``bias`` so that its squashed outputs
    ``low + (high - low) * sigmoid(bias)`` equal ``start`` (the others stay at the middle of
    their bounds)."""
    for name, value in (start or {}).items():
        if name not in bounds:
            raise ValueError(f"start names {name!r}, which has no bounds; add them.")
        low, high = bounds[name]
        if not low < value < high:
            raise ValueError(
                f"start of {name!r} must lie strictly inside its bounds {(low, high)}, "
                f"got {value!r}."
            )
        share = (value - low) / (high - low)
        with torch.no_grad():
            bias[list(names).index(name)] = math.log(share / (1 - share))
