r"""The leakage policy: what a secure run may open, about how many private agents, how often.

Every opening goes through :meth:`Session.open_raw <lpm_graph.secure.Session.open_raw>`,
which asks the session's :class:`LeakagePolicy` first. Masks (Beaver, truncation, comparison)
are uniformly random whatever the secret and are always allowed. What carries information is
bounded:

- an ``aggregate`` must declare how many private agents stand behind each of its values
  (``group``), at least ``min_group`` (default 10);
- ``public=`` agents (mixed graphs) must leave at least ``min_group`` private agents, so that
  an aggregate minus the public agents' states cannot isolate fewer;
- a ``gradient`` may be opened ``gradient_openings`` times per session (default once): two
  gradients at nearby parameters, or of losses that weight one agent, could be differenced;
- an ``output`` (any other value a user reveals) is refused unless ``outputs=True`` (tests,
  teaching, values a deployment declares public);
- optional differential privacy (:class:`GaussianDP`): every party adds Gaussian noise to
  its share of an aggregate or a clipped gradient before it is opened, and the
  :math:`(\varepsilon, \delta)` spent is counted (zero-concentrated DP, composed over the
  openings) and refused beyond the budget.

The policy binds the parties' code: in a deployment each party runs the protocol with the
policy it agreed to, not code received from the output receiver.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .audit import KINDS
from .prg import KeyStream

__all__ = ["GaussianDP", "InsecureDebugWarning", "LeakageError", "LeakagePolicy"]

_MASKS = ("beaver_mask", "binary_mask", "truncation_mask", "comparison_mask")


class LeakageError(RuntimeError):
    """An opening the leakage policy does not allow."""


class InsecureDebugWarning(RuntimeWarning):
    """A debug mode that opens private values (range checks) is on: the run is not private."""


@dataclass(frozen=True)
class GaussianDP:
    r"""Differential privacy by the Gaussian mechanism, accounted in zero-concentrated DP.

    Each party adds :math:`N(0, \sigma^2)` to its share of an opened aggregate or gradient,
    with :math:`\sigma` = ``noise_multiplier`` times the opening's L2 sensitivity, so that even
    ``K - 1`` colluding parties, who can subtract their own noise, face the honest party's
    :math:`\sigma` (the opened value carries ``K`` times the variance). Each opening then
    costs :math:`\rho = 1 / (2 z^2)` (``z`` = ``noise_multiplier``); ``k`` openings cost
    :math:`k \rho`, which is :math:`(\varepsilon, \delta)`-DP with
    :math:`\varepsilon = k\rho + 2\sqrt{k\rho \ln(1/\delta)}`. An opening that would exceed
    ``epsilon`` is refused.

    Gradients are clipped on shares to ``[-gradient_clip, gradient_clip]`` per parameter
    before the noise (two secure comparisons), so their sensitivity is
    ``2 gradient_clip sqrt(P)`` whatever the data: a true bound. An aggregate's sensitivity
    is what its caller declares: for the built-in models, one agent's own indicators in that
    step's counts (``2``); the influence of an agent on others through contagion is not
    bounded by it (see ``SECURITY.md``).

    Args:
        epsilon: the total budget :math:`\varepsilon` of a session.
        delta: the :math:`\delta` of the budget.
        noise_multiplier: ``z = sigma / sensitivity`` per opening.
        gradient_clip: the per-parameter bound ``C`` of an opened gradient.
        aggregate_sensitivity: the least L2 sensitivity an aggregate's noise is made for (a
            caller may declare more, not less; 2 for the built-in counts).
    """

    epsilon: float
    delta: float = 1e-6
    noise_multiplier: float = 1.0
    gradient_clip: float = 1.0
    aggregate_sensitivity: float = 2.0

    def __post_init__(self) -> None:
        for name in ("epsilon", "noise_multiplier", "gradient_clip", "aggregate_sensitivity"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(
                    f"GaussianDP({name}=...) must be a positive number, got {value!r}."
                )
        if not 0 < self.delta < 1:
            raise ValueError(f"GaussianDP(delta=...) must be in (0, 1), got {self.delta!r}.")

    @property
    def rho_per_opening(self) -> float:
        return 1.0 / (2.0 * self.noise_multiplier**2)

    def epsilon_of(self, rho: float) -> float:
        """The :math:`\\varepsilon` (at this ``delta``) of a total zCDP cost ``rho``."""
        if rho <= 0:
            return 0.0
        return rho + 2.0 * math.sqrt(rho * math.log(1.0 / self.delta))

    def noise(self, stream: KeyStream, shape: tuple[int, ...], sensitivity: float) -> Tensor:
        """One party's Gaussian noise (float64), from its own keystream (Box-Muller)."""
        u1 = stream.uniform(shape)
        u2 = stream.uniform(shape)
        z = torch.sqrt(-2.0 * torch.log1p(-u1)) * torch.cos(2.0 * math.pi * u2)
        return z * (self.noise_multiplier * sensitivity)


