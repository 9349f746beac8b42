"""Session: the parties of a secure computation, their transport, the dealer, the audit log
and the cost report."""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .audit import AuditLog
from .dealer import Correlation, Dealer
from .owner import DataOwner, InputOwner, OwnerRole, as_owners, combine_inputs
from .policy import _MASKS, InsecureDebugWarning, LeakageError, LeakagePolicy
from .prg import KeyStream, Randomness, as_randomness, derive_key
from .ring import FRAC_BITS, decode, encode_scaled

if TYPE_CHECKING:
    from .tensor import SharedTensor

__all__ = [
    "CostReport",
    "LocalTransport",
    "OutputShares",
    "Session",
    "StepCost",
    "Transport",
    "receive",
]

_log = logging.getLogger(__name__)


class Transport:
    """How the parties of one process talk to the other parties and to the dealer.

    A transport serves the parties ``local`` (all of them in one process, or a single one per
    process). Shares travel as ``[len(local), *shape]`` tensors, one row per local party.
    """

    parties: int
    local: tuple[int, ...]

    def exchange(self, tensors: Sequence[Tensor]) -> list[Tensor]:
        """Every party sends its rows to every other party, in one round; returns each tensor
        as ``[parties, *shape]`` (the shares of all parties)."""
        raise NotImplementedError

    def correlation(self, kind: str, shape: tuple[int, ...], **kwargs) -> dict[str, Tensor]:
        """The local parties' shares of a fresh item of correlated randomness from the dealer."""
        raise NotImplementedError

    def input(self, name: str, step: int | None) -> tuple[Tensor, int]:
        """The local parties' shares of a private input from its data owners, and its
        fractional bits."""
        raise NotImplementedError

    def pairwise_keys(self, make_key: Callable[[int, int], bytes]) -> dict[tuple[int, int], bytes]:
        """Agree on a key with every other party: for each pair ``i < j``, party ``i`` makes
        the key with ``make_key(i, j)`` and sends it to party ``j`` alone. Returns the keys of
        the pairs that include a local party (a collective call: every party, in order)."""
        raise NotImplementedError

    def owner_agents(self) -> list[Tensor | None]:
        """The (public) agent ids of each data owner (``None``: all agents)."""
        return []

    def dealer_bytes(self) -> int:
        """Bytes the dealer has sent to one party so far."""
        return 0

    def owner_bytes(self) -> int:
        """Bytes the data owners have sent to one party so far."""
        return 0

    def close(self) -> None:
        """Release what the transport holds (processes, process groups)."""


class LocalTransport(Transport):
    """All ``parties`` in this process, with the dealer and the data owners (tests, small
    runs; every role in one process protects nothing). Nothing is sent; the bytes each party
    would receive are counted the same way as with the multi-process transport."""

    def __init__(self, dealer: Dealer, owners: Sequence[OwnerRole] = ()) -> None:
        self.dealer = dealer
        self.owners = list(owners)
        self.parties = dealer.parties
        self.local = tuple(range(dealer.parties))

    def exchange(self, tensors: Sequence[Tensor]) -> list[Tensor]:
        return list(tensors)

    def correlation(self, kind: str, shape: tuple[int, ...], **kwargs) -> dict[str, Tensor]:
        return self.dealer.make(kind, shape, **kwargs)

    def input(self, name: str, step: int | None) -> tuple[Tensor, int]:
        if not self.owners:
            raise RuntimeError(
                f"private input {name!r} was requested but the session has no data owner; "
                "pass owner= (a function (name, step) -> value) or owners= to the session."
            )
        parts, bits = [], set()
        for role in self.owners:
            shares, b = role.share(name, step)
            parts.append((shares, *role.owner.public()))
            bits.add(b)
        return combine_inputs(parts, bits, name)

    def pairwise_keys(self, make_key: Callable[[int, int], bytes]) -> dict[tuple[int, int], bytes]:
        return {
            (i, j): make_key(i, j) for i in range(self.parties) for j in range(i + 1, self.parties)
        }

    def dealer_bytes(self) -> int:
        # per party, as the multi-process transport counts what its party received
        return self.dealer.bytes_dealt // self.parties

    def owner_bytes(self) -> int:
        return sum(role.bytes_sent for role in self.owners) // self.parties

    def owner_agents(self) -> list[Tensor | None]:
        return [role.owner.agents for role in self.owners]


