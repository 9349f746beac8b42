"""The audit log: every value the parties ever reconstruct, with its name and kind."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["KINDS", "AuditLog", "Opening"]

KINDS: tuple[str, ...] = (
    "aggregate",  # a declared aggregate over agents (daily counts)
    "public_state",  # new state of agents declared public (mixed graphs)
    "beaver_mask",  # x - a, y - b of a Beaver multiplication (uniform: a, b are)
    "binary_mask",  # x ^ a, y ^ b of a Beaver AND on bits (uniform)
    "truncation_mask",  # x + r of a truncation (uniform: r is)
    "comparison_mask",  # bit ^ r when a comparison bit becomes arithmetic (uniform bit)
    "loss",
    "gradient",
    "output",  # anything else a user declares with reveal(..., kind="output")
    "range_check",  # debug mode only (check_ranges=True): inputs of truncations / comparisons
)
"""The kinds of opening. Masks are uniformly random ring elements whatever the secret; only
``aggregate``, ``public_state``, ``loss``, ``gradient`` and ``output`` carry information, and
only what their name declares; ``range_check`` openings (a debug mode) reveal private values."""


@dataclass(frozen=True)
class Opening:
    """One reconstruction: what, of which kind, its shape, and at which step (if any)."""

    name: str
    kind: str
    shape: tuple[int, ...]
    step: int | None = None
    receiver: bool = False  # opened to the output receiver only (Session.output)


@dataclass
class AuditLog:
    """Records every opening made through :meth:`~lpm_graph.secure.Session.reveal`.

    Args:
        keep_values: also keep the opened tensors (tests use them to check that nothing
            private was ever opened; memory grows with the run).
    """

    keep_values: bool = False
    openings: list[Opening] = field(default_factory=list)
    values: list[Tensor] = field(default_factory=list, repr=False)
    step: int | None = None
    rho: float = 0.0  # zero-concentrated DP spent by noisy openings (GaussianDP)
    epsilon: float = 0.0  # the (epsilon, delta) of rho, at the policy's delta
    delta: float = 0.0

    def record(
        self,
        name: str,
        kind: str,
        value: Tensor | None,
        receiver: bool = False,
        shape: tuple[int, ...] = (),
    ) -> None:
        """Record an opening of ``value``; ``None`` (and its ``shape``) for one that only the
        output receiver sees (an empty tensor is kept in its place)."""
        if kind not in KINDS:
            raise ValueError(f"unknown opening kind {kind!r}; declare one of {KINDS}.")
        shape = tuple(shape) if value is None else tuple(value.shape)
        self.openings.append(Opening(name, kind, shape, self.step, receiver))
        if self.keep_values:
            self.values.append(torch.empty(0) if value is None else value.detach().clone())

    def kinds(self) -> Counter:
        """Number of openings per kind."""
        return Counter(o.kind for o in self.openings)

    def names(self, kind: str | None = None) -> set[str]:
        return {o.name for o in self.openings if kind is None or o.kind == kind}

    def __len__(self) -> int:
        return len(self.openings)

    def privacy_spent(self) -> tuple[float, float]:
        """``(epsilon, delta)`` spent by the differentially private openings so far."""
        return self.epsilon, self.delta

    def summary(self) -> str:
        lines = [f"{len(self)} openings"]
        if self.rho:
            lines.append(f"  differential privacy spent: epsilon {self.epsilon:.3g}, "
                         f"delta {self.delta:.3g} (rho {self.rho:.3g})")  # fmt: skip
        for kind, count in sorted(self.kinds().items()):
            names = sorted(self.names(kind))
            shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
            lines.append(f"  {kind}: {count} ({shown})")
        return "\n".join(lines)
