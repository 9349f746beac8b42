"""Cached compressed-sparse-row (CSR) structure of one relation, and its transpose.

Every step of a simulation aggregates over the same edges, so the sort by destination (and, for
backward passes, by source) is done once per graph and reused. Edge order inside each
destination row is the original edge order (stable sort), so results do not depend on how the
edges were listed beyond floating-point summation order, and are bitwise reproducible.

Memory: a relation's per-edge arrays are what dominates at scale (1e8 edges for 1e7 agents of
mean degree 10), so a CSR keeps only what the fused sum needs, in the compact index dtype
(int32 whenever the edge and node counts fit, else int64): the source of each sorted edge and
the sort permutation (8 bytes per edge with int32), plus 8 per edge for the transpose once a
backward pass has built it (its columns and the reordering of edge values). Unit edge values
are one ``[E]`` tensor shared by both directions. ``row``, ``col`` and ``perm`` as int64 tensors
are built on first use and cached; the fused sum and its backward never ask for them.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from .._checks import check_edge_index, check_int

__all__ = ["CSR"]

_INT32_MAX = 2**31 - 1

# torch warns once per process that sparse CSR support is "beta"; every kernel used here is
# tested against dense references, so consume that one-time warning quietly at import (its
# wording differs between torch versions: ignore every warning of this one probe).
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    torch.sparse_csr_tensor(
        torch.zeros(1, dtype=torch.long),
        torch.zeros(0, dtype=torch.long),
        torch.zeros(0),
        (0, 0),
        check_invariants=False,
    )


def index_dtype(num_edges: int, num_rows: int, num_cols: int) -> torch.dtype:
    """int32 when every index and row offset fits (up to 2^31 - 1 edges and nodes), else
    int64. int32 makes the sparse product up to 2x faster and halves the index memory (see
    PERF_NOTES.md)."""
    fits = max(num_edges, num_rows, num_cols) <= _INT32_MAX
    return torch.int32 if fits else torch.long


class CSR:
    """Destination-sorted CSR of a ``[num_rows x num_cols]`` adjacency (rows = destinations).

    Row ``i`` lists the edges ``j -> i``. ``perm[k]`` is the position, in the caller's edge
    order, of the ``k``-th edge in sorted order. The transpose (rows = sources) is built lazily
    the first time a backward pass needs it and cached; ``csr.t.t is csr``.

    Indices are stored once, in :attr:`index_dtype` (int32 when the graph allows). The int64
    ``row``, ``col`` and ``perm`` are built on first access (``row`` from the in-degrees) and
    cached, so paths that never ask for them never pay for them; ``t_index`` is converted
    from the cached compact index on every access.

    Args:
        row: destination index of each edge, ``[E]`` integer, already sorted.
        col: source index of each edge in the same (sorted) order, ``[E]`` integer.
        num_rows: number of destination nodes.
        num_cols: number of source nodes.
        perm: original position of each sorted edge, ``[E]`` integer (``None`` when the rows
            are themselves the original order, as for a transpose built from sorted order).
    """

    def __init__(
        self, row: Tensor, col: Tensor, num_rows: int, num_cols: int, perm: Tensor | None = None
    ) -> None:
        num_rows = int(num_rows)
        degree = torch.bincount(row, minlength=num_rows)  # [num_rows]
        self._build(degree, col, num_rows, int(num_cols), perm)

    def _build(
        self, degree: Tensor, col: Tensor, num_rows: int, num_cols: int, perm: Tensor | None
    ) -> None:
        self.num_rows = num_rows
        self.num_cols = num_cols
        self.degree = degree.long()
        rowptr = torch.zeros(num_rows + 1, dtype=torch.long, device=degree.device)
        torch.cumsum(self.degree, 0, out=rowptr[1:])
        self.rowptr = rowptr
        self.index_dtype = index_dtype(col.numel(), num_rows, num_cols)
        self._rowptr_c = rowptr.to(self.index_dtype)
        self._col_c = col.to(self.index_dtype)  # [E], sorted order
        self._perm_c = None if perm is None else perm.to(self.index_dtype)
        self._t: CSR | None = None
        self._t_index_c: Tensor | None = None  # sorted position of each transposed edge
        self._views: dict[str, Tensor] = {}  # int64 row / col / perm / src / dst, on demand
        self._ones: dict[torch.dtype, Tensor] = {}

    @classmethod
    def _from_parts(
        cls, degree: Tensor, col: Tensor, num_rows: int, num_cols: int, perm: Tensor | None
    ) -> CSR:
        out = cls.__new__(cls)
        out._build(degree, col, num_rows, num_cols, perm)
        return out

    @classmethod
    def from_edge_index(
        cls, edge_index: Tensor, num_src: int, num_dst: int, *, validate: bool = True
    ) -> CSR:
        """Sort ``edge_index`` (``[2, E]``, row 0 sources, row 1 destinations) by destination.

        ``validate=False`` skips the check of the ids' range (a read on the host, a device
        synchronisation on a GPU) for edges already checked, e.g. a graph's own, whose CSR
        may first be built inside a step."""
        num_src, num_dst = check_int(num_src, "num_src"), check_int(num_dst, "num_dst")
        if validate:
            check_edge_index(edge_index, num_src, num_dst, as_long=False)
        src, dst = edge_index[0], edge_index[1]
        perm = torch.argsort(dst, stable=True)
        degree = torch.bincount(dst, minlength=int(num_dst))
        dtype = index_dtype(src.numel(), int(num_dst), int(num_src))
        col = src.to(dtype)[perm]  # the sorted sources, never as a full int64 copy
        return cls._from_parts(degree, col, int(num_dst), int(num_src), perm.to(dtype))

    @property
    def num_edges(self) -> int:
        return self._col_c.numel()

    def _view(self, name: str, make) -> Tensor:
        value = self._views.get(name)
        if value is None:
            value = self._views[name] = make()
        return value

    @property
    def row(self) -> Tensor:
        """Destination of each sorted edge, ``[E]`` int64 (built from ``degree`` on first use)."""
        return self._view("row", lambda: self.rows(torch.long))

    @property
    def col(self) -> Tensor:
        """Source of each sorted edge, ``[E]`` int64 (cached on first use)."""
        return self._view("col", lambda: self._col_c.long())

    @property
    def perm(self) -> Tensor | None:
        """Caller's position of each sorted edge, ``[E]`` int64, or ``None`` (a transpose)."""
        if self._perm_c is None:
            return None
        return self._view("perm", lambda: self._perm_c.long())

    def rows(self, dtype: torch.dtype | None = None) -> Tensor:
        """Destination of each sorted edge, built from ``degree`` (a fresh, uncached tensor of
        ``dtype``, default :attr:`index_dtype`)."""
        dtype = dtype or self.index_dtype
        rows = torch.arange(self.num_rows, dtype=dtype, device=self.degree.device)
        return torch.repeat_interleave(rows, self.degree, output_size=self.num_edges)

    def col_compact(self) -> Tensor:
        """Source of each sorted edge in :attr:`index_dtype` (cached; no copy)."""
        return self._col_c

    def perm_compact(self) -> Tensor | None:
        """:attr:`perm` in :attr:`index_dtype` (cached; no copy)."""
        return self._perm_c

    @property
    def src(self) -> Tensor:
        """Source of each edge in the caller's original order (cached)."""
        return self._original()[0]

    @property
    def dst(self) -> Tensor:
        """Destination of each edge in the caller's original order (cached)."""
        return self._original()[1]

    def _original(self) -> tuple[Tensor, Tensor]:
        if "src" not in self._views:
            if self._perm_c is None:
                self._views["src"], self._views["dst"] = self.col, self.row
            else:
                inverse = _inverse(self._perm_c)
                self._views["src"] = self.col[inverse]
                self._views["dst"] = self.row[inverse]
        return self._views["src"], self._views["dst"]

    @property
    def t(self) -> CSR:
        """The transposed CSR (rows = sources), built once and cached."""
        if self._t is None:
            t_index = torch.argsort(self._col_c, stable=True)  # sorted position -> transposed
            degree = torch.bincount(self._col_c, minlength=self.num_cols)
            col = self.rows()[t_index]  # the destinations, in the transposed order
            transposed = CSR._from_parts(degree, col, self.num_cols, self.num_rows, None)
            transposed._t = self
            transposed._ones = self._ones  # the same E unit values serve both directions
            self._t, self._t_index_c = transposed, t_index.to(self.index_dtype)
        return self._t

    def t_index_compact(self) -> Tensor:
        """:attr:`t_index` in :attr:`index_dtype` (cached; what the backward pass uses)."""
        if self._t_index_c is None:
            t = self.t  # an original CSR sets its index when it builds its transpose
            if self._t_index_c is None:  # a transpose: invert its original's index, once
                self._t_index_c = _inverse(t.t_index_compact())
        return self._t_index_c

    @property
    def t_index(self) -> Tensor:
        """``values_t = values[t_index]`` reorders per-edge values into the transpose's order
        (``[E]`` int64; a conversion of the cached compact index on every access)."""
        return self.t_index_compact().long()

    def ones(self, dtype: torch.dtype) -> Tensor:
        """Unit edge values ``[E]`` of ``dtype``, allocated once (unweighted sums reuse them,
        and autograd saves a reference rather than a fresh copy every step)."""
        ones = self._ones.get(dtype)
        if ones is None:
            ones = torch.ones(self.num_edges, dtype=dtype, device=self.degree.device)
            self._ones[dtype] = ones
        return ones

    def is_ones(self, values: Tensor) -> bool:
        """Whether ``values`` is this CSR's own unit-value tensor (no allocation)."""
        return self._ones.get(values.dtype) is values

    def sparse(self, values: Tensor) -> Tensor:
        """A ``torch.sparse_csr_tensor`` view with the given per-edge values (sorted order)."""
        return torch.sparse_csr_tensor(
            self._rowptr_c,
            self._col_c,
            values,
            (self.num_rows, self.num_cols),
            check_invariants=False,
        )

    def to(self, device: torch.device | str) -> CSR:
        """A copy on ``device`` (the transpose is rebuilt there when first needed)."""
        perm = None if self._perm_c is None else self._perm_c.to(device)
        return CSR._from_parts(
            self.degree.to(device), self._col_c.to(device), self.num_rows, self.num_cols, perm
        )

    def __repr__(self) -> str:
        return (
            f"CSR(num_rows={self.num_rows}, num_cols={self.num_cols}, num_edges={self.num_edges})"
        )


def _inverse(perm: Tensor) -> Tensor:
    """The inverse permutation (``argsort(perm)``) in O(E), in ``perm``'s dtype."""
    out = torch.empty_like(perm)
    out[perm] = torch.arange(perm.numel(), dtype=perm.dtype, device=perm.device)
    return out
