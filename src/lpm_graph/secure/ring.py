"""Fixed-point numbers in the ring of 64-bit integers (wrap-around arithmetic).

A real ``x`` with ``f`` fractional bits is the ring element ``round(x * 2**f) mod 2**64``, held in
a ``torch.int64`` tensor; ``+``, ``-`` and ``*`` of int64 tensors wrap around modulo ``2**64`` on
every device, which is exactly the ring arithmetic additive secret sharing needs. A product of
two encodings with ``f`` and ``g`` fractional bits has ``f + g``; :func:`encode` /
:func:`decode` take the scale explicitly so that exact integer parts (0/1 indicators, scale 0)
and fixed-point parts (scale ``f``) can be mixed without rounding.
"""

from __future__ import annotations

import math
import os

import torch
from torch import Tensor

from .prg import KEY_BYTES, KeyStream

__all__ = [
    "FRAC_BITS",
    "RING_BITS",
    "decode",
    "encode",
    "encode_scaled",
    "logical_shift_right",
    "random_ring",
]

RING_BITS = 64
FRAC_BITS = 16
"""Default fractional bits (resolution ``2**-16 ~ 1.5e-5``)."""

_LIMIT = 2.0**62  # |encoded| must stay below this (room for one addition without wrap)


def encode(value: Tensor | float, frac_bits: int = FRAC_BITS, device=None) -> Tensor:
    """``round(value * 2**frac_bits)`` as int64; integer and bool tensors are scaled exactly.

    Raises:
        ValueError: if a value is NaN or infinite, or too large for the ring at this scale.
    """
    if frac_bits < 0:
        raise ValueError(f"frac_bits must be >= 0, got {frac_bits}.")
    x = torch.as_tensor(value, device=device)
    if x.requires_grad:  # a public parameter of a model: its value, not its graph
        x = x.detach()
    if x.dtype == torch.bool or not (x.is_floating_point() or x.is_complex()):
        x = x.to(torch.int64)
        if frac_bits and x.numel() and int(x.abs().max()) >= _LIMIT / 2.0**frac_bits:
            raise ValueError(
                f"an integer of magnitude {int(x.abs().max())} does not fit the ring with "
                f"{frac_bits} fractional bits; use fewer fractional bits."
            )
        return x << frac_bits
    x = x.to(torch.float64)
    if x.numel():
        if not bool(torch.isfinite(x).all()):
            raise ValueError("cannot encode NaN or infinite values as fixed-point numbers.")
        biggest = float(x.abs().max())
        if biggest * 2.0**frac_bits >= _LIMIT:
            raise ValueError(
                f"a value of magnitude {biggest:g} does not fit the 64-bit ring with "
                f"{frac_bits} fractional bits (limit {_LIMIT / 2.0**frac_bits:g}); rescale it."
            )
    return torch.round(x * 2.0**frac_bits).to(torch.int64)


def encode_scaled(
    value: Tensor | float, frac_bits: int | None, default: int, device=None
) -> tuple[Tensor, int]:
    """``(encode(value, bits), bits)`` with ``bits = frac_bits``, or by default ``default`` for
    float values and 0 (exact integers) for integer and bool values."""
    x = torch.as_tensor(value, device=device)
    bits = (default if x.is_floating_point() else 0) if frac_bits is None else frac_bits
    return encode(x, bits), bits


def decode(value: Tensor, frac_bits: int = FRAC_BITS, dtype: torch.dtype = torch.float64) -> Tensor:
    """The real numbers of ring elements with ``frac_bits`` fractional bits (signed)."""
    if value.dtype != torch.int64:
        raise TypeError(f"decode takes int64 ring elements, got {value.dtype}.")
    if frac_bits <= 52:
        return (value.to(torch.float64) / 2.0**frac_bits).to(dtype)
    # split so that the float conversion does not lose the integer part's low bits
    high = value >> frac_bits
    low = value - (high << frac_bits)
    return (high.to(torch.float64) + low.to(torch.float64) / 2.0**frac_bits).to(dtype)


def random_ring(shape, stream: KeyStream | None = None, device=None) -> Tensor:
    """Uniformly random ring elements (all 2**64 values): the next words of a cryptographic
    keystream (:class:`~lpm_graph.secure.prg.KeyStream`; by default one under a fresh key from
    OS entropy), made on the CPU and moved to ``device``, so every device gets the same words.
    """
    if stream is None:
        stream = KeyStream(os.urandom(KEY_BYTES))
    if not isinstance(stream, KeyStream):
        raise TypeError(
            f"random ring elements come from a cryptographic KeyStream, got "
            f"{type(stream).__name__}; a torch.Generator is predictable from its seed."
        )
    return stream.words(tuple(shape), device)


def logical_shift_right(value: Tensor, bits: int) -> Tensor:
    """``value >> bits`` treating int64 as unsigned (zeros shifted in)."""
    if bits == 0:
        return value
    mask = (1 << (RING_BITS - bits)) - 1
    return (value >> bits) & mask


def bits_needed(value: float) -> int:
    """Integer bits of ``value`` (for overflow checks)."""
    return max(0, math.ceil(math.log2(abs(value) + 1)))
