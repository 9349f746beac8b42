"""Vectorised sampling of distinct pairs, shared by the generators and SyntheticPopulation."""

from __future__ import annotations

import numpy as np


def _distinct(keys: np.ndarray) -> np.ndarray:
    """The sorted distinct values of ``keys`` (``np.unique`` is several times slower here)."""
    keys = np.sort(keys)
    return keys[_starts(keys)]


def _first_of_each(keys: np.ndarray) -> np.ndarray:
    """Positions of the first occurrence of each distinct value, in value order."""
    order = np.argsort(keys, kind="stable")
    return order[_starts(keys[order])]


def _starts(sorted_keys: np.ndarray) -> np.ndarray:
    """Mask of the first entry of each run of equal values in a sorted array."""
    start = np.ones(sorted_keys.size, dtype=bool)
    start[1:] = sorted_keys[1:] != sorted_keys[:-1]
    return start


def _triangle_pair(rank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pair ``i < j`` of rank ``rank = j (j - 1) / 2 + i`` (pairs ordered by ``j``)."""
    j = ((1 + np.sqrt(1 + 8 * rank.astype(np.float64))) // 2).astype(np.int64)
    j -= j * (j - 1) // 2 > rank  # undo float rounding of the square root
    j += (j + 1) * j // 2 <= rank
    return rank - j * (j - 1) // 2, j


def _pair_stubs(degrees: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The configuration multigraph: shuffle the stub list and pair consecutive stubs."""
    stubs = rng.permutation(np.repeat(np.arange(degrees.size, dtype=np.int64), degrees))
    return stubs[0::2], stubs[1::2]


def _sample_distinct(
    counts: np.ndarray, totals: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``counts[g]`` distinct values drawn uniformly from ``[0, totals[g])`` for every group.

    Returns ``(group, value)`` arrays. Sparse groups (at most half their values drawn) are
    filled by drawing the shortfall, dropping repeats, and drawing again; any procedure
    symmetric in the values gives a uniform subset. Dense groups keep every value except a
    uniform subset of ``totals - counts``, drawn the same way.
    """
    offset = np.cumsum(totals) - totals  # values of group g live at offset[g] + [0, totals[g])
    dense = 2 * counts > totals
    keys = np.empty(0, dtype=np.int64)
    group = np.empty(0, dtype=np.int64)
    need = np.where(dense, 0, counts)
    while need.any():
        g = np.repeat(np.arange(counts.size), need)
        keys = np.concatenate([keys, offset[g] + rng.integers(0, totals[g])])
        first = _first_of_each(keys)
        keys, group = keys[first], np.concatenate([group, g])[first]
        need = np.where(dense, 0, counts) - np.bincount(group, minlength=counts.size)
    if dense.any():
        skip_group, skip = _sample_distinct(
            np.where(dense, totals - counts, 0), np.where(dense, totals, 0), rng
        )
        size = np.where(dense, totals, 0)
        g = np.repeat(np.arange(counts.size), size)
        value = np.arange(g.size) - np.repeat(np.cumsum(size) - size, size)  # 0..size-1
        dense_keys = offset[g] + value
        keep = ~np.isin(dense_keys, offset[skip_group] + skip)
        keys = np.concatenate([keys, dense_keys[keep]])
        group = np.concatenate([group, g[keep]])
    return group, keys - offset[group]
