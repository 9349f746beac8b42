"""Per-destination aggregation: sum / mean / max / min / prod, forward and backward.

Two entry points, both over a cached :class:`~lpm_graph.ops.csr.CSR`:

* :func:`propagate` — ``out[i] = reduce_{j -> i} w_e * x[j]``: gather a source feature, weight
  it per edge, reduce per destination. This is what most protocol layers do (force of
  infection, exposure, influence), and the sum has a fused fast path.
* :func:`aggregate` — reduce per-edge messages that a layer computed itself (``[E, ...]`` in
  the caller's edge order).

The backend is chosen in one place, :func:`resolve_backend`:

``"csr"`` (default)
    Sums are a sparse CSR x dense product written as a custom autograd Function: forward
    ``A x`` over the destination-sorted CSR, backward ``A^T g`` over the cached transposed CSR,
    and the per-edge weight gradient ``g[dst] * x[src]`` in O(E). Measured on 2 cores at
    N = 1e6, E = 1e7 this is 3-6x faster than gather-then-scatter forward and 5-15x faster
    forward + backward; ``torch.sparse.mm``'s own backward rebuilds the transpose each call and
    cannot give edge-weight gradients without a dense N x N tensor. max / min / prod reduce
    the sorted messages with ``torch.segment_reduce``.
``"native"``
    ``index_add`` / ``scatter_reduce`` on the gathered messages, in the caller's edge order.
``"torch_scatter"``
    ``torch_scatter.scatter`` when the optional extra is installed.

Every backend returns the same values (to floating-point summation order) and gradients;
destinations with no incoming edge get 0 (1 for ``"prod"``, the empty product), as in PyTorch
Geometric.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from .csr import CSR
from .incremental import IncrementalSum

__all__ = ["BACKENDS", "REDUCTIONS", "aggregate", "propagate", "resolve_backend"]

Reduce = Literal["sum", "mean", "max", "min", "prod"]
REDUCTIONS: tuple[str, ...] = ("sum", "mean", "max", "min", "prod")
BACKENDS: tuple[str, ...] = ("csr", "native", "torch_scatter")


def torch_scatter_available() -> bool:
    try:
        import torch_scatter  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(backend: str | None = None) -> str:
    """Resolve a backend name (``None`` or ``"auto"`` -> ``"csr"``); the one choice point."""
    if backend is None or backend == "auto":
        return "csr"
    if backend not in BACKENDS:
        raise ValueError(
            f"backend={backend!r} is not an aggregation backend; choose one of "
            f"{', '.join(map(repr, BACKENDS))} or 'auto'."
        )
    if backend == "torch_scatter" and not torch_scatter_available():
        raise ValueError(
            "backend='torch_scatter' needs the optional torch-scatter package; install it with "
            "`pip install lpm-graph[scatter]` or use backend='csr'."
        )
    return backend


def _check_reduce(reduce: str, name: str = "reduce") -> None:
    if reduce not in REDUCTIONS:
        raise ValueError(
            f"{name}={reduce!r} is not a reduction; "
            f"choose one of {', '.join(map(repr, REDUCTIONS))}."
        )


class _CSRSum(torch.autograd.Function):
    """``out = A x`` with ``A`` given by a CSR and per-edge ``values`` (sorted order).

    Backward is itself written with this Function on the transpose, so it is differentiable
    again (Hessian-vector products work).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, x: Tensor, values: Tensor, csr: CSR, incremental: IncrementalSum | None = None
    ) -> Tensor:
        ctx.csr = csr
        # x only serves the edge-value gradient: not saved (nor kept alive) without one
        x_saved = x if ctx.needs_input_grad[1] else None
        ctx.save_for_backward(x_saved, values if ctx.needs_input_grad[0] else None)
        if incremental is not None and csr.is_ones(values):
            return incremental(csr, x, lambda x: _sparse_mm(csr, values, x))
        return _sparse_mm(csr, values, x)

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        x, values = ctx.saved_tensors
        csr: CSR = ctx.csr
        grad_x = grad_values = None
        if ctx.needs_input_grad[0]:
            unit = csr.is_ones(values)  # its transpose is all ones too
            if unit:
                t_values = csr.t.ones(values.dtype)
            else:
                t_values = values.index_select(0, csr.t_index_compact())
            grad_x = csr_sum(csr.t, grad_out, t_values)
        if ctx.needs_input_grad[1]:
            # g[dst] * x[src] per sorted edge, with no [E] int64 index: g repeated by in-degree
            g_dst = torch.repeat_interleave(grad_out, csr.degree, dim=0, output_size=csr.num_edges)
            prod = g_dst * x.index_select(0, csr.col_compact())  # [E] or [E, F]
            grad_values = prod if prod.dim() == 1 else prod.flatten(1).sum(1)
        return grad_x, grad_values, None, None


