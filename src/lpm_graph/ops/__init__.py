"""The scatter / gather core: cached CSR structures, per-destination aggregation, and sums
over agents that do not depend on the number of threads, and reuse of large temporaries."""

from .aggregate import BACKENDS, REDUCTIONS, aggregate, propagate, resolve_backend
from .csr import CSR
from .fixed_order import fixed_order_sum
from .incremental import IncrementalSum
from .reuse import ReuseBuffers

__all__ = [
    "BACKENDS",
    "CSR",
    "REDUCTIONS",
    "IncrementalSum",
    "ReuseBuffers",
    "aggregate",
    "fixed_order_sum",
    "propagate",
    "resolve_backend",
]
