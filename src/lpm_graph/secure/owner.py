"""Data owners: the role that holds agents' private inputs and shares them itself.

An owner (an agent, a household, an institution) knows the plaintext private inputs of its
agents (their initial state, their private random draws). It encodes each input in fixed
point, splits it into additive shares under its own keystream and sends share ``k`` to party
``k``. No other role ever holds an owner's plaintext: the dealer makes correlated randomness
only, and a party receives its own row of shares only.

Which agents an owner speaks for is public (it decides where the parties put the shares);
their values are not. Several owners partition the agents: each returns values for its own
agents, in the order of its ``agents`` index, and the parties place every owner's shares at
those positions (a local, exact operation on shares).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .dealer import split_additive
from .policy import LeakageError
from .prg import KeyStream, Randomness, derive_key
from .ring import encode_scaled

__all__ = [
    "DataOwner",
    "InputOwner",
    "OwnerRole",
    "as_owners",
    "check_partition",
    "combine_inputs",
    "place_shares",
]

InputOwner = Callable[[str, "int | None"], "tuple[Tensor, int] | Tensor"]
"""``owner(name, step) -> value`` or ``(value, frac_bits)``: a private input in plaintext, as
known to its owner. Float values are encoded with the session's fractional bits, integer and
bool values exactly (scale 0)."""


@dataclass(frozen=True)
class DataOwner:
    """One data owner: its private ``inputs`` and the (public) agents it speaks for.

    Args:
        inputs: ``inputs(name, step) -> value`` (or ``(value, frac_bits)``), the owner's
            plaintext private inputs, first dimension one row per agent of ``agents``
            (e.g. :class:`~lpm_graph.secure.ProtocolInputs` of its own agents).
        agents: ``None``: all agents of the population, in order. Or the ids of this
            owner's agents (int64 ``[n]``, distinct): its values' rows go to these agents.
        num_agents: the population size (needed with ``agents``).
        serve_once: share each input (name, step) once per session (default): a second
            request, e.g. a second run in the same session on another graph or with other
            parameters, would let the parties compare several functions of the same private
            values. ``False`` for tests that run several protocols on one realisation.
    """

    inputs: object
    agents: Tensor | None = None
    num_agents: int | None = None
    serve_once: bool = True

    def __post_init__(self) -> None:
        if not callable(self.inputs):
            raise TypeError(
                f"DataOwner(inputs=...) takes a function (name, step) -> value, got "
                f"{type(self.inputs).__name__}."
            )
        if self.agents is None:
            return
        agents = torch.as_tensor(self.agents)
        if agents.dim() != 1 or agents.dtype.is_floating_point or agents.dtype == torch.bool:
            raise ValueError(
                f"DataOwner(agents=...) takes a 1-D tensor of integer agent ids, got dtype "
                f"{agents.dtype} and shape {list(agents.shape)}."
            )
        if self.num_agents is None or int(self.num_agents) < 1:
            raise ValueError(
                f"DataOwner(agents=...) needs num_agents= (the population size), got "
                f"{self.num_agents!r}."
            )
        agents = agents.to(torch.int64)
        if agents.numel() and (int(agents.min()) < 0 or int(agents.max()) >= self.num_agents):
            raise ValueError(
                f"DataOwner(agents=...) holds ids outside 0..{self.num_agents - 1}: pass the "
                "ids of this owner's agents in the population."
            )
        if agents.unique().numel() != agents.numel():
            raise ValueError("DataOwner(agents=...) lists an agent twice; ids must be distinct.")
        object.__setattr__(self, "agents", agents)
        object.__setattr__(self, "num_agents", int(self.num_agents))

    def public(self) -> tuple[Tensor | None, int | None]:
        """What the parties may know of this owner: its agents and the population size."""
        return self.agents, self.num_agents


def as_owners(owner: object | None, owners: Sequence[object] | None) -> list[DataOwner]:
    """The data owners of a run from ``owner=`` (one, for all agents) or ``owners=`` (several,
    partitioning the agents); each an input function or a :class:`DataOwner`."""
    if owner is not None and owners is not None:
        raise ValueError("pass owner= (one owner) or owners= (several), not both.")
    items = [owner] if owner is not None else list(owners or ())
    out = [o if isinstance(o, DataOwner) else DataOwner(o) for o in items]
    check_partition([o.public() for o in out])
    return out


def check_partition(publics: Sequence[tuple[Tensor | None, int | None]]) -> None:
    """The owners must partition the agents: one owner speaks for all of them, or each
    names its agents, none twice, all covered (an agent with no owner would get zeros as its
    private draws)."""
    if len(publics) == 0 or (len(publics) == 1 and publics[0][0] is None):
        return
    sizes = {n for _, n in publics}
    if any(agents is None for agents, _ in publics) or len(sizes) != 1:
        raise ValueError(
            "with several owners, each must be a DataOwner(inputs, agents=ids, num_agents=N) "
            "with the same N, so that the parties know where its agents' shares go."
        )
    (n,) = sizes
    seen = torch.zeros(n, dtype=torch.int64)
    for agents, _ in publics:
        seen.index_add_(0, agents, torch.ones_like(agents))
    if bool((seen != 1).any()):
        missing = int((seen == 0).sum())
        twice = int((seen > 1).sum())
        raise ValueError(
            f"the owners must partition the {n} agents: {missing} agents have no owner and "
            f"{twice} have several; give every agent exactly one owner."
        )


class OwnerRole:
    """A data owner at work: encodes its inputs and splits them into shares under its own
    keystream (drawn from OS entropy unless ``randomness`` is reproducible).

    Args:
        owner: the :class:`DataOwner`.
        parties: number of compute parties ``K``.
        frac_bits: the session's fractional bits (for float inputs).
        randomness: where the keystream's key comes from.
        index: which owner this is (its key derivation label; owners never share a key).
        device: where shares are made.
    """

    def __init__(
        self,
        owner: DataOwner,
        parties: int,
        frac_bits: int,
        randomness: Randomness,
        index: int = 0,
        device: torch.device | str | None = None,
    ) -> None:
        self.owner = owner
        self.parties = parties
        self.frac_bits = frac_bits
        self.index = index
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        label = f"owner/{index}"
        self._stream = KeyStream(derive_key(randomness.master_key(label), "share"))
        self.bytes_sent = 0  # bytes of shares sent to all parties
        self._served: set[tuple[str, int | None]] = set()

    def share(self, name: str, step: int | None) -> tuple[Tensor, int]:
        """``([parties, n, ...] shares, frac_bits)`` of the private input ``name`` at ``step``."""
        key = (str(name), None if step is None else int(step))
        if self.owner.serve_once and key in self._served:
            raise LeakageError(
                f"owner {self.index} already shared its input {name!r} at step {step} in this "
                "session; a second run needs a new session (fresh draws)."
            )
        out = self.owner.inputs(name, step)
        value, bits = out if isinstance(out, tuple) else (out, None)
        value = torch.as_tensor(value)
        agents = self.owner.agents
        if agents is not None and (value.dim() == 0 or value.shape[0] != agents.numel()):
            raise ValueError(
                f"owner {self.index}'s input {name!r} has shape {list(value.shape)}; it must "
                f"have one row per agent of the owner ({agents.numel()})."
            )
        try:  # encode refuses NaN, infinities and values beyond the ring's exact range
            encoded, bits = encode_scaled(value, bits, self.frac_bits, self.device)
        except ValueError as error:
            raise ValueError(f"owner {self.index}'s private input {name!r}: {error}") from None
        shares = split_additive(encoded, self.parties, self._stream)
        self.bytes_sent += shares.numel() * shares.element_size()
        self._served.add(key)
        return shares, bits


def combine_inputs(
    parts: Sequence[tuple[Tensor, Tensor | None, int | None]], bits: set[int], name: str
) -> tuple[Tensor, int]:
    """The owners' shares of input ``name`` placed at their agents (:func:`place_shares`)
    and its fractional bits, which every owner must have used."""
    if len(bits) != 1:
        raise ValueError(
            f"the owners encode {name!r} with different fractional bits {sorted(bits)}."
        )
    return place_shares(parts, name), bits.pop()


def place_shares(parts: Sequence[tuple[Tensor, Tensor | None, int | None]], what: str) -> Tensor:
    """Put the owners' shares ``[P_local, n_m, ...]`` at their agents (local on shares):
    ``parts`` holds ``(shares, agents, num_agents)`` per owner; one owner for all agents
    passes its shares through."""
    if len(parts) == 1 and parts[0][1] is None:
        return parts[0][0]
    first, _, n = parts[0]
    out = torch.zeros((first.shape[0], int(n), *first.shape[2:]), dtype=first.dtype,
                      device=first.device)  # fmt: skip
    for shares, agents, _ in parts:
        if shares.shape[2:] != first.shape[2:]:
            raise ValueError(f"the owners' {what} have different shapes per agent.")
        out[:, agents.to(out.device)] = shares.to(out.device)
    return out
