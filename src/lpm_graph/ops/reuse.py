"""Reuse the memory of large temporaries: every step of a run at 1e7 agents allocates the same
agent-sized tensors again, and glibc maps each one afresh.

Why: glibc's ``malloc`` serves a block above its mmap threshold (at most 32 MiB, the size of
8.4 million float32 values) with a fresh ``mmap``, whose pages the kernel faults in and zeroes
on first touch, and ``free`` unmaps it. At 1e7 agents every float32 ``[N]`` temporary (40 MB)
takes that path, and a step allocates dozens: measured on 2 cores, 20 steps of SIR spent 53 %
of their time in the kernel, SEIRM forward + backward 60 %. Raising the threshold
(``MALLOC_MMAP_THRESHOLD_``, ``mallopt``) keeps those blocks in the heap but fragments it under
autograd: SEIRM forward + backward at 1e7 passed 19 GiB instead of 9.

:class:`ReuseBuffers` is a :class:`~torch.utils._python_dispatch.TorchDispatchMode` that gives
the outputs of common ATen ops (element-wise arithmetic, ``where``, ``cat``, ``mv``, sums over
a dimension, copies, ...) memory that an earlier output of the same size no longer uses, and
runs the op's ``out=`` overload into it. A block is free when nothing but the mode refers to
its storage (:func:`torch._C._storage_Use_Count`): not a tensor, a view, a tensor that autograd
saved for backward, nor a Python reference. The values are the op's own (the same kernel
writes them), so a run is bit for bit the run without the mode; only where the memory comes
from changes. ``empty`` / ``zeros`` (and their ``_like`` / ``new_`` forms) and the backward
of ``select`` and ``slice`` get blocks too. Outputs below ``min_bytes`` (glibc's heap serves
them well), non-contiguous outputs, other devices, and every op not listed pass through
unchanged. Only out= overloads that write into the given tensor are used: measured, those of
the ``Scalar`` variants, ``masked_fill`` and ``clone`` compute into a fresh tensor and copy.

The mode holds every block it handed out until :meth:`ReuseBuffers.release`, so a run holds
at most its peak number of blocks of each size, about what it would hold without the mode.
:class:`~lpm_graph.simulator.Simulator` makes one per run (:func:`for_run`), releases it at
the end of a run without gradients, and otherwise carries it into the backward
(:func:`reuse_in_backward`) and releases it when the backward ends. The per-op cost (a
Python call and a shape computation on meta tensors, ~20-50 us) is why it is only used
where blocks are large.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

__all__ = ["MIN_BYTES", "ReuseBuffers", "for_run", "reuse_in_backward"]

MIN_BYTES = 32 * 2**20
"""glibc's largest dynamic mmap threshold (``DEFAULT_MMAP_THRESHOLD_MAX`` on 64-bit): smaller
blocks stay in its heap and are reused there."""

aten = torch.ops.aten
# functional ATen ops whose out= overload (found by schema) writes into the given tensor with
# no allocation of its own (measured: the out= overloads of the Scalar variants, masked_fill
# and clone compute into a fresh tensor and copy, so they are not here)
_OPS = (
    aten.add.Tensor,
    aten.sub.Tensor,
    aten.mul.Tensor,
    aten.div.Tensor,
    aten.neg.default,
    aten.exp.default,
    aten.expm1.default,
    aten.log.default,
    aten.log1p.default,
    aten.sigmoid.default,
    aten.clamp_min.default,
    aten.clamp.default,
    aten.maximum.default,
    aten.minimum.default,
    aten.pow.Tensor_Scalar,
    aten.where.self,
    aten.cat.default,
    aten.mv.default,
    aten.addmv.default,
    aten.sum.dim_IntList,
    aten.index_select.default,
    *(
        getattr(getattr(aten, op), kind)
        for op in ("eq", "ne", "lt", "le", "gt", "ge")
        for kind in ("Tensor", "Scalar")
    ),
    aten.logical_and.default,
    aten.logical_or.default,
    aten.logical_not.default,
    aten.bitwise_and.Tensor,
    aten.bitwise_or.Tensor,
    aten.bitwise_not.default,
    aten.abs.default,
    aten.signbit.default,
)
_EMPTY = {aten.empty.memory_format, aten.empty_like.default}
_LIKE = {aten.empty_like.default, aten.zeros_like.default}
_FACTORIES = _EMPTY | _LIKE | {aten.zeros.default, aten.new_zeros.default}
_VIEW_BACKWARD = {aten.select_backward.default, aten.slice_backward.default}
_HOOKED = "lpm_graph.reuse"
"""The key of an autograd node's ``metadata`` that names the mode hooked on it."""


def _out_overload(func: torch._ops.OpOverload) -> torch._ops.OpOverload:
    """The ``out=`` overload with the same arguments as ``func`` plus ``out``."""
    args = [(a.name, str(a.type)) for a in func._schema.arguments]
    packet = func.overloadpacket
    for name in packet.overloads():
        cand = getattr(packet, name)
        outs = [a for a in cand._schema.arguments if a.is_out]
        rest = [(a.name, str(a.type)) for a in cand._schema.arguments if not a.is_out]
        if len(outs) == 1 and rest == args:
            return cand
    raise LookupError(f"{func} has no out= overload")