@dataclass(frozen=True)
class OutputShares:
    """The parts of an opening that only the output receiver may see (:meth:`Session.output`):
    the rows of the parties ``parties_here`` out of ``parties``."""

    name: str
    rows: Tensor
    parties_here: tuple[int, ...]
    parties: int
    frac_bits: int


def receive(results: object) -> object:
    """The output receiver's side of :meth:`Session.output`: ``results`` holds the parties'
    return values (a list, one per party, as :func:`~lpm_graph.secure.launch` returns them,
    or one in-process session's value); every :class:`OutputShares` found at the same place
    in each is added up and decoded (float64). Other values pass through from the first."""
    parts = results if isinstance(results, list) else [results]
    first = parts[0]
    if isinstance(first, OutputShares):
        if not all(isinstance(p, OutputShares) and p.name == first.name for p in parts):
            raise ValueError(f"the parties returned different things where {first.name!r} is.")
        held = sorted(k for p in parts for k in p.parties_here)
        if held != list(range(first.parties)):
            raise ValueError(
                f"{first.name!r}: the receiver needs every party's part once, got parties "
                f"{held} of {first.parties}."
            )
        return decode(sum(p.rows.sum(0) for p in parts), first.frac_bits)
    if isinstance(first, dict):
        return {k: receive([p[k] for p in parts]) for k in first}
    if isinstance(first, (list, tuple)) and any(_holds_output(v) for v in first):
        return type(first)(receive([p[i] for p in parts]) for i in range(len(first)))
    return first