def _sparse_mm(csr: CSR, values: Tensor, x: Tensor) -> Tensor:
    if csr.num_edges == 0:
        return x.new_zeros((csr.num_rows, *x.shape[1:]))
    a = csr.sparse(values.to(x.dtype))
    if x.dim() == 1:
        return a @ x
    flat = x.reshape(x.shape[0], -1)  # [num_cols, F]
    return (a @ flat).reshape(csr.num_rows, *x.shape[1:])


def csr_sum(
    csr: CSR, x: Tensor, values: Tensor, incremental: IncrementalSum | None = None
) -> Tensor:
    """``out[i] = sum_{k in row i} values[k] * x[col[k]]`` with the fused CSR Function
    (updated from the last call by ``incremental`` where that is exact)."""
    return _CSRSum.apply(x, values, csr, incremental)


def _edge_values(csr: CSR, edge_weight: Tensor | None) -> Tensor | None:
    """Per-edge weights in sorted order, or None when the weight is a scalar (or absent)."""
    if edge_weight is None or edge_weight.dim() == 0:
        return None
    perm = csr.perm_compact()
    return edge_weight if perm is None else edge_weight.index_select(0, perm)


def _check_features(x: object, edge_weight: object, csr: CSR) -> None:
    """Shapes and dtypes only (no values, no host sync: this runs in every step)."""
    if not torch.is_tensor(x) or not x.is_floating_point():
        kind = f"dtype {x.dtype}" if torch.is_tensor(x) else type(x).__name__
        raise ValueError(
            f"x must be a floating-point tensor [num_src, *F], got {kind}; convert with "
            "torch.as_tensor(x, dtype=torch.float32)."
        )
    if x.dim() == 0 or x.shape[0] != csr.num_cols:
        raise ValueError(
            f"x has shape {list(x.shape)}; its first dimension must be the relation's "
            f"{csr.num_cols} source nodes."
        )
    if (
        torch.is_tensor(edge_weight)
        and edge_weight.dim() > 0
        and (edge_weight.dim() != 1 or edge_weight.shape[0] != csr.num_edges)
    ):
        raise ValueError(
            f"edge_weight has shape {list(edge_weight.shape)}; give a scalar or one weight per "
            f"edge, [{csr.num_edges}]."
        )


def _broadcast_weight(w: Tensor, like: Tensor) -> Tensor:
    return w.reshape(w.shape + (1,) * (like.dim() - w.dim()))


