"""Reproducible math kernels from the first call: MKL's vector math chooses its CPU kernels on
first use, and two threads that first use a function at the same time can get different ones.

torch computes ``exp``, ``log`` and the other transcendental functions of contiguous float
tensors with MKL's vector math library (VML) where torch was built with MKL, one call per
thread's share of the tensor. Measured with torch 2.13.0 on 2 threads: the first ``torch.exp``
of a 151,072-entry float32 tensor in a process differed from every later call on the same
input in ~1 ulp on part of the entries in 6 of 8 processes, and not at all (0 of 8) after one
single-threaded call of ``exp`` on a small tensor. So the first seeded run of a process could
differ from the next one with the same seed (its gradients by ~2e-6 relative; its draws where a
probability sat within an ulp of its uniform). ``MKL_CBWR=COMPATIBLE`` removes it too, but
must be set before torch starts and forces MKL's slowest code path.

:func:`warm_up` makes the first call of each such function on one thread, for float32 and
float64 (microseconds, once per process, at import of :mod:`lpm_graph`).
"""

from __future__ import annotations

import torch

__all__ = ["warm_up"]

# the element-wise functions torch hands to MKL's VML (ATen/cpu/vml.h) that protocols use
_FUNCTIONS = (
    torch.exp,
    torch.expm1,
    torch.log,
    torch.log1p,
    torch.log2,
    torch.log10,
    torch.sqrt,
    torch.rsqrt,
    torch.sin,
    torch.cos,
    torch.tan,
    torch.tanh,
    torch.sigmoid,
    torch.erf,
    torch.erfc,
    torch.erfinv,
    torch.lgamma,
    torch.reciprocal,
)


def warm_up() -> None:
    """Call every function above once on a small tensor (one thread) per float dtype."""
    for dtype in (torch.float32, torch.float64):
        x = torch.full((64,), 0.5, dtype=dtype, device="cpu")  # whatever the default device
        for fn in _FUNCTIONS:
            fn(x)
