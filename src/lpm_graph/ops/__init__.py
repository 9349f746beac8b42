"""The scatter / gather core: cached CSR structures and per-destination aggregation."""

from .aggregate import BACKENDS, REDUCTIONS, aggregate, propagate, resolve_backend
from .csr import CSR
from .incremental import IncrementalSum

__all__ = [
    "BACKENDS",
    "CSR",
    "REDUCTIONS",
    "IncrementalSum",
    "aggregate",
    "propagate",
    "resolve_backend",
]
