r"""Private values of a secure program: the operation vocabulary of a phase, on shares.

A protocol's phases run unchanged on shares (:func:`~lpm_graph.secure.secure_simulate`): every
private state entry is a :class:`Private` value, and what a phase does with it must be in this
vocabulary, implemented once here.

=====================================  ================================================
operation                              on shares
=====================================  ================================================
``+``, ``-`` (private or public)       local, exact
``*``, ``/`` by a public value         local: kept as a public coefficient until the value
                                       is needed, then encoded with ``work`` bits (a chain
                                       of public factors costs one encoding, no rounding)
``*`` of two private values            a Beaver product (one round)
``>``, ``<``, ``>=``, ``<=``           a secure comparison (shared 0/1)
``torch.exp(-x)``                      lazy: a flow compares ``x`` with the agent's draw
                                       (no exp); used in arithmetic, the secure ``exp_neg``
aggregation (``ProtocolLayer``,        sum or mean over a public CSR: local, exact
``Transmission``)
indexing, slicing, ``reshape``,        local (on every party's shares)
``unsqueeze``, ``expand``, ``sum``,
``index_select``, ``torch.cat`` /
``stack``, ``Tensor.index_add``,
``@`` a public vector or matrix
``torch.zeros_like`` / ``ones_like``   a public tensor
``ctx.flow(name, survival, source)``   one batched secure comparison and product per step
                                       (:mod:`~lpm_graph.secure.program`)
=====================================  ================================================

Anything else (``torch.sigmoid``, ``ctx.uniform``, a host read such as ``float(x)``,
``bool(x)`` or ``x.item()``) raises ``NotImplementedError`` or ``TypeError`` naming the
operation; :func:`~lpm_graph.secure.secure_simulate` runs one step on a dry session first, so
such a phase fails before any input is shared.

Scales: a private value is a sum of terms ``atom * coefficient`` (``atom`` a
:class:`~lpm_graph.secure.SharedTensor`, ``coefficient`` a public float64 tensor) plus a public
offset. Integer coefficients multiply exactly; float ones are encoded with ``work_bits``
(``frac_bits + 8``, at most 26) fractional bits, once, when the value is needed (a
comparison, a product, a non-linear or structural operation): so ``lambda dt = R S dt B / Ibar
sum_j w x_j`` is one encoding of the combined public factor, not four.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .ring import encode
from .tensor import SharedTensor, _sign_bit, exp_neg, multiply, truncate

if TYPE_CHECKING:
    from .session import Session

__all__ = ["Private", "private", "work_bits"]

_AUTO = 52  # a shared factor above 52 - work bits is truncated before a float coefficient
_F64 = torch.float64


def work_bits(session: Session) -> int:
    """Fractional bits of intermediate values and float coefficients: ``frac_bits + 8``, at
    most 26 (so that a product of two stays below 2^52)."""
    return min(session.frac_bits + 8, 26)


def private(x: SharedTensor | Private) -> Private:
    """``x`` as a :class:`Private` value."""
    return x if isinstance(x, Private) else Private([(x, None)], None, x.shape, x.session)


class Shaped:
    """Tensor-like shape queries answered from ``self.shape`` (public for private values:
    the shape of a state entry is part of the public protocol)."""

    shape: torch.Size
    _kind = "private values"  # for messages

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def dim(self) -> int:
        return len(self.shape)

    def size(self, dim: int | None = None) -> Any:
        return self.shape if dim is None else self.shape[dim]

    def numel(self) -> int:
        return self.shape.numel()

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError(f"len() of a 0-d {type(self).__name__} (a single private value).")
        return self.shape[0]

    def is_floating_point(self) -> bool:
        return True

    def __getattr__(self, name: str) -> Any:
        """A tensor method the vocabulary lacks is refused, naming it (not a plain
        ``AttributeError`` a phase could mistake for a missing attribute)."""
        if not name.startswith("_") and hasattr(torch.Tensor, name):
            raise NotImplementedError(
                f"Tensor.{name} has no secure implementation on {self._kind} (the "
                "vocabulary is in lpm_graph.secure.values)."
            )
        raise AttributeError(name)


class Private(Shaped):
    """A private tensor of a secure program: ``sum_k atom_k * coef_k + offset``.

    ``atom_k`` is a :class:`~lpm_graph.secure.SharedTensor` (or a pending flow, resolved with
    the step's other flows when first needed), ``coef_k`` a public float64 tensor (``None``:
    1) and ``offset`` a public tensor, all broadcast to :attr:`shape`. Immutable: the shares
    are computed once, by :meth:`shared`. Behaves like a float64 ``torch.Tensor`` within the
    vocabulary of the module docstring; anything else raises, naming the operation.
    """

    def __init__(
        self, terms: list[tuple[Any, Tensor | None]] | None, offset: Tensor | None, shape: Any,
        session: Session,
    ) -> None:  # fmt: skip
        self._terms = terms
        self.offset = offset
        self.shape = torch.Size(shape)
        self.session = session
        self._value: SharedTensor | None = None

    # ------------------------------------------------------------------ what it is
    @property
    def terms(self) -> list[tuple[Any, Tensor | None]]:
        assert self._terms is not None
        return self._terms

    dtype = _F64
    requires_grad = False
    is_cuda = property(lambda self: self.device.type == "cuda")

    @property
    def device(self) -> torch.device:
        return self.session.device

    def __repr__(self) -> str:
        return f"Private(shape={list(self.shape)}, terms={len(self._terms or ())})"

    # ------------------------------------------------------------------ the shares
    def shared(self) -> SharedTensor:
        """The value's shares (computed once: local, plus one truncation round where a float
        coefficient meets a shared factor of more than ``52 - work`` bits)."""
        if self._value is None:
            self._value = _materialise(self)
        return self._value

    def _plain(self) -> bool:
        """Only coefficients and offsets that commute with any reshaping (scalars)."""
        return (
            all(c is None or c.dim() == 0 for _, c in self.terms)
            and (self.offset is None or self.offset.dim() == 0)
            and all(tuple(_shape(a)) == tuple(self.shape) for a, _ in self.terms)
        )

    # ------------------------------------------------------------------ arithmetic
    def __add__(self, other: Any) -> Any:
        if isinstance(other, SharedTensor):
            other = private(other)
        if isinstance(other, Private):
            shape = torch.broadcast_shapes(self.shape, other.shape)
            offset = _add(self.offset, other.offset)
            return Private(self.terms + other.terms, offset, shape, self.session)
        if not _is_public(other):
            return NotImplemented
        t = self._public(other)
        shape = torch.broadcast_shapes(self.shape, t.shape)
        return Private(self.terms, _add(self.offset, t), shape, self.session)

    __radd__ = __add__

    def __neg__(self) -> Private:
        minus = torch.tensor(-1.0, dtype=_F64, device=self.device)
        terms = [(a, minus if c is None else -c) for a, c in self.terms]
        offset = None if self.offset is None else -self.offset
        return Private(terms, offset, self.shape, self.session)

    def __sub__(self, other: Any) -> Any:
        if isinstance(other, (Private, SharedTensor)) or _is_public(other):
            return self + (-private(other) if isinstance(other, SharedTensor) else -other)
        return NotImplemented

    def __rsub__(self, other: Any) -> Any:
        return (-self) + other

    def __mul__(self, other: Any) -> Any:
        if isinstance(other, SharedTensor):
            other = private(other)
        if isinstance(other, Private):
            return product([(self, other)])[0]
        if not _is_public(other):
            return NotImplemented
        t = self._public(other)
        shape = torch.broadcast_shapes(self.shape, t.shape)
        terms = [(a, t if c is None else c * t) for a, c in self.terms]
        offset = None if self.offset is None else self.offset * t
        return Private(terms, offset, shape, self.session)

    __rmul__ = __mul__

    def __truediv__(self, other: Any) -> Any:
        if isinstance(other, (Private, SharedTensor)):
            raise NotImplementedError(
                "division by a private value has no secure implementation; divide by public "
                "values only."
            )
        if not _is_public(other):
            return NotImplemented
        return self * (1.0 / self._public(other))

    def __rtruediv__(self, other: Any) -> Any:
        raise NotImplementedError(
            "division by a private value has no secure implementation; divide by public values."
        )

    def __pow__(self, exponent: Any) -> Private:
        if exponent == 1:
            return self
        if exponent == 2:
            return self * self
        raise NotImplementedError(f"x ** {exponent!r} has no secure implementation (only 1, 2).")

    # comparisons: shared 0/1 indicators (scale 0)
    def __gt__(self, other: Any) -> Private:
        return _compare(self, other)

    def __lt__(self, other: Any) -> Private:
        if isinstance(other, (Private, SharedTensor)):
            return _compare(private(other), self)
        return _compare(-self, -self._public(other))

    def __ge__(self, other: Any) -> Private:
        return 1 - (self < other)

    def __le__(self, other: Any) -> Private:
        return 1 - (self > other)

    def __eq__(self, other: Any) -> Any:  # type: ignore[override]
        raise NotImplementedError(
            "x == y of a private value has no secure implementation (Python would compare "
            "the objects, not the values); use (x >= y) * (x <= y) for 0/1 equality."
        )

    __ne__ = __eq__
    __hash__ = object.__hash__

    def __matmul__(self, other: Any) -> Private:
        if not _is_public(other):
            raise NotImplementedError(
                "a product of two private matrices has no secure implementation; multiply by "
                "a public vector or matrix."
            )
        v = self._public(other)
        if v.dim() == 1:
            return (self * v).sum(-1)
        return (self.unsqueeze(-1) * v).sum(-2)

    # ------------------------------------------------------------------ structure
    def _map(self, fn: Callable[[SharedTensor], SharedTensor]) -> Private:
        """``fn`` on every atom when the coefficients are scalars, else on the shares."""
        if self._plain():
            terms = [(fn(_atom(a)), c) for a, c in self.terms]
            shape = terms[0][0].shape
            return Private(terms, self.offset, shape, self.session)
        return private(fn(self.shared()))

    def _along(self, dim: int, fn: Callable[[SharedTensor, int], SharedTensor],
               squeeze: bool) -> Private | None:  # fmt: skip
        """``fn(atom, dim)`` on every term whose coefficient is constant along ``dim`` (with
        the coefficient squeezed there when ``squeeze``); ``None`` when one is not."""
        r = self.dim()
        if self.offset is not None and self.offset.dim() > 0:
            return None
        terms = []
        for a, c in self.terms:
            shape = (1,) * (r - len(_shape(a))) + tuple(_shape(a))
            if shape[dim] != self.shape[dim]:
                return None
            if c is not None and c.dim() > 0:
                c = c.reshape((1,) * (r - c.dim()) + tuple(c.shape))
                if c.shape[dim] != 1:
                    return None
                c = c.squeeze(dim) if squeeze else c
            atom = _atom(a)
            if len(shape) != atom.dim():
                atom = atom.reshape(*shape)
            terms.append((fn(atom, dim), c))
        out_shape = list(self.shape)
        if squeeze:
            del out_shape[dim]
        else:
            out_shape[dim] = terms[0][0].shape[dim]
        return Private(terms, self.offset, out_shape, self.session)

    def __getitem__(self, index: Any) -> Private:
        if isinstance(index, (Private, SharedTensor)):
            raise NotImplementedError("indexing by a private index has no secure implementation.")
        return self._map(lambda a: a[index])

    def reshape(self, *shape: Any) -> Private:
        return self._map(lambda a: a.reshape(*shape))

    view = reshape

    def flatten(self) -> Private:
        return self.reshape(-1)

    def unsqueeze(self, dim: int) -> Private:
        return self._map(lambda a: a.unsqueeze(dim))

    def expand(self, *shape: Any) -> Private:
        shape = tuple(shape[0]) if len(shape) == 1 and not isinstance(shape[0], int) else shape
        return self._map(lambda a: a.expand(*shape))

    def contiguous(self) -> Private:
        return self

    def clone(self) -> Private:
        return self

    def detach(self) -> Private:
        return self

    def to(self, *args: Any, **kwargs: Any) -> Private:
        return self  # a dtype or the session's device: the shares stay as they are

    def double(self) -> Private:
        return self

    def float(self) -> Private:
        return self

    def sum(self, dim: int | None = None, keepdim: bool = False) -> Private:
        """A sum over agents or slots: local and exact."""
        if dim is None:
            if self._plain() and (self.offset is None):
                terms = [(_atom(a).sum(), c) for a, c in self.terms]
                return Private(terms, None, (), self.session)
            return private(self.shared().sum())
        d = dim % self.dim()
        out = None
        if self.offset is None:
            out = self._along(d, lambda a, k: a.sum(k), squeeze=True)
        if out is None:
            out = private(self.shared().sum(d))
        return out.unsqueeze(d) if keepdim else out

    def index_select(self, dim: int, index: Tensor) -> Private:
        d = dim % self.dim()
        out = self._along(d, lambda a, k: a.index_select(k, index), squeeze=False)
        return out if out is not None else private(self.shared().index_select(d, index))

    def scatter_sum(self, index: Tensor, dim_size: int) -> Private:
        """``out[index[e]] += self[e]`` along dim 0 (sum aggregation): local and exact."""
        if self.offset is None:
            out = self._along(0, lambda a, k: a.scatter_sum(index, dim_size), squeeze=False)
            if out is not None:
                return out
        return private(self.shared().scatter_sum(index, dim_size))

    def new_zeros(self, *size: Any, **kwargs: Any) -> Tensor:
        return torch.zeros(*size, dtype=_F64, device=self.device)

    def new_ones(self, *size: Any, **kwargs: Any) -> Tensor:
        return torch.ones(*size, dtype=_F64, device=self.device)

    # ------------------------------------------------------------------ refusals
    def _host(self, what: str) -> Any:
        raise TypeError(
            f"{what} reads a private value on the host; it has no secure implementation (a "
            "phase may not branch on or convert private state; compare with > and use the "
            "0/1 result in arithmetic instead)."
        )

    def __bool__(self) -> bool:
        return self._host("bool(x)")

    def __float__(self) -> float:
        return self._host("float(x)")

    def __int__(self) -> int:
        return self._host("int(x)")

    def __index__(self) -> int:
        return self._host("operator.index(x)")

    def item(self) -> Any:
        return self._host("x.item()")

    def tolist(self) -> Any:
        return self._host("x.tolist()")

    def numpy(self) -> Any:
        return self._host("x.numpy()")

    def __array__(self, *args: Any, **kwargs: Any) -> Any:
        return self._host("numpy.asarray(x)")

    def __iter__(self) -> Any:
        return self._host("iterating over x")

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        impl = _TORCH.get(func)
        if impl is None:
            raise NotImplementedError(
                f"{op_name(func)} has no secure implementation on private values (the "
                "vocabulary is in lpm_graph.secure.values)."
            )
        return impl(*args, **(kwargs or {}))

    # ------------------------------------------------------------------ private
    def _public(self, value: Any) -> Tensor:
        if isinstance(value, (Private, SharedTensor)):
            raise TypeError("expected a public value, got a private one.")
        return torch.as_tensor(value, device=self.device).to(_F64)

    # the propagation hook of ProtocolLayer (duck-typed: layers/ imports nothing of secure/)
    @classmethod
    def __lpm_propagate__(cls, layer: Any, csr: Any, edge_weight: Any, kwargs: dict) -> Any:
        from .layers import propagate_private

        return propagate_private(layer, csr, edge_weight, kwargs)


class ExpNeg(Private):
    """``exp(-x)`` of a private ``x``, kept lazy: :meth:`StepContext.flow
    <lpm_graph.secure.program.SecureContext.flow>` compares ``x`` with the agent's ``-log u``
    and needs no exp; used in arithmetic it is computed with the secure :func:`exp_neg`
    (``x`` must lie in ``[0, 1000)``: a survival probability)."""

    def __init__(self, x: Private) -> None:
        super().__init__(None, None, x.shape, x.session)
        self.x = x

    @property
    def terms(self) -> list[tuple[Any, Tensor | None]]:
        if self._terms is None:
            x = self.x.shared()
            if x.frac_bits + 10 > 62:
                x = x.rescale(work_bits(self.session))
            self._terms = [(exp_neg(x), None)]
        return self._terms


# ---------------------------------------------------------------------- helpers
class _Pending:
    """Stands for a shared tensor computed later (a flow of the step, resolved in a batch)."""

    def __init__(self, shape: Any, resolve: Callable[[], None]) -> None:
        self.shape = torch.Size(shape)
        self.value: SharedTensor | None = None  # the flow (decision times source)
        self.bits: SharedTensor | None = None  # the decision (shared 0/1)
        self._resolve = resolve

    def get(self) -> SharedTensor:
        if self.value is None:
            self._resolve()
        assert self.value is not None
        return self.value


def _atom(a: Any) -> SharedTensor:
    return a.get() if isinstance(a, _Pending) else a


def _shape(a: Any) -> torch.Size:
    return a.shape


def _is_public(value: Any) -> bool:
    return torch.is_tensor(value) or isinstance(value, (int, float, bool))


def _add(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    return b if a is None else a if b is None else a + b


def _integral(c: Tensor) -> bool:
    if not c.is_floating_point():
        return True
    c = c.detach()  # a public coefficient may come from a learnable parameter
    return bool((c == torch.round(c)).all()) and (c.numel() == 0 or float(c.abs().max()) < 2**31)


def _padded(shares: Tensor, rank: int) -> Tensor:
    """``[P, *shape]`` shares with leading 1s up to ``rank`` value dimensions."""
    extra = rank - (shares.dim() - 1)
    if extra <= 0:
        return shares
    return shares.reshape(shares.shape[0], *((1,) * extra), *shares.shape[1:])


def rescale_many(values: Sequence[SharedTensor], bits: int) -> list[SharedTensor]:
    """Each value with at most ``bits`` fractional bits; the truncations of a given size in
    one round (on the values flattened and concatenated)."""
    out = list(values)
    groups: dict[int, list[int]] = {}
    for k, v in enumerate(out):
        if v.frac_bits > bits:
            groups.setdefault(v.frac_bits - bits, []).append(k)
    for drop, ks in groups.items():
        flat = SharedTensor.cat([out[k].reshape(-1) for k in ks])
        cut = truncate(flat, drop)
        start = 0
        for k in ks:
            size = out[k].numel()
            out[k] = cut[start : start + size].reshape(*out[k].shape)
            start += size
    return out


def _materialise(p: Private) -> SharedTensor:
    session, w = p.session, work_bits(p.session)
    atoms = [_atom(a) for a, _ in p.terms]
    coefs = [c for _, c in p.terms]
    if len(atoms) == 1 and coefs[0] is None and p.offset is None:
        a = atoms[0]
        return a if a.shape == p.shape else a.expand(*p.shape)
    floats = [c is not None and not _integral(c) for c in coefs]
    big = [k for k, a in enumerate(atoms) if floats[k] and a.frac_bits + w > _AUTO]
    if big:
        for k, a in zip(big, rescale_many([atoms[k] for k in big], w)):
            atoms[k] = a
    r = len(p.shape)
    parts: list[tuple[Tensor, int]] = []
    for a, c, f in zip(atoms, coefs, floats):
        shares = _padded(a.shares, r)
        if c is None:
            parts.append((shares, a.frac_bits))
        elif not f:
            parts.append((shares * c.to(torch.int64).to(shares.device), a.frac_bits))
        else:
            parts.append((shares * encode(c.to(shares.device), w), a.frac_bits + w))
    scale = max(s for _, s in parts)
    if p.offset is not None and scale < w and not _integral(p.offset):
        scale = w
    total = None
    for shares, s in parts:
        shares = shares << (scale - s) if scale > s else shares
        total = shares if total is None else total + shares
    assert total is not None
    total = total.expand(total.shape[0], *p.shape)
    if p.offset is not None:
        total = total.clone()
        if session.lead is not None:
            total[session.lead] += encode(p.offset.to(total.device), scale)
    return SharedTensor(total, scale, session)


def product(pairs: Sequence[tuple[Private, Private]]) -> list[Private]:
    """Beaver products of several pairs in one round (each factor first brought to at most
    ``work`` fractional bits, in one truncation round)."""
    w = work_bits(pairs[0][0].session)
    factors = rescale_many([v.shared() for pair in pairs for v in pair], w)
    shapes = [torch.broadcast_shapes(x.shape, y.shape) for x, y in pairs]
    left, right = [], []
    for k, shape in enumerate(shapes):
        x, y = factors[2 * k], factors[2 * k + 1]
        scale = max(x.frac_bits, y.frac_bits)  # both factors at one scale: one multiply
        left.append(x.upscale(scale).expand(*shape).reshape(-1))
        right.append(y.expand(*shape).reshape(-1))
    lscale = max(v.frac_bits for v in left)
    rscale = max(v.frac_bits for v in right)
    flat = multiply(
        SharedTensor.cat([v.upscale(lscale) for v in left]),
        SharedTensor.cat([v.upscale(rscale) for v in right]),
        frac_bits=max(lscale, rscale),
    )
    out, start = [], 0
    for shape in shapes:
        size = shape.numel()
        out.append(private(flat[start : start + size].reshape(*shape)))
        start += size
    return out


def _compare(x: Private, y: Any) -> Private:
    """``[x > y]`` as shared 0/1 (scale 0): the sign bit of ``y - x``."""
    d = (private(y) if isinstance(y, SharedTensor) else y) - x
    shared = d.shared() if isinstance(d, Private) else private(d).shared()
    x.session.check_range(shared.shares, "comparison input")
    return private(_sign_bit(shared))


def op_name(func: Any) -> str:
    name = getattr(func, "__name__", None) or repr(func)
    qual = getattr(func, "__qualname__", "") or ""
    return (
        f"Tensor.{name}"
        if qual.startswith(("Tensor", "_TensorBase", "TensorBase"))
        else (f"torch.{name}")
    )


# ---------------------------------------------------------------------- torch functions
_TORCH: dict[Any, Callable[..., Any]] = {}


def _implements(*funcs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        for f in funcs:
            _TORCH[f] = fn
        return fn

    return register


def _secret(x: Any) -> bool:
    """A value of a secure program (private, or a dual number of one)."""
    return hasattr(type(x), "__lpm_propagate__") and not isinstance(x, SharedTensor)


@_implements(torch.exp, torch.Tensor.exp)
def _exp(x: Any) -> Any:
    return ExpNeg(-x) if _secret(x) else torch.exp(x)


@_implements(torch.add, torch.Tensor.add, torch.Tensor.__add__, torch.Tensor.__radd__)
def _plus(a: Any, b: Any, alpha: Any = 1) -> Any:
    b = b if alpha == 1 else b * alpha
    return a + b if _secret(a) else b + a


@_implements(torch.mul, torch.Tensor.mul, torch.Tensor.__mul__, torch.Tensor.__rmul__)
def _times(a: Any, b: Any) -> Any:
    return a * b if _secret(a) else b * a


@_implements(torch.sub, torch.Tensor.sub, torch.Tensor.__sub__)
def _minus(a: Any, b: Any, alpha: Any = 1) -> Any:
    b = b if alpha == 1 else b * alpha
    return a - b if _secret(a) else b.__rsub__(a)


@_implements(torch.Tensor.__rsub__, torch.rsub)
def _rminus(a: Any, b: Any) -> Any:
    return b - a if _secret(b) else a.__rsub__(b)


@_implements(torch.div, torch.true_divide, torch.Tensor.__truediv__, torch.Tensor.div)
def _divide(a: Any, b: Any) -> Any:
    if _secret(b):
        return b.__rtruediv__(a)
    return a / b


@_implements(torch.neg, torch.Tensor.neg, torch.Tensor.__neg__)
def _negate(a: Any) -> Any:
    return -a


@_implements(torch.Tensor.__gt__, torch.gt, torch.greater)
def _gt(a: Any, b: Any) -> Any:
    return a > b if _secret(a) else b < a


@_implements(torch.Tensor.__lt__, torch.lt, torch.less)
def _lt(a: Any, b: Any) -> Any:
    return a < b if _secret(a) else b > a


@_implements(torch.Tensor.__ge__, torch.ge)
def _ge(a: Any, b: Any) -> Any:
    return a >= b if _secret(a) else b <= a


@_implements(torch.Tensor.__le__, torch.le)
def _le(a: Any, b: Any) -> Any:
    return a <= b if _secret(a) else b >= a


@_implements(torch.Tensor.__eq__, torch.Tensor.__ne__, torch.eq, torch.ne)
def _equal(a: Any, b: Any) -> Any:
    return (a if _secret(a) else b).__eq__(None)


@_implements(torch.matmul, torch.Tensor.__matmul__)
def _matmul(a: Any, b: Any) -> Any:
    if _secret(a):
        return a @ b
    raise NotImplementedError(
        "public @ private has no secure implementation; write private @ public."
    )


@_implements(torch.sum, torch.Tensor.sum)
def _sum(x: Any, dim: Any = None, keepdim: bool = False, **kwargs: Any) -> Any:
    return x.sum(dim, keepdim)


@_implements(torch.reshape)
def _reshape(x: Any, shape: Any) -> Any:
    return x.reshape(*shape)


@_implements(torch.unsqueeze)
def _unsqueeze(x: Any, dim: int) -> Any:
    return x.unsqueeze(dim)


@_implements(torch.index_select)
def _index_select(x: Any, dim: int, index: Tensor) -> Any:
    return x.index_select(dim, index)


@_implements(torch.zeros_like)
def _zeros_like(x: Any, **kwargs: Any) -> Tensor:
    return torch.zeros(x.shape, dtype=_F64, device=x.device)


@_implements(torch.ones_like)
def _ones_like(x: Any, **kwargs: Any) -> Tensor:
    return torch.ones(x.shape, dtype=_F64, device=x.device)


@_implements(torch.Tensor.index_add)
def _index_add(base: Tensor, dim: int, index: Tensor, source: Any, alpha: Any = 1) -> Any:
    """``base.index_add(0, index, private)``: a public base plus a scatter-sum of shares."""
    if _secret(base) or dim % max(1, base.dim()) != 0:
        raise NotImplementedError(
            "Tensor.index_add on private values runs on a public base along dim 0 only."
        )
    out = source.scatter_sum(index.to(source.device), base.shape[0])
    return out * alpha + base if alpha != 1 else out + base


@_implements(torch.cat, torch.concat, torch.concatenate)
def _cat(tensors: Sequence[Any], dim: int = 0) -> Any:
    return _join(tensors, dim, SharedTensor.cat, stack=False)


@_implements(torch.stack)
def _stack(tensors: Sequence[Any], dim: int = 0) -> Any:
    return _join(tensors, dim, SharedTensor.stack, stack=True)


def _join(tensors: Sequence[Any], dim: int, fn: Callable, stack: bool) -> Any:
    first = next(t for t in tensors if _secret(t))
    session = first.session
    items = []
    for t in tensors:
        if _secret(t):
            items.append(t.shared())
            continue
        t = torch.as_tensor(t, device=session.device).to(_F64)
        items.append(session.public(t, 0 if _integral(t) else work_bits(session)))
    return private(fn(items, dim % (first.dim() + (1 if stack else 0))))
