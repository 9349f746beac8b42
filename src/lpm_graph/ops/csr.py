"""Cached compressed-sparse-row (CSR) structure of one relation, and its transpose.

Every step of a simulation aggregates over the same edges, so the sort by destination (and, for
backward passes, by source) is done once per graph and reused. Edge order inside each
destination row is the original edge order (stable sort), so results do not depend on how the
edges were listed beyond floating-point summation order, and are bitwise reproducible.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

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


class CSR:
    """Destination-sorted CSR of a ``[num_rows x num_cols]`` adjacency (rows = destinations).

    Row ``i`` lists the edges ``j -> i``. ``perm[k]`` is the position, in the caller's edge
    order, of the ``k``-th edge in sorted order. The transpose (rows = sources) is built lazily
    the first time a backward pass needs it and cached; ``csr.t.t is csr``.

    Args:
        row: destination index of each edge, ``[E]`` long, already sorted.
        col: source index of each edge in the same (sorted) order, ``[E]`` long.
        num_rows: number of destination nodes.
        num_cols: number of source nodes.
        perm: original position of each sorted edge, ``[E]`` long (``None`` when the rows are
            themselves the original order, as for a transpose built from sorted order).
    """

    def __init__(
        self, row: Tensor, col: Tensor, num_rows: int, num_cols: int, perm: Tensor | None = None
    ) -> None:
        self.row = row
        self.col = col
        self.num_rows = int(num_rows)
        self.num_cols = int(num_cols)
        self.perm = perm
        self.degree = torch.bincount(row, minlength=self.num_rows)  # [num_rows]
        rowptr = torch.zeros(self.num_rows + 1, dtype=torch.long, device=row.device)
        torch.cumsum(self.degree, 0, out=rowptr[1:])
        self.rowptr = rowptr
        # int32 indices make the sparse product up to 2x faster (see PERF_NOTES.md).
        index_dtype = torch.int32 if row.numel() <= _INT32_MAX else torch.long
        self._rowptr_sparse = rowptr.to(index_dtype)
        self._col_sparse = col.to(index_dtype)
        self._t: CSR | None = None
        self._t_index: Tensor | None = None
        self._orig: tuple[Tensor, Tensor] | None = None
        self._ones: dict[torch.dtype, Tensor] = {}

    @classmethod
    def from_edge_index(cls, edge_index: Tensor, num_src: int, num_dst: int) -> CSR:
        """Sort ``edge_index`` (``[2, E]``, row 0 sources, row 1 destinations) by destination."""
        src, dst = edge_index[0], edge_index[1]
        perm = torch.argsort(dst, stable=True)
        return cls(dst[perm], src[perm], num_dst, num_src, perm)

    @property
    def num_edges(self) -> int:
        return self.row.numel()

    @property
    def src(self) -> Tensor:
        """Source of each edge in the caller's original order (cached)."""
        return self._original()[0]

    @property
    def dst(self) -> Tensor:
        """Destination of each edge in the caller's original order (cached)."""
        return self._original()[1]

    def _original(self) -> tuple[Tensor, Tensor]:
        if self._orig is None:
            if self.perm is None:
                self._orig = (self.col, self.row)
            else:
                inverse = torch.argsort(self.perm)
                self._orig = (self.col[inverse], self.row[inverse])
        return self._orig

    @property
    def t(self) -> CSR:
        """The transposed CSR (rows = sources), built once and cached."""
        if self._t is None:
            t_index = torch.argsort(self.col, stable=True)  # sorted position -> transposed order
            transposed = CSR(self.col[t_index], self.row[t_index], self.num_cols, self.num_rows)
            transposed._t = self
            transposed._t_index = torch.argsort(t_index)
            self._t, self._t_index = transposed, t_index
        return self._t

    @property
    def t_index(self) -> Tensor:
        """``values_t = values[t_index]`` reorders per-edge values into the transpose's order."""
        self.t  # noqa: B018  (builds the transpose and its index)
        assert self._t_index is not None
        return self._t_index

    def ones(self, dtype: torch.dtype) -> Tensor:
        """Unit edge values ``[E]`` of ``dtype``, allocated once (unweighted sums reuse them,
        and autograd saves a reference rather than a fresh copy every step)."""
        ones = self._ones.get(dtype)
        if ones is None:
            ones = torch.ones(self.num_edges, dtype=dtype, device=self.row.device)
            self._ones[dtype] = ones
        return ones

    def sparse(self, values: Tensor) -> Tensor:
        """A ``torch.sparse_csr_tensor`` view with the given per-edge values (sorted order)."""
        return torch.sparse_csr_tensor(
            self._rowptr_sparse,
            self._col_sparse,
            values,
            (self.num_rows, self.num_cols),
            check_invariants=False,
        )

    def to(self, device: torch.device | str) -> CSR:
        """A copy on ``device`` (the transpose is rebuilt there when first needed)."""
        perm = None if self.perm is None else self.perm.to(device)
        return CSR(self.row.to(device), self.col.to(device), self.num_rows, self.num_cols, perm)

    def __repr__(self) -> str:
        return (
            f"CSR(num_rows={self.num_rows}, num_cols={self.num_cols}, num_edges={self.num_edges})"
        )