@dataclass(frozen=True)
class LeakagePolicy:
    """What a session may open (see the module's description).

    Args:
        min_group: the least number of private agents behind any opened aggregate value,
            and the least number a ``public=`` subset must leave private (default 10).
        gradient_openings: how many times a gradient may be opened per session (default 1).
        outputs: allow openings of kind ``"output"`` (arbitrary values; default ``False``).
        privacy: optional :class:`GaussianDP`.
    """

    min_group: int = 10
    gradient_openings: int = 1
    outputs: bool = False
    privacy: GaussianDP | None = None

    def __post_init__(self) -> None:
        for name in ("min_group", "gradient_openings"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(
                    f"LeakagePolicy({name}=...) must be a non-negative int, got {value!r}."
                )
        if self.privacy is not None and not isinstance(self.privacy, GaussianDP):
            raise TypeError(
                f"LeakagePolicy(privacy=...) takes a GaussianDP, got {type(self.privacy).__name__}."
            )

    @classmethod
    def unrestricted(cls) -> LeakagePolicy:
        """Every opening allowed (unit tests, teaching examples): **no bound on leakage**."""
        return cls(min_group=0, gradient_openings=1 << 62, outputs=True)

    # ------------------------------------------------------------------ checks
    def check_public(self, public: Tensor | None, num_agents: int, earlier: int = 0) -> None:
        """Refuse a ``public=`` mask (with every agent declared public earlier in the session,
        ``earlier`` of them) that leaves fewer than ``min_group`` private agents."""
        private = num_agents - (0 if public is None else int(public.sum()))
        if private < self.min_group:
            before = (
                f" (with the {earlier} agents declared public by earlier runs of this session)"
                if earlier
                else ""
            )
            raise LeakageError(
                f"only {private} of the {num_agents} agents are private{before}, fewer than the "
                f"policy's min_group={self.min_group}: the declared aggregates minus the public "
                "agents' states would reveal them. Make fewer agents public, or lower "
                "min_group in the session's LeakagePolicy if that is acceptable."
            )

    def check_groups(self, groups: Tensor, what: str) -> None:
        """Refuse an aggregate over fewer than ``min_group`` private agents per value."""
        if groups.numel() == 0:
            raise LeakageError(
                f"aggregate {what!r} declares an empty group; give the number of private "
                "agents behind each value."
            )
        if int(groups.min()) < self.min_group:
            small = int(groups.min())
            raise LeakageError(
                f"aggregate {what!r} would open a value over {small} private agents, fewer "
                f"than the policy's min_group={self.min_group}. Aggregate over larger groups "
                "(e.g. by_age=False), or lower min_group if that is acceptable."
            )

    def check_group_sizes(self, private: Tensor, labels: Tensor) -> None:
        """Each group (``labels``) must hold none or at least ``min_group`` private agents
        (``private``: every agent not declared public in the session so far)."""
        per = torch.bincount(labels[private.cpu()], minlength=int(labels.max()) + 1)
        for g, count in enumerate(per.tolist()):
            if 0 < count < self.min_group:
                raise LeakageError(
                    f"group {g} would have {count} private agents (with every agent declared "
                    f"public in this session), fewer than the policy's min_group="
                    f"{self.min_group}: its count minus the public agents' states would reveal "
                    "them. Make fewer agents public, aggregate over larger groups, or lower "
                    "min_group."
                )

    def check_owners(
        self, owners: Sequence[Tensor | None], private: Tensor, labels: Tensor | None = None
    ) -> None:
        """With several data owners, each must speak for none or at least ``min_group`` of the
        private agents, overall and of every group (``labels``): the other owners know their
        own agents and could subtract them from an aggregate."""
        if len(owners) < 2:
            return
        n = private.numel()
        for m, agents in enumerate(owners):
            mine = torch.zeros(n, dtype=torch.bool)
            mine[agents.long().cpu() if agents is not None else slice(None)] = True
            mine &= private.cpu()
            counts = [("overall", int(mine.sum()))]
            if labels is not None:
                per = torch.bincount(labels[mine], minlength=int(labels.max()) + 1)
                counts += [(f"of group {g}", int(c)) for g, c in enumerate(per.tolist())]
            for where, count in counts:
                if 0 < count < self.min_group:
                    raise LeakageError(
                        f"data owner {m} speaks for {count} private agents {where}, fewer than "
                        f"the policy's min_group={self.min_group}: the other owners could "
                        "subtract their own agents from the aggregates and learn them. Merge "
                        "small owners, aggregate over larger groups, or lower min_group."
                    )

    def check_opening(self, kind: str, name: str, group: Tensor | int | None, opened: int) -> None:
        """Refuse an opening the policy does not allow (before anything is sent)."""
        if kind not in KINDS:
            raise ValueError(f"unknown opening kind {kind!r}; declare one of {KINDS}.")
        if kind in _MASKS or kind in ("loss", "range_check"):
            raise LeakageError(
                f"{name!r}: kind {kind!r} is not opened by callers (masks are opened by the "
                "protocols themselves, a loss is computed from opened aggregates, range checks "
                "by the debug mode); open an 'aggregate', a 'gradient' or an 'output'."
            )
        if kind == "public_state":
            return  # the session checks the agents it names
        if kind == "aggregate":
            if group is None:
                raise LeakageError(
                    f"aggregate {name!r} declares no group size; pass group= (the number of "
                    "private agents behind each value) so the policy can check it."
                )
            self.check_groups(torch.as_tensor(group), name)
            return
        if kind == "gradient":
            if opened >= self.gradient_openings:
                raise LeakageError(
                    f"gradient {name!r} was already opened {opened} time(s), the policy's "
                    f"limit (gradient_openings={self.gradient_openings}); several gradients "
                    "of one run can be differenced. Start a new session (fresh private draws) "
                    "or raise gradient_openings."
                )
            return
        if kind == "output" and not self.outputs:
            raise LeakageError(
                f"opening {name!r} (kind 'output') is not allowed by the leakage policy: it may "
                "be any private value. Open declared aggregates (kind 'aggregate' with group=), "
                "or use LeakagePolicy(outputs=True) where the value is meant to be public."
            )
