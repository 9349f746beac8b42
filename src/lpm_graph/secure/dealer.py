"""The dealer: correlated randomness (Beaver triples, truncation pairs, random bits), split
into additive shares.

The dealer is a role of its own that must not collude with the compute parties (the usual
trusted-dealer / offline-phase model). It never receives an input: agents' private values
reach the parties from their data owners (:mod:`~lpm_graph.secure.owner`), and what the
dealer makes does not depend on any private value. With the in-process transport the dealer
is an object in the same process; with the multi-process transport it is a separate process
that sends each party its own shares and nothing else. Its randomness is a ChaCha20
keystream under a key it draws from OS entropy (:mod:`~lpm_graph.secure.prg`); only the
insecure reproducible mode (``Randomness.reproducible(seed)``, tests only) makes the same
shares again.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .prg import KeyStream, Randomness, as_randomness, derive_key
from .ring import logical_shift_right, random_ring

__all__ = [
    "Correlation",
    "Dealer",
    "split_additive",
    "split_xor",
]


def split_additive(value: Tensor, parties: int, stream: KeyStream) -> Tensor:
    """``[parties, *shape]`` uniformly random shares summing to ``value`` modulo 2**64."""
    shares = random_ring((parties - 1, *value.shape), stream, value.device)
    last = value - shares.sum(0)
    return torch.cat([shares, last.unsqueeze(0)])


def split_xor(value: Tensor, parties: int, stream: KeyStream) -> Tensor:
    """``[parties, *shape]`` uniformly random words whose XOR is ``value``."""
    shares = random_ring((parties - 1, *value.shape), stream, value.device)
    last = value.clone()
    for share in shares:
        last = last ^ share
    return torch.cat([shares, last.unsqueeze(0)])


_ids = itertools.count()


@dataclass
class Correlation:
    """One item of correlated randomness, as the shares of the parties of this process.

    ``parts`` maps a name (``"a"``, ``"b"``, ``"c"`` of a triple, ...) to ``[P_local, *shape]``
    shares. An item is consumed once: :meth:`use` raises on a second use (a reused Beaver
    triple would let the parties subtract two openings and learn a difference of secrets).
    """

    kind: str
    parts: dict[str, Tensor]
    id: int = field(default_factory=lambda: next(_ids))
    used: bool = False

    def use(self) -> dict[str, Tensor]:
        if self.used:
            raise RuntimeError(
                f"{self.kind} #{self.id} was already used; correlated randomness (Beaver "
                "triples, masks) must never be used twice: request a fresh one."
            )
        self.used = True
        return self.parts


class Dealer:
    """Makes correlated randomness for ``parties`` parties (never an input).

    Every method returns the shares of all parties, ``[parties, *shape]`` per part; a transport
    hands each party its own slice.

    Args:
        parties: number of compute parties ``K >= 2``.
        seed: ``None`` (default): the dealer's key comes from OS entropy. An int or
            :meth:`Randomness.reproducible <lpm_graph.secure.prg.Randomness.reproducible>`:
            derived from the seed, the same shares every time: **not private**, tests only
            (warns with :class:`~lpm_graph.secure.prg.InsecureRandomnessWarning`).
        device: where shares are made.
    """

    def __init__(
        self,
        parties: int,
        *,
        seed: int | Randomness | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        if parties < 2:
            raise ValueError(f"secret sharing needs at least 2 parties, got {parties}.")
        self.parties = parties
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.randomness = as_randomness(seed)
        self._stream = KeyStream(derive_key(self.randomness.master_key("dealer"), "dealer"))
        self.bytes_dealt = 0  # bytes of shares handed out (offline communication)

    def _split(self, value: Tensor, xor: bool = False) -> Tensor:
        shares = (split_xor if xor else split_additive)(value, self.parties, self._stream)
        self.bytes_dealt += shares.numel() * shares.element_size()
        return shares

    def _random(self, shape: tuple[int, ...]) -> Tensor:
        return random_ring(shape, self._stream, self.device)

    def triple(self, shape: tuple[int, ...]) -> dict[str, Tensor]:
        """Beaver triple: uniformly random ``a``, ``b`` and ``c = a * b`` (ring product)."""
        a, b = self._random(shape), self._random(shape)
        return {"a": self._split(a), "b": self._split(b), "c": self._split(a * b)}

    def binary_triple(self, shape: tuple[int, ...]) -> dict[str, Tensor]:
        """Beaver triple on bits (64 per word): ``c = a & b``, XOR-shared."""
        a, b = self._random(shape), self._random(shape)
        return {
            "a": self._split(a, xor=True),
            "b": self._split(b, xor=True),
            "c": self._split(a & b, xor=True),
        }

    def truncation(self, shape: tuple[int, ...], bits: int) -> dict[str, Tensor]:
        """A uniformly random ``r`` with shares of ``r >>> bits`` (unsigned) and of its top bit."""
        r = self._random(shape)
        return {
            "r": self._split(r),
            "shifted": self._split(logical_shift_right(r, bits)),
            "msb": self._split(logical_shift_right(r, 63)),
        }

    def bit(self, shape: tuple[int, ...]) -> dict[str, Tensor]:
        """A uniformly random bit, XOR-shared (in bit 0) and additively shared."""
        r = self._random(shape) & 1
        return {"binary": self._split(r, xor=True), "arithmetic": self._split(r)}

    def make(self, kind: str, shape: tuple[int, ...], **kwargs) -> dict[str, Tensor]:
        """Dispatch by kind name (what a remote party asks for)."""
        if kind == "triple":
            return self.triple(shape)
        if kind == "binary_triple":
            return self.binary_triple(shape)
        if kind == "truncation":
            return self.truncation(shape, int(kwargs["bits"]))
        if kind == "bit":
            return self.bit(shape)
        raise ValueError(f"unknown kind of correlated randomness {kind!r}.")