def propagate(
    csr: CSR,
    x: Tensor,
    edge_weight: Tensor | float | None = None,
    reduce: Reduce = "sum",
    backend: str | None = None,
    incremental: IncrementalSum | None = None,
) -> Tensor:
    """``out[i] = reduce over edges j -> i of edge_weight[e] * x[j]``.

    Args:
        csr: the relation's cached CSR (``PopulationGraph.csr(relation)``).
        x: source-node feature, ``[num_src]`` or ``[num_src, *F]``.
        edge_weight: ``None`` (1), a scalar, or ``[E]`` in the caller's edge order; used in
            ``x``'s dtype (float64 weights with float32 ``x`` give float32 on every backend).
        reduce: ``"sum"`` (default), ``"mean"``, ``"max"``, ``"min"`` or ``"prod"``.
        backend: see :func:`resolve_backend`.
        incremental: an :class:`~lpm_graph.ops.IncrementalSum` owned by the caller: a sum
            with unit or scalar weights over the ``"csr"`` backend is then updated from the
            caller's last one where ``x`` is 0/1 and changed in few entries (same values).

    Shapes:
        ``x: [num_src, *F]`` -> ``[num_dst, *F]``.
    """
    _check_reduce(reduce)
    backend = resolve_backend(backend)
    _check_features(x, edge_weight, csr)
    if not torch.is_tensor(edge_weight) and edge_weight is not None:
        edge_weight = torch.as_tensor(edge_weight, dtype=x.dtype, device=x.device)
    elif edge_weight is not None and edge_weight.dtype != x.dtype and x.is_floating_point():
        edge_weight = edge_weight.to(x.dtype)  # every backend computes in x's dtype
    if backend == "csr" and reduce in ("sum", "mean"):
        values = _edge_values(csr, edge_weight)
        if values is None:
            out = csr_sum(csr, x, csr.ones(x.dtype), incremental)
            if edge_weight is not None:
                out = out * edge_weight
        else:
            out = csr_sum(csr, x, values)
        return out if reduce == "sum" else _divide_by_degree(out, csr)
    src = csr.col if backend == "csr" else csr.src
    messages = x[src]
    if edge_weight is not None:
        w = edge_weight
        if w.dim() == 1 and backend == "csr" and csr.perm is not None:
            w = w[csr.perm]
        messages = messages * _broadcast_weight(w, messages)
    return _reduce_messages(messages, csr, reduce, backend)


def aggregate(
    messages: Tensor, csr: CSR, reduce: Reduce = "sum", backend: str | None = None
) -> Tensor:
    """Reduce per-edge ``messages`` (``[E, *F]``, caller's edge order) per destination."""
    _check_reduce(reduce)
    backend = resolve_backend(backend)
    if messages.shape[0] != csr.num_edges:
        raise ValueError(
            f"messages has {messages.shape[0]} rows but the relation has {csr.num_edges} edges; "
            "return one message per edge from message()."
        )
    if backend == "csr" and csr.perm is not None:
        messages = messages[csr.perm]
    return _reduce_messages(messages, csr, reduce, backend)


def _divide_by_degree(out: Tensor, csr: CSR) -> Tensor:
    deg = csr.degree.clamp(min=1).to(out.dtype)
    return out / deg.reshape(deg.shape + (1,) * (out.dim() - 1))


def _reduce_messages(messages: Tensor, csr: CSR, reduce: str, backend: str) -> Tensor:
    """Reduce messages given in sorted order (``"csr"``) or the caller's order (others)."""
    num_rows = csr.num_rows
    if backend == "csr":
        if csr.num_edges == 0:
            return _empty_result(messages, num_rows, reduce)
        if reduce in ("max", "min"):
            # segment_reduce's max/min backward mishandles ties (torch 2.13): scatter instead.
            expanded = csr.row.reshape(-1, *([1] * (messages.dim() - 1))).expand_as(messages)
            init = messages.new_zeros((num_rows, *messages.shape[1:]))
            return init.scatter_reduce(0, expanded, messages, "a" + reduce, include_self=False)
        op = "sum" if reduce == "mean" else reduce
        out = torch.segment_reduce(messages, op, lengths=csr.degree, unsafe=True)
        return _divide_by_degree(out, csr) if reduce == "mean" else out
    index = csr.dst
    if backend == "torch_scatter":
        import torch_scatter

        name = "mul" if reduce == "prod" else reduce
        return torch_scatter.scatter(messages, index, dim=0, dim_size=num_rows, reduce=name)
    shape = (num_rows, *messages.shape[1:])
    if reduce in ("sum", "mean"):
        out = messages.new_zeros(shape).index_add(0, index, messages)
        return out if reduce == "sum" else _divide_by_degree(out, csr)
    expanded = index.reshape(-1, *([1] * (messages.dim() - 1))).expand_as(messages)
    name = {"max": "amax", "min": "amin", "prod": "prod"}[reduce]
    init = messages.new_ones(shape) if reduce == "prod" else messages.new_zeros(shape)
    out = init.scatter_reduce(0, expanded, messages, name, include_self=reduce == "prod")
    return out


def _empty_result(messages: Tensor, num_rows: int, reduce: str) -> Tensor:
    shape = (num_rows, *messages.shape[1:])
    return messages.new_ones(shape) if reduce == "prod" else messages.new_zeros(shape)