def _copy(x: torch.Tensor, *, out: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    """``clone`` / ``_to_copy`` (dtype only) into ``out``: the copy those ops make."""
    return out.copy_(x)


def _rsub(x: torch.Tensor, y: Any, alpha: Any = 1, *, out: torch.Tensor) -> Any:
    """``rsub(x, y, alpha) = y - alpha x``, as torch computes it (``sub``); a number ``y``
    (``1 - p``) as a 0-d tensor of ``x``'s floating dtype, where torch's kernel takes it."""
    if not isinstance(y, torch.Tensor):
        y = torch.scalar_tensor(y, dtype=x.dtype)
    return aten.sub.out(y, x, alpha=alpha, out=out)


_OUT: dict[Any, Any] = {f: _out_overload(f) for f in _OPS}
_OUT.update(
    {
        aten.clone.default: _copy,
        aten._to_copy.default: _copy,
        aten.rsub.Tensor: _rsub,
        aten.rsub.Scalar: _rsub,
    }
)


def _meta(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        if x.layout != torch.strided:  # a sparse CSR matrix (mv): its shape is what counts
            return torch.empty(x.shape, dtype=x.dtype, device="meta")
        return torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device="meta")
    return x


def _dense(t: torch.Tensor, func: Any) -> bool:
    """A strided tensor, or the sparse CSR matrix of ``mv`` (its out= overload takes one
    without allocating)."""
    if t.layout == torch.strided:
        return True
    return t.layout == torch.sparse_csr and func is aten.mv.default


class ReuseBuffers(TorchDispatchMode):
    """Outputs of ``min_bytes`` or more placed in memory freed by earlier outputs of the same
    size (see the module docstring). Use as a context manager around the work; the blocks are
    released when it exits, unless ``keep``.

    Example::

        x = torch.rand(10_000_000)  # 40 MB
        with ReuseBuffers():
            for _ in range(100):
                x = torch.exp(-x)  # -x and exp(-x) land in blocks freed by earlier passes

    Args:
        min_bytes: the smallest output to place (default :data:`MIN_BYTES`, read when the
            mode is made).
        keep: keep the blocks when a ``with`` exits, for the next one (the simulator enters
            the mode once for the steps and once per autograd node of their backward) until
            :meth:`release`.

    Attributes:
        reused: outputs placed in an earlier block; ``allocated``: blocks allocated.
    """

    def __init__(self, min_bytes: int | None = None, *, keep: bool = False) -> None:
        super().__init__()
        self.min_bytes = int(MIN_BYTES if min_bytes is None else min_bytes)
        self.keep = keep
        self._blocks: dict[tuple[int, torch.device], list[torch.UntypedStorage]] = {}
        self.reused = 0
        self.allocated = 0

    def __exit__(self, *exc: Any) -> Any:
        out = super().__exit__(*exc)
        if not self.keep:
            self.release()
        return out

    def release(self) -> None:
        """Drop the blocks (those still in use live on with their tensors)."""
        self._blocks.clear()

    @property
    def held_bytes(self) -> int:
        """Bytes of the blocks the mode holds, in use or free."""
        return sum(s.nbytes() for blocks in self._blocks.values() for s in blocks)

    def _block(self, nbytes: int, device: torch.device) -> torch.UntypedStorage:
        blocks = self._blocks.setdefault((nbytes, device), [])
        for s in blocks:
            if torch._C._storage_Use_Count(s._cdata) == 1:  # only this list holds it
                self.reused += 1
                return s
        s = torch.UntypedStorage(nbytes, device=device)
        blocks.append(s)
        self.allocated += 1
        return s

    def _place(self, shape: torch.Size, dtype: torch.dtype, device: torch.device) -> Any:
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes < self.min_bytes:
            return None
        out = torch.empty(0, dtype=dtype, device=device)
        return out.set_(self._block(nbytes, device), 0, shape)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        out = None
        if func in _OUT:
            out = self._computed(func, args, kwargs)
        elif func in _FACTORIES:
            out = self._factory(func, args, kwargs)
        elif func in _VIEW_BACKWARD:
            out = self._view_backward(func, args)
        return func(*args, **kwargs) if out is None else out

    def _computed(self, func: Any, args: tuple, kwargs: dict) -> Any:
        """An op with an out= form, run into a block; ``None``: run it as it is."""
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        if (
            not any(t.numel() * t.element_size() >= self.min_bytes for t in tensors)
            or any(t.device.type != "cpu" or not _dense(t, func) for t in tensors)
            or (func is aten._to_copy.default and not _same_place(kwargs))
            or (func is aten.rsub.Scalar and not (args[0].is_floating_point() and len(args) == 2))
        ):
            return None
        meta = func(*tree_map(_meta, args), **tree_map(_meta_device, kwargs))
        if not isinstance(meta, torch.Tensor) or not meta.is_contiguous():
            return None
        out = self._place(meta.shape, meta.dtype, torch.device("cpu"))
        return None if out is None else _OUT[func](*args, **kwargs, out=out)

    def _factory(self, func: Any, args: tuple, kwargs: dict) -> Any:
        """``empty``, ``zeros`` and their ``_like`` / ``new_`` forms in a block."""
        if func in _LIKE:
            like = args[0]
            shape, dtype = like.shape, kwargs.get("dtype") or like.dtype
            device = torch.device(kwargs.get("device") or like.device)
            if not like.is_contiguous() and kwargs.get("memory_format") is not (
                torch.contiguous_format
            ):
                return None
        elif func is aten.new_zeros.default:  # dtype and device default to the tensor's
            shape, dtype = args[1], kwargs.get("dtype") or args[0].dtype
            device = torch.device(kwargs.get("device") or args[0].device)
        else:
            shape, dtype = args[0], kwargs.get("dtype") or torch.get_default_dtype()
            device = torch.device(kwargs.get("device") or "cpu")
        if (
            device.type != "cpu"
            or kwargs.get("layout") not in (None, torch.strided)
            or kwargs.get("pin_memory")
            or kwargs.get("memory_format")
            not in (None, torch.contiguous_format, torch.preserve_format)
        ):
            return None
        out = self._place(torch.Size(shape), dtype, device)
        if out is not None and func not in _EMPTY:
            out.zero_()
        return out

    def _view_backward(self, func: Any, args: tuple) -> Any:
        """``select_backward`` / ``slice_backward``: zeros with ``grad`` written into the
        view, as torch computes them, in a block."""
        grad, sizes, dim = args[0], args[1], args[2]
        if grad.device.type != "cpu" or grad.layout != torch.strided:
            return None
        out = self._place(torch.Size(sizes), grad.dtype, grad.device)
        if out is None:
            return None
        out.zero_()
        if func is aten.select_backward.default:
            out.select(dim, args[3]).copy_(grad)
        else:
            aten.slice.Tensor(out, dim, *args[3:6]).copy_(grad)
        return out


def _meta_device(x: Any) -> Any:
    return torch.device("meta") if isinstance(x, torch.device) else _meta(x)


def _same_place(kwargs: dict) -> bool:
    """``_to_copy`` that changes at most the dtype: a copy on the CPU."""
    device = kwargs.get("device")
    return (
        kwargs.get("layout") in (None, torch.strided)
        and (device is None or torch.device(device).type == "cpu")
        and not kwargs.get("pin_memory")
    )


def for_run(state: Mapping[str, Tensor], enabled: bool = True) -> ReuseBuffers | None:
    """The mode for a run from ``state``, or ``None`` where it does not pay: off, no state
    tensor of :data:`MIN_BYTES` or more on the CPU (glibc's heap then reuses the memory),
    or under ``torch.compile``."""
    if not enabled or torch.compiler.is_compiling():
        return None
    big = any(
        isinstance(t, Tensor) and t.device.type == "cpu" and t.nbytes >= MIN_BYTES
        for t in state.values()
    )
    return ReuseBuffers(keep=True) if big else None


def reuse_in_backward(
    mode: ReuseBuffers, outputs: Sequence[Tensor], stop: Sequence[Tensor] = ()
) -> int:
    """Run ``mode`` during the backward of every autograd node that leads from ``outputs``
    back to ``stop`` (the run's inputs: nodes behind them are not visited), and release its
    blocks when that backward ends. Make ``mode`` with ``keep=True``, or each node's exit
    releases the blocks the next node could reuse. A checkpointed block recomputes its
    forward inside such a node, so the recomputation reuses memory too. Returns the number of
    nodes visited.

    A mode entered around ``loss.backward()`` would cover the same nodes, but the backward
    runs in the caller's code; hooks on the nodes (a pre-hook enters the mode, a hook exits
    it) carry it there, in the thread that runs each node."""
    boundary = {t.grad_fn for t in stop if isinstance(t, Tensor) and t.grad_fn is not None}
    todo = [t.grad_fn for t in outputs if isinstance(t, Tensor) and t.grad_fn is not None]
    seen: set[Any] = set()
    queued = [False]

    def enter(grad_outputs: Any) -> None:
        if not queued[0]:  # once per backward: release the blocks at its end
            queued[0] = True
            torch.autograd.Variable._execution_engine.queue_callback(done)
        mode.__enter__()

    def leave(grad_inputs: Any, grad_outputs: Any) -> None:
        mode.__exit__(None, None, None)

    def done() -> None:
        queued[0] = False
        mode.release()

    while todo:
        node = todo.pop()
        if node is None or node in seen or node in boundary:
            continue
        seen.add(node)
        # a node an earlier run hooked (a graph upstream of several runs, e.g. a network
        # that computes R) keeps that run's hooks: one mode per node, never a stack of them
        if node.metadata.setdefault(_HOOKED, mode) is not mode:
            continue
        if type(node).__name__ != "AccumulateGrad":
            node.register_prehook(enter)
            node.register_hook(leave)
        todo.extend(n for n, _ in node.next_functions)
    return len(seen)
