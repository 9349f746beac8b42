"""Sums over agents whose rounding does not depend on the number of torch threads."""

from __future__ import annotations

import functools

from torch import Tensor

__all__ = ["fixed_order_sum"]

_SERIAL = 32768
"""torch's reduction grain (``at::internal::GRAIN_SIZE``): smaller sums run on one thread."""
_BLOCK = 8192
"""The longest block (below the grain, so that one block is one thread's work)."""


@functools.lru_cache(maxsize=256)
def _block(n: int) -> int:
    """The largest divisor of ``n`` in ``[_BLOCK / 2, _BLOCK]`` (no remainder to add
    separately), else ``_BLOCK``."""
    return next((b for b in range(_BLOCK, _BLOCK // 2 - 1, -1) if n % b == 0), _BLOCK)


def fixed_order_sum(x: Tensor) -> Tensor:
    """``x.sum(0)``, added up in an order that does not depend on ``torch.get_num_threads()``.

    torch sums a tensor to a single number in one chunk per thread and then adds the chunks'
    sums, so the rounding (of float32 counts over 10^5 agents: up to one unit in the last
    place, 0.0078 at 10^5) changes with the number of threads. A sum with several outputs
    (``[N, R]`` with ``R > 1`` replicates) gives each output to one thread and is already
    independent of it. Here a single-output sum adds fixed blocks of 4096-8192 rows (one
    block per thread task, in torch's own vectorised order; the block length depends on
    ``N`` only), then the blocks' sums the same way, then any remainder: the same additions
    whatever the threads, for two or three small kernels more (~10 us at 10^5 rows).

    Shapes:
        ``x: [N, *R]`` -> ``[*R]``.
    """
    n = x.shape[0] if x.dim() else 0
    if n < _SERIAL or x.numel() != n:  # one thread's work, or one output per thread
        return x.sum(0)
    b = _block(n)
    m = n - n % b
    head = x if m == n else x[:m]
    blocks = head.reshape(m // b, b, *x.shape[1:]).sum(1)  # [m / b, *R]
    total = blocks.sum(0) if m // b < _SERIAL else fixed_order_sum(blocks)
    return total if m == n else total + x[m:].sum(0)
