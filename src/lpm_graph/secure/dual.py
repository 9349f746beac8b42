r"""Forward-mode tangents on shares: dual numbers through the vocabulary of a phase.

A :class:`Dual` is ``(value, tangent)`` with the tangent's last dimension one column per
differentiated public parameter element (``P``). Values and tangents are public tensors or
:class:`~lpm_graph.secure.values.Private` values, so the same phases run on them: the
differentiated parameters become public duals (value, a one-hot tangent), the state's tangents
are shared. The rules are those of the plaintext autograd: ``d(ab) = a db + da b``,
``d exp(-x) = -exp(-x) dx``, sums and indexing are linear, comparisons have no derivative, and
a flow has the straight-through tangent of the plaintext default estimator,
``d flow = -d survival * source + moved * d source``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from .tensor import SharedTensor
from .values import _TORCH, ExpNeg, Private, Shaped, _is_public, private, product

__all__ = ["Dual", "dual_parameters", "flow_tangent"]

_F64 = torch.float64


class Dual(Shaped):
    """``value + tangent * eps`` with ``tangent`` ``[*value.shape, P]`` (``None``: zero)."""

    _kind = "private or differentiated values"  # for messages

    def __init__(self, value: Any, tangent: Any, columns: int,
                 lazy: Callable[[], Any] | None = None) -> None:  # fmt: skip
        self.value = value
        self._tangent = tangent
        self._lazy = lazy
        self.columns = columns

    @property
    def tangent(self) -> Any:
        if self._lazy is not None:
            self._tangent, self._lazy = self._lazy(), None
        return self._tangent

    # ------------------------------------------------------------------ what it is
    dtype = _F64
    requires_grad = False

    @property
    def shape(self) -> torch.Size:
        return torch.Size(self.value.shape)

    @property
    def device(self) -> torch.device:
        return self.value.device

    def __repr__(self) -> str:
        return f"Dual(shape={list(self.shape)}, columns={self.columns})"

    def settled(self) -> Dual:
        """Value and tangent as their shares (a step's lazy sums computed)."""
        value = private(self.value.shared()) if isinstance(self.value, Private) else self.value
        tangent = self.full_tangent()
        if isinstance(tangent, Private):
            tangent = private(tangent.shared())
        return Dual(value, tangent, self.columns)

    def full_tangent(self) -> Any:
        """The tangent, zeros (public) where it is ``None``."""
        t = self.tangent
        if t is None:
            t = torch.zeros((*self.shape, self.columns), dtype=_F64, device=self.device)
        return t

    # ------------------------------------------------------------------ arithmetic
    def _lift(self, other: Any) -> Dual | None:
        if isinstance(other, Dual):
            return other
        if isinstance(other, SharedTensor):
            return Dual(private(other), None, self.columns)
        if isinstance(other, Private) or _is_public(other):
            return Dual(other, None, self.columns)
        return None

    def __add__(self, other: Any) -> Any:
        o = self._lift(other)
        if o is None:
            return NotImplemented
        return _derived(self.value + o.value, (self, o), lambda: _tadd(self, o))

    __radd__ = __add__

    def __neg__(self) -> Dual:
        return _derived(-self.value, (self,), lambda: _neg(self.tangent))

    def __sub__(self, other: Any) -> Any:
        o = self._lift(other)
        if o is None:
            return NotImplemented
        return self + (-o)

    def __rsub__(self, other: Any) -> Any:
        return (-self) + other

    def __mul__(self, other: Any) -> Any:
        o = self._lift(other)
        if o is None:
            return NotImplemented
        value = self.value * o.value

        def tangent() -> Any:
            pairs = []  # a db + da b
            if o.tangent is not None:
                pairs.append(_aligned(self.value, o.tangent, len(_shape(value))))
            if self.tangent is not None:
                pairs.append(_aligned(o.value, self.tangent, len(_shape(value))))
            return _sum_products(pairs) if pairs else None

        return _derived(value, (self, o), tangent)

    __rmul__ = __mul__

    def __truediv__(self, other: Any) -> Any:
        if isinstance(other, (Dual, Private, SharedTensor)):
            raise NotImplementedError("division by a private or differentiated value has no "
                                      "secure implementation.")  # fmt: skip
        return self * (1.0 / torch.as_tensor(other, dtype=_F64))

    def __gt__(self, other: Any) -> Any:
        return self.value > _plain(other)

    def __lt__(self, other: Any) -> Any:
        return self.value < _plain(other)

    def __ge__(self, other: Any) -> Any:
        return self.value >= _plain(other)

    def __le__(self, other: Any) -> Any:
        return self.value <= _plain(other)

    def __eq__(self, other: Any) -> Any:  # type: ignore[override]
        return self.value == _plain(other)

    def __ne__(self, other: Any) -> Any:  # type: ignore[override]
        return self.value != _plain(other)

    __hash__ = object.__hash__

    def __matmul__(self, other: Any) -> Dual:
        v = torch.as_tensor(other, dtype=_F64)
        if v.dim() == 1:
            return (self * v).sum(-1)
        return (self.unsqueeze(-1) * v).sum(-2)

    # ------------------------------------------------------------------ structure
    def _map(self, fv: Callable[[Any], Any], ft: Callable[[Any], Any]) -> Dual:
        def tangent() -> Any:
            t = self.tangent
            return None if t is None else ft(t)

        return _derived(fv(self.value), (self,), tangent)

    def _dim(self, dim: int, extra: int = 0) -> int:
        return dim % (self.dim() + extra)

    def __getitem__(self, index: Any) -> Dual:
        index = index if isinstance(index, tuple) else (index,)
        tail = (slice(None),) if any(i is Ellipsis for i in index) else ()
        return self._map(lambda v: v[index], lambda t: t[(*index, *tail)])

    def reshape(self, *shape: Any) -> Dual:
        shape = tuple(shape[0]) if len(shape) == 1 and not isinstance(shape[0], int) else shape
        value = self.value.reshape(*shape)
        return self._map(lambda v: value, lambda t: t.reshape(*value.shape, self.columns))

    view = reshape

    def flatten(self) -> Dual:
        return self.reshape(-1)

    def unsqueeze(self, dim: int) -> Dual:
        d = self._dim(dim, 1)
        return self._map(lambda v: v.unsqueeze(d), lambda t: t.unsqueeze(d))

    def expand(self, *shape: Any) -> Dual:
        shape = tuple(shape[0]) if len(shape) == 1 and not isinstance(shape[0], int) else shape
        return self._map(lambda v: v.expand(*shape), lambda t: t.expand(*shape, self.columns))

    def sum(self, dim: int | None = None, keepdim: bool = False) -> Dual:
        if dim is None:
            return self.reshape(-1).sum(0)
        d = self._dim(dim)
        return self._map(lambda v: v.sum(d, keepdim), lambda t: t.sum(d, keepdim))

    def index_select(self, dim: int, index: Tensor) -> Dual:
        d = self._dim(dim)
        return self._map(lambda v: v.index_select(d, index), lambda t: t.index_select(d, index))

    def scatter_sum(self, index: Tensor, dim_size: int) -> Dual:
        return self._map(lambda v: _scatter(v, index, dim_size),
                         lambda t: _scatter(t, index, dim_size))  # fmt: skip

    def unbind(self, dim: int = 0) -> list[Dual]:
        d = self._dim(dim)
        return [self[(slice(None),) * d + (k,)] for k in range(self.shape[d])]

    def contiguous(self) -> Dual:
        return self

    def clone(self) -> Dual:
        return self

    def detach(self) -> Any:
        return self.value

    def to(self, *args: Any, **kwargs: Any) -> Dual:
        return self

    def double(self) -> Dual:
        return self

    def float(self) -> Dual:
        return self

    def new_zeros(self, *size: Any, **kwargs: Any) -> Tensor:
        return torch.zeros(*size, dtype=_F64, device=self.device)

    def new_ones(self, *size: Any, **kwargs: Any) -> Tensor:
        return torch.ones(*size, dtype=_F64, device=self.device)

    def __bool__(self) -> bool:
        return bool(self.value)

    def __float__(self) -> float:
        return float(self.value)

    def __int__(self) -> int:
        return int(self.value)

    def __index__(self) -> int:
        return self.value.__index__()

    def item(self) -> Any:
        return self.value.item()

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        impl = _DUAL.get(func) or _TORCH.get(func)
        if impl is None:
            from .values import op_name

            raise NotImplementedError(
                f"{op_name(func)} has no secure implementation on private or differentiated "
                "values (the vocabulary is in lpm_graph.secure.values)."
            )
        return impl(*args, **(kwargs or {}))

    @classmethod
    def __lpm_propagate__(cls, layer: Any, csr: Any, edge_weight: Any, kwargs: dict) -> Any:
        from .layers import propagate_private

        return propagate_private(layer, csr, edge_weight, kwargs)


# ---------------------------------------------------------------------- helpers
def _shape(x: Any) -> torch.Size:
    return torch.Size(x.shape) if not isinstance(x, (int, float)) else torch.Size(())


def _plain(x: Any) -> Any:
    return x.value if isinstance(x, Dual) else x


def _is_private(x: Any) -> bool:
    return isinstance(x, (Private, SharedTensor))


def _padded(x: Any, rank: int) -> Any:
    shape = tuple(_shape(x))
    if len(shape) >= rank:
        return x
    if isinstance(x, (int, float)):
        return x
    return x.reshape(*((1,) * (rank - len(shape)) + shape))


def _aligned(value: Any, tangent: Any, rank: int) -> tuple[Any, Any]:
    """``value`` as a column against ``tangent`` (both at ``rank`` value dimensions)."""
    if isinstance(value, (int, float)):
        return value, tangent
    v = _padded(value, rank).unsqueeze(-1)
    t = tangent
    extra = rank - (t.dim() - 1)
    if extra > 0:
        t = t.reshape(*((1,) * extra + tuple(t.shape)))
    return v, t


def _sum_products(pairs: list[tuple[Any, Any]]) -> Any:
    """``sum a * b`` over the pairs, the private x private ones in one Beaver round."""
    both = [k for k, (a, b) in enumerate(pairs) if _is_private(a) and _is_private(b)]
    out: list[Any] = [None] * len(pairs)
    if both:
        done = product([(private(pairs[k][0]), private(pairs[k][1])) for k in both])
        for k, v in zip(both, done):
            out[k] = v
    for k, (a, b) in enumerate(pairs):
        if out[k] is None:
            out[k] = b * a if _is_private(b) else a * b
    total = None
    for v in out:
        total = v if total is None else total + v
    return total


def _derived(value: Any, duals: Sequence[Dual], tangent: Callable[[], Any]) -> Dual:
    """A dual of ``value`` whose tangent is ``tangent()``: computed now, or when first read if
    an operand's tangent is not computed yet (a flow's waits for the step's other flows, so
    that their comparisons run in one batch)."""
    columns = duals[0].columns
    if any(d._lazy is not None for d in duals):
        return Dual(value, None, columns, lazy=tangent)
    return Dual(value, tangent(), columns)


def _neg(t: Any) -> Any:
    return None if t is None else -t


def _tadd(a: Dual, b: Dual) -> Any:
    ta, tb = a.tangent, b.tangent
    if tb is None:
        return ta
    if ta is None:
        return tb
    return ta + tb


def _scatter(x: Any, index: Tensor, n: int) -> Any:
    if torch.is_tensor(x):
        out = x.new_zeros((n, *x.shape[1:]))
        return out.index_add(0, index.to(x.device), x)
    return private(x).scatter_sum(index, n) if isinstance(x, SharedTensor) else x.scatter_sum(
        index, n)  # fmt: skip


# ---------------------------------------------------------------------- torch functions
def _exp(x: Any) -> Any:
    if not isinstance(x, Dual):
        return torch.exp(x)
    if not isinstance(x.value, (Private, SharedTensor)):
        value = torch.exp(x.value)
        t = x.tangent
        if t is None:
            return Dual(value, None, x.columns)
        v, t = _aligned(value, t, value.dim())
        return Dual(value, v * t, x.columns)
    value = ExpNeg(-private(x.value))  # lazy: a flow needs no exp
    if x.tangent is None:
        return Dual(value, None, x.columns)
    return Dual(value, None, x.columns, lazy=lambda: _sum_products(
        [_aligned(value, x.tangent, value.dim())]))  # fmt: skip


def _join(tensors: Sequence[Any], dim: int, fn: Callable, stack: bool) -> Dual:
    first = next(t for t in tensors if isinstance(t, Dual))
    duals = [t if isinstance(t, Dual) else first._lift(t) for t in tensors]
    d = dim % (first.dim() + (1 if stack else 0))
    values = fn([t.value for t in duals], dim=d)

    def tangent() -> Any:
        if all(t.tangent is None for t in duals):
            return None
        return fn([t.full_tangent() for t in duals], dim=d)

    return _derived(values, duals, tangent)


_DUAL: dict[Any, Callable[..., Any]] = {
    torch.exp: _exp,
    torch.Tensor.exp: _exp,
    torch.cat: lambda tensors, dim=0: _join(tensors, dim, torch.cat, False),
    torch.concat: lambda tensors, dim=0: _join(tensors, dim, torch.cat, False),
    torch.stack: lambda tensors, dim=0: _join(tensors, dim, torch.stack, True),
}


# ---------------------------------------------------------------------- flows
def flow_tangent(ctx: Any, name: str, survival: Any, source: Any, stream: str | None) -> Dual:
    """A flow with its straight-through tangent ``-d survival * source + moved * d source``
    (the plaintext default estimator's)."""
    s = survival if isinstance(survival, Dual) else None
    src = source if isinstance(source, Dual) else None
    columns = (s if s is not None else src).columns  # type: ignore[union-attr]
    flow, pending = ctx.hard_flow(name, _plain(survival), _plain(source), stream)
    rank = len(_shape(flow))

    def tangent() -> Any:  # read after the step's flows were resolved together
        pairs = []
        if s is not None and s.tangent is not None:
            pairs.append(_aligned(_plain(source), -s.tangent, rank))
        if src is not None and src.tangent is not None:
            pending.get()
            pairs.append(_aligned(private(pending.bits), src.tangent, rank))
        return _sum_products(pairs) if pairs else None

    return Dual(flow, None, columns, lazy=tangent)


# ---------------------------------------------------------------------- parameters
class DualParameters:
    """The differentiated parameters of a run: their tangent columns, and a context manager
    that puts public duals in their place on the protocol for the run."""

    def __init__(self, protocol: nn.Module, names: Sequence[str]) -> None:
        known = dict(protocol.named_parameters())
        known.update(dict(protocol.named_buffers()))
        for name in names:
            if name not in known and not torch.is_tensor(getattr(protocol, name, None)):
                raise ValueError(
                    f"unknown parameter {name!r}; tangents are for the protocol's parameters "
                    f"and buffers: {', '.join(sorted(known)) or 'none'}."
                )
        self.protocol = protocol
        self.names = tuple(names)
        columns: list[str] = []
        self.duals: dict[str, Dual] = {}
        values = {name: known.get(name, getattr(protocol, name, None)) for name in names}
        total = sum(max(1, v.numel()) for v in values.values())
        for name, v in values.items():
            value = v.detach().to(_F64)
            k = value.numel()
            tangent = torch.zeros((k, total), dtype=_F64, device=value.device)
            tangent[torch.arange(k), torch.arange(len(columns), len(columns) + k)] = 1.0
            columns += [name] if value.dim() == 0 else [f"{name}[{i}]" for i in range(k)]
            self.duals[name] = Dual(value, tangent.reshape(*value.shape, total), total)
        self.columns = tuple(columns)

    def state(self, value: Any) -> Dual:
        """A state entry at the start of the run: its tangent is zero."""
        return Dual(value, None, len(self.columns))

    @contextmanager
    def swap(self) -> Iterator[None]:
        saved = []
        try:
            for name, dual in self.duals.items():
                prefix, _, attr = name.rpartition(".")
                module = self.protocol.get_submodule(prefix) if prefix else self.protocol
                for where in ("_parameters", "_buffers"):
                    if attr in getattr(module, where):
                        saved.append((module, attr, where, getattr(module, where).pop(attr)))
                        break
                else:
                    saved.append((module, attr, "__dict__", module.__dict__.pop(attr)))
                module.__dict__[attr] = dual
            yield
        finally:
            for module, attr, where, value in reversed(saved):
                module.__dict__.pop(attr, None)
                getattr(module, where)[attr] = value if where != "__dict__" else value


def dual_parameters(protocol: nn.Module, names: Sequence[str]) -> DualParameters | None:
    """:class:`DualParameters` for ``names`` (``None`` when there are none)."""
    names = tuple(dict.fromkeys(names))
    return DualParameters(protocol, names) if names else None