def _holds_output(value: object) -> bool:
    if isinstance(value, OutputShares):
        return True
    if isinstance(value, dict):
        return any(_holds_output(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_holds_output(v) for v in value)
    return False


@dataclass
class StepCost:
    """Communication and time of one step (or any named span)."""

    step: int | str
    rounds: int
    bytes_per_party: int
    dealer_bytes: int
    seconds: float
    owner_bytes: int = 0


@dataclass
class CostReport:
    """Running totals and the per-step record of a session."""

    rounds: int = 0
    bytes_per_party: int = 0  # bytes each party sent to the others (the same for every party)
    steps: list[StepCost] = field(default_factory=list)

    def table(self) -> str:
        lines = ["| step | rounds | bytes sent per party | dealer bytes | owner bytes | seconds |"]
        lines.append("|---:|---:|---:|---:|---:|---:|")
        for s in self.steps:
            lines.append(
                f"| {s.step} | {s.rounds} | {s.bytes_per_party:,} | {s.dealer_bytes:,} | "
                f"{s.owner_bytes:,} | {s.seconds:.4f} |"
            )
        return "\n".join(lines)


class Session:
    """The context of a secure computation: ``K`` parties, their transport and dealer.

    Private values are :class:`~lpm_graph.secure.SharedTensor` objects made by
    :meth:`input` (an agent's private value, shared by its data owner) or
    :meth:`share` (a value this process knows: tests, or a party's own input). The only way
    back to plaintext is :meth:`reveal`, which records every opening in :attr:`audit`.

    Args:
        parties: number of compute parties ``K >= 2`` (in-process transport).
        seed: ``None`` (default): the dealer's and this session's keys come from OS entropy
            (a private run). An int or :meth:`Randomness.reproducible
            <lpm_graph.secure.prg.Randomness.reproducible>`: derived from the seed, so the same
            seed gives the same shares: **not private**, for tests that compare with a
            plaintext run (warns with :class:`~lpm_graph.secure.prg.InsecureRandomnessWarning`).
        owner: the agents' private inputs, ``owner(name, step) -> value`` (see
            :data:`~lpm_graph.secure.owner.InputOwner`), or a
            :class:`~lpm_graph.secure.DataOwner`: one data owner for all agents.
        owners: several :class:`~lpm_graph.secure.DataOwner` objects that partition the
            agents (each shares its own agents' inputs).
        frac_bits: fractional bits of fixed-point values (default 16).
        transport: a ready transport (the multi-process launcher passes one); overrides
            ``parties``, ``seed`` and ``owner``.
        audit: an :class:`AuditLog` to record into (default: a new one).
        device: where shares live (default CPU).
        policy: the :class:`~lpm_graph.secure.LeakagePolicy` every opening must pass
            (default ``LeakagePolicy()``: aggregates over at least 10 private agents, one
            gradient opening, no ``"output"`` openings).
        check_ranges: debug mode: before every truncation and comparison, open its inputs
            and raise if they leave the range where the protocol is exact (``|x| < 2^62``).
            It reveals private values: **not private** (warns with
            :class:`~lpm_graph.secure.policy.InsecureDebugWarning`).
    """

    def __init__(
        self,
        parties: int = 2,
        *,
        seed: int | Randomness | None = None,
        owner: InputOwner | DataOwner | None = None,
        owners: Sequence[DataOwner] | None = None,
        frac_bits: int = FRAC_BITS,
        transport: Transport | None = None,
        audit: AuditLog | None = None,
        device: torch.device | str | None = None,
        policy: LeakagePolicy | None = None,
        check_ranges: bool = False,
    ) -> None:
        if policy is not None and not isinstance(policy, LeakagePolicy):
            raise TypeError(
                f"policy must be a LeakagePolicy, got {type(policy).__name__}; e.g. "
                "LeakagePolicy(min_group=10)."
            )
        if not 1 <= frac_bits <= 30:
            raise ValueError(f"frac_bits must be between 1 and 30, got {frac_bits}.")
        self.frac_bits = frac_bits
        randomness = as_randomness(seed)
        if transport is None:
            dealer = Dealer(parties, seed=randomness, device=device)
            roles = [
                OwnerRole(o, parties, frac_bits, randomness, index=m, device=device)
                for m, o in enumerate(as_owners(owner, owners))
            ]
            transport = LocalTransport(dealer, roles)
        elif owner is not None or owners is not None:
            raise ValueError(
                "owner=/owners= go to the transport's data owners; a session with a ready "
                "transport takes neither."
            )
        if getattr(transport, "_session_bound", False):
            raise ValueError(
                "this transport already serves a session; a second session on it would start "
                "a fresh policy and privacy budget over the same inputs. Make a new transport "
                "(a new Session or launch) for a new run."
            )
        transport._session_bound = True
        self.transport = transport
        self.parties = transport.parties
        self.local = transport.local
        # the row of party 0 among the local rows (None when this process is another party):
        # public constants are added to party 0's share only
        self.lead = self.local.index(0) if 0 in self.local else None
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.audit = audit if audit is not None else AuditLog()
        self.cost = CostReport()
        # shares of values this process knows (share()): its own keystream, never the dealer's
        master = randomness.master_key("session")
        self._stream = KeyStream(derive_key(master, "share"))
        self._noise = KeyStream(derive_key(master, "noise"))  # differential privacy
        self._pair_master = derive_key(master, "pairwise")  # keys this party makes for pairs
        self._pairs: dict[tuple[int, int], KeyStream] | None = None
        self._policy = policy if policy is not None else LeakagePolicy()
        self._gradients_opened = 0
        self._public: Tensor | None = None  # every agent declared public in this session
        self._sealed: str | None = None  # code running now that may not open (a phase)
        self._check_ranges = bool(check_ranges)
        if self._check_ranges:
            message = (
                "check_ranges=True opens the inputs of every truncation and comparison to "
                "check their range: the run is NOT private (debugging only)."
            )
            warnings.warn(message, InsecureDebugWarning, stacklevel=2)
            _log.warning(message)

    @property
    def policy(self) -> LeakagePolicy:
        """The leakage policy (fixed for the session's life)."""
        return self._policy

    # ------------------------------------------------------------------ making shares
    def share(self, value: Tensor | float, frac_bits: int | None = None) -> SharedTensor:
        """Share a value this process knows (every local party gets its share).

        With the in-process transport this is how tests and single-process users share data.
        With one party per process, every party would need to know the value: use
        :meth:`input` for private values instead.
        """
        from .dealer import split_additive
        from .tensor import SharedTensor

        if len(self.local) != self.parties:
            raise RuntimeError(
                f"share() splits a value among all {self.parties} parties, but this process "
                f"holds only parties {list(self.local)}; with one party per process a private "
                "value enters through its owner: use session.input(name, step)."
            )
        encoded, bits = encode_scaled(value, frac_bits, self.frac_bits, self.device)
        shares = split_additive(encoded, self.parties, self._stream)
        return SharedTensor(shares[list(self.local)], bits, self)

    def input(self, name: str, step: int | None = None) -> SharedTensor:
        """The shares of the data owners' private input ``name`` (at ``step``)."""
        from .tensor import SharedTensor

        shares, bits = self.transport.input(name, step)
        return SharedTensor(shares.to(self.device), bits, self)

    def public(self, value: Tensor | float, frac_bits: int | None = None) -> SharedTensor:
        """A public value as a (trivial) sharing: party 0 holds it, the others hold 0."""
        from .tensor import SharedTensor

        encoded, bits = encode_scaled(value, frac_bits, self.frac_bits, self.device)
        shares = torch.zeros(
            (len(self.local), *encoded.shape), dtype=torch.int64, device=self.device
        )
        if self.lead is not None:
            shares[self.lead] = encoded
        return SharedTensor(shares, bits, self)

    def zero_sharing(self, shape: tuple[int, ...]) -> Tensor:
        """Pseudo-random shares of zero, ``[P_local, *shape]``, with no dealer and no
        communication: party ``p`` adds the next words of its keystream with every party
        after it and subtracts those with every party before it (keys agreed pairwise on
        first use). It needs no dealer; it re-randomises shares (:meth:`reshare`). Note that
        ``K - 1`` colluding parties know the sum of their rows, hence the honest party's row
        too: a zero-sharing hides nothing from them that the shares it is added to do not."""
        if self._pairs is None:
            keys = self.transport.pairwise_keys(
                lambda i, j: derive_key(self._pair_master, "pair", i, j)
            )
            self._pairs = {pair: KeyStream(key) for pair, key in keys.items()}
        out = torch.zeros((len(self.local), *shape), dtype=torch.int64, device=self.device)
        for (i, j), stream in sorted(self._pairs.items()):
            words = stream.words(tuple(shape), self.device)
            if i in self.local:
                out[self.local.index(i)] += words
            if j in self.local:
                out[self.local.index(j)] -= words
        return out

    def reshare(self, x: SharedTensor) -> SharedTensor:
        """Fresh shares of the same value (a pseudo-random zero-sharing added): local, no
        dealer, no communication."""
        from .tensor import SharedTensor

        return SharedTensor(x.shares + self.zero_sharing(tuple(x.shape)), x.frac_bits, self)

    def output(
        self,
        x: SharedTensor,
        name: str,
        kind: str = "aggregate",
        *,
        group: int | Tensor | None = None,
        sensitivity: float | None = None,
    ) -> OutputShares:
        """Open ``x`` to the output receiver only: the parties learn nothing of it.

        The policy checks it as an opening of ``kind`` (with differential privacy, the noise
        is added as for :meth:`reveal`); the shares are then reshared
        (:meth:`zero_sharing`), so that what the receiver gets from a party is independent
        of the share that party holds. Return the result from the party function;
        :func:`receive` adds the parties' parts up (``launch`` hands them to its caller).
        """
        clipped = False
        if kind == "gradient" and self._policy.privacy is not None:
            x, clipped = self._clip_gradient(x), True
        (row,), (name,), (kind,) = self._admit(
            [x.shares], name, kind, group, sensitivity, x.frac_bits, None, clipped
        )
        row = row + self.zero_sharing(tuple(x.shape))
        self.audit.record(name, kind, None, receiver=True, shape=tuple(x.shape))
        return OutputShares(name, row.cpu(), self.local, self.parties, x.frac_bits)

    def correlation(self, kind: str, shape: tuple[int, ...], **kwargs) -> Correlation:
        parts = self.transport.correlation(kind, tuple(shape), **kwargs)
        return Correlation(kind, {k: v.to(self.device) for k, v in parts.items()})

    # ------------------------------------------------------------------ the run's agents
    def declare_agents(
        self, num_agents: int, public: Tensor | None = None, groups: Tensor | None = None
    ) -> None:
        """Declare a run's agents before it opens anything: which are public (``public=``,
        a bool mask) and, for aggregates by group, each agent's group (``groups``, ints).

        The policy refuses a run whose public agents, together with every agent declared
        public earlier in this session, leave fewer than ``min_group`` private agents, and
        one where some data owner speaks for fewer than ``min_group`` of the private agents
        (overall or of a group) but more than none: the other owners, who know their own
        agents, could subtract them from an aggregate.
        """
        n = int(num_agents)
        if self._public is None:
            self._public = torch.zeros(n, dtype=torch.bool)
        elif self._public.numel() != n:
            raise ValueError(
                f"this session's runs had {self._public.numel()} agents, this one has {n}; "
                "start a new session for another population."
            )
        mask = self._public.clone()
        if public is not None:
            mask |= torch.as_tensor(public, dtype=torch.bool).cpu()
        self._policy.check_public(mask, n, earlier=int(self._public.sum()))
        owners = self.transport.owner_agents()
        labels = None if groups is None else torch.as_tensor(groups).long().cpu()
        if labels is not None:
            self._policy.check_group_sizes(~mask, labels)
        self._policy.check_owners(owners, ~mask, labels)
        self._public = mask

    @property
    def public_agents(self) -> Tensor | None:
        """Every agent declared public in this session so far (bool ``[N]``, a copy), or
        ``None`` before the first run: aggregates must count the others as private."""
        return None if self._public is None else self._public.clone()

    # ------------------------------------------------------------------ opening
    def reveal(
        self,
        x: SharedTensor,
        name: str,
        kind: str = "output",
        *,
        group: int | Tensor | None = None,
        sensitivity: float | None = None,
    ) -> Tensor:
        """Open ``x`` to every party, record it in the audit log, and decode it (float64).

        The session's :attr:`policy` decides first: an ``"aggregate"`` declares ``group``
        (the number of private agents behind each value). Under differential privacy an
        aggregate is opened with noise for its L2 ``sensitivity`` (at least the policy's
        ``aggregate_sensitivity``), and a ``"gradient"`` is first clipped on shares to the
        policy's ``gradient_clip`` per value.
        """
        clipped = False
        if kind == "gradient" and self._policy.privacy is not None:
            x, clipped = self._clip_gradient(x), True
        rows, names, kinds = self._admit(
            [x.shares], name, kind, group, sensitivity, x.frac_bits, None, clipped
        )
        return decode(self._open(rows, names, kinds)[0], x.frac_bits)

    def open_raw(
        self,
        rows: Sequence[Tensor],
        name: str | Sequence[str],
        kind: str | Sequence[str],
        *,
        group: object = None,
        sensitivity: float | Sequence[float | None] | None = None,
        frac_bits: int | Sequence[int] | None = None,
        agents: Tensor | Sequence[Tensor | None] | None = None,
    ) -> list[Tensor]:
        """Reconstruct (sum) several ``[P_local, ...]`` share tensors in one round: the
        declared openings of a protocol. ``name``, ``kind``, ``group`` (private agents behind
        each value of an ``"aggregate"``), ``sensitivity`` (L2, for differential privacy),
        ``frac_bits`` (the rows' scale, needed for the noise) and ``agents`` (the ids of the
        agents whose states a ``"public_state"`` row holds, all declared public with
        :meth:`declare_agents`) may be one per tensor. The :attr:`policy` checks every
        tensor before anything is sent and raises :class:`~lpm_graph.secure.LeakageError`
        if one is not allowed. Masks are opened by the protocols themselves, never here."""
        rows, names, kinds = self._admit(
            rows, name, kind, group, sensitivity, frac_bits, agents, False
        )
        return self._open(rows, names, kinds)

    def _open_masks(
        self, rows: Sequence[Tensor], name: str, kind: str, xor: bool = False
    ) -> list[Tensor]:
        """Open masked values (one round): the protocols' own openings (Beaver, truncation,
        comparison), uniformly random whatever the secret. Not for callers' values."""
        if kind not in _MASKS:
            raise ValueError(f"_open_masks opens masks only, not {kind!r}.")
        return self._open(list(rows), [name] * len(rows), [kind] * len(rows), xor)

    def _open(self, rows, names, kinds, xor: bool = False) -> list[Tensor]:
        full = self._exchange(rows)
        out = []
        for value, name, kind in zip(full, names, kinds):
            if xor:
                opened = value[0]
                for share in value[1:]:
                    opened = opened ^ share
            else:
                opened = value.sum(0)
            self.audit.record(name, kind, opened)
            out.append(opened)
        return out

    def _clip_gradient(self, x: SharedTensor) -> SharedTensor:
        """``x`` clipped on shares to ``[-C, C]`` per value (two secure comparisons and one
        product round), ``C`` the policy's ``gradient_clip``."""
        from .tensor import SharedTensor, greater, multiply

        c = self._policy.privacy.gradient_clip
        flat = x.reshape(-1)
        above, below = greater(flat, c), greater(-flat, c)  # [g > C], [g < -C]
        pieces = multiply(
            SharedTensor.cat([above, below]), SharedTensor.cat([-flat + c, -flat - c])
        )
        p = flat.shape[0]
        return (flat + pieces[:p] + pieces[p:]).reshape(*x.shape)

    @contextmanager
    def sealed(self, what: str) -> Iterator[None]:
        """While entered, :meth:`reveal`, :meth:`open_raw` and :meth:`output` refuse: the
        code inside (``what``: a protocol's phases and observables under
        :func:`~lpm_graph.secure.secure_simulate`) reaches the session through its values
        and ``ctx.session``, but what a run opens is decided outside it."""
        previous, self._sealed = self._sealed, what
        try:
            yield
        finally:
            self._sealed = previous

    def _admit(self, rows, name, kind, group, sensitivity, frac_bits, agents, clipped):
        """The policy's check of an opening (before anything is sent), and the differential
        privacy noise added to each local party's share; returns ``(rows, names, kinds)``."""
        if self._sealed is not None:
            raise LeakageError(
                f"{self._sealed} cannot open anything (it asked to open {name!r}, kind "
                f"{kind!r}): a secure run opens only its observables, derived and checked "
                "when the run is built, and the gradient."
            )
        rows = list(rows)
        count = len(rows)

        def per_row(value: object, what: str) -> list:
            if isinstance(value, (list, tuple)):
                if len(value) != count:
                    raise ValueError(
                        f"{what} lists {len(value)} values for {count} tensors; give one per "
                        "tensor (or a single value for all)."
                    )
                return list(value)
            return [value] * count

        names, kinds = per_row(name, "name"), per_row(kind, "kind")
        groups, sens = per_row(group, "group"), per_row(sensitivity, "sensitivity")
        bits, ids = per_row(frac_bits, "frac_bits"), per_row(agents, "agents")
        dp = self._policy.privacy
        noisy = [dp is not None and k in ("aggregate", "gradient") for k in kinds]
        gradients = self._gradients_opened
        for i, (n, k, g) in enumerate(zip(names, kinds, groups)):
            self._policy.check_opening(k, n, g, gradients)
            gradients += k == "gradient"
            if k == "public_state":
                self._check_public_row(rows[i], ids[i], n)
            if not noisy[i]:
                continue
            if bits[i] is None:
                raise ValueError(
                    f"{k} {n!r} is opened with differential privacy noise: pass frac_bits= "
                    "(the scale of its encoding) so that the noise has the declared size."
                )
            if k == "gradient":
                if not clipped:
                    raise LeakageError(
                        f"gradient {n!r}: under differential privacy a gradient is opened with "
                        "reveal(..., kind='gradient'), which clips it on shares first."
                    )
                sens[i] = 2.0 * dp.gradient_clip * math.sqrt(max(1, rows[i][0].numel()))
            else:
                floor = dp.aggregate_sensitivity
                if sens[i] is not None and float(sens[i]) < floor:
                    raise LeakageError(
                        f"aggregate {n!r} declares sensitivity {sens[i]!r}, below the policy's "
                        f"aggregate_sensitivity={floor:g}; the noise would not hide one agent."
                    )
                sens[i] = floor if sens[i] is None else float(sens[i])
        if dp is not None and any(noisy):
            rho = self.audit.rho + dp.rho_per_opening * sum(noisy)
            if dp.epsilon_of(rho) > dp.epsilon:
                raise LeakageError(
                    f"opening {names[noisy.index(True)]!r} would spend epsilon "
                    f"{dp.epsilon_of(rho):.3g}, beyond the budget {dp.epsilon:g} (spent so far "
                    f"{self.audit.epsilon:.3g}); the session's privacy budget is used up."
                )
            for i, loud in enumerate(noisy):
                if loud:  # every local party adds its own noise to its share
                    noise = dp.noise(self._noise, tuple(rows[i].shape), float(sens[i]))
                    rows[i] = rows[i] + torch.round(noise * 2.0 ** bits[i]).to(torch.int64).to(
                        rows[i].device
                    )
            self.audit.rho = rho
            self.audit.epsilon, self.audit.delta = dp.epsilon_of(rho), dp.delta
        self._gradients_opened = gradients
        return rows, names, kinds

    def _check_public_row(self, row: Tensor, agents: Tensor | None, name: str) -> None:
        """A ``public_state`` row holds the states of declared public agents only."""
        if agents is None:
            raise LeakageError(
                f"public_state {name!r} names no agents; pass agents= (the ids whose states "
                "it holds), all declared public with declare_agents(public=...)."
            )
        ids = torch.as_tensor(agents).long().cpu()
        if self._public is None or ids.numel() == 0 or row.dim() < 2 or row.shape[1] != ids.numel():
            raise LeakageError(
                f"public_state {name!r} must hold one row per named agent, of agents "
                "declared public with declare_agents(public=...)."
            )
        if (
            int(ids.min()) < 0
            or int(ids.max()) >= self._public.numel()
            or not bool(self._public[ids].all())
        ):
            raise LeakageError(
                f"public_state {name!r} names agents that were not declared public; their "
                "states are private."
            )

    def check_product_range(self, x: Tensor, x_bits: int, y: Tensor, y_bits: int) -> None:
        """Debug mode: open both factors of a Beaver product and raise if their exact product
        reaches ``2^62`` in the ring (it would wrap around: silently wrong)."""
        if not self._check_ranges:
            return
        full = self._exchange([x, y])
        for value in full:
            self.audit.record("product factor", "range_check", value.sum(0))
        fx, fy = (v.sum(0).to(torch.float64) for v in full)
        if fx.numel() and float((fx * fy).abs().max()) >= 2.0**62:
            raise ValueError(
                "product: a value reaches 2^62 in the ring (the factors' scales add up), "
                "outside the range where the secure protocol is exact; the result would be "
                "silently wrong. Rescale the inputs or use fewer fractional bits."
            )

    def check_range(self, x: Tensor, what: str, limit_bits: int = 62) -> None:
        """Debug mode (``check_ranges=True``): open the shares ``x`` (``[P_local, ...]``) and
        raise if a value reaches ``2^limit_bits`` in magnitude (the range where truncation
        and comparison are exact). A no-op otherwise."""
        if not self._check_ranges:
            return
        full = self._exchange([x])[0].sum(0)
        self.audit.record(what, "range_check", full)
        limit = 1 << limit_bits
        if full.numel() and bool(((full >= limit) | (full <= -limit)).any()):
            raise ValueError(
                f"{what}: a value reaches 2^{limit_bits} in the ring, outside the range where "
                "the secure protocol is exact; the result would be silently wrong. Rescale the "
                "inputs or use fewer fractional bits."
            )

    @property
    def check_ranges(self) -> bool:
        """Whether the range-checking debug mode is on (fixed when the session is made)."""
        return self._check_ranges

    def _exchange(self, rows: Sequence[Tensor]) -> list[Tensor]:
        """One round of communication (counted): every local party's rows to every party."""
        for r in rows:
            if r.shape[0] != len(self.local):
                raise ValueError("exchange takes one row of shares per local party.")
        self.cost.rounds += 1
        self.cost.bytes_per_party += (self.parties - 1) * sum(
            r[0].numel() * r.element_size() for r in rows
        )
        return self.transport.exchange(rows)

    # ------------------------------------------------------------------ cost report
    @contextmanager
    def step(self, name: int | str) -> Iterator[StepCost]:
        """Record the rounds, bytes and time of the code inside as one step."""
        rounds, sent = self.cost.rounds, self.cost.bytes_per_party
        dealt, owned = self.transport.dealer_bytes(), self.transport.owner_bytes()
        previous = self.audit.step
        self.audit.step = name if isinstance(name, int) else None
        start = time.perf_counter()
        record = StepCost(name, 0, 0, 0, 0.0)
        try:
            yield record
        finally:
            record.rounds = self.cost.rounds - rounds
            record.bytes_per_party = self.cost.bytes_per_party - sent
            record.dealer_bytes = self.transport.dealer_bytes() - dealt
            record.owner_bytes = self.transport.owner_bytes() - owned
            record.seconds = time.perf_counter() - start
            self.cost.steps.append(record)
            self.audit.step = previous

    def close(self) -> None:
        self.transport.close()

    def __repr__(self) -> str:
        return (
            f"Session(parties={self.parties}, local={self.local}, frac_bits={self.frac_bits}, "
            f"transport={type(self.transport).__name__})"
        )
