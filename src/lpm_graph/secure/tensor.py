r"""SharedTensor: a private tensor held as additive shares by the parties of a session.

A value ``x`` with ``f`` fractional bits is the ring element ``X = round(x 2^f)`` split into
``K`` shares ``X_1 + ... + X_K = X (mod 2^64)``, each uniformly random on its own. What needs
no communication: adding shared tensors, adding or multiplying by public values, sums, gathers
and scatter-adds over a public graph (message passing with sum aggregation). What takes one
round: a product of two private values (Beaver triple), a truncation (a mask ``r`` from the
dealer), and each AND layer of a comparison.

Scales: an encoding carries its fractional bits. Indicators (0/1 states) have scale 0, so a
public rate times an indicator is exact and needs no truncation; a product of two fixed-point
values has the sum of their scales and is truncated back (error at most one unit in the last
place, ``2^-f``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .ring import RING_BITS, decode, encode, logical_shift_right

if TYPE_CHECKING:
    from .session import Session

__all__ = ["SharedTensor", "exp_neg", "greater", "is_shared", "multiply"]

_MAX_SCALE = 62
_AUTO_RESCALE = 52  # above this many fractional bits, mul_public truncates its factor first


def is_shared(value: Any) -> bool:
    return isinstance(value, SharedTensor)


class SharedTensor:
    """Shares ``[P_local, *shape]`` (one row per party of this process) of an encoded tensor.

    Arithmetic follows tensor broadcasting. ``x * public`` and ``x + public`` take tensors or
    numbers; float publics are encoded with the session's fractional bits, integer and bool
    publics exactly. ``x * y`` of two shared tensors is a Beaver multiplication. ``x > y`` is a
    secure comparison returning shared 0/1 bits (scale 0).

    Attributes:
        shares: ``[P_local, *shape]`` int64 ring elements.
        frac_bits: the scale of the encoding.
        session: the :class:`~lpm_graph.secure.Session` the shares belong to.
    """

    __slots__ = ("frac_bits", "session", "shares")

    def __init__(self, shares: Tensor, frac_bits: int, session: Session) -> None:
        if shares.dtype != torch.int64:
            raise TypeError(f"shares must be int64 ring elements, got {shares.dtype}.")
        if shares.shape[0] != len(session.local):
            raise ValueError(
                f"shares have {shares.shape[0]} rows for the {len(session.local)} local parties."
            )
        if not 0 <= frac_bits <= _MAX_SCALE:
            raise ValueError(f"frac_bits {frac_bits} outside [0, {_MAX_SCALE}].")
        self.shares = shares
        self.frac_bits = int(frac_bits)
        self.session = session

    # ------------------------------------------------------------------ shape
    @property
    def shape(self) -> torch.Size:
        return self.shares.shape[1:]

    @property
    def device(self) -> torch.device:
        return self.shares.device

    def dim(self) -> int:
        return self.shares.dim() - 1

    def numel(self) -> int:
        return self.shares[0].numel()

    def __len__(self) -> int:
        return self.shape[0]

    def _like(self, shares: Tensor, frac_bits: int | None = None) -> SharedTensor:
        return SharedTensor(
            shares, self.frac_bits if frac_bits is None else frac_bits, self.session
        )

    def __getitem__(self, index: Any) -> SharedTensor:
        index = index if isinstance(index, tuple) else (index,)
        return self._like(self.shares[(slice(None), *index)])

    def index_select(self, dim: int, index: Tensor) -> SharedTensor:
        """Gather rows (e.g. the source of every edge): local, no communication."""
        return self._like(self.shares.index_select(_dim(dim, self), index))

    def reshape(self, *shape: int) -> SharedTensor:
        shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], Sequence) else shape
        return self._like(self.shares.reshape(self.shares.shape[0], *shape))

    def unsqueeze(self, dim: int) -> SharedTensor:
        return self._like(self.shares.unsqueeze(_dim(dim, self, extra=1)))

    def expand(self, *shape: int) -> SharedTensor:
        return self._like(self.shares.expand(self.shares.shape[0], *shape))

    def sum(self, dim: int | None = None) -> SharedTensor:
        """Sum over agents (local; exact in the ring)."""
        if dim is None:
            return self._like(self.shares.reshape(self.shares.shape[0], -1).sum(1))
        return self._like(self.shares.sum(_dim(dim, self)))

    def scatter_sum(self, index: Tensor, dim_size: int) -> SharedTensor:
        """``out[index[e]] += self[e]`` along dim 0: sum aggregation, local and exact."""
        out = self.shares.new_zeros((self.shares.shape[0], dim_size, *self.shape[1:]))
        return self._like(out.index_add_(1, index, self.shares))

    def clone(self) -> SharedTensor:
        return self._like(self.shares.clone())

    @staticmethod
    def cat(items: Sequence[SharedTensor], dim: int = 0) -> SharedTensor:
        first = items[0]
        scale = max(x.frac_bits for x in items)
        rows = [x.upscale(scale).shares for x in items]
        return first._like(torch.cat(rows, _dim(dim, first)), scale)

    @staticmethod
    def stack(items: Sequence[SharedTensor], dim: int = 0) -> SharedTensor:
        first = items[0]
        scale = max(x.frac_bits for x in items)
        rows = [x.upscale(scale).shares for x in items]
        return first._like(torch.stack(rows, _dim(dim, first, extra=1)), scale)

    def where(self, mask: Tensor, other: SharedTensor) -> SharedTensor:
        """``self`` where the public ``mask`` holds, else ``other`` (local)."""
        scale = max(self.frac_bits, other.frac_bits)
        a, b = self.upscale(scale).shares, other.upscale(scale).shares
        return self._like(torch.where(mask.to(a.device), a, b), scale)

    # ------------------------------------------------------------------ scale
    def upscale(self, frac_bits: int) -> SharedTensor:
        """The same value with more fractional bits (exact: a shift of every share)."""
        if frac_bits < self.frac_bits:
            raise ValueError("upscale only adds fractional bits; use rescale() to remove them.")
        return self._like(self.shares << (frac_bits - self.frac_bits), frac_bits)

    def rescale(self, frac_bits: int | None = None) -> SharedTensor:
        """The value with ``frac_bits`` fractional bits (default: the session's). Removing bits
        is a truncation (one round; the result is ``floor`` or ``floor + 1`` of the exact one);
        adding bits is exact."""
        target = self.session.frac_bits if frac_bits is None else frac_bits
        if target >= self.frac_bits:
            return self.upscale(target)
        return truncate(self, self.frac_bits - target)

    # ------------------------------------------------------------------ linear ops
    def _align(self, other: SharedTensor) -> tuple[Tensor, Tensor, int]:
        scale = max(self.frac_bits, other.frac_bits)
        return self.upscale(scale).shares, other.upscale(scale).shares, scale

    def _public_rows(self, value: Any, frac_bits: int) -> Tensor:
        """A public value, encoded, as rows to add: party 0 holds it, the others 0."""
        encoded = encode(_public(value, self.device), frac_bits)
        rows = torch.zeros(
            (self.shares.shape[0], *torch.broadcast_shapes(encoded.shape, self.shape)),
            dtype=torch.int64,
            device=self.device,
        )
        if self.session.lead is not None:
            rows[self.session.lead] = encoded
        return rows

    def __add__(self, other: Any) -> SharedTensor:
        if isinstance(other, SharedTensor):
            a, b, scale = self._align(other)
            return self._like(a + b, scale)
        value = _public(other, self.device)
        x = self
        if value.is_floating_point() and x.frac_bits < self.session.frac_bits:
            x = x.upscale(self.session.frac_bits)  # e.g. an indicator plus a fraction
        return x._like(x.shares + x._public_rows(value, x.frac_bits))

    __radd__ = __add__

    def __neg__(self) -> SharedTensor:
        return self._like(-self.shares)

    def __sub__(self, other: Any) -> SharedTensor:
        if isinstance(other, SharedTensor):
            return self + (-other)
        return self + (-_public(other, self.device))

    def __rsub__(self, other: Any) -> SharedTensor:
        return (-self) + other

    def mul_public(self, value: Any, frac_bits: int | None = None) -> SharedTensor:
        """``self * value`` for a public ``value`` (local). A float value is encoded with
        ``frac_bits`` (default the session's) and the result's scale grows by as much; integer
        and bool values keep the scale. No truncation: the product is exact in the ring, unless
        the scale would pass 52 bits (a chain of public factors): then the shared factor is
        first truncated back to the session's scale (one round, error at most one unit)."""
        value = _public(value, self.device)
        if value.is_floating_point():
            bits = self.session.frac_bits if frac_bits is None else frac_bits
            x = self
            if x.frac_bits + bits > _AUTO_RESCALE and x.frac_bits > x.session.frac_bits:
                # a chain of public factors (rate * w_ji * (1 - c_j) * ...): truncate the
                # shared factor back to the session's scale first (one round)
                x = x.rescale()
            scale = x.frac_bits + bits
            if scale > _MAX_SCALE:
                raise ValueError(
                    f"a product with {scale} fractional bits would overflow the ring; call "
                    ".rescale() on the shared factor first."
                )
            return x._like(x.shares * encode(value, bits), scale)
        return self._like(self.shares * value.to(torch.int64))

    def __mul__(self, other: Any) -> SharedTensor:
        if isinstance(other, SharedTensor):
            return multiply(self, other)
        return self.mul_public(other)

    __rmul__ = __mul__

    # ------------------------------------------------------------------ comparisons
    def __gt__(self, other: Any) -> SharedTensor:
        return greater(self, other)

    def __lt__(self, other: Any) -> SharedTensor:
        if isinstance(other, SharedTensor):
            return greater(other, self)
        return greater(-self, -_public(other, self.device))

    # ------------------------------------------------------------------ opening
    def reveal(self, name: str, kind: str = "output", **policy: Any) -> Tensor:
        """Open this value (see :meth:`Session.reveal <lpm_graph.secure.Session.reveal>`;
        ``group=`` and ``sensitivity=`` go to the leakage policy)."""
        return self.session.reveal(self, name, kind, **policy)

    def __repr__(self) -> str:
        return (
            f"SharedTensor(shape={list(self.shape)}, frac_bits={self.frac_bits}, "
            f"parties={self.session.parties}, local={self.session.local})"
        )

    def __bool__(self) -> bool:
        raise TypeError("a SharedTensor has no plaintext truth value; reveal() it first.")

    # ProtocolLayer.propagate calls this for shared inputs (layers/ imports nothing of secure/)
    @classmethod
    def __lpm_propagate__(cls, layer: Any, csr: Any, edge_weight: Any, kwargs: dict) -> Any:
        from .layers import secure_propagate

        return secure_propagate(layer, csr, edge_weight, kwargs)

    # PyTorch functions on shares would silently compute on ring elements: only a whitelist
    # of them runs, through the methods above; any other is refused, naming it
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        impl = _TORCH.get(func)
        if impl is None:
            name = getattr(func, "__name__", str(func))
            raise TypeError(
                f"torch.{name} does not work on SharedTensor (it would compute on random "
                "shares); use the SharedTensor methods (+, -, *, >, sum, index_select, "
                "scatter_sum), run the model through lpm_graph.secure.secure_simulate (its "
                "vocabulary is in lpm_graph.secure.values), or reveal() a public value."
            )
        return impl(*args, **(kwargs or {}))


def _reflected(op: str) -> Any:
    """``tensor <op> shared`` (a public tensor first) as the shared tensor's reflected op."""
    forward = op[:2] + op[3:]  # __radd__ -> __add__
    return lambda a, b: getattr(b, op)(a) if isinstance(b, SharedTensor) else getattr(a, forward)(b)


_TORCH: dict[Any, Any] = {
    torch.cat: lambda tensors, dim=0: SharedTensor.cat(tensors, dim),
    torch.stack: lambda tensors, dim=0: SharedTensor.stack(tensors, dim),
    torch.sum: lambda x, dim=None: x.sum(dim),
    torch.Tensor.sum: lambda x, dim=None: x.sum(dim),
    torch.index_select: lambda x, dim, index: x.index_select(dim, index),
    torch.Tensor.__add__: _reflected("__radd__"),
    torch.Tensor.__radd__: _reflected("__radd__"),
    torch.Tensor.__mul__: _reflected("__rmul__"),
    torch.Tensor.__rmul__: _reflected("__rmul__"),
    torch.Tensor.__sub__: _reflected("__rsub__"),
    torch.exp: lambda x: exp_neg(-x),  # exp(x) for x <= 0 (see exp_neg)
}


# ---------------------------------------------------------------------- protocols
def multiply(x: SharedTensor, y: SharedTensor, frac_bits: int | None = None) -> SharedTensor:
    """Beaver multiplication: open ``x - a`` and ``y - b`` (uniform masks, one round), then
    ``xy = c + (x - a) b + (y - b) a + (x - a)(y - b)``. The result has the sum of the scales,
    truncated back to ``frac_bits`` (default ``max(scale_x, scale_y, session.frac_bits)``) when
    it is larger."""
    if x.session is not y.session:
        raise ValueError("the two shared tensors belong to different sessions.")
    session = x.session
    shape = torch.broadcast_shapes(x.shape, y.shape)
    xs = x.shares.expand(x.shares.shape[0], *shape)
    ys = y.shares.expand(y.shares.shape[0], *shape)
    session.check_product_range(xs, x.frac_bits, ys, y.frac_bits)  # debug mode only
    triple = session.correlation("triple", tuple(shape)).use()
    a, b, c = triple["a"], triple["b"], triple["c"]
    e, f = session._open_masks([xs - a, ys - b], "beaver", "beaver_mask")
    z = c + e * b + f * a
    if session.lead is not None:
        z[session.lead] += e * f
    scale = x.frac_bits + y.frac_bits
    out = SharedTensor(z, scale, session)
    keep = max(x.frac_bits, y.frac_bits, session.frac_bits) if frac_bits is None else frac_bits
    if scale > keep:
        out = truncate(out, scale - keep)
    return out


def truncate(x: SharedTensor, bits: int) -> SharedTensor:
    r"""Remove ``bits`` fractional bits: ``floor(x / 2^bits)`` or one more (one round).

    With ``x' = x + 2^62 \in [0, 2^63)`` (needs ``|x| < 2^62``) and a uniformly random ``r`` from
    the dealer, the parties open ``c = x' + r`` (uniform) and compute
    ``x' >> bits = (c >> bits) - (r >> bits) + 2^(64 - bits) w - borrow`` where the wrap
    ``w = [x' + r >= 2^64] = msb(r) (1 - msb(c))`` is linear in the shared ``msb(r)`` and the
    borrow (0 or 1) from the low bits is the only error.
    """
    if bits <= 0:
        return x
    session = x.session
    offset = 1 << 62
    session.check_range(x.shares, "truncation input")
    corr = session.correlation("truncation", tuple(x.shape), bits=bits).use()
    shifted = x.shares.clone()
    if session.lead is not None:
        shifted[session.lead] += offset
    (c,) = session._open_masks([shifted + corr["r"]], "truncation", "truncation_mask")
    c_msb = logical_shift_right(c, RING_BITS - 1)
    wrap = corr["msb"] * (1 - c_msb)
    out = -corr["shifted"] + (wrap << (RING_BITS - bits))
    if session.lead is not None:
        out[session.lead] += logical_shift_right(c, bits) - (offset >> bits)
    return SharedTensor(out, x.frac_bits - bits, session)


def greater(x: SharedTensor, y: Any) -> SharedTensor:
    """``[x > y]`` as shared 0/1 integers (scale 0): the sign bit of ``y - x`` (exact while
    ``|x|, |y| < 2^62`` in the ring; ``check_ranges=True`` checks it)."""
    session = x.session
    session.check_range(x.shares, "comparison input")  # debug mode only
    if isinstance(y, SharedTensor):
        session.check_range(y.shares, "comparison input")
    d = (y - x) if isinstance(y, SharedTensor) else (-x + y)
    return _sign_bit(d)


def _sign_bit(d: SharedTensor) -> SharedTensor:
    """Shared ``[d < 0]``: the top bit of the sum of the shares, by a binary adder on XOR shares
    (Beaver ANDs), then converted to an additive sharing with a random dealer bit."""
    session = d.session
    words = [_own_word(d.shares, k, session) for k in range(session.parties)]
    while len(words) > 2:  # carry-save: three numbers -> two, with one AND layer per level
        groups = [words[i : i + 3] for i in range(0, len(words) - len(words) % 3, 3)]
        rest = words[len(words) - len(words) % 3 :]
        pairs = [(g[0] ^ g[1], g[0] ^ g[2]) for g in groups]
        majorities = _and_many(session, pairs)
        words = rest
        for g, m in zip(groups, majorities):
            words += [g[0] ^ g[1] ^ g[2], (g[0] ^ m) << 1]
    x, y = words
    msb = _top_bit_of_sum(session, x, y)
    return _bit_to_arithmetic(session, msb)


def _own_word(shares: Tensor, party: int, session: Session) -> Tensor:
    """XOR shares of party ``party``'s own share word: it holds the word, the others zero."""
    out = torch.zeros_like(shares)
    if party in session.local:
        i = session.local.index(party)
        out[i] = shares[i]
    return out


def _and_many(session: Session, pairs: list[tuple[Tensor, Tensor]]) -> list[Tensor]:
    """Bitwise AND of XOR-shared words, all pairs in one round (binary Beaver triples)."""
    triples = [session.correlation("binary_triple", tuple(x.shape[1:])).use() for x, _ in pairs]
    masks = []
    for (x, y), t in zip(pairs, triples):
        masks += [x ^ t["a"], y ^ t["b"]]
    opened = session._open_masks(masks, "and", "binary_mask", xor=True)
    out = []
    for k, t in enumerate(triples):
        e, f = opened[2 * k], opened[2 * k + 1]
        z = t["c"] ^ (e & t["b"]) ^ (f & t["a"])
        if session.lead is not None:
            z[session.lead] ^= e & f
        out.append(z)
    return out


def _top_bit_of_sum(session: Session, x: Tensor, y: Tensor) -> Tensor:
    """XOR shares (in bit 0) of the top bit of ``x + y``: a Kogge-Stone carry prefix, one
    AND layer per level (log2 64 = 6 levels after the first)."""
    (g,) = _and_many(session, [(x, y)])
    p = x ^ y
    shift = 1
    while shift < RING_BITS - 1:
        last = shift * 2 >= RING_BITS - 1
        pairs = [(p, g << shift)] if last else [(p, g << shift), (p, p << shift)]
        res = _and_many(session, pairs)
        g = g ^ res[0]  # g and p & (g << s) are never both 1: XOR is OR here
        if not last:
            p = res[1]
        shift *= 2
    total = x ^ y ^ (g << 1)
    return logical_shift_right(total, RING_BITS - 1)


def _bit_to_arithmetic(session: Session, bit: Tensor) -> SharedTensor:
    """From XOR shares of a bit to additive shares: open ``bit ^ r`` for a random dealer bit
    ``r`` held both ways, then ``bit = c + (1 - 2c) r``."""
    corr = session.correlation("bit", tuple(bit.shape[1:])).use()
    masked = ((bit ^ corr["binary"]) & 1).to(torch.uint8)
    (c,) = session._open_masks([masked], "comparison", "comparison_mask", xor=True)
    c = c.to(torch.int64)
    out = corr["arithmetic"] * (1 - 2 * c)
    if session.lead is not None:
        out[session.lead] += c
    return SharedTensor(out, 0, session)


def exp_neg(x: SharedTensor, squarings: int = 10, work_bits: int = 28) -> SharedTensor:
    r"""``exp(-x)`` for shared ``x`` in ``[0, 1000)``: ``exp(-x) = (exp(-x / 2^k))^(2^k)`` with
    ``exp(-y) ~ 1 - y + y^2 / 2`` for ``y = x / 2^k`` and ``k = squarings`` squarings, computed
    with ``work_bits`` fractional bits. Relative error about ``x^3 / (6 \cdot 4^k) +
    2^(k + 1 - work_bits)`` (about 2e-5 at x = 5). Rounds: ``2 (k + 1)``. Result scale:
    ``work_bits``."""
    y = SharedTensor(x.shares, x.frac_bits + squarings, x.session)  # x / 2^k: a new scale
    y = y.rescale(work_bits)
    y2 = multiply(y, y)  # scale 2 w -> truncated to w
    half_y2 = SharedTensor(y2.shares, y2.frac_bits + 1, x.session)  # y^2 / 2
    z = (half_y2 - y.upscale(work_bits + 1)) + 1.0
    z = z.rescale(work_bits)
    for _ in range(squarings):
        z = multiply(z, z)
    return z


def _public(value: Any, device: torch.device) -> Tensor:
    if isinstance(value, SharedTensor):
        raise TypeError("expected a public value, got a SharedTensor.")
    return torch.as_tensor(value, device=device)


def _dim(dim: int, x: SharedTensor, extra: int = 0) -> int:
    """Map a dim of the value to the dim of its shares (which lead with the party rows)."""
    n = x.dim() + extra
    if not -n <= dim < n:
        raise IndexError(f"dim {dim} out of range for a {x.dim()}-d SharedTensor.")
    return (dim % n) + 1


def decode_shares(x: SharedTensor) -> Tensor:
    """Test helper: reconstruct without the audit log (only for all-local sessions)."""
    if len(x.session.local) != x.session.parties:
        raise RuntimeError("decode_shares needs every party's shares in this process.")
    return decode(x.shares.sum(0), x.frac_bits)
