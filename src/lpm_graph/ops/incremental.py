"""Event-driven sparse sums: ``A x`` updated from the last call's value when few entries of
``x`` changed.

In a stochastic epidemic the infectious indicator ``I`` changes in a few agents per step (the
new infections and recoveries: about 2N changes over a whole run of 100 steps), yet the force
of infection ``A I`` is a product over every edge, every step. :class:`IncrementalSum` keeps
the last input and result per CSR and computes

.. math::
    A x_t = A x_{t-1} + A (x_t - x_{t-1})

by pushing the changed entries along their out-edges (rows of the cached transposed CSR) when
those edges are few, and by the full product otherwise. On 2 cores this makes the force of
infection of a 1e7-agent SIR run 3-4x cheaper over the run (the full product gathers ``I``
over 1e8 random edges and waits on DRAM latency; see ``benchmarks/README.md``).

Results equal the full product bit for bit, because the update is used only where every sum is
exact: unit edge values, ``x`` in {0, 1} (checked in full on a fresh start, then on the changed
entries each call) and ``float32`` / ``float64`` sums of at most 2^24 / 2^53 ones. Anything
else (weighted edges, probabilities, NaN, a tensor changed in place since the last call, a
non-CPU device, where the update would need host synchronisation, tracing by
``torch.compile``, where its data-dependent shapes would recompile every step, or an inference
tensor (``torch.inference_mode``), which has no version counter to reveal an in-place change)
takes the full product.
Gradients are those of the full product: the update only changes how the forward value is
computed.

Memory: the push reads the CSR's transpose (:attr:`CSR.t`, built once per graph, as a backward
pass builds it: ~8 bytes per edge with int32 indices, 0.9 GiB at 1e8 edges), and each entry
holds the last input and result (two agent vectors).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch import Tensor

from .csr import CSR

__all__ = ["IncrementalSum"]

# float32 sums integers exactly up to 2^24, float64 up to 2^53: the in-degree bound below which
# every partial sum of 0/1 values, in any order, is exact
_EXACT_DEGREE = {torch.float32: 2**24, torch.float64: 2**53}
# the integer type of each float's width, to compare values bit for bit
_SAME_WIDTH = {torch.float32: torch.int32, torch.float64: torch.int64}
_WORD = 8  # entries of a bool mask per int64 word
_WORD_MIN = 2**15  # below this many entries a single nonzero is as cheap
# when more than 1 word in this many holds a change, the candidates cost more than they save
_DENSE_WORDS = 4


@dataclass
class _Last:
    """The last input and result of one CSR's product, and their versions (an in-place change
    of either makes the entry stale)."""

    x: Tensor
    out: Tensor
    x_version: int
    out_version: int

    def fresh(self, x: Tensor) -> bool:
        return (
            self.x.shape == x.shape
            and self.x.dtype == x.dtype
            and self.x.device == x.device
            and self.x._version == self.x_version
            and self.out._version == self.out_version
        )


class IncrementalSum:
    """``A x`` for a 0/1 ``x`` that changes little between calls, with unit edge values.

    Call it as ``inc(csr, x, full)`` where ``full(x)`` computes the product from scratch; it
    returns a new tensor equal to ``full(x)`` bit for bit (see the module docstring for when
    the update is used). One instance serves one caller (a layer), with one entry per CSR,
    held weakly; copies and pickles start empty.

    Args:
        max_edges: the largest share of the edges an update may push before the full product
            is cheaper (measured on 2 cores at 1e6 and 1e7 agents: the push costs 4-12x more
            per edge than the product's gather, so the break-even is 1/12 to 1/4).
    """

    #: device types where updates run: the update reads the number of changed entries on the
    #: host, which on the CPU costs nothing and on an accelerator would synchronise each step
    devices: tuple[str, ...] = ("cpu",)

    def __init__(self, max_edges: float = 1 / 16) -> None:
        if not 0.0 <= max_edges <= 1.0:
            raise ValueError(f"max_edges={max_edges} must lie in [0, 1].")
        self.max_edges = float(max_edges)
        self._last: weakref.WeakKeyDictionary[CSR, _Last] = weakref.WeakKeyDictionary()
        self.updates = 0  # calls answered by an update (for tests and profiling)

    def __getstate__(self) -> dict:
        return {"max_edges": self.max_edges}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["max_edges"])

    def __call__(self, csr: CSR, x: Tensor, full) -> Tensor:
        if (
            x.device.type not in self.devices
            or x.dtype not in _EXACT_DEGREE
            or csr.num_edges == 0
            or torch.compiler.is_compiling()  # data-dependent shapes: a recompile per step
            or x.is_inference()  # no version counter: an in-place change could not be seen
        ):
            return full(x)
        last = self._last.get(csr)
        out = None
        if last is not None and last.fresh(x):
            out = self._update(csr, x, last, full)
        if out is None:  # no usable entry: compute in full, keep it if x is 0/1
            out = full(x)
            if not _indicator(x) or not _exact_degrees(csr, x.dtype):
                self._last.pop(csr, None)
                return out
        # detached views share the version counters, but not the autograd graph of the output
        self._last[csr] = _Last(x.detach(), out.detach(), x._version, out._version)
        return out

    def _update(self, csr: CSR, x: Tensor, last: _Last, full) -> Tensor | None:
        """``A x`` from ``last``, or ``None`` where the last entry cannot serve (x not 0/1 in
        a changed entry). Full product when more than ``max_edges`` of the edges would move."""
        width = x[0].numel() if x.dim() > 1 else 1
        new, old = x.reshape(-1), last.x.reshape(-1)
        changed = _changed(new, old)
        values = new.index_select(0, changed)
        if not _indicator(values):
            return None  # x left {0, 1}: the last entry's exactness no longer carries over
        t = csr.t  # rows = sources: a source's out-edges are one contiguous range
        src = changed // width if width > 1 else changed
        lens = t.degree.index_select(0, src)
        total = int(lens.sum())
        if total > self.max_edges * csr.num_edges:
            return full(x)  # x is 0/1 everywhere: the caller keeps this as the new entry
        out = last.out.clone()
        if total:
            starts = t.rowptr.index_select(0, src)
            first = torch.cumsum(lens, 0) - lens  # where each source's edges start in the push
            edge = torch.repeat_interleave(starts - first, lens, output_size=total)
            edge += torch.arange(total, device=x.device)
            dst = t.col_compact().index_select(0, edge)
            sign = values - old.index_select(0, changed)  # +1 infected, -1 recovered
            step = torch.repeat_interleave(sign, lens, output_size=total)
            if width > 1:  # [num_rows, *F] flattened: row-major position of (dst, f)
                f = torch.repeat_interleave(changed % width, lens, output_size=total)
                dst = dst.long() * width + f
            out.view(-1).index_add_(0, dst, step)
        self.updates += 1
        return out


def _changed(new: Tensor, old: Tensor) -> Tensor:
    """The positions, ascending, where the 1-D ``new`` and ``old`` differ in their bits.

    For an ``old`` of 0s and 1s these are the positions where ``new != old`` but for ``-0.0``,
    which counts as changed here (and is then pushed as a change of ``-0.0``, which adds
    nothing); NaN differs from both. Comparing the bits as integers is ~2x faster than
    comparing floats, and the search runs in two levels: the 8-byte words of the mask that
    hold a change, then the entries of those words. ``torch.nonzero`` over the whole mask
    (~1.5 ns per entry on one core) was a tenth of a 1e6-agent SIR step; the words are an
    eighth of the entries, and in a step few of them hold a change.
    """
    ints = _SAME_WIDTH[new.dtype]
    mask = new.view(ints) != old.view(ints)
    n = mask.numel()
    head = n - n % _WORD
    if head < _WORD_MIN:
        return torch.nonzero(mask).squeeze(1)
    words = torch.nonzero(mask[:head].view(torch.int64)).squeeze(1)
    if words.numel() > head // (_WORD * _DENSE_WORDS):  # many words hit: one pass is cheaper
        return torch.nonzero(mask).squeeze(1)
    near = (words.unsqueeze(1) * _WORD + torch.arange(_WORD, device=mask.device)).view(-1)
    changed = near[mask.index_select(0, near)]
    if head < n:
        tail = torch.nonzero(mask[head:]).squeeze(1) + head
        changed = torch.cat([changed, tail])
    return changed


def _indicator(x: Tensor) -> bool:
    return bool(((x == 0) | (x == 1)).all())


def _exact_degrees(csr: CSR, dtype: torch.dtype) -> bool:
    """Every row sums fewer ones than ``dtype`` counts exactly (multi-edges included)."""
    return csr.num_rows == 0 or int(csr.degree.max()) < _EXACT_DEGREE[dtype]
