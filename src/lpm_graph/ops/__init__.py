"""The scatter / gather core: cached CSR structures and per-destination aggregation."""

from .aggregate import BACKENDS, REDUCTIONS, aggregate, propagate, resolve_backend
from .csr import CSR

__all__ = ["BACKENDS", "CSR", "REDUCTIONS", "aggregate", "propagate", "resolve_backend"]
