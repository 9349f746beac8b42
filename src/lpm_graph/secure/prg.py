"""Cryptographic randomness for secret sharing: keys from OS entropy, ChaCha20 keystreams.

Every random word a secure run uses (shares, Beaver triples, truncation pairs, comparison
bits, an owner's private draws) comes from a :class:`KeyStream`: the ChaCha20 keystream (RFC
8439) under a 256-bit key, read as little-endian 64-bit words, each uniform on the ring. Keys
are derived with HKDF-SHA256 (RFC 5869) from a role's master key and a label naming the use;
a master key is 32 bytes from :func:`os.urandom`, drawn by the role that uses it, so no role
can replay another's randomness and no two sessions share any material.

:class:`Randomness` says where master keys come from. The default draws them from OS
entropy. ``Randomness.reproducible(seed)`` derives them from a seed instead, so that a run can
be repeated bit for bit and compared with a plaintext run: anyone who knows or guesses the
seed knows every share, triple and private draw, so it is for tests only, and every use warns
with :class:`InsecureRandomnessWarning`.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from torch import Tensor

from ..layers.samplers import RandomStreams

__all__ = [
    "InsecureRandomnessWarning",
    "KeyStream",
    "KeyStreams",
    "OwnerRandomness",
    "Randomness",
    "derive_key",
]

log = logging.getLogger(__name__)

KEY_BYTES = 32
_BLOCK = 64  # bytes of one ChaCha20 block
EPOCH_BYTES = 2**32 * _BLOCK // 2  # half of what the 32-bit block counter allows per key
_ZEROS = memoryview(bytes(1 << 20))  # plaintext of the keystream, 1 MiB at a time
_INFO = b"lpm-graph/secure/v1"


class InsecureRandomnessWarning(RuntimeWarning):
    """A secure run uses reproducible (seed-derived) randomness: not private."""


def derive_key(master: bytes, *labels: object) -> bytes:
    """A 256-bit key for one use: HKDF-SHA256 of ``master`` with the labels (joined with a
    separator that cannot occur in them) as the info string."""
    if len(master) != KEY_BYTES:
        raise ValueError(f"a master key has {KEY_BYTES} bytes, got {len(master)}.")
    parts = [str(label).encode() for label in labels]
    if any(b"\x1f" in p for p in parts):
        raise ValueError(f"key labels must not contain the byte 0x1f, got {labels!r}.")
    info = b"\x1f".join([_INFO, *parts])
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(master)


class KeyStream:
    """The ChaCha20 keystream of one key (nonce 0), read in order as uniform 64-bit words.

    A key is used by one stream only (derive a new one per use with :func:`derive_key`). The
    first :data:`EPOCH_BYTES` come from the key itself (RFC 8439's keystream); each further
    epoch from a key derived from it (``derive_key(key, "epoch", e)``), so a stream never
    reaches ChaCha20's 32-bit block counter, however long the run. A stream belongs to the
    process that made it: read in a forked copy it would repeat the parent's words (two
    parties' "fresh" shares equal), so it refuses.
    """

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"a ChaCha20 key has {KEY_BYTES} bytes, got {len(key)}.")
        self._key = key
        self._pid = os.getpid()
        self._epoch = 0
        self._used = 0  # bytes read in this epoch
        self._cipher = self._start(key)

    @staticmethod
    def _start(key: bytes) -> Any:
        nonce = bytes(16)  # 4-byte block counter (from 0) and a 12-byte nonce
        return Cipher(algorithms.ChaCha20(key, nonce), mode=None).encryptor()

    def __getstate__(self) -> object:
        raise TypeError("a KeyStream holds a secret key and is never pickled.")

    def bytes(self, n: int) -> Tensor:
        """The next ``n`` bytes of the keystream, a uint8 tensor on the CPU."""
        if os.getpid() != self._pid:
            raise RuntimeError(
                "this KeyStream was made in another process and copied here by fork(): its "
                "words would repeat the other copy's. Make sessions and dealers after forking, "
                "or start processes with the 'spawn' method (lpm_graph.secure.launch does)."
            )
        out = torch.empty(n, dtype=torch.uint8)
        view = out.numpy()
        done = 0
        while done < n:
            if self._used == EPOCH_BYTES:  # the next epoch: a derived key, counter from 0
                self._epoch += 1
                self._cipher = self._start(derive_key(self._key, "epoch", self._epoch))
                self._used = 0
            step = min(n - done, len(_ZEROS), EPOCH_BYTES - self._used)
            self._cipher.update_into(_ZEROS[:step], view[done : done + step])
            done += step
            self._used += step
        return out

    def words(self, shape: tuple[int, ...], device: torch.device | str | None = None) -> Tensor:
        """Uniformly random int64 words (every bit pattern equally likely) of ``shape``."""
        n = math.prod(shape)
        words = self.bytes(8 * n).numpy().view("<i8")  # the keystream's bytes, little-endian
        if not words.dtype.isnative:  # pragma: no cover - big-endian hosts only
            words = words.astype(np.int64)
        out = torch.from_numpy(words).reshape(shape)
        return out if device is None else out.to(device)

    def uniform(self, shape: tuple[int, ...], dtype: torch.dtype = torch.float64) -> Tensor:
        """Uniform numbers in ``[0, 1)``: multiples of ``2^-b`` with ``b`` random bits, the
        dtype's precision (53 for float64, 24 for float32), so none rounds up to 1."""
        bits = {torch.float64: 53, torch.float32: 24, torch.float16: 11, torch.bfloat16: 8}[dtype]
        top = torch.bitwise_right_shift(self.words(shape), 64 - bits) & ((1 << bits) - 1)
        return (top.to(torch.float64) * 2.0**-bits).to(dtype)


class KeyStreams:
    """Independent keystreams named like :class:`~lpm_graph.layers.samplers.RandomStreams`
    (``uniform(name, step, shape, dtype)``), each under its own key derived from one master
    key: an owner's private draws, with no seed anyone could search for."""

    def __init__(self, master: bytes) -> None:
        if len(master) != KEY_BYTES:
            raise ValueError(f"a master key has {KEY_BYTES} bytes, got {len(master)}.")
        self._master = master

    def __getstate__(self) -> object:
        raise TypeError("KeyStreams hold a secret key and are never pickled.")

    def uniform(self, name: str, step: int, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        return KeyStream(derive_key(self._master, "draw", name, int(step))).uniform(
            tuple(shape), dtype
        )


@dataclass(frozen=True)
class Randomness:
    """Where a role's master key comes from.

    ``Randomness()`` (the default): 32 bytes from :func:`os.urandom`, drawn by the role itself
    when it starts. ``Randomness.reproducible(seed)``: derived from ``seed`` and the role's
    name, the same for every run with that seed: **not private** (the seed decides every
    share and draw); for tests that compare a secure run with a plaintext one. It warns with
    :class:`InsecureRandomnessWarning` and logs a warning each time a role uses it.
    """

    seed: int | None = None

    @classmethod
    def reproducible(cls, seed: int) -> Randomness:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"a reproducible seed is an int, got {type(seed).__name__}.")
        return cls(seed=seed)

    @property
    def is_reproducible(self) -> bool:
        return self.seed is not None

    def master_key(self, role: str) -> bytes:
        """The master key of ``role`` (``"dealer"``, ``"owner"``, ``"session"``, ...)."""
        if self.seed is None:
            return os.urandom(KEY_BYTES)
        self.warn(role)
        seed = self.seed.to_bytes(16, "little", signed=True)
        return derive_key(bytes(KEY_BYTES), "INSECURE-REPRODUCIBLE", seed.hex(), role)

    def warn(self, role: str) -> None:
        """Warn and log that ``role``'s randomness follows from the seed (reproducible)."""
        message = (
            f"secure randomness of {role!r} is derived from seed {self.seed}: reproducible and "
            "NOT private (anyone who knows or guesses the seed learns every share and private "
            "draw). Use it for tests only; leave the seed out for a private run."
        )
        warnings.warn(message, InsecureRandomnessWarning, stacklevel=4)
        log.warning(message)


def as_randomness(seed: int | Randomness | None) -> Randomness:
    """``None`` -> OS entropy; an int -> :meth:`Randomness.reproducible`; a
    :class:`Randomness` as it is."""
    if isinstance(seed, Randomness):
        return seed
    if seed is None:
        return Randomness()
    return Randomness.reproducible(seed)


class OwnerRandomness:
    """A data owner's private draws, as named streams (``uniform(name, step, shape, dtype)``).

    By default they come from keystreams under a master key the owner draws from OS entropy
    the first time it draws, in the process where it draws (the owner's own, in a
    multi-process run): the key is never pickled, so a copy of the owner sent elsewhere holds
    no key, and no seed exists to search for. With a reproducible seed they are the uniforms of the
    plaintext :class:`~lpm_graph.layers.samplers.RandomStreams` of that seed, so that a secure
    run equals :func:`lpm_graph.simulate` with the same seed, agent for agent: **not
    private**, for tests (warns with :class:`InsecureRandomnessWarning`).
    """

    def __init__(self, seed: int | Randomness | None = None) -> None:
        self.randomness = as_randomness(seed)
        self._keys: KeyStreams | None = None
        if self.randomness.is_reproducible:
            self.randomness.warn("owner")  # now, where the seed is given

    def streams(self) -> KeyStreams | RandomStreams:
        if self.randomness.is_reproducible:
            return RandomStreams(self.randomness.seed)
        if self._keys is None:
            self._keys = KeyStreams(self.randomness.master_key("owner"))
        return self._keys

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "_keys": None}  # a key never leaves its process
